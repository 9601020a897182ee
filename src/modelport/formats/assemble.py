"""The step every reader ends with: find config and tokenizer, check names against the architecture."""
from __future__ import annotations

from pathlib import Path

from ..architectures import spec_for
from ..architectures.alignment import align
from ..architectures.expected import expected_tensors
from ..core.bundle import ModelBundle, TensorRef
from ..core.config_check import check_layers
from ..core.errors import CorruptInputError
from .companions import find_companions
from .quantized import dequantized


def assemble_bundle(refs: dict[str, TensorRef], source: Path, fmt: str, base_model: Path | None,
                    notes: list[str] | None = None) -> ModelBundle:
    if not refs:
        raise CorruptInputError("holds no tensors; not a model checkpoint", source)
    companions = find_companions(source, base_model)
    refs, quantization = dequantized(refs, companions.config, companions.config_path)
    config = companions.config if quantization is None else dequantized_config(companions.config)
    check_layers(config, len(refs), companions.config_path)
    spec = spec_for(config, companions.config_path)
    aligned, report = align(refs, expected_tensors(spec, config), source)
    all_notes = list(notes or []) + ([quantization.note()] if quantization else []) + report.notes()
    return ModelBundle(
        config=config,
        tensors=aligned,
        source=source,
        format=fmt,
        tokenizer_files=companions.tokenizer_files,
        generation_config=companions.generation_config,
        notes=all_notes,
        origins=report.origins,
        unused=report.unexpected,
        quantization=quantization.summary() if quantization else None,
    )


def dequantized_config(config: dict) -> dict:
    """The config of what a quantized checkpoint dequantizes to: no quantization_config (transformers would
    look for the stored tensors), and bfloat16, the type the method's own dequantizing load gives."""
    out = {k: v for k, v in config.items() if k != "quantization_config"}
    for key in [k for k in ("dtype", "torch_dtype") if k in config] or ["torch_dtype"]:
        out[key] = "bfloat16"
    return out
