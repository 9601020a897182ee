"""GPT-NeoX (Pythia, ...): fused QKV stored head by head (regrouped into q, k, v blocks for llama.cpp),
partial NEOX rope, LayerNorm with biases, parallel residuals by default."""
from ..gguf_mapping import TEXT_KEYS, GGUFMapping, Key
from ..registry import ArchitectureSpec, register_architecture
from ..rules import RegroupQKV
from ..tensors import Tensors, linear, norm, t

P = "gpt_neox.layers.{L}"
LAYER = (*norm(f"{P}.input_layernorm", bias=True), *norm(f"{P}.post_attention_layernorm", bias=True),
         *linear(f"{P}.attention.query_key_value", "3 * hidden", "hidden", True),
         *linear(f"{P}.attention.dense", "hidden", "hidden", True),
         *linear(f"{P}.mlp.dense_h_to_4h", "ffn", "hidden", True),
         *linear(f"{P}.mlp.dense_4h_to_h", "hidden", "ffn", True))
KEYS = {**TEXT_KEYS, "{arch}.use_parallel_residual": Key("get('use_parallel_residual', True)", "bool")}

SPEC = register_architecture(ArchitectureSpec(
    model_type="gpt_neox",
    tensors=Tensors((t("gpt_neox.embed_in.weight", "vocab", "hidden"),), LAYER,
                    (*norm("gpt_neox.final_layer_norm", bias=True), t("embed_out.weight", "vocab", "hidden")),
                    prefix="gpt_neox", classes=("GPTNeoXForCausalLM",)),      # never tied, whatever the config says
    onnx="decoder",
    gguf=GGUFMapping(arch="GPTNEOX", metadata=KEYS, rules=(RegroupQKV(("query_key_value.weight", "query_key_value.bias")),)),
    tiny=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              max_position_embeddings=512, rotary_pct=0.5, tie_word_embeddings=False),
))
