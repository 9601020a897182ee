"""Where modelport keeps things between runs: the cache folder and the history database.

`MODELPORT_CACHE_DIR` and `MODELPORT_REGISTRY` override the XDG defaults, so tests, CI and several
services on one machine each get their own.
"""
from __future__ import annotations

import os
from pathlib import Path


def cache_root(cache_dir: str | Path | None = None) -> Path:
    if cache_dir:
        return Path(cache_dir).expanduser()
    if os.environ.get("MODELPORT_CACHE_DIR"):
        return Path(os.environ["MODELPORT_CACHE_DIR"]).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "modelport"


def history_path(path: str | Path | None = None) -> Path:
    if path:
        return Path(path).expanduser()
    if os.environ.get("MODELPORT_REGISTRY"):
        return Path(os.environ["MODELPORT_REGISTRY"]).expanduser()
    return Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share") / "modelport" / "registry.sqlite"
