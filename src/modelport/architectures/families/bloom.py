"""BLOOM: ALiBi positions (no rope), LayerNorm after the embedding, fused QKV stored head by head
(regrouped for llama.cpp), tied embeddings."""
from ..gguf_mapping import TEXT_KEYS, GGUFMapping
from ..registry import ArchitectureSpec, register_architecture
from ..rules import RegroupQKV
from ..tensors import Tensors, linear, norm, t

P = "transformer.h.{L}"
LAYER = (*norm(f"{P}.input_layernorm", bias=True),
         *linear(f"{P}.self_attention.query_key_value", "3 * hidden", "hidden", True),
         *linear(f"{P}.self_attention.dense", "hidden", "hidden", True),
         *norm(f"{P}.post_attention_layernorm", bias=True),
         *linear(f"{P}.mlp.dense_h_to_4h", "4 * hidden", "hidden", True),
         *linear(f"{P}.mlp.dense_4h_to_h", "hidden", "4 * hidden", True))

SPEC = register_architecture(ArchitectureSpec(
    model_type="bloom",
    tensors=Tensors((t("transformer.word_embeddings.weight", "vocab", "hidden"),
                     *norm("transformer.word_embeddings_layernorm", bias=True)),
                    LAYER, (*norm("transformer.ln_f", bias=True), t("lm_head.weight", "vocab", "hidden")),
                    {"lm_head.weight": "transformer.word_embeddings.weight"}, prefix="transformer",
                    classes=("BloomForCausalLM",)),
    tie_default=True,
    onnx="decoder",
    gguf=GGUFMapping(arch="BLOOM", metadata=TEXT_KEYS,
                     rules=(RegroupQKV(("query_key_value.weight", "query_key_value.bias")),), strip_prefix="transformer."),
    tiny=dict(hidden_size=64, n_layer=2, n_head=4, layer_norm_epsilon=1e-5),
))
