"""Which GGML type each tensor gets for a llama.cpp file type (`--quant`).

The K-quant "mixes" (Q4_K_M and friends) are not one type: llama-quantize gives sensitive tensors
(attn_v, ffn_down in certain layers, the output head) more bits. These rules restate its behaviour
(read from the llama-quant.cpp of the llama.cpp that llama-cpp-python builds: MoE and Falcon cases
included) so a one-step conversion makes the same per-tensor choices as
converting to F32 and then running llama-quantize; tests compare the two file by file.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

from gguf import GGML_QUANT_SIZES
from gguf import GGMLQuantizationType as Q
from gguf import LlamaFileType as FT

from ...core.errors import UsageError

FILE_TYPES: dict[str, FT] = {
    "f32": FT.ALL_F32, "f16": FT.MOSTLY_F16, "bf16": FT.MOSTLY_BF16, "q8_0": FT.MOSTLY_Q8_0,
    "q4_0": FT.MOSTLY_Q4_0, "q4_1": FT.MOSTLY_Q4_1, "q5_0": FT.MOSTLY_Q5_0, "q5_1": FT.MOSTLY_Q5_1,
    "q2_k": FT.MOSTLY_Q2_K, "q3_k_s": FT.MOSTLY_Q3_K_S, "q3_k_m": FT.MOSTLY_Q3_K_M, "q3_k_l": FT.MOSTLY_Q3_K_L,
    "q4_k_s": FT.MOSTLY_Q4_K_S, "q4_k_m": FT.MOSTLY_Q4_K_M, "q5_k_s": FT.MOSTLY_Q5_K_S,
    "q5_k_m": FT.MOSTLY_Q5_K_M, "q6_k": FT.MOSTLY_Q6_K,
}
DEFAULT_TYPE: dict[FT, Q] = {
    FT.ALL_F32: Q.F32, FT.MOSTLY_F16: Q.F16, FT.MOSTLY_BF16: Q.BF16, FT.MOSTLY_Q8_0: Q.Q8_0,
    FT.MOSTLY_Q4_0: Q.Q4_0, FT.MOSTLY_Q4_1: Q.Q4_1, FT.MOSTLY_Q5_0: Q.Q5_0, FT.MOSTLY_Q5_1: Q.Q5_1,
    FT.MOSTLY_Q2_K: Q.Q2_K, FT.MOSTLY_Q3_K_S: Q.Q3_K, FT.MOSTLY_Q3_K_M: Q.Q3_K, FT.MOSTLY_Q3_K_L: Q.Q3_K,
    FT.MOSTLY_Q4_K_S: Q.Q4_K, FT.MOSTLY_Q4_K_M: Q.Q4_K, FT.MOSTLY_Q5_K_S: Q.Q5_K, FT.MOSTLY_Q5_K_M: Q.Q5_K,
    FT.MOSTLY_Q6_K: Q.Q6_K,
}
FLOAT_TYPES = (Q.F32, Q.F16, Q.BF16)
# a type whose block does not divide a row falls back to one that does, as llama.cpp does
FALLBACK = {Q.Q2_K: Q.Q4_0, Q.Q3_K: Q.Q4_0, Q.Q4_K: Q.Q5_0, Q.Q5_K: Q.Q5_1, Q.Q6_K: Q.Q8_0}
NEVER_QUANTIZED = ("_norm.weight", "ffn_gate_inp.weight", "attn_rel_b.weight")
NEVER_QUANTIZED_NAMES = ("position_embd.weight", "token_types.weight")
NEVER_QUANTIZED_PARTS = ("ssm_conv1d", "shortconv.conv.weight")    # state-space models' small conv kernels


DTYPE_QUANT = {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}


def asked_quant(quant: str | None, dtype: str | None) -> str | None:
    """The file type the user asked for: --quant, else the one --dtype names, else None (the writer's default)."""
    return quant.lower() if quant else DTYPE_QUANT.get(dtype or "")


def file_type(name: str) -> FT:
    try:
        return FILE_TYPES[name.lower()]
    except KeyError:
        raise UsageError(f"unknown --quant {name!r}; choose one of {', '.join(FILE_TYPES)}") from None


def block_size(qtype: Q) -> int:
    return GGML_QUANT_SIZES[qtype][0]


def nbytes(qtype: Q, shape: tuple[int, ...]) -> int:
    block, size = GGML_QUANT_SIZES[qtype]
    n = 1
    for d in shape:
        n *= d
    return n // block * size


def category(name: str) -> str:
    if name == "output.weight":
        return "output"
    if name in ("token_embd.weight", "per_layer_token_embd.weight"):
        return "token_embd"
    for needle, cat in (("attn_qkv.weight", "attn_qkv"), ("attn_kv_b.weight", "attn_v"), ("attn_v.weight", "attn_v"),
                        ("attn_k.weight", "attn_k"), ("attn_q.weight", "attn_q"),
                        ("attn_output.weight", "attn_output"), ("ffn_up", "ffn_up"), ("ffn_gate", "ffn_gate"),
                        ("ffn_down", "ffn_down")):
        if needle in name:
            return cat
    return "other"


def allows_quantization(name: str, shape: tuple[int, ...]) -> bool:
    return (len(shape) >= 2 and name.endswith("weight") and not name.endswith(NEVER_QUANTIZED)
            and name not in NEVER_QUANTIZED_NAMES and not any(part in name for part in NEVER_QUANTIZED_PARTS))


def _more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


@dataclass(frozen=True)
class ModelShape:
    arch: str        # gguf arch name, e.g. "llama"
    n_layer: int
    n_head: int
    n_head_kv: int
    n_expert: int = 0

    @property
    def n_gqa(self) -> int:
        return self.n_head // max(1, self.n_head_kv)

    @property
    def is_70b(self) -> bool:
        return self.arch == "llama" and self.n_layer == 80 and self.n_head != self.n_head_kv


def _layer(name: str) -> int:
    match = re.match(r"blk\.(\d+)\.", name)
    return int(match.group(1)) if match else -1


def choose_types(tensors: dict[str, tuple[int, ...]], ftype: FT, model: ModelShape) -> dict[str, Q]:
    """GGUF name -> type, for GGUF-ordered shapes (rows last, as torch stores them)."""
    default = DEFAULT_TYPE[ftype]
    names = sorted(tensors, key=lambda n: (_layer(n), n))          # the order llama-quantize visits them
    tied = "output.weight" not in tensors
    n_attn_v = sum(category(n) in ("attn_v", "attn_qkv") for n in names)
    counters = {"attn_v": 0, "ffn_down": 0}
    chosen: dict[str, Q] = {}
    for name in names:
        shape = tensors[name]
        if not allows_quantization(name, shape):
            chosen[name] = Q.F32
            continue
        qtype = default
        if default not in FLOAT_TYPES:
            qtype = _mix(name, shape, ftype, default, model, tied, n_attn_v, counters)
            qtype = _fallback(qtype, shape[-1])
        chosen[name] = qtype
    return {n: chosen[n] for n in tensors}


def _fallback(qtype: Q, row: int) -> Q:
    if qtype in FLOAT_TYPES or row % block_size(qtype) == 0:
        return qtype
    fallback = FALLBACK.get(qtype, qtype)
    return fallback if row % block_size(fallback) == 0 else Q.F16


# ftypes whose attn_output llama-quantize raises to Q5_K in an 8-expert model
EIGHT_EXPERT_ATTN_OUTPUT = (FT.MOSTLY_Q2_K, FT.MOSTLY_Q3_K_S, FT.MOSTLY_Q3_K_M, FT.MOSTLY_Q4_K_S, FT.MOSTLY_Q4_K_M)


def _mix(name: str, shape: tuple[int, ...], ft: FT, qtype: Q, model: ModelShape, tied: bool,
         n_attn_v: int, counters: dict[str, int]) -> Q:
    """llama_tensor_get_type_impl (llama-quant.cpp) for the file types modelport writes."""
    cat = category(name)
    falcon = model.arch == "falcon"
    if cat == "output" or (tied and cat == "token_embd"):
        if falcon or shape[-1] % block_size(qtype) != 0:
            return Q.Q8_0
        return qtype if qtype == Q.Q8_0 else Q.Q6_K
    if cat in ("attn_v", "attn_qkv"):   # llama.cpp treats a fused qkv as attn_v (its own branch is unreachable)
        i = counters["attn_v"]
        if ft == FT.MOSTLY_Q2_K:
            qtype = Q.Q4_K if model.n_gqa >= 4 else Q.Q3_K
        elif ft == FT.MOSTLY_Q3_K_M:
            qtype = Q.Q5_K if i < 2 else Q.Q4_K
        elif ft == FT.MOSTLY_Q3_K_L:
            qtype = Q.Q5_K
        elif ft in (FT.MOSTLY_Q4_K_M, FT.MOSTLY_Q5_K_M) and _more_bits(i, n_attn_v):
            qtype = Q.Q6_K
        elif ft == FT.MOSTLY_Q4_K_S and i < 4:
            qtype = Q.Q5_K
        if model.is_70b and qtype in (Q.Q3_K, Q.Q4_K):
            qtype = Q.Q5_K
        if model.n_expert == 8:
            qtype = Q.Q8_0
        counters["attn_v"] += 1
    elif cat == "attn_k":
        if model.n_expert == 8:
            qtype = Q.Q8_0
    elif cat == "ffn_down":
        # a MoE model's layer is read from the name (its experts, shared experts and dense layers all count)
        i = _layer(name) if model.n_expert > 1 else counters["ffn_down"]
        n = model.n_layer
        if ft == FT.MOSTLY_Q2_K:
            qtype = Q.Q3_K
        elif ft == FT.MOSTLY_Q3_K_M:
            qtype = Q.Q5_K if i < n // 16 else (Q.Q4_K if not falcon or _more_bits(i, n) else Q.Q3_K)
        elif ft == FT.MOSTLY_Q3_K_L:
            qtype = Q.Q4_K if falcon else Q.Q5_K
        elif ft == FT.MOSTLY_Q4_K_M:
            if falcon:
                qtype = Q.Q6_K if i < n // 16 else (Q.Q5_K if _more_bits(i, n) else Q.Q4_K)
            elif _more_bits(i, n):
                qtype = Q.Q6_K
        elif ft == FT.MOSTLY_Q5_K_M and _more_bits(i, n):
            qtype = Q.Q6_K
        elif ft == FT.MOSTLY_Q4_K_S and not falcon and i < n // 8:
            qtype = Q.Q5_K
        counters["ffn_down"] += 1
    elif cat == "attn_output":
        if falcon:
            qtype = Q.Q4_K if ft == FT.MOSTLY_Q3_K_L else qtype
        elif model.n_expert == 8:
            qtype = Q.Q5_K if ft in EIGHT_EXPERT_ATTN_OUTPUT else qtype
        else:
            qtype = {FT.MOSTLY_Q2_K: Q.Q3_K, FT.MOSTLY_Q3_K_M: Q.Q4_K, FT.MOSTLY_Q3_K_L: Q.Q5_K}.get(ft, qtype)
    return qtype
