"""The step every reader ends with: find config and tokenizer, check names against the architecture."""
from __future__ import annotations

from pathlib import Path

from ..architectures import spec_for
from ..architectures.alignment import align
from ..architectures.expected import expected_tensors
from ..core.bundle import ModelBundle, TensorRef
from ..core.config_check import check_layers
from ..core.errors import CorruptInputError, ModelConversionError
from .companions import find_companions


def assemble_bundle(refs: dict[str, TensorRef], source: Path, fmt: str, base_model: Path | None,
                    notes: list[str] | None = None) -> ModelBundle:
    if not refs:
        raise CorruptInputError("holds no tensors; not a model checkpoint", source)
    companions = find_companions(source, base_model)
    _check_unquantized(companions.config, companions.config_path)
    check_layers(companions.config, len(refs), companions.config_path)
    spec = spec_for(companions.config, companions.config_path)
    aligned, report = align(refs, expected_tensors(spec, companions.config), source)
    all_notes = list(notes or []) + report.notes()
    return ModelBundle(
        config=companions.config,
        tensors=aligned,
        source=source,
        format=fmt,
        tokenizer_files=companions.tokenizer_files,
        generation_config=companions.generation_config,
        notes=all_notes,
        origins=report.origins,
        unused=report.unexpected,
    )


def _check_unquantized(config: dict, config_path: Path) -> None:
    """Weights quantized by a training-side method (GPTQ, AWQ, bitsandbytes, FP8, MXFP4) are stored as
    packed integers and scales under other names: refused by name, rather than as a list of missing tensors."""
    quantization = config.get("quantization_config")
    if isinstance(quantization, dict) and quantization.get("quant_method"):
        raise ModelConversionError(f"the weights are quantized ({quantization['quant_method']}); modelport reads "
                                   "unquantized weights: dequantize the checkpoint first (e.g. load it in transformers "
                                   "with dequantize=True and save_pretrained)", config_path)
