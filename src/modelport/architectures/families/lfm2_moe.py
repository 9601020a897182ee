"""LFM2-MoE (Liquid AI): LFM2's short-convolution and attention layers (lfm2.py), with the SwiGLU of every
layer after the first `num_dense_layers` replaced by sigmoid-routed experts (w1 gate, w3 up, w2 down)
chosen with a selection bias (`expert_bias`), their weights renormalised.

llama.cpp learns the conv layers from the per-layer KV head count (0), as for LFM2, and the dense layers
from `leading_dense_block_count`. Experts are stacked into its `*_exps` tensors as for every MoE family.
"""
from ..gguf_mapping import TEXT_KEYS, GGUFMapping, Key
from ..registry import ArchitectureSpec, register_architecture
from ..rules import Squeeze
from ..tensors import Tensors, linear, norm, only, t
from .lfm2 import CONV_STATE, HEAD, LAYER_KV_HEADS, NO_ONNX, P
from .lfm2 import LAYER as LFM2_LAYER
from .llama import EMBED, TIED, TINY
from .moe import SIGMOID

FF = f"{P}.feed_forward"
MOE = "L >= num_dense_layers"

LAYER = (
    *(template for template in LFM2_LAYER if ".feed_forward." not in template.name),     # its FFN is below
    *only(f"not ({MOE})", [*linear(f"{FF}.w1", "ffn", "hidden"), *linear(f"{FF}.w3", "ffn", "hidden"),
                           *linear(f"{FF}.w2", "hidden", "ffn")]),
    *only(MOE, [t(f"{FF}.gate.weight", "experts", "hidden"), t(f"{FF}.expert_bias", "experts"),
                t(f"{FF}.experts.{{E}}.w1.weight", "expert_ffn", "hidden"),
                t(f"{FF}.experts.{{E}}.w3.weight", "expert_ffn", "hidden"),
                t(f"{FF}.experts.{{E}}.w2.weight", "hidden", "expert_ffn")]),
)

SPEC = register_architecture(ArchitectureSpec(
    model_type="lfm2_moe",
    recurrent=CONV_STATE,
    tensors=Tensors(EMBED, LAYER, HEAD, TIED, prefix="model", classes=("Lfm2MoeForCausalLM",)),
    tie_default=True,
    no_onnx=NO_ONNX,
    gguf=GGUFMapping(
        arch="LFM2MOE", rules=(Squeeze(("conv.conv.weight",)),),
        names={f"{FF}.experts.w1.weight": "blk.{L}.ffn_gate_exps.weight",
               f"{FF}.experts.w3.weight": "blk.{L}.ffn_up_exps.weight",
               f"{FF}.experts.w2.weight": "blk.{L}.ffn_down_exps.weight",
               f"{FF}.expert_bias": "blk.{L}.exp_probs_b.bias"},
        metadata={**TEXT_KEYS,
                  "{arch}.attention.head_count_kv": LAYER_KV_HEADS,
                  "{arch}.expert_feed_forward_length": Key("expert_ffn"),
                  "{arch}.leading_dense_block_count": Key("num_dense_layers"),
                  "{arch}.expert_gating_func": Key(SIGMOID),
                  "{arch}.shortconv.l_cache": Key("conv_L_cache")},
        requires={"get('use_expert_bias', True)": "llama.cpp's LFM2-MoE always adds a selection bias",
                  "get('norm_topk_prob', True)": "llama.cpp's LFM2-MoE always renormalises the chosen experts' weights",
                  "get('routed_scaling_factor', 1.0) == 1.0": "llama.cpp's LFM2-MoE does not scale the experts' weights",
                  "not get('conv_bias', False)": "llama.cpp's LFM2-MoE has no conv biases"}),
    tiny=dict({k: v for k, v in TINY.items() if k != "rms_norm_eps"}, norm_eps=1e-5, num_hidden_layers=3,
              layer_types=["conv", "full_attention", "conv"], conv_L_cache=3, num_dense_layers=1, num_experts=4,
              num_experts_per_tok=2, moe_intermediate_size=32, tie_word_embeddings=True),
))
