"""LoRA on fused expert parameters (PEFT's `target_parameters`), as one pair per expert on the saved tensors.

transformers 5 loads a MoE's routed experts as 3-D parameters (Qwen2-MoE's `mlp.experts.gate_up_proj`:
experts x 2·ffn x hidden), which PEFT adapts with a wrapper per targeted parameter, nested on the module in
the order the config lists them (the first innermost: `experts.base_layer.lora_A`). Its A stacks the
experts' A's (experts·rank x in); its B interleaves their columns (out x rank·experts, column k·E + e being
expert e's k-th), as PEFT's ParamWrapper.get_delta_weight reads them. transformers' own conversion mapping
says which saved tensors a fused parameter is (`mlp.experts.*.gate_proj.weight` and `...up_proj.weight`,
concatenated along rows); each gets its rows of every expert's B.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np

from ...core.adapter import LoraModule
from ...core.bundle import TensorRef
from ...core.errors import ModelConversionError

WRAPPED = ".base_layer"


def wrapped_parameter(module: str, settings: dict) -> tuple[str, str] | None:
    """(module path, parameter name) when `module` (a saved pair's prefix) is a parameter wrapper, else None."""
    targets = settings.get("target_parameters") or []
    depth, path = 0, module
    while path.endswith(WRAPPED):
        depth, path = depth + 1, path[:-len(WRAPPED)]
    mine = [t for t in targets if (f"{path}.{t.rsplit('.', 1)[-1]}").endswith(t)]
    if not mine or depth >= len(mine):
        return None
    return path, mine[len(mine) - 1 - depth].rsplit(".", 1)[-1]


def expert_modules(path: str, parameter: str, a: TensorRef, b: TensorRef, rank: int, scale: float,
                   model_type: str | None, where: Path) -> list[LoraModule]:
    """One LoraModule per expert and saved tensor of the fused `path.parameter`."""
    sources = _saved_sources(path, parameter, model_type, where)
    experts = a.shape[0] // rank
    if experts * rank != a.shape[0] or b.shape[1] != a.shape[0] or b.shape[0] % len(sources):
        raise ModelConversionError(f"{path}.{parameter}: lora_A {a.shape} and lora_B {b.shape} are not {rank}-rank "
                                   "pairs of whole experts", where)
    part = b.shape[0] // len(sources)
    modules = []
    for e in range(experts):
        for i, pattern in enumerate(sources):
            target = pattern.replace("*", str(e))
            stem = target.removesuffix(".weight")
            a_e = _slice(a, f"{stem}.lora_A.weight", (rank, a.shape[1]), slice(e * rank, (e + 1) * rank), slice(None))
            b_e = _slice(b, f"{stem}.lora_B.weight", (part, rank), slice(i * part, (i + 1) * part),
                         slice(e, None, experts))
            modules.append(LoraModule(target, a_e, b_e, scale))
    return modules


def _saved_sources(path: str, parameter: str, model_type: str | None, where: Path) -> list[str]:
    """The saved tensors (`*` for the expert) transformers' conversion mapping fuses into `path.parameter`,
    in the order they are concatenated along rows."""
    from transformers.conversion_mapping import get_checkpoint_conversion_mapping
    fused = f"{path}.{parameter}"
    for converter in get_checkpoint_conversion_mapping(model_type) or []:
        targets = getattr(converter, "target_patterns", None) or []
        target = next((t for t in targets if fused.endswith(t)), None)
        if target is None:
            continue
        operations = [type(op).__name__ for op in getattr(converter, "operations", [])]
        concatenated = [op for op in getattr(converter, "operations", []) if type(op).__name__ == "Concatenate"]
        if set(operations) - {"MergeModulelist", "Concatenate"} or any(op.dim != 1 for op in concatenated):
            raise ModelConversionError(f"{fused}: transformers stores it as {', '.join(operations)}, which a LoRA "
                                       "pair is not mapped through here", where)
        prefix = fused[:-len(target)]
        return [prefix + source for source in converter.source_patterns]
    raise ModelConversionError(f"{fused}: no saved tensors for this adapted parameter in transformers' conversion "
                               f"mapping of {model_type}", where)


def _slice(ref: TensorRef, name: str, shape: tuple[int, int], rows: slice, columns: slice) -> TensorRef:
    return TensorRef(name, shape, ref.dtype, partial(_sliced, ref, rows, columns), source=ref.source)


def _sliced(ref: TensorRef, rows: slice, columns: slice) -> np.ndarray:
    return np.ascontiguousarray(ref.load()[rows, columns])
