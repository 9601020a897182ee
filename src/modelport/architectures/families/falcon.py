"""Falcon: fused QKV stored per KV group (ungrouped into q, k, v blocks for llama.cpp), parallel attention
and MLP, no biases; the 7B shape (multi-query, one LayerNorm) or the 40B one (a LayerNorm each)."""
from ..gguf_mapping import TEXT_KEYS, GGUFMapping
from ..registry import ArchitectureSpec, register_architecture
from ..rules import UngroupQKV
from ..tensors import Tensors, linear, norm, t

P = "transformer.h.{L}"
NEW = "get('new_decoder_architecture', False)"
BIAS = "get('bias', False)"
LAYER = (*linear(f"{P}.self_attention.query_key_value", "(heads + 2 * kv_heads) * head_dim", "hidden", BIAS),
         *linear(f"{P}.self_attention.dense", "hidden", "hidden", BIAS),
         *linear(f"{P}.mlp.dense_h_to_4h", "4 * hidden", "hidden", BIAS),
         *linear(f"{P}.mlp.dense_4h_to_h", "hidden", "4 * hidden", BIAS),
         *norm(f"{P}.ln_attn", bias=True, when=NEW), *norm(f"{P}.ln_mlp", bias=True, when=NEW),
         *norm(f"{P}.input_layernorm", bias=True, when=f"not {NEW}"))

SPEC = register_architecture(ArchitectureSpec(
    model_type="falcon",
    tensors=Tensors((t("transformer.word_embeddings.weight", "vocab", "hidden"),), LAYER,
                    (*norm("transformer.ln_f", bias=True), t("lm_head.weight", "vocab", "hidden")),
                    {"lm_head.weight": "transformer.word_embeddings.weight"}, prefix="transformer",
                    classes=("FalconForCausalLM",)),
    tie_default=True,
    onnx="decoder",
    gguf=GGUFMapping(arch="FALCON", metadata=TEXT_KEYS, rules=(UngroupQKV(("query_key_value.weight",
                                                                            "query_key_value.bias")),)),
    tiny=dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_kv_heads=2,
              new_decoder_architecture=True, ffn_hidden_size=256, layer_norm_epsilon=1e-5),
))
