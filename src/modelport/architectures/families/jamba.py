"""Jamba (AI21): Mamba (1) layers with attention every `attn_layer_period`-th layer from `attn_layer_offset`,
each followed by a SwiGLU, or by softmax-routed experts every `expert_layer_period`-th layer from
`expert_layer_offset`. Attention has no position embedding; the Mamba mixer RMS-normalises dt, B and C.

The layer kinds come from the config through the templates' conditions. llama.cpp learns a Mamba layer
from its KV head count (0), which is how the attention period and offset are read back, and an MoE layer
from its router tensor (`ffn_gate_inp`), which is how the expert period and offset are read back (the
inverse sees the file's tensor names). The Mamba tensors go through Mamba's rules (mamba.py).
"""
from dataclasses import replace

from ..gguf_mapping import GGUFMapping, Key
from ..registry import ArchitectureSpec, Variant, register_architecture
from ..rules import NegExp, Squeeze
from ..tensors import linear, norm, only, t
from .llama import TINY, attention, decoder, swiglu
from .mamba import MAMBA_STATE, NO_ONNX
from .moe import experts

P = "model.layers.{L}.mamba"
FF = "model.layers.{L}.feed_forward"
ATTENTION = "L % attn_layer_period == attn_layer_offset"
MOE = "experts > 1 and L % expert_layer_period == expert_layer_offset"
INNER = "mamba_expand * hidden"
DT_RANK = "(mamba_dt_rank if mamba_dt_rank != 'auto' else (hidden + 15) // 16)"   # a config may say "auto"

LAYER = (
    *only(f"not ({ATTENTION})", [
        t(f"{P}.A_log", INNER, "mamba_d_state"), t(f"{P}.D", INNER),
        t(f"{P}.conv1d.weight", INNER, 1, "mamba_d_conv"), t(f"{P}.conv1d.bias", INNER),
        *linear(f"{P}.in_proj", f"2 * {INNER}", "hidden"),
        *linear(f"{P}.x_proj", f"{DT_RANK} + 2 * mamba_d_state", INNER),
        *linear(f"{P}.dt_proj", INNER, DT_RANK, True),
        *linear(f"{P}.out_proj", "hidden", INNER),
        *norm(f"{P}.dt_layernorm", DT_RANK), *norm(f"{P}.b_layernorm", "mamba_d_state"),
        *norm(f"{P}.c_layernorm", "mamba_d_state")]),
    *only(ATTENTION, attention(qkv_bias=False, o_bias=False)),
    *only(MOE, experts(FF, ffn="ffn", router="router")),
    *only(f"not ({MOE})", swiglu(FF, bias=False)),
    *norm("model.layers.{L}.input_layernorm"), *norm("model.layers.{L}.pre_ff_layernorm"),
)

# the layers whose router the file holds (the inverses below see its tensor names)
MOE_LAYERS = "[i for i in range(num_hidden_layers) if 'blk.%d.ffn_gate_inp.weight' % i in tensors]"
KV_LAYERS = "[i for i in range(len(value)) if value[i] > 0]"

MAPPING = GGUFMapping(
    arch="JAMBA",
    rules=(NegExp(("A_log",)), Squeeze(("conv1d.weight",))),
    metadata={
        "{arch}.block_count": Key("layers"),
        "{arch}.context_length": Key("ctx"),
        "{arch}.embedding_length": Key("hidden"),
        "{arch}.feed_forward_length": Key("ffn"),
        "{arch}.attention.head_count": Key("heads"),
        "{arch}.attention.head_count_kv": Key(
            f"[kv_heads if {ATTENTION} else 0 for L in range(layers)]", "array",
            inverse=(("attn_layer_offset", f"{KV_LAYERS}[0]"),
                     ("attn_layer_period", f"{KV_LAYERS}[1] - {KV_LAYERS}[0] if len({KV_LAYERS}) > 1 "
                                           "else len(value)"),
                     ("num_key_value_heads", "max(value)"))),
        "{arch}.ssm.conv_kernel": Key("mamba_d_conv"),
        "{arch}.ssm.inner_size": Key(INNER),
        "{arch}.ssm.state_size": Key("mamba_d_state"),
        "{arch}.ssm.time_step_rank": Key(DT_RANK),
        "{arch}.attention.layer_norm_rms_epsilon": Key("rms_eps", "f32"),
        "{arch}.expert_count": Key("experts", inverse=(
            ("num_experts", "max(value, 1)"),          # 0: the dense variant below
            ("expert_layer_offset", f"{MOE_LAYERS}[0] if {MOE_LAYERS} else 1"),
            ("expert_layer_period", f"{MOE_LAYERS}[1] - {MOE_LAYERS}[0] if len({MOE_LAYERS}) > 1 "
                                    "else num_hidden_layers"))),
        "{arch}.expert_used_count": Key("experts_used"),
        "{arch}.vocab_size": Key("vocab"),
    },
    requires={"mamba_expand == 2": "llama.cpp's Jamba runs only an inner size of twice the hidden size",
              "get('mamba_conv_bias', True) and not get('mamba_proj_bias', False)":
                  "llama.cpp's Jamba has a conv1d bias and no in_proj or out_proj bias",
              "experts > 1": "a Jamba without experts (num_experts 1) is the spec's dense variant"})
# a Jamba without experts (num_experts 1: transformers makes every feed-forward a SwiGLU): llama.cpp runs each
# layer's plain FFN where the file has no router, and asserts expert_used_count <= expert_count, so 0 and 0
# are written (llama.cpp's converter writes 1 and num_experts_per_tok, 2 by default, which llama.cpp refuses)
DENSE = replace(
    MAPPING,
    metadata={**MAPPING.metadata, "{arch}.expert_count": Key("0", inverse=MAPPING.metadata["{arch}.expert_count"].inverse),
              "{arch}.expert_used_count": Key("0", inverse=(("num_experts_per_tok", "2"),))},
    requires={k: v for k, v in MAPPING.requires.items() if k != "experts > 1"})

SPEC = register_architecture(ArchitectureSpec(
    model_type="jamba",
    tensors=decoder("JambaForCausalLM", LAYER, head=(*norm("model.final_layernorm"), t("lm_head.weight", "vocab", "hidden"))),
    gguf=MAPPING,
    no_onnx=NO_ONNX,
    recurrent=MAMBA_STATE,
    # every kind of layer: Mamba + experts, attention + MLP, Mamba + MLP, attention + experts
    tiny=dict(TINY, num_hidden_layers=4, attn_layer_period=2, attn_layer_offset=1, num_experts=4,
              num_experts_per_tok=2, expert_layer_period=3, expert_layer_offset=0, mamba_d_state=8,
              mamba_d_conv=4, mamba_expand=2, mamba_dt_rank=8, tie_word_embeddings=False),
    variants=(Variant("dense", "experts == 1", DENSE, tiny=dict(num_experts=1)),),
))
