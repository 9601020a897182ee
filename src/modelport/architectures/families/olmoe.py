"""OLMoE (AllenAI): OLMo-2-style whole-projection Q/K norms with routed SwiGLU experts (top-k weights not
renormalised)."""
from ..gguf_mapping import TEXT_KEYS, GGUFMapping, Key
from ..registry import ArchitectureSpec, register_architecture
from ..tensors import norm
from .llama import LAYER_NORMS, TINY, attention, decoder
from .moe import MOE_KEYS, NO_EXPERT_ONNX, experts

P = "model.layers.{L}"

SPEC = register_architecture(ArchitectureSpec(
    model_type="olmoe",
    tensors=decoder("OlmoeForCausalLM", (*attention(), *norm(f"{P}.self_attn.q_norm", "heads * head_dim"),
                                         *norm(f"{P}.self_attn.k_norm", "kv_heads * head_dim"),
                                         *experts(f"{P}.mlp", ffn="ffn"), *LAYER_NORMS)),
    no_onnx=NO_EXPERT_ONNX,
    gguf=GGUFMapping(arch="OLMOE", metadata={**TEXT_KEYS, **MOE_KEYS,
                                            "{arch}.attention.layer_norm_rms_epsilon": Key(1e-5, "f32")},
                     requires={"kv_heads == heads": "its K norm spans the whole hidden size (no grouped-query attention)",
                               "not get('norm_topk_prob', False)": "it never renormalises the chosen experts' weights"}),
    tiny=dict(TINY, num_key_value_heads=4, num_experts=4, num_experts_per_tok=2, tie_word_embeddings=False),
))
