"""Checkpoints saved quantized by a training-side method, read as the HF tensors they dequantize to.

A quantized source is an HF folder whose config carries `quantization_config`: its weights are stored
as narrow integers or floats beside scales (and zero points, group indices) under names of their own.
Each method is one module here whose `read` replaces those stored tensors by one lazy float32 TensorRef
under the HF name, computed a row block at a time from the rows of the stored tensors it needs, so a
quantized source streams like any other. The arithmetic is the one transformers and llama.cpp's
converter do (an exact float32 product), so an f32 GGUF is byte-identical to llama.cpp's.

Methods are modules named in METHODS and imported only when a checkpoint names them.
"""
from __future__ import annotations

import importlib
from pathlib import Path

from ...core.bundle import TensorRef
from ...core.errors import CorruptInputError, ModelConversionError
from .parts import Quantization

METHODS = {"fp8": "fp8", "compressed-tensors": "compressed", "gptq": "gptq", "mxfp4": "mxfp4"}

__all__ = ["METHODS", "Quantization", "dequantized", "quantization_of"]


def quantization_of(config: dict) -> dict | None:
    """The config's `quantization_config` when it names a method, else None."""
    found = config.get("quantization_config")
    return found if isinstance(found, dict) and found.get("quant_method") else None


def dequantized(refs: dict[str, TensorRef], config: dict,
                config_path: Path) -> tuple[dict[str, TensorRef], Quantization | None]:
    """`refs` with every quantized weight replaced by its lazy dequantized tensor, and what the method
    was; unchanged (and None) for a checkpoint that is not quantized."""
    settings = quantization_of(config)
    if settings is None:
        return refs, None
    method = str(settings["quant_method"])
    if method not in METHODS:
        raise ModelConversionError(f"the weights are quantized with {method!r}, which modelport does not read "
                                   f"(it reads {', '.join(METHODS)})", config_path)
    module = importlib.import_module(f".{METHODS[method]}", __name__)
    out, quantization = module.read(refs, settings, config_path)
    if not quantization.weights:
        raise CorruptInputError(f"quantization_config names {method}, but no weight is stored quantized that way "
                                f"({module.STORED})", config_path)
    return out, quantization
