"""A URL mounted as a local folder the formats read as they read any other.

The folder (under the cache, named with this process's pid so a killed run's leftovers are removed
by the next one) holds the small files (config, tokenizer, index, DCP .metadata) as downloaded
copies, and an empty placeholder for every weight file. A placeholder of a range-readable format
(safetensors, GGUF) stands for the remote object: byte_source() reads it by range, so no weight file
is ever downloaded whole. A placeholder of a format that must be read whole (pickles, DCP shards,
ONNX) is filled by `staged()` when a reader asks for it, after the free disk is checked. The folder
and every staged copy are removed when the mount closes. Nothing here or above knows a scheme:
the filesystem object fsspec gives for the URL does the talking.
"""
from __future__ import annotations

import os
import shutil
import threading
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any, Iterator

from ..core.errors import ModelConversionError, ModelportError, UsageError
from ..files.atomic import remove_dead_temporaries, remove_path, temp_name, temp_sibling
from ..files.locations import cache_root
from .retry import call
from .sources import RemoteSource, register, registered_under, remote_of, unregister
from .urls import Location, is_url, parse, redact

RANGED = (".safetensors", ".gguf")                # read by range: never downloaded
STAGED = (".pt", ".pth", ".bin", ".ckpt", ".distcp", ".onnx", ".data", ".pkl")   # copied whole when a reader asks
EAGER_LIMIT = 64 * 2**20                          # other files up to this size are downloaded when mounted
MAX_OBJECTS = 20_000                              # a listing past this is not a model folder
STAGING_RESERVE = 256 * 2**20                     # free disk left over after a staged copy
_STAGING = threading.Lock()


def mirrors_root() -> Path:
    return cache_root() / "mirrors"


class Mount:
    """A mounted URL: `local` is what formats are given; `shown` maps local paths back to the URL."""

    def __init__(self, location: Location) -> None:
        self.location = location
        parent = mirrors_root()
        parent.mkdir(parents=True, exist_ok=True)
        remove_dead_temporaries(parent)
        self.root = parent / temp_name("mirror")
        self.root.mkdir()
        self.placeholders: list[Path] = []
        self.folder = self.local = self.root          # set by open(): the folder mirrored, the path it stands for
        self.folder_url = location.url

    def open(self) -> "Mount":
        location, fs = self.location, self.location.fs
        info = call(lambda: fs.info(location.path), location.url)
        if info.get("type") == "directory":
            entries = list(call(lambda: fs.find(location.path, detail=True), location.url).values())
            base, self.folder_url = _name(info) or location.path, location.url
            self.folder = self.local = self.root / (location.name or "model")
        else:
            parent = location.parent
            siblings = [] if location.scheme in ("http", "https") else call(
                lambda: fs.ls(parent.path, detail=True), parent.url)
            entries = [e for e in siblings if e.get("type") == "file"] or [info]
            base, self.folder_url = _name(info).rsplit("/", 1)[0], parent.url
            self.folder = self.root / (parent.name or "model")
            self.local = self.folder / location.name
        if len(entries) > MAX_OBJECTS:
            raise UsageError(f"lists more than {MAX_OBJECTS} objects; name the model's own folder", location.url)
        self.folder.mkdir(parents=True, exist_ok=True)
        for entry in entries:
            self._add(entry, base)
        if not self.local.exists():
            raise UsageError("no such file or folder", location.url)
        return self

    def _add(self, entry: dict, base: str) -> None:
        name = _name(entry)
        rel = name[len(base):].lstrip("/") if name.startswith(base) else name.rsplit("/", 1)[-1]
        if entry.get("type") != "file" or not rel or ".." in rel.split("/"):
            return
        local, size, url = self.folder / rel, entry.get("size"), f"{self.folder_url}/{rel}"
        local.parent.mkdir(parents=True, exist_ok=True)
        if size is None or local.suffix in RANGED or size > EAGER_LIMIT or local.suffix in STAGED:
            if size is None:
                size = call(lambda: self.location.fs.size(name), url)
            local.touch()
            register(local, RemoteSource(self.location.fs, name, int(size), url))
            self.placeholders.append(local)
        else:
            data = call(lambda: self.location.fs.cat_file(name), url)
            local.write_bytes(data)
        stamp = _mtime(entry)
        if stamp is not None:
            os.utime(local, (stamp, stamp))

    def shown(self, text: str) -> str:
        """`text` with the mirror's paths written as the URL they stand for."""
        return redact(text.replace(str(self.folder), self.folder_url).replace(str(self.root), self.location.url))

    def close(self) -> None:
        for path in self.placeholders:
            unregister(path)
        remove_path(self.root)


def _name(entry: dict) -> str:
    return str(entry.get("name", "")).rstrip("/")


def _mtime(entry: dict) -> float | None:
    for key in ("LastModified", "mtime", "last_modified", "updated"):
        value = entry.get(key)
        if isinstance(value, datetime):
            return value.timestamp()
        if isinstance(value, (int, float)):
            return float(value)
    return None


@contextmanager
def mounted(src: str | os.PathLike) -> Iterator[Path]:
    """`src` as a local path for as long as the block runs: a path as it is, a file:// URL as its path,
    any other URL mounted (see the module's docstring). Errors raised inside name the URL, not the mirror."""
    if not is_url(src):
        yield Path(src).expanduser()
        return
    location = parse(str(src))
    if location.scheme == "file":
        yield Path(location.path)
        return
    mount = Mount(location)
    try:
        mount.open()
        yield mount.local
    except ModelportError as exc:
        exc.args = (mount.shown(str(exc)),)
        exc.path = mount.shown(exc.path) if exc.path else exc.path
        raise
    finally:
        mount.close()


def staged(path: Path) -> Path:
    """`path` with every placeholder in it (the file, or the files of a folder) filled with its object's
    bytes, so libraries that open files themselves (torch.load, DCP) can read it. A local path is
    returned as it is. Refused before any copy when the disk would be left with less than 256 MB."""
    path = Path(path)
    for placeholder in registered_under(path):
        _stage(placeholder)
    return path


def _stage(placeholder: Path) -> None:
    with _STAGING:
        source = remote_of(placeholder)
        if source is None:
            return
        free = shutil.disk_usage(placeholder.parent).free
        if source.size + STAGING_RESERVE > free:
            raise ModelConversionError(f"staging needs {source.size / 1e9:.2f} GB of local disk, {free / 1e9:.2f} GB "
                                       f"is free under {placeholder.parent}", source.shown)
        tmp = temp_sibling(placeholder)
        try:
            call(lambda: source.fs.get_file(source.remote, str(tmp)), source.shown)
            if tmp.stat().st_size != source.size:
                raise ModelConversionError(f"staged {tmp.stat().st_size} bytes of {source.size}", source.shown)
            stamp = placeholder.stat().st_mtime
            os.replace(tmp, placeholder)
            os.utime(placeholder, (stamp, stamp))
        finally:
            remove_path(tmp)
        unregister(placeholder)
