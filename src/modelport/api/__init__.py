"""The Python API behind every command: convert, convert_profile, inspect, load. The CLI only parses and prints."""
from __future__ import annotations

from pathlib import Path

from ..core.bundle import ModelBundle
from ..formats import ReadOptions
from ..formats import load as _load
from .convert import convert, convert_profile
from .inspect import inspect
from .options import ConvertOptions

__all__ = ["ConvertOptions", "convert", "convert_profile", "inspect", "load"]


def load(src: str | Path, base_model: str | Path | None = None, checkpoint: str | None = None,
         trust_remote_code: bool = False) -> ModelBundle:
    """Read any supported source into a ModelBundle (lazy: only headers are read)."""
    base = Path(base_model).expanduser() if base_model is not None else None
    return _load(src, ReadOptions(base, trust_remote_code), checkpoint)
