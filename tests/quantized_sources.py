"""Quantized checkpoints made from a tiny model, by code that follows each format's published layout.

`quantize(src, out, variant)` copies an HF folder and stores its linear layers' weights the way one
method saves them (names, dtypes, packing, config), so a reader sees what it would see in a release:
- fp8 (transformers' FineGrainedFP8, DeepSeek-V3's layout): float8_e4m3fn weights and float32
  `weight_scale_inv`, one per block of `weight_block_size` or one per tensor; Mistral's `qscale_weight`;
- compressed-tensors (llm-compressor's save format): int8/float8 weights with `weight_scale` per
  channel or block; `pack-quantized` int32 words of 4 or 8 bit values, group scales, `weight_shape`
  and, when asymmetric, zero points packed down the rows;
- gptq (AutoGPTQ's layout): `qweight`/`qzeros`/`scales`/`g_idx`, with and without desc_act;
- mxfp4 (gpt-oss): the experts as `*_blocks` (E2M1 pairs) and `*_scales` (E8M0 exponents).
"""
from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

LINEAR = re.compile(r"\.(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)\.weight$")
FP8_MAX = 448.0
BLOCK = [32, 32]            # fp8: transformers derives the block from the scale grid, so blocks must divide rows
PARTIAL = [48, 48]          # compressed-tensors: partial blocks at the tiny model's 64 and 128 wide edges
GROUP = 32
E2M1 = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -1.0, -1.5, -2.0, -3.0, -4.0, -6.0])

VARIANTS = ("fp8-block", "fp8-tensor", "fp8-mistral", "ct-int8-channel", "ct-fp8-block", "ct-naive-block",
            "ct-pack4", "ct-pack4-zp", "ct-pack8", "gptq-4", "gptq-4-desc-act", "gptq-8")


def block_scales(w: torch.Tensor, block: list[int], top: float) -> torch.Tensor:
    """amax / top over each block (partial blocks at the edges), as float32."""
    rows, cols = w.shape
    br, bc = block
    padded = torch.zeros(-(-rows // br) * br, -(-cols // bc) * bc)
    padded[:rows, :cols] = w.abs()
    amax = padded.reshape(padded.shape[0] // br, br, padded.shape[1] // bc, bc).amax(dim=(1, 3))
    return (amax.clamp(min=1e-8) / top).float()


def expand(scale: torch.Tensor, block: list[int], shape: torch.Size) -> torch.Tensor:
    return scale.repeat_interleave(block[0], 0).repeat_interleave(block[1], 1)[:shape[0], :shape[1]]


def fp8(w: torch.Tensor, block: list[int] | None) -> tuple[torch.Tensor, torch.Tensor]:
    scale = block_scales(w, block, FP8_MAX) if block else (w.abs().max() / FP8_MAX).float().reshape(())
    full = expand(scale, block, w.shape) if block else scale
    return (w / full).clamp(-FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn), scale


def int_quant(w: torch.Tensor, block: list[int], bits: int, zero: bool) -> tuple[torch.Tensor, ...]:
    """Signed (symmetric) or unsigned-with-zero-point (asymmetric) integers, scales and zero points per block."""
    if zero:
        top, bottom = block_scales(w.clamp(min=0), block, 1.0), block_scales(-w.clamp(max=0), block, 1.0)
        scale = ((top + bottom) / (2 ** bits - 1)).clamp(min=1e-8)
        zp = torch.round(bottom / scale).clamp(0, 2 ** bits - 1)
        q = torch.round(w / expand(scale, block, w.shape)) + expand(zp, block, w.shape)
        return q.clamp(0, 2 ** bits - 1).to(torch.int32), scale, zp.to(torch.int32)
    top = 2 ** (bits - 1) - 1
    scale = block_scales(w, block, top)
    q = torch.round(w / expand(scale, block, w.shape)).clamp(-top - 1, top).to(torch.int32)
    return q, scale, None


def pack_rows(values: torch.Tensor, bits: int) -> torch.Tensor:
    """Unsigned values (rows, n) -> int32 words along each row, the first value in the lowest bits."""
    per = 32 // bits
    rows, n = values.shape
    padded = torch.zeros(rows, -(-n // per) * per, dtype=torch.int64)
    padded[:, :n] = values.to(torch.int64)
    words = torch.zeros(rows, padded.shape[1] // per, dtype=torch.int64)
    for k in range(per):
        words |= padded[:, k::per] << (bits * k)
    return torch.where(words >= 2 ** 31, words - 2 ** 32, words).to(torch.int32)     # the same bits, signed


def gptq(w: torch.Tensor, bits: int, desc_act: bool, seed: int) -> dict[str, torch.Tensor]:
    """AutoGPTQ's tensors for w (out, in): qweight packs inputs down the rows, qzeros packs outputs,
    zeros stored one less than they are; desc_act visits the inputs in a random order."""
    out_f, in_f = w.shape
    groups = in_f // GROUP
    order = torch.randperm(in_f, generator=torch.Generator().manual_seed(seed)) if desc_act else torch.arange(in_f)
    g_idx = torch.empty(in_f, dtype=torch.int32)
    g_idx[order] = (torch.arange(in_f) // GROUP).to(torch.int32)
    maxq = 2 ** bits - 1
    scales = torch.zeros(groups, out_f)
    zeros = torch.zeros(groups, out_f)
    for g in range(groups):
        cols = w[:, g_idx == g]
        lo, hi = cols.min(dim=1).values.clamp(max=0), cols.max(dim=1).values.clamp(min=0)
        scales[g] = ((hi - lo) / maxq).clamp(min=1e-8)
        zeros[g] = torch.round(-lo / scales[g]).clamp(1, maxq)      # stored less one: never below 1
    scales = scales.half()
    s, z = scales.float()[g_idx.long()].T, zeros[g_idx.long()].T
    q = (torch.round(w / s) + z).clamp(0, maxq).to(torch.int32)               # (out, in)
    return {"qweight": pack_rows(q, bits).T.contiguous(), "qzeros": pack_rows((zeros - 1).to(torch.int32), bits),
            "scales": scales, "g_idx": g_idx}


def quantize(src: Path, out: Path, variant: str) -> Path:
    shutil.copytree(src, out)
    for f in out.glob("*.safetensors*"):
        f.unlink()
    tensors = load_file(src / "model.safetensors")
    stored: dict[str, torch.Tensor] = {}
    for index, (name, w) in enumerate(tensors.items()):
        if not LINEAR.search(name):
            stored[name] = w
            continue
        base = name.removesuffix(".weight")
        w = w.float()
        if variant.startswith("fp8"):
            q, scale = fp8(w, BLOCK if variant == "fp8-block" else None)
            stored[name] = q
            if variant == "fp8-mistral":
                stored[base + ".qscale_weight"] = scale
                stored[base + ".qscale_act"] = torch.tensor(1.0)
            else:
                stored[name + "_scale_inv"] = scale
        elif variant in ("ct-int8-channel", "ct-naive-block"):
            block = [1, w.shape[1]] if variant == "ct-int8-channel" else PARTIAL
            q, scale, _ = int_quant(w, block, 8, zero=False)
            stored[name], stored[name + "_scale"] = q.to(torch.int8), scale.bfloat16()
        elif variant == "ct-fp8-block":
            q, scale = fp8(w, PARTIAL)
            stored[name], stored[name + "_scale"] = q, scale
        elif variant.startswith("ct-pack"):
            bits = 8 if variant == "ct-pack8" else 4
            q, scale, zp = int_quant(w, [1, GROUP], bits, zero=variant.endswith("zp"))
            stored[name + "_packed"] = pack_rows(q if zp is not None else q + 2 ** (bits - 1), bits)
            stored[name + "_scale"] = scale.bfloat16()
            stored[name + "_shape"] = torch.tensor(list(w.shape), dtype=torch.int64)
            if zp is not None:
                stored[name + "_zero_point"] = pack_rows(zp.T.contiguous(), bits).T.contiguous()
        elif variant.startswith("gptq"):
            parts = gptq(w, 8 if variant == "gptq-8" else 4, variant.endswith("desc-act"), index)
            stored.update({f"{base}.{k}": v for k, v in parts.items()})
        else:
            raise ValueError(variant)
    save_file({k: v.contiguous() for k, v in stored.items()}, out / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((out / "config.json").read_text())
    config["quantization_config"] = quantization_config(variant)
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out


def quantization_config(variant: str) -> dict:
    if variant.startswith("fp8"):
        return {"quant_method": "fp8", "activation_scheme": "dynamic",
                "weight_block_size": BLOCK if variant == "fp8-block" else None}
    if variant.startswith("gptq"):
        return {"quant_method": "gptq", "bits": 8 if variant == "gptq-8" else 4, "group_size": GROUP,
                "desc_act": variant.endswith("desc-act"), "sym": False, "checkpoint_format": "gptq"}
    bits = 8 if variant in ("ct-int8-channel", "ct-fp8-block", "ct-naive-block", "ct-pack8") else 4
    fmt, weights = {
        "ct-int8-channel": ("int-quantized", {"type": "int", "strategy": "channel", "symmetric": True}),
        "ct-naive-block": ("naive-quantized", {"type": "int", "strategy": "block", "block_structure": PARTIAL,
                                               "symmetric": True}),
        "ct-fp8-block": ("float-quantized", {"type": "float", "strategy": "block", "block_structure": PARTIAL,
                                             "symmetric": True}),
        "ct-pack4": ("pack-quantized", {"type": "int", "strategy": "group", "group_size": GROUP, "symmetric": True}),
        "ct-pack4-zp": ("pack-quantized", {"type": "int", "strategy": "group", "group_size": GROUP,
                                           "symmetric": False}),
        "ct-pack8": ("pack-quantized", {"type": "int", "strategy": "group", "group_size": GROUP, "symmetric": True}),
    }[variant]
    return {"quant_method": "compressed-tensors", "format": fmt, "quantization_status": "compressed",
            "config_groups": {"group_0": {"targets": ["Linear"], "weights": {"num_bits": bits, "dynamic": False,
                                                                             **weights}}},
            "ignore": ["lm_head"]}


def mxfp4_experts(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """gpt-oss's (experts, in, out) tensor -> `_blocks` (experts, out, in/32, 16), `_scales` (experts, out, in/32)."""
    t = w.float().transpose(1, 2)                                  # (experts, out, in)
    groups = t.reshape(*t.shape[:-1], -1, 32)
    amax = groups.abs().amax(dim=-1, keepdim=True).clamp(min=2.0 ** -120)
    exponent = torch.floor(torch.log2(amax)) - 2                   # the largest value lands in [4, 8): codes up to 6
    codes = (groups / torch.exp2(exponent)).unsqueeze(-1).sub(E2M1).abs().argmin(dim=-1).to(torch.uint8)
    blocks = codes[..., 0::2] | (codes[..., 1::2] << 4)
    return blocks.contiguous(), (exponent.squeeze(-1) + 127).to(torch.uint8).contiguous()


def quantize_mxfp4(src: Path, out: Path) -> Path:
    shutil.copytree(src, out)
    for f in out.glob("*.safetensors*"):
        f.unlink()
    stored = {}
    for name, w in load_file(src / "model.safetensors").items():
        if name.endswith((".experts.gate_up_proj", ".experts.down_proj")):
            stored[name + "_blocks"], stored[name + "_scales"] = mxfp4_experts(w)
        else:
            stored[name] = w
    save_file(stored, out / "model.safetensors", metadata={"format": "pt"})
    config = json.loads((out / "config.json").read_text())
    config["quantization_config"] = {"quant_method": "mxfp4", "modules_to_not_convert": [
        "model.layers.*.self_attn", "model.layers.*.mlp.router", "model.embed_tokens", "lm_head"]}
    (out / "config.json").write_text(json.dumps(config, indent=2))
    return out
