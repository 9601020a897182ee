"""GLM-4.5 / 4.6 MoE (Zhipu): Q/K/V biases, partial NEOX rope, dense leading layers, then sigmoid-routed
experts with a selection bias and shared experts. The multi-token-prediction layers some checkpoints
carry beyond num_hidden_layers are not part of transformers' model: --allow-unused drops them."""
from dataclasses import replace

from ..gguf_mapping import TEXT_KEYS, GGUFMapping
from ..registry import ArchitectureSpec, register_architecture
from ..tensors import only, t
from .llama import LAYER_NORMS, TINY, attention, decoder, swiglu
from .moe import MOE_KEYS, NO_EXPERT_ONNX, ROUTED_KEYS, SELECTION_BIAS, experts, shared_expert

P = "model.layers.{L}.mlp"
MOE = "L >= get('first_k_dense_replace', 0)"
LAYER = (*attention(qkv_bias="get('attention_bias', False)", o_bias=False, qk_norm="get('use_qk_norm', False)"),
         *only(MOE, [*experts(P), t(f"{P}.gate.e_score_correction_bias", "experts"),
                     *shared_expert(P, "expert_ffn * shared_experts", "shared_experts")]),
         *only(f"not ({MOE})", swiglu(bias=False)), *LAYER_NORMS)

SPEC = register_architecture(ArchitectureSpec(
    model_type="glm4_moe",
    # its multi-token-prediction layer, past the last (transformers ignores model.layers.92 and .46)
    tensors=replace(decoder("Glm4MoeForCausalLM", LAYER), unloaded=(r"^model\.layers\.{layers}\.",)),
    no_onnx=NO_EXPERT_ONNX,
    gguf=GGUFMapping(arch="GLM4_MOE", metadata={**TEXT_KEYS, **MOE_KEYS, **ROUTED_KEYS}, names=SELECTION_BIAS),
    tiny=dict(TINY, n_routed_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, n_shared_experts=1,
              first_k_dense_replace=1, head_dim=16, pad_token_id=None, partial_rotary_factor=0.5,
              num_nextn_predict_layers=0, attention_bias=True, tie_word_embeddings=False),
))
