"""Finding checkpoints in a training run's folder and telling which is newest.

Names carry the step in many spellings (`checkpoint-1000`, `step_1000`, `global_step1000`,
`window-42`, `epoch-001-final-ckpt.pth`); the number after the last such word is the step.
Temporaries (`*.tmp`, `*.partial`, our own hidden temp siblings) are never checkpoints.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..core.errors import UsageError
from ..files.atomic import is_temp_name
from .table import sniff

STEP_RE = re.compile(r"(?:global[_-]?step|checkpoint|ckpt|step|iter|window|epoch)[-_]?(\d+)", re.IGNORECASE)
FILE_SUFFIXES = (".pth", ".pt", ".bin", ".ckpt", ".safetensors")
TEMP_SUFFIXES = (".tmp", ".partial", ".incomplete", ".lock")


@dataclass(frozen=True)
class Checkpoint:
    path: Path
    step: int | None

    @property
    def name(self) -> str:
        return self.path.stem if self.path.is_file() else self.path.name

    def sort_key(self) -> tuple[int, int, float, str]:
        return (self.step is not None, self.step or 0, self.path.stat().st_mtime, self.path.name)


def step_of(name: str) -> int | None:
    matches = STEP_RE.findall(name)
    return int(matches[-1]) if matches else None


def is_ignored(path: Path) -> bool:
    return path.name.startswith(".") or is_temp_name(path.name) or path.name.endswith(TEMP_SUFFIXES)


def discover(folder: Path) -> list[Checkpoint]:
    """Checkpoints directly inside `folder`, oldest first."""
    found = []
    for entry in folder.iterdir():
        if is_ignored(entry):
            continue
        if entry.is_file() and entry.suffix not in FILE_SUFFIXES:
            continue
        if entry.is_dir() and sniff(entry) is None:
            continue
        found.append(Checkpoint(entry, step_of(entry.name)))
    return sorted(found, key=Checkpoint.sort_key)


def pick(folder: Path, choice: str | None = None) -> Checkpoint:
    """The checkpoint `choice` names (a path, a name inside `folder`, or a step), else the newest."""
    found = discover(folder)
    if not found:
        raise UsageError("no checkpoints found in this folder", folder)
    if choice is None:
        return found[-1]
    candidate = Path(choice)
    for ckpt in found:
        if (candidate.exists() and ckpt.path.resolve() == candidate.resolve()) or choice in (ckpt.path.name, ckpt.name) \
                or (choice.isdigit() and ckpt.step == int(choice)):
            return ckpt
    names = ", ".join(c.path.name for c in found[-8:])
    raise UsageError(f"--checkpoint {choice!r} is not one of the checkpoints here ({names})", folder)
