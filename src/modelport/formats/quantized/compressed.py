"""`quant_method: compressed-tensors` (llm-compressor's "w8a8", "w4a16", "fp8-dynamic" releases).

One config group describes the weights: `num_bits`, `type` (int or float), `strategy` (tensor,
channel, group, block) with its `group_size` or `block_structure`, and whether zero points are kept.
The stored layout is the checkpoint's `format`:
- `float-quantized`, `int-quantized`, `naive-quantized`: `W` as float8 or int8, with `W_scale` (and
  `W_zero_point` when asymmetric); the weight is (W - zero point) * scale over each block;
- `pack-quantized`: `W_packed`, int32 words holding 32/num_bits values along each row (the first
  in the lowest bits), stored offset by 2^(num_bits-1) unless zero points (`W_zero_point`, packed the
  same way down the rows) are kept; `W_scale` per group of `group_size` columns; `W_shape` the true shape.
Several config groups (mixed precision) and any other format are refused by name.
"""
from __future__ import annotations

from pathlib import Path

from ...core.bundle import TensorRef
from ...core.errors import ModelConversionError
from .parts import Quantization, as_float32, dequantized_ref, drop_activation_scales, needed, per_block

STORED = "weights beside their weight_scale, or weight_packed"    # what it stores (named when a checkpoint holds none)
UNQUANTIZED = ("float32", "float16", "bfloat16", "float64")     # layers the config's `ignore` list keeps (lm_head)
SCALED = ("float-quantized", "int-quantized", "naive-quantized")
PACKED = "pack-quantized"


def weight_scheme(settings: dict, where: Path) -> tuple[str, dict]:
    """The checkpoint's format and its one group's weight settings; anything else refused by name."""
    fmt = settings.get("format")
    groups = settings.get("config_groups")
    count = len(groups) if isinstance(groups, dict) else 0
    if count != 1:
        raise ModelConversionError(f"compressed-tensors with {count} config groups is not supported (modelport reads "
                                   "one group of weights)", where)
    group = next(iter(groups.values()))
    weights = group.get("weights") if isinstance(group, dict) else None
    if fmt not in (*SCALED, PACKED) or not isinstance(weights, dict):
        raise ModelConversionError(f"compressed-tensors format {fmt!r} is not supported (modelport reads "
                                   f"{', '.join((*SCALED, PACKED))})", where)
    if weights.get("actorder"):
        raise ModelConversionError(f"compressed-tensors weights quantized with actorder {weights['actorder']!r} "
                                   "(a weight_g_idx per layer) are not supported", where)
    return fmt, weights


def block_of(weights: dict, shape: tuple[int, ...], where: Path) -> tuple[tuple[int, ...], str]:
    """Elements per scale along each axis of a 2-D weight, and how `inspect` names it."""
    strategy = weights.get("strategy")
    if strategy == "tensor":
        return shape, "per-tensor"
    if strategy == "channel":
        return (1, shape[1]), "channel"
    if strategy == "group" and isinstance(weights.get("group_size"), int):
        return (1, weights["group_size"]), f"group {weights['group_size']}"
    if strategy == "block" and isinstance(weights.get("block_structure"), list):
        rows, cols = (int(b) for b in weights["block_structure"])
        return (rows, cols), f"{rows}x{cols}"
    raise ModelConversionError(f"compressed-tensors weight strategy {strategy!r} (group_size "
                               f"{weights.get('group_size')!r}, block_structure {weights.get('block_structure')!r}) "
                               "is not supported (modelport reads tensor, channel, group and block)", where)


def scaled(name: str, weight: TensorRef, scale: TensorRef, zero: TensorRef | None, block: tuple[int, ...]) -> TensorRef:
    import numpy as np

    def rows(start: int, stop: int):
        q = as_float32(weight.load_rows(start, stop))
        if zero is not None:
            per_block(q, zero, start, stop, block, weight.shape, np.subtract)
        return per_block(q, scale, start, stop, block, weight.shape, np.multiply)
    return dequantized_ref(name, weight.shape, rows, weight.source)


def unpack(words: "np.ndarray", bits: int) -> "np.ndarray":
    """int32 words -> their 32/bits unsigned values each, the lowest bits first, along the last axis."""
    import numpy as np
    shifts = np.arange(0, 32 - (bits - 1), bits, dtype=np.int32)
    values = (words[..., None] >> shifts) & ((1 << bits) - 1)
    return values.reshape(*words.shape[:-1], -1)


def packed(name: str, weight: TensorRef, scale: TensorRef, zero: TensorRef | None, shape: tuple[int, int],
           bits: int, group: int) -> TensorRef:
    """Rows of a pack-quantized weight: its own packed rows, its scale rows, and the packed rows of zero
    points that hold them (32/bits rows to a word)."""
    import numpy as np
    per_word = 32 // bits

    def rows(start: int, stop: int):
        values = unpack(weight.load_rows(start, stop), bits)[:, :shape[1]]
        if zero is None:
            offset = np.int32(1 << (bits - 1))
        else:
            first = start // per_word
            words = zero.load_rows(first, -(-stop // per_word))
            offset = unpack(words.T, bits).T[start - first * per_word:stop - first * per_word, :, None]
        grouped = (values.reshape(stop - start, -1, group) - offset).astype(np.float32)
        return (grouped * scale.load_rows(start, stop).astype(np.float32)[..., None]).reshape(stop - start, shape[1])
    return dequantized_ref(name, shape, rows, weight.source)


def read(refs: dict[str, TensorRef], settings: dict, config_path: Path) -> tuple[dict[str, TensorRef], Quantization]:
    fmt, weights = weight_scheme(settings, config_path)
    bits = int(weights.get("num_bits") or 8)
    refs, dropped = drop_activation_scales(refs)
    out = dict(refs)
    count, block_name = 0, ""
    suffix = "_packed" if fmt == PACKED else ""
    for name, ref in refs.items():
        if fmt == PACKED:
            if not name.endswith(".weight_packed"):
                continue
        elif not name.endswith(".weight") or (name + "_scale" not in refs and ref.dtype in UNQUANTIZED):
            continue
        base = name.removesuffix(suffix)
        scale = needed(refs, base + "_scale", name, "the scale")
        zero = refs.get(base + "_zero_point")
        if fmt == PACKED:
            shape_ref = needed(refs, base + "_shape", name, "the shape")
            shape = tuple(int(d) for d in shape_ref.load().reshape(-1))
            block, block_name = block_of(weights, shape, config_path)
            if weights.get("strategy") not in ("group", "channel"):
                raise ModelConversionError(f"compressed-tensors pack-quantized weights with strategy "
                                           f"{weights.get('strategy')!r} are not supported (group, channel)",
                                           config_path)
            out[base] = packed(base, ref, scale, zero, shape, bits, block[1])      # type: ignore[arg-type]
            del out[name], out[shape_ref.name]
        else:
            block, block_name = block_of(weights, ref.shape, config_path)
            out[base] = scaled(base, ref, scale, zero, block)
        del out[scale.name]
        if zero is not None:
            del out[zero.name]
        count += 1
    return out, Quantization("compressed-tensors", bits, block_name or "none", format=fmt, weights=count,
                             dropped=dropped)
