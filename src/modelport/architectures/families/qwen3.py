"""Qwen3: per-head RMSNorm on Q and K (attn_q_norm/attn_k_norm), explicit head_dim."""
from ..gguf_mapping import GGUFMapping, decoder_metadata
from ..registry import ArchitectureSpec, register_architecture

SPEC = register_architecture(ArchitectureSpec(
    model_type="qwen3",
    onnx="decoder",
    gguf=GGUFMapping(arch="QWEN3", metadata=decoder_metadata),
))
