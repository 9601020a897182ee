"""phi3: decoder-only, RMSNorm, rotary attention; names follow transformers' Phi3 classes."""
from .registry import ArchitectureSpec, register_architecture

SPEC = register_architecture(ArchitectureSpec(model_type="phi3"))
