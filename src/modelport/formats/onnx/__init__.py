"""ONNX (onnxruntime's format): written only, by tracing the model with torch.onnx and validating every
graph in onnxruntime before anything is published."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ...core.errors import UsageError
from ..base import Format, WriteSettings

QUANT_ALIASES = {None: "fp32", "f32": "fp32", "fp32": "fp32", "float32": "fp32", "f16": "fp16", "fp16": "fp16",
                 "float16": "fp16", "int8": "int8", "q8": "int8"}
MIN_OPSET = 18                # the dynamo exporter's floor


def sniff(path: Path) -> bool:
    return path.is_file() and path.suffix == ".onnx"


@dataclass(frozen=True)
class ONNXOptions:
    quant: str = "fp32"         # fp32, fp16 (onnxruntime's converter) or int8 (its dynamic quantizer)
    opset: int = MIN_OPSET
    with_past: bool = False     # decoders: also a graph that takes and returns the KV cache

    @classmethod
    def from_settings(cls, settings: WriteSettings) -> "ONNXOptions":
        quant = QUANT_ALIASES.get(settings.quant.lower() if settings.quant else None)
        if quant is None:
            raise UsageError(f"--quant {settings.quant}: ONNX output takes fp32, fp16 or int8")
        if settings.opset < MIN_OPSET:
            raise UsageError(f"--opset: the exporter needs opset {MIN_OPSET} or newer")
        return cls(quant, settings.opset, settings.with_past)


def _write(bundle, path: Path, options: ONNXOptions) -> dict:
    from .export import write
    return write(bundle, path, options)


FORMAT = Format("onnx", sniff, None, _write, ONNXOptions.from_settings,
                takes=frozenset({"quant", "opset", "with_past", "threads"}), output="files", suffix=".onnx",
                runtime="onnxruntime")
