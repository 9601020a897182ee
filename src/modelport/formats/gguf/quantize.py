"""Tensor bytes for a GGML type: float casts in numpy (ml_dtypes for bfloat16), quantization by
llama.cpp's own quantizer.

libggml (built with llama-cpp-python) exports `ggml_quantize_chunk`, the function llama-quantize
calls, so every quantized row is byte-for-byte what llama.cpp would write. Rows are independent, so
a tensor is quantized in row chunks across threads (ctypes releases the GIL during the call). With an
importance matrix, each row is quantized with its matrix's weights (an expert's, in a stacked MoE
tensor), and a chunk never crosses from one expert to the next, as in llama-quantize. Without
libggml, gguf-py's numpy quantizers cover the types they implement (the legacy 32-block ones).
"""
from __future__ import annotations

import ctypes
import importlib.util
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import quants

from ...core.dtypes import numpy_dtype
from ...core.errors import ModelConversionError
from .quant_types import nbytes

ROWS_PER_CHUNK = 256
FLOAT_TYPES = {Q.F32: "float32", Q.F16: "float16", Q.BF16: "bfloat16"}
_scratch = threading.local()
ASSERTS_IMATRIX = (Q.IQ2_XXS, Q.IQ2_XS, Q.IQ1_S)    # ggml_quantize_requires_imatrix: ggml aborts the process


@lru_cache(maxsize=1)
def libggml() -> ctypes.CDLL | None:
    spec = importlib.util.find_spec("llama_cpp")
    if spec is None or not spec.submodule_search_locations:
        return None
    lib_dir = Path(next(iter(spec.submodule_search_locations))) / "lib"
    candidates = sorted(lib_dir.glob("libggml-base.so*")) + sorted(lib_dir.glob("libggml.so*"))
    for path in candidates:
        try:
            lib = ctypes.CDLL(str(path))
            fn = lib.ggml_quantize_chunk
        except (OSError, AttributeError):
            continue
        fn.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_float), ctypes.c_void_p, ctypes.c_int64,
                       ctypes.c_int64, ctypes.c_int64, ctypes.POINTER(ctypes.c_float)]
        fn.restype = ctypes.c_size_t
        lib.ggml_quantize_init.argtypes = [ctypes.c_int]
        lib.ggml_quantize_init.restype = None
        return lib
    return None


@dataclass(frozen=True)
class Importance:
    """Importance weights for a block of a tensor's rows: `vectors` [matrices, columns] (float32), each
    matrix `rows_per_matrix` rows of the whole tensor; the block starts at the tensor's row `first_row`."""

    vectors: np.ndarray
    rows_per_matrix: int
    first_row: int = 0

    def at(self, first_row: int) -> "Importance":
        return Importance(self.vectors, self.rows_per_matrix, first_row)


def to_type(tensor: np.ndarray, qtype: Q, threads: int = 2, scratch: bool = False,
            importance: Importance | None = None) -> np.ndarray:
    """The bytes (as a numpy array) of `tensor` in GGML type `qtype`, with `importance` when given.

    With `scratch`, the result (and a quantizer's float32 input) lands in buffers this thread reuses
    on its next call: for a caller that writes the bytes out at once, it saves fresh allocations, and
    so page faults and zeroing, on every chunk."""
    if qtype in FLOAT_TYPES:
        return _cast(tensor, FLOAT_TYPES[qtype], scratch)
    data = _cast(tensor, "float32", scratch)
    lib = libggml()
    if lib is None and importance is None:
        try:
            return quants.quantize(data, qtype)
        except NotImplementedError as exc:
            raise ModelConversionError(f"{qtype.name} needs llama.cpp's quantizer (install llama-cpp-python)") from exc
    size = nbytes(qtype, data.shape)
    out = _scratch_array(size, np.dtype(np.uint8), "quantized") if scratch else np.empty(size, dtype=np.uint8)
    if importance is None and qtype in ASSERTS_IMATRIX:
        raise ModelConversionError(f"{qtype.name} cannot be made without an importance matrix")
    if lib is None:
        raise ModelConversionError(f"{qtype.name} with an imatrix needs llama.cpp's quantizer (install llama-cpp-python)")
    return _ggml_quantize(lib, data, qtype, threads, out, importance)


def _cast(tensor: np.ndarray, dtype: str, scratch: bool) -> np.ndarray:
    target = numpy_dtype(dtype)
    if not scratch:
        return tensor.astype(target, order="C", copy=False)
    out = _scratch_array(tensor.size, target, "cast").reshape(tensor.shape)
    np.copyto(out, tensor, casting="unsafe")
    return out


def _scratch_array(count: int, dtype: np.dtype, slot: str) -> np.ndarray:
    need = count * dtype.itemsize
    buffer = getattr(_scratch, slot, None)
    if buffer is None or buffer.size < need:
        buffer = np.empty(need, dtype=np.uint8)
        setattr(_scratch, slot, buffer)
    return buffer[:need].view(dtype)


def _ggml_quantize(lib: ctypes.CDLL, data: np.ndarray, qtype: Q, threads: int, out: np.ndarray,
                   importance: Importance | None) -> np.ndarray:
    n_per_row = data.shape[-1]
    rows = data.size // n_per_row
    flat = data.reshape(rows, n_per_row)
    row_bytes = out.size // rows
    src = flat.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
    dst = out.ctypes.data
    weights = None
    if importance is not None:
        weights = np.ascontiguousarray(importance.vectors, dtype=np.float32).reshape(-1, n_per_row)
    lib.ggml_quantize_init(int(qtype))        # IQ grids are built once, before the threads share them

    def run(chunk: tuple[int, int]) -> int:
        first, count = chunk
        imatrix = None
        if weights is not None:
            matrix = (importance.first_row + first) // importance.rows_per_matrix
            imatrix = weights[matrix].ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        return lib.ggml_quantize_chunk(int(qtype), src, dst, first * n_per_row, count, n_per_row, imatrix)

    chunks = list(_chunks(rows, importance))
    if threads > 1 and len(chunks) > 1:
        with ThreadPoolExecutor(threads) as pool:
            written = sum(pool.map(run, chunks))
    else:
        written = sum(map(run, chunks))
    if written != out.size:
        raise ModelConversionError(f"quantizer wrote {written} bytes for {qtype.name}, expected {out.size} "
                                   f"({rows} rows x {row_bytes})")
    return out


def _chunks(rows: int, importance: Importance | None):
    """(first row, rows) of each call: ROWS_PER_CHUNK at most, never across a matrix boundary."""
    first = 0
    while first < rows:
        count = min(ROWS_PER_CHUNK, rows - first)
        if importance is not None:
            row = importance.first_row + first
            count = min(count, importance.rows_per_matrix - row % importance.rows_per_matrix)
        yield first, count
        first += count
