"""BERT encoders for sentence embeddings: the bare BertModel; pooling as sentence-transformers says."""
from ..gguf_mapping import GGUFMapping, core_metadata
from ..registry import ArchitectureSpec, register_architecture


def _metadata(w, hp) -> None:
    core_metadata(w, hp)
    w.add_layer_norm_eps(hp.ln_eps if hp.ln_eps is not None else 1e-12)
    w.add_causal_attention(False)
    w.add_token_type_count(hp.raw.get("type_vocab_size", 2))


SPEC = register_architecture(ArchitectureSpec(
    model_type="bert",
    hf_class="BertModel",
    onnx="encoder",
    gguf=GGUFMapping(arch="BERT", metadata=_metadata,
                     skip=("embeddings.position_ids", "pooler.dense.weight", "pooler.dense.bias")),
))
