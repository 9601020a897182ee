"""Every format modelport reads or writes, behind one interface (base.Format), listed in table.py.

`load` reads any source, a folder of checkpoints included, into a ModelBundle; the API writes
through the target format's record. Nothing here imports a heavy library: each format's package
imports its reader or writer only when it is used.
"""
from __future__ import annotations

from pathlib import Path

from ..core.bundle import ModelBundle
from ..core.errors import UsageError
from .base import Format, ReadOptions, WriteSettings
from .checkpoints import discover, pick
from .table import FORMATS, by_name, sniff, target

CHECKPOINTS = "checkpoints"         # not a format: a folder of them, of which one is picked

__all__ = ["CHECKPOINTS", "FORMATS", "Format", "ReadOptions", "WriteSettings", "by_name", "detect",
           "detect_or_fail", "load", "resolve_source", "sniff", "target"]


def detect(path: Path) -> str | None:
    """The format's name, CHECKPOINTS for a folder of checkpoints, None when nothing matches."""
    found = sniff(path)
    if found is not None:
        return found.name
    return CHECKPOINTS if path.is_dir() and discover(path) else None


def detect_or_fail(path: Path) -> str:
    if not path.exists():
        raise UsageError("no such file or folder", path)
    kind = detect(path)
    if kind is None:
        raise UsageError("not a model this tool recognizes (expected an HF folder, a .pth/.pt/.bin/.ckpt "
                         "checkpoint, a DCP folder, a GGUF or ONNX file, or a folder of checkpoints)", path)
    return kind


def resolve_source(src: Path, checkpoint: str | None = None) -> tuple[Path, Format]:
    """The concrete checkpoint to read and its format: `src` itself, or the one picked from a folder of them."""
    kind = detect_or_fail(src)
    if kind == CHECKPOINTS:
        chosen = pick(src, checkpoint).path
        return chosen, by_name(detect_or_fail(chosen))
    if checkpoint is not None:
        raise UsageError("--checkpoint needs a folder holding several checkpoints", src)
    return src, by_name(kind)


def load(src: str | Path, options: ReadOptions = ReadOptions(), checkpoint: str | None = None) -> ModelBundle:
    """Any supported source as a ModelBundle (lazy: only headers are read)."""
    path, fmt = resolve_source(Path(src).expanduser(), checkpoint)
    if options.base_model is not None and not options.base_model.exists():
        raise UsageError("no such folder", options.base_model)
    if fmt.read is None:
        raise UsageError(f"reading {fmt.name} files is not supported", path)
    return fmt.read(path, options)
