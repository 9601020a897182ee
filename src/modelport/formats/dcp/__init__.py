"""torch distributed checkpoints (DCP: `.metadata` + `*.distcp`), read and written in one process."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..base import Format, ReadOptions, WriteSettings


def sniff(path: Path) -> bool:
    return path.is_dir() and ((path / ".metadata").is_file() or any(path.glob("*.distcp")))


@dataclass(frozen=True)
class DCPOptions:
    dtype: str | None           # None: from the config, else the source tensors

    @classmethod
    def from_settings(cls, settings: WriteSettings) -> "DCPOptions":
        return cls(settings.dtype)


def _read(path: Path, options: ReadOptions):
    from .reader import read
    return read(path, options)


def _write(bundle, out: Path, options: DCPOptions) -> dict:
    from .writer import write
    return write(bundle, out, options)


FORMAT = Format("dcp", sniff, _read, _write, DCPOptions.from_settings, takes=frozenset({"dtype", "threads"}))
