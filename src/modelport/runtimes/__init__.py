"""The engines a model runs in, behind one interface (base.Runtime): transformers, llama.cpp, onnxruntime.

Formats name the runtime that runs them (formats/base.py: Format.runtime); `open_runtime` makes one.
Each runtime module imports its engine only when used.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..storage import staged

if TYPE_CHECKING:
    from ..core.bundle import ModelBundle
    from .base import Runtime


def _transformers(path: Path, bundle: Callable[[], "ModelBundle"], context: int) -> "Runtime":
    from .transformers import TransformersRuntime
    return TransformersRuntime.open(bundle())


def _llama_cpp(path: Path, bundle: Callable[[], "ModelBundle"], context: int) -> "Runtime":
    from .llama_cpp import LlamaCppRuntime
    return LlamaCppRuntime(staged(path), n_ctx=context)       # the engine opens the file itself


def _onnxruntime(path: Path, bundle: Callable[[], "ModelBundle"], context: int) -> "Runtime":
    from .onnxruntime import OnnxRuntime
    staged(path.parent)                   # the graph and its external data files beside it
    return OnnxRuntime(path)


RUNTIMES: dict[str, Callable[[Path, Callable[[], "ModelBundle"], int], "Runtime"]] = {
    "transformers": _transformers, "llama.cpp": _llama_cpp, "onnxruntime": _onnxruntime,
}


def open_runtime(name: str, path: Path, bundle: Callable[[], "ModelBundle"], context: int = 1024) -> "Runtime":
    """The runtime `name` on the model at `path`; `bundle` reads it, for runtimes that run a bundle.
    `context` is the longest run of ids it will be fed (runtimes that size a cache up front use it)."""
    return RUNTIMES[name](path, bundle, context)
