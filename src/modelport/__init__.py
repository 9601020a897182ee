"""modelport: move language models between training checkpoints, HF, DCP, GGUF and ONNX, and prove them.

Importing the package is cheap: the API and the architecture registry are imported when first used.
"""
from __future__ import annotations

from importlib import import_module
from typing import Any

from .core.bundle import ModelBundle, TensorRef
from .core.errors import (
    ModelConnectionError,
    ModelConversionError,
    ModelFileNotFoundError,
    ModelportError,
    ModelVerificationError,
    UsageError,
)
from .core.version import __version__

_LAZY = {"convert": "modelport.api", "convert_profile": "modelport.api", "inspect": "modelport.api",
         "load": "modelport.api", "ConvertOptions": "modelport.api", "verify": "modelport.verify",
         "ArchitectureSpec": "modelport.architectures", "register_architecture": "modelport.architectures"}

__all__ = ["ArchitectureSpec", "ConvertOptions", "ModelBundle", "ModelConnectionError", "ModelConversionError",
           "ModelFileNotFoundError", "ModelVerificationError", "ModelportError", "TensorRef", "UsageError",
           "__version__", "convert", "convert_profile", "inspect", "load", "register_architecture", "verify"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'modelport' has no attribute {name!r}")
