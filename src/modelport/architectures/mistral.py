"""mistral: decoder-only, RMSNorm, rotary attention; names follow transformers' Mistral classes."""
from .registry import ArchitectureSpec, register_architecture

SPEC = register_architecture(ArchitectureSpec(model_type="mistral"))
