"""Which checkpoints a training run has written, their step and window, and whether they are complete.

A checkpoint that is still being written must never be read. Completeness is judged from what
the format promises (a DCP folder's `.metadata` is written last; a sharded HF folder's index names
every shard) and, for every file, from time: nothing in it changed for `settle` seconds.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

from ..files.fingerprint import files_under, fingerprint
from ..formats import sniff
from ..formats.checkpoints import TEMP_SUFFIXES, Checkpoint, discover

# Where trainers put a checkpoint's counters: inside a checkpoint folder, or beside a checkpoint file.
FOLDER_METADATA = ("metadata.json", "checkpoint_metadata.json", "trainer_state.json", "meta.json")
FILE_METADATA_SUFFIXES = (".json", ".meta.json", ".metadata.json")


@dataclass(frozen=True)
class Found:
    """A checkpoint with the counters a version is named by."""

    path: Path
    step: int | None
    window: int | None

    @property
    def version_step(self) -> int | None:
        return self.step if self.step is not None else self.window


def _metadata_file(ckpt: Path) -> Path | None:
    candidates = ([ckpt / n for n in FOLDER_METADATA] if ckpt.is_dir()
                  else [ckpt.with_name(ckpt.stem + s) for s in FILE_METADATA_SUFFIXES])
    return next((c for c in candidates if c.is_file()), None)


def counters(ckpt: Checkpoint) -> Found:
    """Step and window from a metadata JSON when there is one, else the step in the name."""
    step, window = None, None
    meta = _metadata_file(ckpt.path)
    if meta is not None:
        try:
            data = json.loads(meta.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            data = {}
        if isinstance(data, dict):
            step = _int(data.get("global_step", data.get("step")))
            window = _int(data.get("window"))
    name = ckpt.path.name.lower()
    if step is None and window is None:
        if "window" in name:
            window = ckpt.step
        else:
            step = ckpt.step
    return Found(ckpt.path, step, window)


def _int(value: object) -> int | None:
    try:
        return int(value) if value is not None else None
    except (TypeError, ValueError):
        return None


def find(folder: Path) -> list[Found]:
    """Checkpoints in `folder` that carry a step or window, oldest first."""
    found = [counters(c) for c in discover(folder)] if folder.is_dir() else []
    return sorted((f for f in found if f.version_step is not None), key=lambda f: f.version_step)


def files_of(path: Path) -> list[Path]:
    """A checkpoint's files, with the metadata JSON beside a single-file checkpoint."""
    meta = _metadata_file(path) if path.is_file() else None
    return files_under(path) + ([meta] if meta else [])


def signature(path: Path) -> str:
    """Changes whenever any file of the checkpoint does: a rewritten checkpoint is a new one."""
    return fingerprint(files_of(path), path.parent)


def unfinished(path: Path, settle: float, now: float | None = None) -> str | None:
    """Why `path` is not ready to read yet, or None when it is complete."""
    now = time.time() if now is None else now
    if path.is_dir() and any(p.name.endswith(TEMP_SUFFIXES) for p in path.rglob("*")):
        return "has temporary files inside"
    found = sniff(path)
    kind = found.name if found else None
    if kind == "dcp" and not (path / ".metadata").is_file():
        return "DCP folder without .metadata yet"
    if kind == "hf" and path.is_dir():
        from ..formats.hf.reader import weight_files
        missing = [p.name for p in weight_files(path, must_exist=False) if not p.is_file()]
        if missing:
            return f"{len(missing)} shard(s) of the index not written yet ({missing[0]} ...)"
    files = files_of(path)
    if not files:
        return "no files yet"
    newest = max(p.stat().st_mtime for p in files)
    if now - newest < settle:
        return f"changed {now - newest:.1f} s ago (settle time {settle:g} s)"
    return None
