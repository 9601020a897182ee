"""Gemma 2 and Gemma 3 (text): tied embeddings, sandwich norms, soft-capped logits."""
from .registry import ArchitectureSpec, register_architecture

GEMMA2 = register_architecture(ArchitectureSpec(model_type="gemma2"))
GEMMA3 = register_architecture(ArchitectureSpec(model_type="gemma3_text", aliases=("gemma3",)))
