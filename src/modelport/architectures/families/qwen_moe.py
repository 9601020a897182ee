"""Qwen2-MoE and Qwen3-MoE: Qwen attention (Q/K/V biases in Qwen2, per-head Q/K norms in Qwen3) with
routed SwiGLU experts; Qwen2-MoE adds a shared expert behind its own sigmoid gate."""
from ..gguf_mapping import TEXT_KEYS, GGUFMapping
from ..registry import ArchitectureSpec, register_architecture
from ..tensors import t
from .llama import LAYER_NORMS, TINY, attention, decoder
from .moe import MOE_KEYS, NO_EXPERT_ONNX, experts, shared_expert

P = "model.layers.{L}.mlp"
TINY_MOE = dict(TINY, num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, tie_word_embeddings=False)

QWEN2_MOE = register_architecture(ArchitectureSpec(
    model_type="qwen2_moe",
    tensors=decoder("Qwen2MoeForCausalLM", (*attention(qkv_bias=True, o_bias=False), *experts(P),
                                            *shared_expert(P, "shared_expert_intermediate_size"),
                                            t(f"{P}.shared_expert_gate.weight", 1, "hidden"), *LAYER_NORMS)),
    no_onnx=NO_EXPERT_ONNX,
    gguf=GGUFMapping(arch="QWEN2MOE", metadata={**TEXT_KEYS, **MOE_KEYS},
                     requires={"not get('norm_topk_prob', False)": "it never renormalises the chosen experts' weights "
                                                                   "(norm_topk_prob false)"}),
    tiny=dict(TINY_MOE, shared_expert_intermediate_size=64),
))
QWEN3_MOE = register_architecture(ArchitectureSpec(
    model_type="qwen3_moe",
    tensors=decoder("Qwen3MoeForCausalLM", (*attention(qk_norm=True), *experts(P), *LAYER_NORMS)),
    no_onnx=NO_EXPERT_ONNX,
    gguf=GGUFMapping(arch="QWEN3MOE", metadata={**TEXT_KEYS, **MOE_KEYS},
                     requires={"get('norm_topk_prob', False)": "it always renormalises the chosen experts' weights "
                                                               "(norm_topk_prob true)"}),
    tiny=dict(TINY_MOE, head_dim=16, norm_topk_prob=True),
))
