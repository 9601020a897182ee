"""PyTorch training checkpoints (.pth/.pt/.bin/.ckpt, pickled with torch.save): read only."""
from __future__ import annotations

from pathlib import Path

from ...storage import byte_source
from ..base import Format, ReadOptions

SUFFIXES = (".pth", ".pt", ".bin", ".ckpt")
ZIP_MAGIC = b"PK\x03\x04"


def sniff(path: Path) -> bool:
    if not path.is_file():
        return False
    if path.suffix in SUFFIXES:
        return True
    return bytes(byte_source(path).read(0, 4)) == ZIP_MAGIC


def _read(path: Path, options: ReadOptions):
    from .reader import read
    return read(path, options)


FORMAT = Format("torch", sniff, _read)
