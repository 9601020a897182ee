"""GLM-4 (Zhipu, dense): Q/K/V biases, partial interleaved rope (which llama.cpp's GLM4 runs as it is),
a fused gate_up (llama.cpp's ffn_up holds both halves) and a norm after attention and after the MLP."""
from ..gguf_mapping import TEXT_KEYS, GGUFMapping
from ..registry import ArchitectureSpec, register_architecture
from ..tensors import linear, norm
from .llama import LAYER_NORMS, TINY, attention, decoder

P = "model.layers.{L}"
LAYER = (*attention(qkv_bias="get('attention_bias', True)", o_bias=False),
         *linear(f"{P}.mlp.gate_up_proj", "2 * ffn", "hidden"), *linear(f"{P}.mlp.down_proj", "hidden", "ffn"),
         *LAYER_NORMS, *norm(f"{P}.post_self_attn_layernorm"), *norm(f"{P}.post_mlp_layernorm"))

SPEC = register_architecture(ArchitectureSpec(
    model_type="glm4",
    tensors=decoder("Glm4ForCausalLM", LAYER),
    onnx="decoder",
    gguf=GGUFMapping(arch="GLM4", metadata=TEXT_KEYS),
    tiny=dict(TINY, head_dim=16, pad_token_id=None, partial_rotary_factor=0.5, attention_bias=True,
              tie_word_embeddings=False),
))
