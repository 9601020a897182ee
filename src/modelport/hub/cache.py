"""The artifact cache: converted files kept for the next run, and cleaned by size and age.

Layout: `CACHE/artifacts/<model key>/<file>` (the key is the model id or folder, made safe); each
entry folder holds what one conversion produced plus `.last-used`, touched on every use, because
atime is unreliable (relatime, noatime). Cleanup removes whole entries, least recently used first,
until the cache is under `MODELPORT_CACHE_MAX_GB`, and never an entry made less than
`MODELPORT_CACHE_MIN_AGE_DAYS` ago (a run in progress may be about to use it).
"""
from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path

from ..files.atomic import is_temp_name, remove_path, temp_sibling
from ..files.locations import cache_root

LAST_USED = ".last-used"
DEFAULT_MAX_GB = 50.0
DEFAULT_MIN_AGE_DAYS = 7.0


def root(cache_dir: str | Path | None = None) -> Path:
    return cache_root(cache_dir)


def artifacts(cache_dir: str | Path | None = None) -> Path:
    return root(cache_dir) / "artifacts"


def entry_key(model: str) -> str:
    """A folder name for a model id or path: readable, and unique (a hash of the full name)."""
    readable = re.sub(r"[^A-Za-z0-9._-]+", "--", model.strip("/"))[-80:]
    return f"{readable}-{hashlib.sha256(model.encode()).hexdigest()[:10]}"


def _env_float(name: str, default: float) -> float:
    try:
        return float(os.environ.get(name, default))
    except ValueError:
        return default


def max_bytes() -> float:
    return _env_float("MODELPORT_CACHE_MAX_GB", DEFAULT_MAX_GB) * 1e9


def min_age_seconds() -> float:
    return _env_float("MODELPORT_CACHE_MIN_AGE_DAYS", DEFAULT_MIN_AGE_DAYS) * 86400


@dataclass
class Entry:
    path: Path
    size: int
    created: float
    last_used: float

    def as_dict(self) -> dict:
        return {"path": str(self.path), "size": self.size, "created": self.created, "last_used": self.last_used,
                "files": sorted(p.name for p in self.path.iterdir() if p.name != LAST_USED)}


def touch(entry: Path) -> None:
    (entry / LAST_USED).touch()


def entries(cache_dir: str | Path | None = None) -> list[Entry]:
    base = artifacts(cache_dir)
    if not base.is_dir():
        return []
    found = []
    for path in base.iterdir():
        if not path.is_dir() or is_temp_name(path.name):
            continue
        files = [p for p in path.rglob("*") if p.is_file() and p.name != LAST_USED]
        stamp = path / LAST_USED
        created = min((p.stat().st_mtime for p in files), default=path.stat().st_mtime)
        found.append(Entry(path, sum(p.stat().st_size for p in files), created,
                           stamp.stat().st_mtime if stamp.exists() else created))
    return sorted(found, key=lambda e: e.last_used)


def clean(cache_dir: str | Path | None = None, max_size: float | None = None, min_age: float | None = None,
          now: float | None = None, keep: set[Path] = frozenset()) -> dict:
    """Remove least recently used entries until the cache fits `max_size` bytes; spare young ones
    and those in `keep` (the entry a caller is about to hand out)."""
    limit = max_bytes() if max_size is None else max_size
    spare = min_age_seconds() if min_age is None else min_age
    now = time.time() if now is None else now
    found = entries(cache_dir)
    total = sum(e.size for e in found)
    removed, kept_young = [], []
    for entry in found:
        if total <= limit:
            break
        if entry.path in keep:
            continue
        if now - entry.created < spare:
            kept_young.append(str(entry.path))
            continue
        aside = temp_sibling(entry.path)
        os.rename(entry.path, aside)            # gone from the cache at once, then deleted
        remove_path(aside)
        total -= entry.size
        removed.append(str(entry.path))
    return {"removed": removed, "spared_as_young": kept_young, "size": total, "limit": limit}
