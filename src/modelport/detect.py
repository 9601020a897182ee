"""What format is this path? Formats are detected from content and layout, never declared."""
from __future__ import annotations

from pathlib import Path

from .errors import UsageError

GGUF_MAGIC = b"GGUF"
ZIP_MAGIC = b"PK\x03\x04"

HF, TORCH, DCP, GGUF, ONNX, CHECKPOINTS = "hf", "torch", "dcp", "gguf", "onnx", "checkpoints"


def _head(path: Path, n: int = 8) -> bytes:
    with open(path, "rb") as f:
        return f.read(n)


def is_dcp_dir(path: Path) -> bool:
    return path.is_dir() and ((path / ".metadata").is_file() or any(path.glob("*.distcp")))


def detect(path: Path, allow_checkpoint_folder: bool = True) -> str | None:
    """One of hf, torch, dcp, gguf, onnx, checkpoints; None when nothing matches."""
    from .formats.hf import is_hf_dir

    if path.is_file():
        head = _head(path)
        if head.startswith(GGUF_MAGIC) or path.suffix == ".gguf":
            return GGUF
        if path.suffix == ".onnx":
            return ONNX
        if path.suffix == ".safetensors":
            return HF
        if path.suffix in (".pth", ".pt", ".bin", ".ckpt") or head.startswith(ZIP_MAGIC):
            return TORCH
        return None
    if path.is_dir():
        if is_dcp_dir(path):
            return DCP
        if is_hf_dir(path):
            return HF
        if allow_checkpoint_folder:
            from .checkpoints import discover
            if discover(path):
                return CHECKPOINTS
    return None


def detect_or_fail(path: Path) -> str:
    if not path.exists():
        raise UsageError("no such file or folder", path)
    kind = detect(path)
    if kind is None:
        raise UsageError("not a model this tool recognizes (expected an HF folder, a .pth/.pt/.bin/.ckpt "
                         "checkpoint, a DCP folder, a GGUF or ONNX file, or a folder of checkpoints)", path)
    return kind


def target_from_destination(dst: Path) -> str:
    if dst.suffix == ".gguf":
        return GGUF
    if dst.suffix == ".onnx":
        return ONNX
    return HF
