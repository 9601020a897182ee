"""BERT encoders for sentence embeddings: the bare BertModel; pooling as sentence-transformers says."""
from ..gguf_mapping import CORE_KEYS, GGUFMapping, Key
from ..registry import ArchitectureSpec, register_architecture
from ..tensors import Tensors, linear, norm, t

P = "encoder.layer.{L}"
LAYER = (*linear(f"{P}.attention.self.query", "hidden", "hidden", True),
         *linear(f"{P}.attention.self.key", "hidden", "hidden", True),
         *linear(f"{P}.attention.self.value", "hidden", "hidden", True),
         *linear(f"{P}.attention.output.dense", "hidden", "hidden", True),
         *norm(f"{P}.attention.output.LayerNorm", bias=True),
         *linear(f"{P}.intermediate.dense", "ffn", "hidden", True),
         *linear(f"{P}.output.dense", "hidden", "ffn", True),
         *norm(f"{P}.output.LayerNorm", bias=True))
KEYS = {
    **CORE_KEYS,
    "{arch}.attention.layer_norm_epsilon": Key("ln_eps if ln_eps is not None else 1e-12", "f32"),
    "{arch}.attention.causal": Key(False, "bool"),
    "tokenizer.ggml.token_type_count": Key("get('type_vocab_size', 2)"),
}

SPEC = register_architecture(ArchitectureSpec(
    model_type="bert",
    hf_class="BertModel",
    tensors=Tensors((t("embeddings.word_embeddings.weight", "vocab", "hidden"),
                     t("embeddings.position_embeddings.weight", "ctx", "hidden"),
                     t("embeddings.token_type_embeddings.weight", "get('type_vocab_size', 2)", "hidden"),
                     *norm("embeddings.LayerNorm", bias=True)),
                    LAYER, tuple(linear("pooler.dense", "hidden", "hidden", True)), prefix="bert",
                    classes=("BertModel",), optional=("pooler.dense.weight", "pooler.dense.bias")),
    onnx="encoder",
    gguf=GGUFMapping(arch="BERT", metadata=KEYS,
                     skip=("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias")),
    tiny=dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              max_position_embeddings=512, type_vocab_size=2),
    tiny_tokenizer="wordpiece",
))
