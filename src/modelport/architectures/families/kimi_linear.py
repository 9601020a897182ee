"""Kimi Linear (Moonshot): Kimi delta attention (KDA, a gated delta net whose decay is per channel) and
multi-head latent attention without rope by `layer_types`, then a dense SwiGLU or DeepSeek-V3-style experts
by `mlp_layer_types` (sigmoid scores with a selection bias, renormalised and scaled, and shared experts).

A KDA layer's q, k and v each go through their own short convolution: the kernels [d, 1, k] are written
as the [1, d, 1, k] llama.cpp's converter writes (rules.Unsqueeze at the front), its decay as
A = -exp(A_log) and `dt_bias` as the `ssm_dt` bias. The latent attention is DeepSeek's (deepseek.py):
`kv_b_proj` cut into `attn_k_b` and `attn_v_b`, one KV head kv_lora_rank + rope wide. llama.cpp learns
the KDA layers from the per-layer KV head count (0; 1 for a latent-attention layer) and the dense
layers from `leading_dense_block_count`, which is how `layer_types` and `mlp_layer_types` are read back.

The names and config keys here are those transformers 5 saves: a dense layer's MLP under `block_sparse_moe`
as the experts are, and `layer_types`, `mlp_layer_types` and `linear_*`. The released checkpoint
(moonshotai/Kimi-Linear-48B-A3B-Instruct, a remote-code folder) is read too, as transformers 5 reads it:
its dense MLP under `mlp` (SPELLINGS: transformers' conversion mapping renames `block_sparse_moe` to
`mlp` for every layer), and its config's `linear_attn_config` (`kda_layers` and `full_attn_layers`
numbered from 1; `num_heads`, `head_dim`, `short_conv_kernel_size`) and `first_k_dense_replace`
(RELEASED_CONFIG). Written back to HF it is transformers 5's layout, which transformers 5 loads.
"""
from ..gguf_mapping import TEXT_KEYS, GGUFMapping, Key
from ..registry import ArchitectureSpec, register_architecture
from ..rules import NegExp, Unsqueeze
from ..tensors import Tensors, linear, norm, only, t
from .deepseek import KV_B, LATENT_KEYS, MLA
from .deepseek import A as ATTN
from .lfm2 import NO_ONNX
from .qwen3_next import L2_EPSILON
from .llama import EMBED, HEAD, LAYER_NORMS, TINY, swiglu
from .moe import SIGMOID, experts, shared_expert

M = "model.layers.{L}.block_sparse_moe"
KDA = "layer_types[L] == 'linear_attention'"
SPARSE = "mlp_layer_types[L] == 'sparse'"
INNER = "linear_num_heads * linear_head_dim"
DENSE = "len([kind for kind in mlp_layer_types if kind == 'dense'])"      # llama.cpp's leading dense layers

# the released config's spelling of transformers 5's keys, as its remote code reads it (configuration_kimi.py,
# modeling_kimi.py): a KDA layer is one whose number from 1 is in kda_layers (llama.cpp's converter asks
# full_attn_layers, the rest; transformers 5 both), and a layer has experts from first_k_dense_replace on
# when the config has experts (and every moe_layer_freq-th, which llama.cpp cannot run otherwise than 1)
RELEASED_CONFIG = {
    "layer_types": "['linear_attention' if i + 1 in linear_attn_config['kda_layers'] else 'full_attention' "
                   "for i in range(layers)]",
    "mlp_layer_types": "['sparse' if experts and i >= first_k_dense_replace and i % get('moe_layer_freq', 1) == 0 "
                       "else 'dense' for i in range(layers)]",
    "linear_num_heads": "linear_attn_config['num_heads']",
    "linear_head_dim": "linear_attn_config['head_dim']",
    "linear_conv_kernel_dim": "linear_attn_config['short_conv_kernel_size']",
}
# the released checkpoint's dense MLP: `model.layers.{L}.mlp.*` for transformers 5's `block_sparse_moe.*`
SPELLINGS = ((r"\.block_sparse_moe\.", ".mlp."),)

LAYER = (
    *only(KDA, [
        t(f"{ATTN}.A_log", 1, 1, "linear_num_heads", 1),
        *linear(f"{ATTN}.b_proj", "linear_num_heads", "hidden"),
        t(f"{ATTN}.dt_bias", INNER),
        *linear(f"{ATTN}.f_a_proj", "linear_head_dim", "hidden"),
        *linear(f"{ATTN}.f_b_proj", INNER, "linear_head_dim"),
        *linear(f"{ATTN}.g_a_proj", "linear_head_dim", "hidden"),
        *linear(f"{ATTN}.g_b_proj", INNER, "linear_head_dim"),
        *(t(f"{ATTN}.{x}_conv1d.weight", INNER, 1, "linear_conv_kernel_dim") for x in "qkv"),
        *(template for x in "qkv" for template in linear(f"{ATTN}.{x}_proj", INNER, "hidden")),
        *norm(f"{ATTN}.o_norm", "linear_head_dim"),
        *linear(f"{ATTN}.o_proj", "hidden", INNER)]),
    *only(f"not ({KDA})", MLA),
    *only(SPARSE, [*experts(M, gate="w1", up="w3", down="w2"), t(f"{M}.gate.e_score_correction_bias", "experts"),
                   *shared_expert(M, "expert_ffn * shared_experts", "shared_experts")]),
    *only(f"not ({SPARSE})", swiglu(M, bias=False)),
    *LAYER_NORMS,
)

SPEC = register_architecture(ArchitectureSpec(
    model_type="kimi_linear",
    # no tied head: transformers' KimiLinearForCausalLM declares none, whatever tie_word_embeddings says
    tensors=Tensors(EMBED, LAYER, HEAD, prefix="model", classes=("KimiLinearForCausalLM",), spellings=SPELLINGS),
    config_fallbacks=RELEASED_CONFIG,
    gguf=GGUFMapping(
        arch="KIMI_LINEAR",
        rules=(NegExp(("A_log",)), Unsqueeze(("conv1d.weight",), axis=0)),
        names={f"{ATTN}.dt_bias": "blk.{L}.ssm_dt.bias",
               f"{M}.gate.e_score_correction_bias": "blk.{L}.exp_probs_b.bias",
               **{f"{M}.{hf}_proj.weight": f"blk.{{L}}.ffn_{hf}.weight" for hf in ("gate", "up", "down")}},
        splits={f"{ATTN}.kv_b_proj.weight": KV_B},
        metadata={
            **TEXT_KEYS,
            "{arch}.attention.head_count": Key("heads", inverse=(("num_attention_heads", "value"),
                                                                 ("linear_num_heads", "value"))),
            # transformers expands the latent KV to every query head: as many KV heads as heads, read back
            "{arch}.attention.head_count_kv": Key(
                "[0 if kind == 'linear_attention' else 1 for kind in layer_types]", "array",
                inverse=(("layer_types", "['linear_attention' if n == 0 else 'full_attention' for n in value]"),
                         ("num_key_value_heads", "num_attention_heads"))),
            "{arch}.attention.key_length": Key("kv_lora_rank + qk_rope_head_dim"),
            **LATENT_KEYS,
            "{arch}.rope.dimension_count": Key("qk_rope_head_dim"),
            "{arch}.ssm.conv_kernel": Key("linear_conv_kernel_dim"),
            "{arch}.kda.head_dim": Key("linear_head_dim"),
            "{arch}.expert_feed_forward_length": Key("expert_ffn"),
            "{arch}.expert_shared_count": Key("shared_experts"),
            "{arch}.leading_dense_block_count": Key(DENSE, inverse=(
                ("mlp_layer_types", "['dense' if i < value else 'sparse' for i in range(num_hidden_layers)]"),)),
            "{arch}.expert_weights_scale": Key("routed_scaling_factor", "f32"),
            "{arch}.expert_gating_func": Key(SIGMOID),
            "{arch}.expert_group_count": Key("num_expert_group", when="get('num_expert_group') is not None"),
            "{arch}.expert_group_used_count": Key("topk_group", when="get('topk_group') is not None"),
        },
        requires={
            "linear_num_heads == heads": "llama.cpp's Kimi Linear runs its KDA layers with the attention head count",
            "get('q_lora_rank') is None": "llama.cpp's Kimi Linear projects latent-attention queries with q_proj "
                                          "alone (no q_lora_rank)",
            "not get('attention_bias', False)": "llama.cpp's Kimi Linear attention has no biases",
            "get('hidden_act', 'silu') == 'silu'": "llama.cpp's Kimi Linear convolutions and MLPs use SiLU",
            "get('moe_renormalize', True)": "llama.cpp's Kimi Linear always renormalises the chosen experts' weights",
            f"mlp_layer_types == ['dense' if i < {DENSE} else 'sparse' for i in range(layers)]":
                "llama.cpp's Kimi Linear has dense MLPs in its leading layers only, experts in every layer after",
        }),
    note=L2_EPSILON,
    no_onnx=NO_ONNX,
    recurrent="KDA (linear attention) layers carry state along the sequence (transformers' own cache object)",
    # every kind of layer: KDA + dense MLP, latent attention + experts, KDA + experts
    tiny=dict(TINY, rms_norm_eps=1e-6, num_hidden_layers=3, num_key_value_heads=4,
              layer_types=["linear_attention", "full_attention", "linear_attention"],
              mlp_layer_types=["dense", "sparse", "sparse"], linear_num_heads=4, linear_head_dim=16,
              linear_conv_kernel_dim=4, kv_lora_rank=32, q_lora_rank=None, qk_rope_head_dim=8, qk_nope_head_dim=16,
              v_head_dim=16, num_local_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, n_shared_experts=1,
              n_group=2, topk_group=1, routed_scaling_factor=2.5, pad_token_id=None, tie_word_embeddings=False),
))
