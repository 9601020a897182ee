"""BERT encoders, used for sentence embeddings: the bare BertModel is what must be present."""
from .registry import ArchitectureSpec, register_architecture

SPEC = register_architecture(ArchitectureSpec(model_type="bert", hf_class="BertModel"))
