"""Qwen3: per-head RMSNorm on Q and K (attn_q_norm/attn_k_norm), an explicit head_dim, NEOX rope."""
from ..gguf_mapping import GGUFMapping
from ..registry import ArchitectureSpec, register_architecture
from ..tensors import Tensors
from .llama import EMBED, HEAD, LAYER_NORMS, TIED, TINY, attention, swiglu

TENSORS = Tensors(EMBED, (*attention(qk_norm=True), *swiglu(bias=False), *LAYER_NORMS), HEAD, TIED, prefix="model",
                  classes=("Qwen3ForCausalLM",))

SPEC = register_architecture(ArchitectureSpec(
    model_type="qwen3",
    tensors=TENSORS,
    onnx="decoder",
    gguf=GGUFMapping(arch="QWEN3"),
    tiny=dict(TINY, head_dim=32, tie_word_embeddings=True),
))
