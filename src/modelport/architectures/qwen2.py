"""qwen2: decoder-only, RMSNorm, rotary attention; names follow transformers' Qwen2 classes."""
from .registry import ArchitectureSpec, register_architecture

SPEC = register_architecture(ArchitectureSpec(model_type="qwen2"))
