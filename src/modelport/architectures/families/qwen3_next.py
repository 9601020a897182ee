"""Qwen3-Next (Alibaba): gated delta-net linear attention and gated full attention by `layer_types`, every
layer followed by softmax-routed experts (renormalised) and a shared expert behind its own sigmoid gate.
Norms scale by 1 + w (stored as w + 1, as for Gemma) except the delta net's gated norm; full attention has
per-head Q/K norms, partial NEOX rope, and a sigmoid output gate held in q_proj beside each head's query.

The delta net's fused in_proj_qkvz holds, for each key head, its q, k, v and z rows; llama.cpp takes it
apart into `attn_qkv` (every head's q, then every k, then every v: the order its conv1d channels have)
and `attn_gate` (z): a grouped cut (Take) then `rules.UngroupSections`, joined back the other way.
llama.cpp learns the linear-attention layers from `attention.recurrent_layers`, read back as `layer_types`.
"""
from dataclasses import replace

from ..gguf_mapping import TEXT_KEYS, GGUFMapping, Key, Part
from ..registry import ArchitectureSpec, register_architecture
from ..rules import AddOffset, NegExp, Squeeze, UngroupSections
from ..tensors import linear, norm, only, t
from .lfm2 import NO_ONNX
from .llama import ATTENTION_BIAS, LAYER_NORMS, TINY, decoder
from .moe import MOE_KEYS, experts, shared_expert

# llama.cpp's delta nets (Qwen3-Next's, Kimi Linear's KDA) L2-normalise q and k with rms_norm_eps as epsilon,
# transformers (and FLA's kernels) with 1e-6: the same function when q and k are far longer than epsilon,
# as a trained model's are; a random tiny model's are not, so the test configs use 1e-6
L2_EPSILON = ("llama.cpp L2-normalises the linear attention's q and k with rms_norm_eps as epsilon, transformers "
              "with 1e-6; the tiny test model uses 1e-6 (docs/architectures.md)")

P = "model.layers.{L}.linear_attn"
A = "model.layers.{L}.self_attn"
MLP = "model.layers.{L}.mlp"
LINEAR = "layer_types[L] == 'linear_attention'"
KEY_DIM = "linear_num_key_heads * linear_key_head_dim"
VALUE_DIM = "linear_num_value_heads * linear_value_head_dim"
V_PER_K = "linear_num_value_heads // linear_num_key_heads * linear_value_head_dim"   # v (and z) rows of a key head

LAYER = (
    *only(LINEAR, [
        t(f"{P}.dt_bias", "linear_num_value_heads"), t(f"{P}.A_log", "linear_num_value_heads"),
        t(f"{P}.conv1d.weight", f"2 * {KEY_DIM} + {VALUE_DIM}", 1, "linear_conv_kernel_dim"),
        *linear(f"{P}.in_proj_qkvz", f"2 * {KEY_DIM} + 2 * {VALUE_DIM}", "hidden"),
        *linear(f"{P}.in_proj_ba", "2 * linear_num_value_heads", "hidden"),
        *norm(f"{P}.norm", "linear_value_head_dim"),
        *linear(f"{P}.out_proj", "hidden", VALUE_DIM)]),
    *only(f"not ({LINEAR})", [
        *linear(f"{A}.q_proj", "2 * heads * head_dim", "hidden", ATTENTION_BIAS),
        *linear(f"{A}.k_proj", "kv_heads * head_dim", "hidden", ATTENTION_BIAS),
        *linear(f"{A}.v_proj", "kv_heads * head_dim", "hidden", ATTENTION_BIAS),
        *linear(f"{A}.o_proj", "hidden", "heads * head_dim", ATTENTION_BIAS),
        *norm(f"{A}.q_norm", "head_dim"), *norm(f"{A}.k_norm", "head_dim")]),
    *experts(MLP), *shared_expert(MLP, "shared_expert_intermediate_size"),
    t(f"{MLP}.shared_expert_gate.weight", 1, "hidden"),
    *LAYER_NORMS,
)

# in_proj_qkvz, key head by key head [q k v z], cut into [q k v] and [z], each then section by section
QKVZ = dict(axis=1, groups="linear_num_key_heads", sizes=(f"2 * linear_key_head_dim + {V_PER_K}", V_PER_K))
SPLITS = {f"{P}.in_proj_qkvz.weight": (
    Part("blk.{L}.attn_qkv.weight", 0, 2, **QKVZ,
         rules=(UngroupSections((), ("linear_key_head_dim", "linear_key_head_dim", V_PER_K)),)),
    Part("blk.{L}.attn_gate.weight", 1, 2, **QKVZ, rules=(UngroupSections((), (V_PER_K,)),)))}

SPEC = register_architecture(ArchitectureSpec(
    model_type="qwen3_next",
    # its multi-token-prediction head (transformers ignores ^mtp.*)
    tensors=replace(decoder("Qwen3NextForCausalLM", LAYER), unloaded=(r"^mtp\.",)),
    gguf=GGUFMapping(
        arch="QWEN3NEXT", splits=SPLITS,
        rules=(AddOffset(("layernorm.weight", "q_norm.weight", "k_norm.weight", "model.norm.weight"), 1.0),
               NegExp(("A_log",)), Squeeze(("conv1d.weight",))),
        names={f"{P}.dt_bias": "blk.{L}.ssm_dt.bias"},
        metadata={
            **TEXT_KEYS, **MOE_KEYS,
            "{arch}.ssm.conv_kernel": Key("linear_conv_kernel_dim"),
            "{arch}.ssm.state_size": Key("linear_key_head_dim"),
            "{arch}.ssm.group_count": Key("linear_num_key_heads"),
            "{arch}.ssm.time_step_rank": Key("linear_num_value_heads"),
            "{arch}.ssm.inner_size": Key(VALUE_DIM),
            "{arch}.attention.recurrent_layers": Key(
                "[k == 'linear_attention' for k in layer_types]", "array",
                inverse=(("layer_types", "['linear_attention' if v else 'full_attention' for v in value]"),)),
            "{arch}.full_attention_interval": Key("4 if get('full_attention_interval') is None "
                                                  "else full_attention_interval"),
        },
        requires={
            "linear_key_head_dim == linear_value_head_dim":
                "llama.cpp's gated delta net has one head size for keys and values",
            "get('norm_topk_prob', True)": "llama.cpp's Qwen3-Next always renormalises the chosen experts' weights",
            "len(get('mlp_only_layers', [])) == 0 and get('decoder_sparse_step', 1) == 1":
                "every layer of llama.cpp's Qwen3-Next has experts",
            "not get('attention_bias', False)": "llama.cpp's Qwen3-Next attention has no biases",
        }),
    note=L2_EPSILON,
    no_onnx=NO_ONNX,
    recurrent="gated delta-net (linear attention) layers carry state along the sequence (transformers' own "
              "cache object)",
    tiny=dict(TINY, rms_norm_eps=1e-6, head_dim=16, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
              shared_expert_intermediate_size=64, norm_topk_prob=True,
              layer_types=["linear_attention", "full_attention"], linear_num_key_heads=2, linear_num_value_heads=4,
              linear_key_head_dim=16, linear_value_head_dim=16, linear_conv_kernel_dim=4, tie_word_embeddings=False),
))
