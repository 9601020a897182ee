"""What every quantized method shares: the stored tensors a weight is made from, the lazy float32
TensorRef that computes it a row block at a time, scales broadcast over their blocks, and the record
of what the method was (for `inspect` and the conversion's notes)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Callable

from ...core.bundle import TensorRef
from ...core.errors import CorruptInputError, quoted

if TYPE_CHECKING:
    import numpy as np

Rows = Callable[[int, int], "np.ndarray"]
# activation scales and zero points a kernel uses at run time; the dequantized weights need none of them
ACTIVATION_SUFFIXES = (".activation_scale", "_activation_scale", ".qscale_act", ".input_scale", ".input_zero_point",
                       ".output_scale", ".output_zero_point", ".k_scale", ".v_scale")


@dataclass(frozen=True)
class Quantization:
    """How a source was quantized, as `inspect` shows it and the conversion's note says it."""

    method: str                     # quant_method: fp8, compressed-tensors, gptq, mxfp4
    bits: int
    block: str                      # "128x128", "per-tensor", "group 128", "channel", ...
    format: str | None = None       # compressed-tensors' format; gptq's checkpoint_format
    weights: int = 0                # how many weights are dequantized
    dropped: int = 0                # activation scales left out

    def summary(self) -> dict:
        return {"method": self.method, "bits": self.bits, "block": self.block, "format": self.format,
                "weights": self.weights, "dropped_activation_scales": self.dropped}

    def note(self) -> str:
        kind = f"{self.method} ({self.format})" if self.format not in (None, self.method) else self.method
        dropped = f"; {self.dropped} activation scale(s) dropped" if self.dropped else ""
        return (f"quantized source: {self.weights} {kind} weight(s), {self.bits}-bit, {self.block}, dequantized as "
                f"they stream{dropped}; --dtype auto writes bfloat16 (HF, DCP) or f16 (GGUF)")


def needed(refs: dict[str, TensorRef], name: str, weight: str, role: str) -> TensorRef:
    """The stored tensor `name` that quantized `weight` is made from; its absence is a corrupt checkpoint,
    never a reason to pass the raw integers through."""
    ref = refs.get(name)
    if ref is None:
        raise CorruptInputError(f"tensor {quoted(name)} ({role} of the quantized weight {quoted(weight)}) is missing",
                                refs[weight].source or None)
    return ref


def dequantized_ref(name: str, shape: tuple[int, ...], rows: Rows, source: str) -> TensorRef:
    """A float32 tensor computed a row block at a time from stored ones (whole, when asked whole)."""
    return TensorRef(name=name, shape=shape, dtype="float32", loader=lambda: rows(0, shape[0]), source=source,
                     rows=rows)


def drop_activation_scales(refs: dict[str, TensorRef]) -> tuple[dict[str, TensorRef], int]:
    kept = {n: r for n, r in refs.items() if not n.endswith(ACTIVATION_SUFFIXES)}
    return kept, len(refs) - len(kept)


def as_float32(array: "np.ndarray") -> "np.ndarray":
    """The stored values as float32: a one-byte float through a 256-entry table (exact, and several times
    faster than ml_dtypes' cast), anything else cast."""
    import numpy as np
    if array.dtype.name.startswith("float8"):
        table = np.arange(256, dtype=np.uint8).view(array.dtype).astype(np.float32)
        return table[array.view(np.uint8)]
    return array.astype(np.float32)


def per_block(values: "np.ndarray", stored: TensorRef, start: int, stop: int, block: tuple[int, ...],
              shape: tuple[int, ...], op: "np.ufunc") -> "np.ndarray":
    """`op` (multiply by a scale, subtract a zero point) applied in place to rows [start, stop) of a weight
    of `shape`, with the value `stored` holds for each block of it: one per block[i] elements along axis i
    (1 along the first axis of a stack of experts), or one for the tensor. Only the stored rows the block
    touches are read, and only they are repeated across columns; rows broadcast block by block."""
    import numpy as np
    if stored.numel == 1:
        return op(values, as_float32(stored.load()).reshape(()), out=values)
    first, last = start // block[0], -(-stop // block[0])
    part = as_float32(stored.load_rows(first, last))
    while part.ndim < values.ndim:
        part = part[..., None]
    for axis in range(1, part.ndim):
        if part.shape[axis] > 1 and block[axis] > 1:
            part = np.repeat(part, block[axis], axis=axis)[(slice(None),) * axis + (slice(0, shape[axis]),)]
    if block[0] == 1:
        return op(values, part, out=values)
    for i in range(first, last):
        rows = slice(max(start, i * block[0]) - start, min(stop, (i + 1) * block[0]) - start)
        op(values[rows], part[i - first], out=values[rows])
    return values
