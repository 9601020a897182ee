"""AFMoE (Arcee, Trinity): per-head Q/K norms, a sigmoid gate on the attention output (`gate_proj`), rope on
the sliding-window layers only (three of every four), norms before and after attention and MLP, leading
dense layers, then sigmoid-routed experts with a selection bias, renormalised and scaled, beside shared
experts; llama.cpp's AFMOE, which hard-codes the 3:1 layer pattern and muP's embedding scale."""
from ..gguf_mapping import TEXT_KEYS, GGUFMapping, Key
from ..registry import ArchitectureSpec, register_architecture
from ..tensors import norm, only, t
from .llama import TINY, attention, decoder, swiglu
from .moe import NO_EXPERT_ONNX, SIGMOID, experts, shared_expert

P = "model.layers.{L}"
MOE = "L >= num_dense_layers"
PATTERN = "['full_attention' if (i + 1) % 4 == 0 else 'sliding_attention' for i in range(layers)]"

SPEC = register_architecture(ArchitectureSpec(
    model_type="afmoe",
    tensors=decoder("AfmoeForCausalLM", (
        *attention(qk_norm=True), t(f"{P}.self_attn.gate_proj.weight", "heads * head_dim", "hidden"),
        *norm(f"{P}.input_layernorm"), *norm(f"{P}.post_attention_layernorm"),
        *norm(f"{P}.pre_mlp_layernorm"), *norm(f"{P}.post_mlp_layernorm"),
        *only(f"not ({MOE})", swiglu(bias=False)),
        *only(MOE, [t(f"{P}.mlp.expert_bias", "experts"), *experts(f"{P}.mlp", router="router.gate"),
                    *shared_expert(f"{P}.mlp", "expert_ffn * shared_experts", "shared_experts")]))),
    no_onnx=NO_EXPERT_ONNX,
    gguf=GGUFMapping(arch="AFMOE", metadata={
        **TEXT_KEYS,
        "{arch}.leading_dense_block_count": Key("num_dense_layers"),
        "{arch}.expert_feed_forward_length": Key("expert_ffn"),
        "{arch}.expert_shared_count": Key("shared_experts"),
        "{arch}.expert_weights_norm": Key(True, "bool"),           # transformers always renormalises
        "{arch}.expert_weights_scale": Key("route_scale", "f32"),
        "{arch}.expert_gating_func": Key(SIGMOID),
        "{arch}.attention.sliding_window": Key("sliding_window", when="get('sliding_window')"),
    }, names={f"{P}.mlp.expert_bias": "blk.{L}.exp_probs_b.bias"}, requires={
        "get('mup_enabled', False)": "llama.cpp always scales the embeddings by sqrt(hidden_size) (muP)",
        f"get('layer_types', {PATTERN}) == {PATTERN}": "llama.cpp hard-codes three sliding-window layers with rope, then one "
                                     "full-attention layer without",
    }),
    tiny=dict(TINY, num_hidden_layers=4, head_dim=16, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32,
              num_shared_experts=1, num_dense_layers=1, route_scale=2.0, mup_enabled=True, sliding_window=16,
              tie_word_embeddings=False),
))
