"""Phi-1/1.5/2 (Microsoft): parallel attention and GELU MLP after one LayerNorm, partial NEOX rope, biases
everywhere, an LM head with a bias."""
from ..gguf_mapping import TEXT_KEYS, GGUFMapping
from ..registry import ArchitectureSpec, register_architecture
from ..tensors import Tensors, linear, norm
from .llama import EMBED, TINY

P = "model.layers.{L}"
LAYER = (*linear(f"{P}.self_attn.q_proj", "heads * head_dim", "hidden", True),
         *linear(f"{P}.self_attn.k_proj", "kv_heads * head_dim", "hidden", True),
         *linear(f"{P}.self_attn.v_proj", "kv_heads * head_dim", "hidden", True),
         *norm(f"{P}.self_attn.q_layernorm", "head_dim", bias=True, when="get('qk_layernorm', False)"),
         *norm(f"{P}.self_attn.k_layernorm", "head_dim", bias=True, when="get('qk_layernorm', False)"),
         *linear(f"{P}.self_attn.dense", "hidden", "heads * head_dim", True),
         *linear(f"{P}.mlp.fc1", "ffn", "hidden", True), *linear(f"{P}.mlp.fc2", "hidden", "ffn", True),
         *norm(f"{P}.input_layernorm", bias=True))

SPEC = register_architecture(ArchitectureSpec(
    model_type="phi",
    tensors=Tensors(EMBED, LAYER, (*norm("model.final_layernorm", bias=True), *linear("lm_head", "vocab", "hidden", True)),
                    prefix="model", classes=("PhiForCausalLM",)),
    onnx="decoder",
    gguf=GGUFMapping(arch="PHI2", metadata=TEXT_KEYS),
    tiny=dict(TINY, num_key_value_heads=4, partial_rotary_factor=0.5),
))
