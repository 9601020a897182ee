"""`quant_method: mxfp4` (gpt-oss): the experts' weights as OCP microscaling FP4.

An expert tensor `X` (transformers' `[experts, in, out]`) is stored transposed as `X_blocks` (uint8,
experts x out x in/32 x 16: two E2M1 values a byte, the even element in the low nibble) and
`X_scales` (uint8, experts x out x in/32: one E8M0 exponent, biased by 127, per 32 values). Each value
is its E2M1 number times 2^(scale - 127), exact in float32 (and in bfloat16), so the dequantized tensor
is exactly what transformers' `Mxfp4Config(dequantize=True)` loads. A block of rows is a few whole experts.

The same bits are GGML's MXFP4 block (its 4-bit codes index the same values, doubled, under a halved
scale) once the nibbles are reordered, so a GGUF keeps them as they are (`ggml_blocks`).
"""
from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from ...core.bundle import GGMLBlocks, TensorRef
from .parts import Quantization, dequantized_ref, needed

STORED = "*_blocks beside *_scales"    # what it stores (named when a checkpoint holds none)
E2M1 = (0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0)
GGML_TYPE = "MXFP4"


def values(blocks: "np.ndarray", scales: "np.ndarray") -> "np.ndarray":
    """(..., groups, 16) bytes and (..., groups) exponents -> (..., groups * 32) float32."""
    import numpy as np
    lut = np.array(E2M1, dtype=np.float32)
    pairs = np.stack((lut[blocks & 0x0F], lut[blocks >> 4]), axis=-1).reshape(*blocks.shape[:-1], 32)
    out = np.ldexp(pairs, scales.astype(np.int32)[..., None] - 127).astype(np.float32)
    return out.reshape(*blocks.shape[:-2], -1)


def ggml_blocks(blocks: "np.ndarray", scales: "np.ndarray") -> "np.ndarray":
    """The same values as GGML MXFP4 blocks: per 32 values, the exponent byte and then 16 bytes whose
    low nibble is element j and high nibble element j + 16 (llama.cpp's converter repacks them so)."""
    import numpy as np
    pairs = np.stack((blocks & 0x0F, blocks >> 4), axis=-1).reshape(*blocks.shape[:-1], 32)
    packed = pairs[..., :16] | (pairs[..., 16:] << 4)
    return np.concatenate((scales[..., None], packed.astype(np.uint8)), axis=-1).reshape(*scales.shape[:-1], -1)


def dequantized(name: str, blocks: TensorRef, scales: TensorRef) -> TensorRef:
    experts, out, groups, _ = blocks.shape

    def rows(start: int, stop: int):
        import numpy as np
        dense = values(blocks.load_rows(start, stop), scales.load_rows(start, stop))
        return np.ascontiguousarray(dense.transpose(0, 2, 1))
    def stored(start: int, stop: int):
        return ggml_blocks(blocks.load_rows(start, stop), scales.load_rows(start, stop))
    ref = dequantized_ref(name, (experts, groups * 32, out), rows, blocks.source)
    return replace(ref, ggml=GGMLBlocks(GGML_TYPE, stored))


def read(refs: dict[str, TensorRef], settings: dict, config_path: Path) -> tuple[dict[str, TensorRef], Quantization]:
    out = dict(refs)
    count = 0
    for name, ref in refs.items():
        if not name.endswith("_blocks"):
            continue
        base = name.removesuffix("_blocks")
        scales = needed(refs, base + "_scales", name, "the scales")
        out[base] = dequantized(base, ref, scales)
        del out[name], out[scales.name]
        count += 1
    return out, Quantization("mxfp4", 4, "32 (E8M0 scales)", weights=count)
