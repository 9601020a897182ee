"""dots.llm1 (rednote): Qwen3-style attention (per-head Q/K norms), dense leading layers, then DeepSeek-V3-style
routing: sigmoid scores with a selection bias, shared experts, scaled weights."""
from ..gguf_mapping import TEXT_KEYS, GGUFMapping
from ..registry import ArchitectureSpec, register_architecture
from ..tensors import only, t
from .llama import LAYER_NORMS, TINY, attention, decoder, swiglu
from .moe import MOE_KEYS, NO_EXPERT_ONNX, ROUTED_KEYS, SELECTION_BIAS, experts, shared_expert

P = "model.layers.{L}.mlp"
MOE = "L >= get('first_k_dense_replace', 0)"
LAYER = (*attention(qk_norm=True),
         *only(MOE, [*experts(P), t(f"{P}.gate.e_score_correction_bias", "experts"),
                     *shared_expert(P, "expert_ffn * shared_experts", "shared_experts")]),
         *only(f"not ({MOE})", swiglu(bias=False)), *LAYER_NORMS)

SPEC = register_architecture(ArchitectureSpec(
    model_type="dots1",
    tensors=decoder("Dots1ForCausalLM", LAYER),
    no_onnx=NO_EXPERT_ONNX,
    gguf=GGUFMapping(arch="DOTS1", metadata={**TEXT_KEYS, **MOE_KEYS, **ROUTED_KEYS}, names=SELECTION_BIAS,
                     requires={"kv_heads == heads": "its K and V have as many heads as Q (no grouped-query attention)"}),
    tiny=dict(TINY, num_key_value_heads=4, n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, n_shared_experts=1,
              first_k_dense_replace=1, tie_word_embeddings=False),
))
