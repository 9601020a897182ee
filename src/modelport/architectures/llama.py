"""llama: decoder-only, RMSNorm, rotary attention; names follow transformers' Llama classes."""
from .registry import ArchitectureSpec, register_architecture

SPEC = register_architecture(ArchitectureSpec(model_type="llama"))
