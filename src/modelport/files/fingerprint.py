"""A short fingerprint of files as the filesystem describes them (relative name, size, mtime).

It changes whenever any of them is rewritten and costs one stat per file, never a read: the watch
service uses it to tell a rewritten checkpoint from a retried one, `ensure` to key a local model's
cache entry.
"""
from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Iterable

from .atomic import is_temp_name


def files_under(path: Path) -> list[Path]:
    """`path` itself, or every file below it except our own temporaries."""
    if path.is_file():
        return [path]
    return [p for p in path.rglob("*") if p.is_file() and not is_temp_name(p.name)]


def fingerprint(files: Iterable[Path], root: Path) -> str:
    parts = sorted(f"{p.relative_to(root)}:{s.st_size}:{s.st_mtime_ns}" for p in files if (s := p.stat()))
    return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]
