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
    "q2_k_s": FT.MOSTLY_Q2_K_S, "iq1_s": FT.MOSTLY_IQ1_S, "iq1_m": FT.MOSTLY_IQ1_M, "iq2_xxs": FT.MOSTLY_IQ2_XXS,
    "iq2_xs": FT.MOSTLY_IQ2_XS, "iq2_s": FT.MOSTLY_IQ2_S, "iq2_m": FT.MOSTLY_IQ2_M, "iq3_xxs": FT.MOSTLY_IQ3_XXS,
    "iq3_xs": FT.MOSTLY_IQ3_XS, "iq3_s": FT.MOSTLY_IQ3_S, "iq3_m": FT.MOSTLY_IQ3_M, "iq4_nl": FT.MOSTLY_IQ4_NL,
    "iq4_xs": FT.MOSTLY_IQ4_XS, "tq1_0": FT.MOSTLY_TQ1_0, "tq2_0": FT.MOSTLY_TQ2_0,
}
DEFAULT_TYPE: dict[FT, Q] = {
    FT.ALL_F32: Q.F32, FT.MOSTLY_F16: Q.F16, FT.MOSTLY_BF16: Q.BF16, FT.MOSTLY_Q8_0: Q.Q8_0,
    FT.MOSTLY_Q4_0: Q.Q4_0, FT.MOSTLY_Q4_1: Q.Q4_1, FT.MOSTLY_Q5_0: Q.Q5_0, FT.MOSTLY_Q5_1: Q.Q5_1,
    FT.MOSTLY_Q2_K: Q.Q2_K, FT.MOSTLY_Q3_K_S: Q.Q3_K, FT.MOSTLY_Q3_K_M: Q.Q3_K, FT.MOSTLY_Q3_K_L: Q.Q3_K,
    FT.MOSTLY_Q4_K_S: Q.Q4_K, FT.MOSTLY_Q4_K_M: Q.Q4_K, FT.MOSTLY_Q5_K_S: Q.Q5_K, FT.MOSTLY_Q5_K_M: Q.Q5_K,
    FT.MOSTLY_Q6_K: Q.Q6_K, FT.MOSTLY_Q2_K_S: Q.Q2_K, FT.MOSTLY_IQ1_S: Q.IQ1_S, FT.MOSTLY_IQ1_M: Q.IQ1_M,
    FT.MOSTLY_IQ2_XXS: Q.IQ2_XXS, FT.MOSTLY_IQ2_XS: Q.IQ2_XS, FT.MOSTLY_IQ2_S: Q.IQ2_XS, FT.MOSTLY_IQ2_M: Q.IQ2_S,
    FT.MOSTLY_IQ3_XXS: Q.IQ3_XXS, FT.MOSTLY_IQ3_XS: Q.IQ3_S, FT.MOSTLY_IQ3_S: Q.IQ3_S, FT.MOSTLY_IQ3_M: Q.IQ3_S,
    FT.MOSTLY_IQ4_NL: Q.IQ4_NL, FT.MOSTLY_IQ4_XS: Q.IQ4_XS, FT.MOSTLY_TQ1_0: Q.TQ1_0, FT.MOSTLY_TQ2_0: Q.TQ2_0,
}
# file types whose every quantized tensor llama-quantize refuses to write without an importance matrix
# (tensor_requires_imatrix: these target types, and Q2_K inside a Q2_K_S file; never token_embd/output)
NEEDS_IMATRIX_TYPES = (Q.IQ1_S, Q.IQ1_M, Q.IQ2_XXS, Q.IQ2_XS, Q.IQ2_S, Q.IQ3_XXS)
FLOAT_TYPES = (Q.F32, Q.F16, Q.BF16)
# a type whose block does not divide a row falls back to one that does, as llama.cpp does
FALLBACK = {Q.Q2_K: Q.Q4_0, Q.Q3_K: Q.Q4_0, Q.Q4_K: Q.Q5_0, Q.Q5_K: Q.Q5_1, Q.Q6_K: Q.Q8_0, Q.TQ1_0: Q.Q4_0,
            Q.TQ2_0: Q.Q4_0, **{t: Q.IQ4_NL for t in (Q.IQ1_S, Q.IQ1_M, Q.IQ2_XXS, Q.IQ2_XS, Q.IQ2_S, Q.IQ3_XXS,
                                                      Q.IQ3_S, Q.IQ4_XS)}}
NEVER_QUANTIZED = ("_norm.weight", "ffn_gate_inp.weight", "attn_rel_b.weight")
NEVER_QUANTIZED_NAMES = ("position_embd.weight", "token_types.weight")
NEVER_QUANTIZED_PARTS = ("ssm_conv1d", "shortconv.conv.weight",    # state-space models' small conv kernels
                         "altup", "laurel", "per_layer_model_proj")   # Gemma 3n's small (or kept) matrices


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
    """Whether llama-quantize quantizes this tensor. It counts dimensions as ggml_n_dims does, leading 1s of
    the shape (trailing in GGML's order) left out: a (1, n) shared-expert gate is a vector and stays F32."""
    dims = len(shape) - next((i for i, n in enumerate(shape) if n != 1), len(shape))
    return (dims >= 2 and name.endswith("weight") and not name.endswith(NEVER_QUANTIZED)
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


def choose_types(tensors: dict[str, tuple[int, ...]], ftype: FT, model: ModelShape,
                 has_imatrix: bool = False) -> dict[str, Q]:
    """GGUF name -> type, for GGUF-ordered shapes (rows last, as torch stores them). Some mixes choose
    differently when an importance matrix is given (`has_imatrix`), as llama-quantize's do."""
    default = DEFAULT_TYPE[ftype]
    names = sorted(tensors, key=lambda n: (_layer(n), n))          # the order llama-quantize visits them
    state = _MixState(ftype, model, "output.weight" not in tensors, has_imatrix,
                      sum(category(n) in ("attn_v", "attn_qkv") for n in names))
    chosen: dict[str, Q] = {}
    for name in names:
        shape = tensors[name]
        if not allows_quantization(name, shape):
            chosen[name] = Q.F32
            continue
        qtype = default
        if default not in FLOAT_TYPES:
            qtype = _fallback(_mix(name, shape, default, state), shape[-1])
        chosen[name] = qtype
    return {n: chosen[n] for n in tensors}


def requires_imatrix(name: str, qtype: Q, ftype: FT) -> bool:
    """tensor_requires_imatrix (llama-quant.cpp): the types llama-quantize will not write blind."""
    if category(name) in ("output", "token_embd"):
        return False
    return qtype in NEEDS_IMATRIX_TYPES or (qtype == Q.Q2_K and ftype == FT.MOSTLY_Q2_K_S)


def _fallback(qtype: Q, row: int) -> Q:
    if qtype in FLOAT_TYPES or row % block_size(qtype) == 0:
        return qtype
    fallback = FALLBACK.get(qtype, qtype)
    return fallback if row % block_size(fallback) == 0 else Q.F16


@dataclass
class _MixState:
    """quantize_state_impl: what llama-quantize knows of the model, and its per-category counters."""

    ft: FT
    model: ModelShape
    tied: bool
    has_imatrix: bool
    n_attn_v: int
    i_attn_v: int = 0
    i_ffn_down: int = 0
    i_ffn_gate: int = 0
    i_ffn_up: int = 0

    def layer(self, counter: int, name: str) -> int:
        """layer_info: a MoE model's layer is read from the name (experts, shared experts and dense layers all
        count), a dense model's is the counter."""
        return _layer(name) if self.model.n_expert > 1 else counter


IQ2_AND_BELOW = (FT.MOSTLY_IQ2_XXS, FT.MOSTLY_IQ2_XS, FT.MOSTLY_IQ1_S, FT.MOSTLY_IQ2_S, FT.MOSTLY_IQ2_M,
                 FT.MOSTLY_IQ1_M)
# ftypes whose attn_output llama-quantize raises to Q5_K in an 8-expert model
EIGHT_EXPERT_ATTN_OUTPUT = (FT.MOSTLY_Q2_K, FT.MOSTLY_IQ3_XS, FT.MOSTLY_IQ3_XXS, FT.MOSTLY_Q3_K_S, FT.MOSTLY_Q3_K_M,
                            FT.MOSTLY_IQ4_NL, FT.MOSTLY_Q4_K_S, FT.MOSTLY_Q4_K_M, FT.MOSTLY_IQ3_S, FT.MOSTLY_IQ3_M,
                            FT.MOSTLY_IQ4_XS)


def _mix(name: str, shape: tuple[int, ...], qtype: Q, s: _MixState) -> Q:
    """llama_tensor_get_type_impl (llama-quant.cpp), branch for branch, for the file types modelport writes."""
    cat, ft, model = category(name), s.ft, s.model
    falcon = model.arch == "falcon"
    if cat == "output" or (s.tied and cat == "token_embd"):
        if falcon or shape[-1] % block_size(qtype) != 0:
            return Q.Q8_0
        if ft in IQ2_AND_BELOW or ft == FT.MOSTLY_IQ3_XXS:
            return Q.Q5_K
        return qtype if qtype == Q.Q8_0 else Q.Q6_K
    if cat == "token_embd":
        if ft in (FT.MOSTLY_IQ2_XXS, FT.MOSTLY_IQ2_XS, FT.MOSTLY_IQ1_S, FT.MOSTLY_IQ1_M):
            return Q.Q2_K
        if ft in (FT.MOSTLY_IQ2_S, FT.MOSTLY_IQ2_M, FT.MOSTLY_IQ3_XXS):
            return Q.IQ3_S
        if ft in (FT.MOSTLY_TQ1_0, FT.MOSTLY_TQ2_0):
            return Q.Q4_K
        return qtype
    if ft in IQ2_AND_BELOW:
        return _mix_iq2(cat, qtype, s)
    if cat in ("attn_v", "attn_qkv"):   # llama.cpp treats a fused qkv (and MLA's kv_b) as attn_v
        qtype = _attn_v(qtype, s)
        s.i_attn_v += 1
    elif cat == "attn_k":
        if model.n_expert == 8:
            qtype = Q.Q8_0
        elif ft == FT.MOSTLY_IQ3_XS:
            qtype = Q.IQ3_XXS
        elif ft == FT.MOSTLY_IQ3_XXS:
            qtype = Q.IQ2_S
    elif cat == "attn_q":
        qtype = {FT.MOSTLY_IQ3_XS: Q.IQ3_XXS, FT.MOSTLY_IQ3_XXS: Q.IQ2_S}.get(ft, qtype)
    elif cat == "ffn_down":
        qtype = _ffn_down(qtype, s.layer(s.i_ffn_down, name), s)
        s.i_ffn_down += 1
    elif cat == "attn_output":
        if falcon:
            qtype = Q.Q4_K if ft == FT.MOSTLY_Q3_K_L else qtype
        elif model.n_expert == 8:
            qtype = Q.Q5_K if ft in EIGHT_EXPERT_ATTN_OUTPUT else qtype
        else:
            qtype = {FT.MOSTLY_Q2_K: Q.Q3_K, FT.MOSTLY_IQ3_XXS: Q.IQ3_S, FT.MOSTLY_Q3_K_M: Q.Q4_K,
                     FT.MOSTLY_Q3_K_L: Q.Q5_K, FT.MOSTLY_IQ3_M: Q.Q4_K}.get(ft, qtype)
    elif cat in ("ffn_gate", "ffn_up"):
        counter = "i_ffn_gate" if cat == "ffn_gate" else "i_ffn_up"
        i, n = s.layer(getattr(s, counter), name), model.n_layer
        if ft == FT.MOSTLY_IQ3_XS and n // 8 <= i < 7 * n // 8:
            qtype = Q.IQ3_XXS
        setattr(s, counter, getattr(s, counter) + 1)
    return qtype


def _mix_iq2(cat: str, qtype: Q, s: _MixState) -> Q:
    """The 1- and 2-bit IQ mixes' own branch."""
    ft, model = s.ft, s.model
    iq2_s = ft in (FT.MOSTLY_IQ2_S, FT.MOSTLY_IQ2_M)
    if cat in ("attn_v", "attn_qkv"):
        qtype = Q.Q4_K if model.n_gqa >= 4 or model.n_expert >= 4 else (Q.IQ3_S if iq2_s else Q.Q2_K)
        s.i_attn_v += 1
    elif model.n_expert == 8 and cat == "attn_k":
        qtype = Q.Q4_K
    elif cat == "ffn_down":
        if s.i_ffn_down < model.n_layer // 8:
            qtype = Q.IQ3_S if iq2_s else Q.Q2_K
        s.i_ffn_down += 1
    elif cat == "attn_output":
        if model.n_expert == 8:
            qtype = Q.Q5_K
        elif ft in (FT.MOSTLY_IQ1_S, FT.MOSTLY_IQ1_M):
            qtype = Q.IQ2_XXS
        elif iq2_s:
            qtype = Q.IQ3_S
    return qtype


def _attn_v(qtype: Q, s: _MixState) -> Q:
    ft, model, i = s.ft, s.model, s.i_attn_v
    if ft == FT.MOSTLY_Q2_K:
        qtype = Q.Q4_K if model.n_gqa >= 4 else Q.Q3_K
    elif ft == FT.MOSTLY_Q2_K_S and model.n_gqa >= 4:
        qtype = Q.Q4_K
    elif ft == FT.MOSTLY_IQ3_XXS:
        qtype = Q.Q4_K if model.n_gqa >= 4 else (Q.IQ3_XXS if s.has_imatrix else Q.IQ3_S)
    elif ft in (FT.MOSTLY_IQ3_XS, FT.MOSTLY_IQ3_S) and model.n_gqa >= 4:
        qtype = Q.Q4_K
    elif ft == FT.MOSTLY_IQ3_M:
        qtype = Q.Q4_K
    elif ft == FT.MOSTLY_Q3_K_M:
        qtype = Q.Q5_K if i < 2 else Q.Q4_K
    elif ft == FT.MOSTLY_Q3_K_L:
        qtype = Q.Q5_K
    elif ft in (FT.MOSTLY_IQ4_NL, FT.MOSTLY_IQ4_XS) and model.n_gqa >= 4:
        qtype = Q.Q5_K
    elif ft in (FT.MOSTLY_Q4_K_M, FT.MOSTLY_Q5_K_M) and _more_bits(i, s.n_attn_v):
        qtype = Q.Q6_K
    elif ft == FT.MOSTLY_Q4_K_S and i < 4:
        qtype = Q.Q5_K
    if model.is_70b and qtype in (Q.Q3_K, Q.Q4_K):
        qtype = Q.Q5_K
    if model.n_expert == 8:
        qtype = Q.Q8_0
    return qtype


def _ffn_down(qtype: Q, i: int, s: _MixState) -> Q:
    ft, n, falcon = s.ft, s.model.n_layer, s.model.arch == "falcon"
    if ft == FT.MOSTLY_Q2_K:
        return Q.Q3_K
    if ft == FT.MOSTLY_Q2_K_S:
        return Q.Q4_K if i < n // 8 else qtype
    if ft == FT.MOSTLY_IQ3_XXS and not s.has_imatrix:
        return Q.Q4_K if i < n // 8 else Q.Q3_K
    if ft == FT.MOSTLY_Q3_K_M:
        return Q.Q5_K if i < n // 16 else (Q.Q4_K if not falcon or _more_bits(i, n) else Q.Q3_K)
    if ft == FT.MOSTLY_IQ3_M and (i < n // 8 or (s.model.n_expert == 8 and _more_bits(i, n))):
        return Q.Q4_K
    if ft == FT.MOSTLY_Q3_K_L:
        return Q.Q4_K if falcon else Q.Q5_K
    if ft == FT.MOSTLY_Q4_K_M:
        if falcon:
            return Q.Q6_K if i < n // 16 else (Q.Q5_K if _more_bits(i, n) else Q.Q4_K)
        return Q.Q6_K if _more_bits(i, n) else qtype
    if i < n // 8 and ft in (FT.MOSTLY_IQ4_NL, FT.MOSTLY_IQ4_XS) and not s.has_imatrix:
        return Q.Q5_K
    if ft == FT.MOSTLY_Q5_K_M and _more_bits(i, n):
        return Q.Q6_K
    if ft == FT.MOSTLY_Q4_K_S and not falcon and i < n // 8:
        return Q.Q5_K
    if ft in (FT.MOSTLY_Q4_0, FT.MOSTLY_Q5_0) and s.has_imatrix and i < n // 8:
        # llama.cpp's guard against the first ffn_down layers going wrong with an imatrix
        return Q.Q4_1 if ft == FT.MOSTLY_Q4_0 else Q.Q5_1
    return qtype
