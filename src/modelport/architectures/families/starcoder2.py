"""StarCoder2: LayerNorm with biases, biased attention and a GELU MLP (c_fc/c_proj), NEOX rope, tied embeddings."""
from ..gguf_mapping import TEXT_KEYS, GGUFMapping
from ..registry import ArchitectureSpec, register_architecture
from ..tensors import Tensors, linear, norm, t
from .llama import EMBED, TIED, TINY, attention

LAYER = (*attention(qkv_bias="get('use_bias', True)", o_bias="get('use_bias', True)"),
         *linear("model.layers.{L}.mlp.c_fc", "ffn", "hidden", "get('use_bias', True)"),
         *linear("model.layers.{L}.mlp.c_proj", "hidden", "ffn", "get('use_bias', True)"),
         *norm("model.layers.{L}.input_layernorm", bias=True), *norm("model.layers.{L}.post_attention_layernorm", bias=True))

SPEC = register_architecture(ArchitectureSpec(
    model_type="starcoder2",
    tensors=Tensors(EMBED, LAYER, (*norm("model.norm", bias=True), t("lm_head.weight", "vocab", "hidden")), TIED,
                    prefix="model", classes=("Starcoder2ForCausalLM",)),
    tie_default=True,
    onnx="decoder",
    gguf=GGUFMapping(arch="STARCODER2", metadata=TEXT_KEYS),
    tiny=dict(TINY, norm_epsilon=1e-5),
))
