"""The table of formats, in the order they are sniffed, and the lookups the API makes through it."""
from __future__ import annotations

from pathlib import Path

from ..core.errors import UsageError
from . import dcp, gguf, hf, onnx, peft, pytorch
from .base import Format

# DCP and PEFT before HF (a DCP folder is never an HF one; an adapter's weights are safetensors too), GGUF
# and ONNX before torch pickles (which are recognised by suffix or the zip magic alone)
FORMATS: tuple[Format, ...] = (dcp.FORMAT, peft.FORMAT, hf.FORMAT, gguf.FORMAT, onnx.FORMAT, pytorch.FORMAT)
TARGET_ALIASES = {"huggingface": "hf"}


def by_name(name: str) -> Format:
    return next(f for f in FORMATS if f.name == name)


def sniff(path: Path) -> Format | None:
    """The format of an existing path, by what its suffix, first bytes or folder layout say."""
    return next((f for f in FORMATS if f.sniff(path)), None)


def target(dst: Path, to: str | None) -> Format:
    """The format to write: --to, else the one DST's suffix names, else an HF folder."""
    if to is None:
        return next((f for f in FORMATS if f.suffix and dst.suffix == f.suffix), by_name("hf"))
    name = TARGET_ALIASES.get(to.lower(), to.lower())
    writable = [f.name for f in FORMATS if f.write is not None]
    if name not in writable:
        raise UsageError(f"--to {to}: writing this format is not supported (supported: {', '.join(writable)})")
    return by_name(name)
