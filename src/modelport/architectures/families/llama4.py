"""Llama 4 text (Scout, Maverick): Llama attention without the Q/K permutation (its rope is already
interleaved), L2-normed Q/K on rope layers, every fourth layer without rope and with full attention,
and MoE layers (every `interleave_moe_layer_step`-th) of sigmoid-routed experts plus a shared expert.

Experts are saved fused, three axes each (experts, in, out): `gate_up_proj` holds gate then up along
its last axis, which llama.cpp takes apart into (out, in) `ffn_gate_exps` and `ffn_up_exps`. What
llama.cpp hard-codes (8192-token chunks, temperature tuning, the rope pattern) is required of the config.
"""
from ..gguf_mapping import TEXT_KEYS, GGUFMapping, Key, llama3_rope_factors, split
from ..registry import ArchitectureSpec, register_architecture
from ..rules import Transpose
from ..tensors import only, t
from .llama import LAYER_NORMS, TINY, attention, decoder, swiglu
from .moe import NO_EXPERT_ONNX, shared_expert

P = "model.layers.{L}.feed_forward"
MOE = "(L + 1) % get('interleave_moe_layer_step', 1) == 0"
LAYER = (*attention(),
         *only(MOE, [t(f"{P}.experts.gate_up_proj", "experts", "hidden", "2 * ffn"),
                     t(f"{P}.experts.down_proj", "experts", "ffn", "hidden"),
                     t(f"{P}.router.weight", "experts", "hidden"),
                     *shared_expert(P, "ffn")]),
         *only(f"not ({MOE})", swiglu(P, "intermediate_size_mlp", bias=False)),
         *LAYER_NORMS)
ROPE_EVERY_FOURTH = "[int((i + 1) % 4 != 0) for i in range(layers)]"

SPEC = register_architecture(ArchitectureSpec(
    model_type="llama4_text",
    tensors=decoder("Llama4ForCausalLM", LAYER),
    no_onnx=NO_EXPERT_ONNX,
    gguf=GGUFMapping(
        arch="LLAMA4",
        metadata={**TEXT_KEYS, "{arch}.feed_forward_length": Key("intermediate_size_mlp"),
                  "{arch}.expert_feed_forward_length": Key("ffn"),
                  "{arch}.interleave_moe_layer_step": Key("get('interleave_moe_layer_step', 1)")},
        rules=(Transpose((".experts.gate_up_proj", ".experts.down_proj")),),
        names={f"{P}.experts.down_proj": "blk.{L}.ffn_down_exps.weight"},
        splits={f"{P}.experts.gate_up_proj": split("blk.{L}.ffn_gate_exps.weight", "blk.{L}.ffn_up_exps.weight")},
        requires={
            f"get('no_rope_layers') is None or no_rope_layers == {ROPE_EVERY_FOURTH}":
                "every fourth layer, and only those, goes without rope (no_rope_layers)",
            "get('attention_chunk_size', 8192) == 8192": "attention is chunked by 8192 tokens",
            "get('attn_temperature_tuning', True) and get('floor_scale', 8192) == 8192 and get('attn_scale', 0.1) == 0.1":
                "no-rope layers tune their temperature (floor_scale 8192, attn_scale 0.1)",
            "bool(get('use_qk_norm', True)) == (experts != 128)": "Q/K are L2-normed exactly when there are not 128 experts",
        },
        extra_tensors=llama3_rope_factors,
    ),
    note="text model; llama.cpp's fixed chunking, temperature tuning and rope pattern are required",
    tiny=dict(TINY, num_hidden_layers=4, num_local_experts=4, num_experts_per_tok=1, intermediate_size=32,
              intermediate_size_mlp=128, interleave_moe_layer_step=2, head_dim=16, tie_word_embeddings=False,
              no_rope_layers=[1, 1, 1, 0]),
))
