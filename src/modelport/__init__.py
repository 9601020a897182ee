"""modelport: move language models between training checkpoints, HF, DCP, GGUF and ONNX, and prove them."""
from .api import convert, inspect, load
from .architectures import ArchitectureSpec, register_architecture
from .bundle import ModelBundle, TensorRef
from .errors import (
    ModelConnectionError,
    ModelConversionError,
    ModelFileNotFoundError,
    ModelportError,
    ModelVerificationError,
    UsageError,
)

__version__ = "0.1.0"
__all__ = [
    "ArchitectureSpec", "ModelBundle", "ModelConnectionError", "ModelConversionError", "ModelFileNotFoundError",
    "ModelVerificationError", "ModelportError", "TensorRef", "UsageError", "convert", "inspect", "load",
    "register_architecture",
]
