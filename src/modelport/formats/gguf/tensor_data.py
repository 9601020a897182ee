"""Rows of a GGUF tensor read from its byte range: raw (a byte-for-byte copy) or as numbers. Every
GGML type stores whole rows of blocks, so any run of rows is read and dequantized alone."""
from __future__ import annotations

import gguf
import numpy as np
from gguf import GGMLQuantizationType as Q

from ...core.dtypes import numpy_dtype
from ...core.errors import CorruptInputError
from ...storage import byte_source
from .header import TensorInfo

FLOAT_TYPES = {Q.F32: "float32", Q.F16: "float16", Q.BF16: "bfloat16"}     # read as they are; others dequantize


def raw_rows(t: TensorInfo, first: int, count: int, row_bytes: int) -> np.ndarray:
    """`count` rows of `row_bytes` from row `first` of `t`, as bytes."""
    want = count * row_bytes
    raw = np.frombuffer(byte_source(t.file).read(t.offset + first * row_bytes, want), dtype=np.uint8)
    if raw.size != want:
        raise CorruptInputError(f"tensor {t.name} is cut short", t.file)
    return raw


def decode(raw: np.ndarray, qtype: Q, shape: tuple[int, ...]) -> np.ndarray:
    """Bytes of whole rows as numbers of `shape`: float types as they are, others dequantized to float32."""
    if qtype in FLOAT_TYPES:
        return raw.view(numpy_dtype(FLOAT_TYPES[qtype])).reshape(shape)
    rows = int(np.prod(shape[:-1])) if len(shape) > 1 else 1
    return np.ascontiguousarray(gguf.quants.dequantize(raw.reshape(rows, -1), qtype)).reshape(shape)
