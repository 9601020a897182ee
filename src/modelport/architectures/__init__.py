"""Model families as data: one spec per family (families/), its tensor rules, and the registry plugins extend."""
from . import families  # noqa: F401  (registers the built-in specs)
from .registry import (
                       ArchitectureSpec,
                       Variant,
                       add_plugin_path,
                       register_architecture,
                       registered,
                       spec_for,
                       supported_model_types,
)

__all__ = ["ArchitectureSpec", "Variant", "add_plugin_path", "register_architecture", "registered", "spec_for",
           "supported_model_types"]
