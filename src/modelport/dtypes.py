"""Which floating dtype a converted model gets.

Order of precedence (documented in the README): explicit `--dtype` > config `dtype`
(transformers 5) > config `torch_dtype` (older transformers) > the source tensors' own dtype.
Integer and bool tensors (buffers, position ids) are never cast.
"""
from __future__ import annotations

from collections import Counter
from typing import Iterable

import torch

from .errors import UsageError

DTYPES: dict[str, torch.dtype] = {
    "float32": torch.float32,
    "float16": torch.float16,
    "bfloat16": torch.bfloat16,
}
ALIASES = {"fp32": "float32", "f32": "float32", "fp16": "float16", "f16": "float16", "half": "float16",
           "bf16": "bfloat16", "float": "float32"}

SAFETENSORS_NAMES: dict[str, torch.dtype] = {
    "F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
    "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
    "BOOL": torch.bool, "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}
SAFETENSORS_CODES = {v: k for k, v in SAFETENSORS_NAMES.items()}
SAFETENSORS_ITEMSIZE: dict[str, int] = {
    "F64": 8, "F32": 4, "F16": 2, "BF16": 2, "F8_E4M3": 1, "F8_E5M2": 1,
    "I64": 8, "I32": 4, "I16": 2, "I8": 1, "U64": 8, "U32": 4, "U16": 2, "U8": 1, "BOOL": 1,
}


def parse_dtype(name: str | None) -> torch.dtype | None:
    """A user's dtype name to torch; None or 'auto' means 'decide from the source'."""
    if name is None or name == "auto":
        return None
    key = ALIASES.get(name.lower().removeprefix("torch."), name.lower().removeprefix("torch."))
    if key not in DTYPES:
        raise UsageError(f"unknown dtype {name!r}; choose auto, {', '.join(DTYPES)}")
    return DTYPES[key]


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def config_dtype(config: dict) -> torch.dtype | None:
    for key in ("dtype", "torch_dtype"):
        value = config.get(key)
        if isinstance(value, str) and value.removeprefix("torch.") in DTYPES:
            return DTYPES[value.removeprefix("torch.")]
    return None


def dominant_float_dtype(dtypes: Iterable[torch.dtype]) -> torch.dtype | None:
    counts = Counter(d for d in dtypes if d.is_floating_point)
    return counts.most_common(1)[0][0] if counts else None


def resolve_dtype(requested: str | None, config: dict, tensor_dtypes: Iterable[torch.dtype]) -> torch.dtype:
    return (parse_dtype(requested) or config_dtype(config)
            or dominant_float_dtype(tensor_dtypes) or torch.float32)


def target_dtype(source: torch.dtype, floating_target: torch.dtype) -> torch.dtype:
    return floating_target if source.is_floating_point else source
