"""Model families. Importing this package registers every built-in spec."""
from . import bert, gemma, gpt2, llama, mistral, phi3, qwen2, qwen3  # noqa: F401  (registration)
from .registry import ArchitectureSpec, add_plugin_path, register_architecture, spec_for, supported_model_types

__all__ = ["ArchitectureSpec", "add_plugin_path", "register_architecture", "spec_for", "supported_model_types"]
