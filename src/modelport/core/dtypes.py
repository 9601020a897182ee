"""Element types by name, and which floating type a converted model gets.

A dtype is a name: torch's without its prefix ("bfloat16", "float8_e4m3fn"), the words configs and
users already write. Nothing here imports numpy or torch, so headers can be read, planned and
reported without either; arrays are numpy, with ml_dtypes' bfloat16 and float8 where numpy has none.

Order of precedence for the output's floating type (documented in the README): explicit `--dtype` >
config `dtype` (transformers 5) > config `torch_dtype` (older transformers) > the most common floating
type among the source tensors. Integer and bool tensors (buffers, position ids) are never cast.
"""
from __future__ import annotations

from collections import Counter
from typing import TYPE_CHECKING, Iterable

from .errors import UsageError

if TYPE_CHECKING:
    import numpy as np

ITEMSIZE: dict[str, int] = {
    "float64": 8, "float32": 4, "float16": 2, "bfloat16": 2, "float8_e4m3fn": 1, "float8_e5m2": 1,
    "int64": 8, "int32": 4, "int16": 2, "int8": 1, "uint64": 8, "uint32": 4, "uint16": 2, "uint8": 1, "bool": 1,
}
FLOATING = ("float64", "float32", "float16", "bfloat16", "float8_e4m3fn", "float8_e5m2")
OUTPUT_DTYPES = ("float32", "float16", "bfloat16")       # what --dtype may ask for
ALIASES = {"fp32": "float32", "f32": "float32", "fp16": "float16", "f16": "float16", "half": "float16",
           "bf16": "bfloat16", "float": "float32"}
SAFETENSORS_NAMES: dict[str, str] = {
    "F64": "float64", "F32": "float32", "F16": "float16", "BF16": "bfloat16", "F8_E4M3": "float8_e4m3fn",
    "F8_E5M2": "float8_e5m2", "I64": "int64", "I32": "int32", "I16": "int16", "I8": "int8", "U64": "uint64",
    "U32": "uint32", "U16": "uint16", "U8": "uint8", "BOOL": "bool",
}
SAFETENSORS_CODES = {v: k for k, v in SAFETENSORS_NAMES.items()}
_ML_DTYPES = ("bfloat16", "float8_e4m3fn", "float8_e5m2")


def is_floating(dtype: str) -> bool:
    return dtype in FLOATING


def parse_dtype(name: str | None) -> str | None:
    """A user's dtype name, canonical; None or 'auto' means 'decide from the source'."""
    if name is None or name == "auto":
        return None
    key = name.lower().removeprefix("torch.")
    key = ALIASES.get(key, key)
    if key not in OUTPUT_DTYPES:
        raise UsageError(f"unknown dtype {name!r}; choose auto, {', '.join(OUTPUT_DTYPES)}")
    return key


def numpy_dtype(name: str) -> "np.dtype":
    import numpy as np
    if name in _ML_DTYPES:
        import ml_dtypes
        return np.dtype(getattr(ml_dtypes, name))
    return np.dtype(name)


def name_of(dtype: "np.dtype") -> str:
    """The name of a numpy dtype (ml_dtypes' included)."""
    return dtype.name


def cast(array: "np.ndarray", dtype: str) -> "np.ndarray":
    """`array` as `dtype`, not copied when it already is (ml_dtypes casts round to nearest even, as torch does)."""
    target = numpy_dtype(dtype)
    return array if array.dtype == target else array.astype(target)


def config_dtype(config: dict) -> str | None:
    for key in ("dtype", "torch_dtype"):
        value = config.get(key)
        if isinstance(value, str) and value.removeprefix("torch.") in OUTPUT_DTYPES:
            return value.removeprefix("torch.")
    return None


def dominant_float_dtype(dtypes: Iterable[str]) -> str | None:
    counts = Counter(d for d in dtypes if is_floating(d))
    return counts.most_common(1)[0][0] if counts else None


def resolve_dtype(requested: str | None, config: dict, tensor_dtypes: Iterable[str]) -> str:
    return (parse_dtype(requested) or config_dtype(config)
            or dominant_float_dtype(tensor_dtypes) or "float32")


def target_dtype(source: str, floating_target: str) -> str:
    return floating_target if is_floating(source) else source
