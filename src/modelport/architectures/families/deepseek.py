"""DeepSeek-V2 and V3: multi-head latent attention (Q and KV through low-rank projections, a shared
rope key) and, after `first_k_dense_replace` dense layers, routed SwiGLU experts with shared experts;
V3 routes by sigmoid scores with a selection bias inside groups of experts.

llama.cpp runs MLA absorbed, so `kv_b_proj` (per head: k's no-rope part over v) is cut into
`attn_k_b` (transposed per head) and `attn_v_b`, and the model is written as one KV head whose keys
are kv_lora_rank + rope wide. Its rope is interleaved, as llama.cpp's is: no permutation.
"""
from dataclasses import replace

from ..gguf_mapping import TEXT_KEYS, GGUFMapping, Key, Part
from ..registry import ArchitectureSpec, register_architecture
from ..rules import Transpose
from ..tensors import linear, norm, only, t
from .llama import ATTENTION_BIAS as BIAS
from .llama import LAYER_NORMS, MLP_BIAS, TINY, decoder, swiglu
from .moe import GROUP_KEYS, MOE_KEYS, NO_EXPERT_ONNX, SELECTION_BIAS, experts, shared_expert

A = "model.layers.{L}.self_attn"
P = "model.layers.{L}.mlp"
Q_LORA = "get('q_lora_rank') is not None"
QK = "qk_nope_head_dim + qk_rope_head_dim"
MOE = "L >= get('first_k_dense_replace', 0)"


# multi-head latent attention's tensors (Kimi Linear's full-attention layers have them too)
MLA = (
    *only(Q_LORA, [*linear(f"{A}.q_a_proj", "q_lora_rank", "hidden", BIAS), *norm(f"{A}.q_a_layernorm", "q_lora_rank"),
                   *linear(f"{A}.q_b_proj", f"heads * ({QK})", "q_lora_rank")]),
    *only(f"not ({Q_LORA})", linear(f"{A}.q_proj", f"heads * ({QK})", "hidden")),
    *linear(f"{A}.kv_a_proj_with_mqa", "kv_lora_rank + qk_rope_head_dim", "hidden", BIAS),
    *norm(f"{A}.kv_a_layernorm", "kv_lora_rank"),
    *linear(f"{A}.kv_b_proj", "heads * (qk_nope_head_dim + v_head_dim)", "kv_lora_rank"),
    *linear(f"{A}.o_proj", "hidden", "heads * v_head_dim", BIAS),
)


def layer(selection_bias: bool, mlp_bias: bool | str) -> tuple:
    return (
        *MLA,
        *only(MOE, [*experts(P), *([t(f"{P}.gate.e_score_correction_bias", "experts")] if selection_bias else []),
                    *shared_expert(P, "expert_ffn * shared_experts", "shared_experts", bias=mlp_bias)]),
        *only(f"not ({MOE})", swiglu(bias=mlp_bias)),
        *LAYER_NORMS)


KV_B = (Part("blk.{L}.attn_k_b.weight", 0, 2, axis=1, sizes=("qk_nope_head_dim", "v_head_dim"), groups="heads",
             rules=(Transpose(()),)),
        Part("blk.{L}.attn_v_b.weight", 1, 2, axis=1, sizes=("qk_nope_head_dim", "v_head_dim"), groups="heads"))
# the latent attention's sizes; llama.cpp runs it as one KV head whose keys are kv_lora_rank + rope wide
LATENT_KEYS = {
    "{arch}.attention.key_length_mla": Key(QK),
    "{arch}.attention.value_length_mla": Key("v_head_dim"),
    "{arch}.attention.q_lora_rank": Key("q_lora_rank", when=Q_LORA),
    "{arch}.attention.kv_lora_rank": Key("kv_lora_rank"),
}
MLA_KEYS = {
    "{arch}.attention.head_count_kv": Key(1),
    "{arch}.attention.key_length": Key("kv_lora_rank + qk_rope_head_dim"),
    "{arch}.attention.value_length": Key("kv_lora_rank"),
    **LATENT_KEYS,
    "{arch}.rope.dimension_count": Key("qk_rope_head_dim"),
    "{arch}.leading_dense_block_count": Key("get('first_k_dense_replace', 0)"),
    "{arch}.expert_shared_count": Key("shared_experts"),
    "{arch}.expert_weights_scale": Key("get('routed_scaling_factor', 1.0)", "f32"),
    "{arch}.expert_weights_norm": Key("True", "bool", when="get('norm_topk_prob')"),
    **GROUP_KEYS,
    "{arch}.rope.scaling.yarn_log_multiplier": Key("0.1 * rope_mscale_all_dim", "f32",
                                                  when="rope_mscale_all_dim is not None"),
}
REQUIRES = {
    f"not {BIAS} and not {MLP_BIAS}": "its projections have no biases",
    "get('moe_layer_freq', 1) == 1": "every layer after the dense ones is MoE (moe_layer_freq 1)",
    f"{Q_LORA} or layers in (26, 27)": "only DeepSeek-V2-Lite's 26/27 layers go without q_lora_rank",
}
TINY_DEEPSEEK = dict(TINY, n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, n_shared_experts=1,
                     first_k_dense_replace=1, kv_lora_rank=32, q_lora_rank=48, qk_rope_head_dim=8,
                     qk_nope_head_dim=16, v_head_dim=16, head_dim=8, num_key_value_heads=4, tie_word_embeddings=False)

V2 = register_architecture(ArchitectureSpec(
    model_type="deepseek_v2",
    tensors=decoder("DeepseekV2ForCausalLM", layer(selection_bias=False, mlp_bias=MLP_BIAS)),
    no_onnx=NO_EXPERT_ONNX,
    gguf=GGUFMapping(
        arch="DEEPSEEK2", metadata={**TEXT_KEYS, **MOE_KEYS, **MLA_KEYS}, splits={f"{A}.kv_b_proj.weight": KV_B},
        requires={**REQUIRES, "get('topk_method', 'greedy') == 'greedy' or get('n_group', 1) in (None, 1)":
                  "experts are chosen greedily: llama.cpp scores groups by their top two, not by their best "
                  "(topk_method group_limited_greedy)"}),
    note="greedy routing (V2-Lite); group-limited greedy is refused: llama.cpp scores groups as V3 does",
    tiny=TINY_DEEPSEEK,
))
V3 = register_architecture(ArchitectureSpec(
    model_type="deepseek_v3",
    # its multi-token-prediction layer, past the last (transformers ignores model.layers.61, llama.cpp's
    # converter skips it)
    tensors=replace(decoder("DeepseekV3ForCausalLM", layer(selection_bias=True, mlp_bias=False)),
                    unloaded=(r"^model\.layers\.{layers}\.",)),
    no_onnx=NO_EXPERT_ONNX,
    gguf=GGUFMapping(
        arch="DEEPSEEK2", names=SELECTION_BIAS, splits={f"{A}.kv_b_proj.weight": KV_B},
        metadata={**TEXT_KEYS, **MOE_KEYS, **MLA_KEYS, "{arch}.expert_gating_func": Key(2)},   # sigmoid
        requires={**REQUIRES, "get('rope_interleave', True)": "its rope is interleaved (rope_interleave true)"}),
    tiny=dict(TINY_DEEPSEEK, n_routed_experts=8, n_group=2, topk_group=1, norm_topk_prob=True,
              routed_scaling_factor=2.5),
))
