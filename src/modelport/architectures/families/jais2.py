"""Jais 2 (Inception): LayerNorms with biases, biased attention with NEOX rope, and a gateless ReLU² MLP
(up, down) with biases; llama.cpp's JAIS2."""
from ..gguf_mapping import TEXT_KEYS, GGUFMapping
from ..registry import ArchitectureSpec, register_architecture
from ..tensors import linear, norm, t
from .llama import TINY, attention, decoder

P = "model.layers.{L}"
BIAS = "get('mlp_bias', True)"

SPEC = register_architecture(ArchitectureSpec(
    model_type="jais2",
    tensors=decoder("Jais2ForCausalLM", (
        *attention(qkv_bias="get('attention_bias', True)", o_bias="get('attention_bias', True)"),
        *linear(f"{P}.mlp.up_proj", "ffn", "hidden", BIAS), *linear(f"{P}.mlp.down_proj", "hidden", "ffn", BIAS),
        *norm(f"{P}.input_layernorm", bias=True), *norm(f"{P}.post_attention_layernorm", bias=True)),
        head=(*norm("model.norm", bias=True), t("lm_head.weight", "vocab", "hidden"))),
    onnx="decoder",
    gguf=GGUFMapping(arch="JAIS2", metadata=TEXT_KEYS),
    tiny=dict({k: v for k, v in TINY.items() if k != "rms_norm_eps"}, layer_norm_eps=1e-5, head_dim=16,
              tie_word_embeddings=False),
))
