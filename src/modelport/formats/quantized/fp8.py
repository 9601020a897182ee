"""`quant_method: fp8` (DeepSeek-V3/R1, Kimi K2, Qwen3-FP8, ...; transformers' FineGrainedFP8).

Each float8 weight `W` is stored beside its inverse scale `W_scale_inv` (float32): one per
`weight_block_size` block (128x128 for the releases above), or one for the tensor; Mistral's own format
names it `qscale_weight` instead. The weight is `float32(W) * scale` over each block, the product
llama.cpp's converter and transformers compute. Activation scales serve fp8 matmul kernels and are dropped.
"""
from __future__ import annotations

from pathlib import Path

from ...core.bundle import TensorRef
from .parts import Quantization, as_float32, dequantized_ref, drop_activation_scales, needed, per_block

STORED = "float8 weights beside their weight_scale_inv"    # what it stores (named when a checkpoint holds none)
FLOAT8 = ("float8_e4m3fn", "float8_e5m2")


def scale_name(refs: dict[str, TensorRef], weight: str) -> str:
    mistral = weight.removesuffix("weight") + "qscale_weight"
    return mistral if mistral in refs else weight + "_scale_inv"


def scaled(name: str, weight: TensorRef, scale: TensorRef, block: tuple[int, ...]) -> TensorRef:
    """`weight` times its block scales, a row block at a time: rows [start, stop) need only the scale
    rows of the blocks they fall in."""
    import numpy as np

    def rows(start: int, stop: int):
        values = as_float32(weight.load_rows(start, stop))
        return per_block(values, scale, start, stop, block, weight.shape, np.multiply)
    return dequantized_ref(name, weight.shape, rows, weight.source)


def weight_block(block_size: object, shape: tuple[int, ...], scale_shape: tuple[int, ...]) -> tuple[int, ...]:
    """The block each scale covers, per axis of a weight: weight_block_size over the last axes (one
    expert at a time along a stack's first); without one, what the scale's shape implies (the whole
    tensor for one value, a row for one per row)."""
    if block_size and len(scale_shape) == len(shape):
        sizes = tuple(int(b) for b in block_size)          # type: ignore[union-attr]
        return (1,) * (len(shape) - len(sizes)) + sizes
    padded = tuple(scale_shape) + (1,) * (len(shape) - len(scale_shape))
    return tuple(-(-w // max(1, s)) for w, s in zip(shape, padded))


def read(refs: dict[str, TensorRef], settings: dict, config_path: Path) -> tuple[dict[str, TensorRef], Quantization]:
    refs, dropped = drop_activation_scales(refs)
    block_size = settings.get("weight_block_size")
    out = dict(refs)
    count = 0
    for name, ref in refs.items():
        if ref.dtype not in FLOAT8:
            continue
        scale = needed(refs, scale_name(refs, name), name, "the scale")
        out[name] = scaled(name, ref, scale, weight_block(block_size, ref.shape, scale.shape))
        del out[scale.name]
        count += 1
    block = "x".join(str(b) for b in block_size) if block_size else "per-tensor"
    return out, Quantization("fp8", 8, block, weights=count, dropped=dropped)
