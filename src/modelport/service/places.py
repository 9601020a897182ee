"""Where the watch service finds checkpoints (a run) and where it publishes versions (releases): a local
folder or a URL, behind one small interface each, so watch.py never asks which.

A local run is read as discovery.py reads it (file events, mtimes). A run in a bucket is found by
listing (no events): a checkpoint is complete when every object its format needs is there (every
shard an HF index names, a DCP folder's .metadata) and the sizes and ETags of its objects have not
changed for `settle` seconds, or as soon as a ready marker (`--ready-marker NAME`: NAME inside a
checkpoint folder, FILE+NAME beside a file) exists. A `.pt` whose name carries no step is staged and
its `global_step`/`current_window` entries read without loading its tensors.

Local releases are folders renamed into place (publish.py). Releases at a URL are uploaded under
their final prefix, manifest.json last, then latest.json (the only pointer readers follow) is
replaced; retention deletes older prefixes only after that. A prefix with no manifest.json is what
a killed upload left: the next cycle removes it.
"""
from __future__ import annotations

import hashlib
import json
import time
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Iterator

from ..core.errors import UsageError
from ..files.atomic import remove_dead_temporaries, remove_path, temp_name, temp_sibling
from ..files.locations import cache_root
from ..formats.checkpoints import FILE_SUFFIXES, TEMP_SUFFIXES, step_of
from ..formats.hf import SAFE_INDEX
from ..storage import call, mounted, parse, staged
from ..storage.upload import commit_tree, hub_api, hub_repo, put_file, put_tree
from .discovery import FOLDER_METADATA, Found, find, signature, unfinished
from .publish import LATEST_JSON, MANIFEST, model_card, point_latest, publish, retire
from .versioning import newest_first
from .versioning import parse as parse_version

PICKLES = (".pt", ".pth", ".ckpt", ".bin")
WEIGHTS = (".safetensors", ".bin", ".pt", ".pth", ".ckpt", ".distcp", ".gguf")


class LocalRun:
    def __init__(self, folder: Path, settle: float) -> None:
        self.folder, self.settle = folder, settle
        self.url = None

    def check(self) -> None:
        if not self.folder.is_dir():
            raise UsageError("no such checkpoint folder", self.folder)

    def find(self) -> list[Found]:
        return find(self.folder)

    def signature(self, found: Found) -> str:
        return signature(found.path)

    def unfinished(self, found: Found, now: float) -> str | None:
        return unfinished(found.path, self.settle, now)

    @contextmanager
    def opened(self, found: Found) -> Iterator[Found]:
        yield found


class RemoteRun:
    """A training run's checkpoints under a URL prefix, found by listing."""

    def __init__(self, url: str, settle: float, ready_marker: str | None) -> None:
        self.location = parse(url)
        self.url, self.settle, self.ready_marker = self.location.url, settle, ready_marker
        self.objects: dict[str, dict[str, tuple[int, str]]] = {}    # checkpoint URL -> rel name -> (size, ETag)
        self.seen: dict[str, tuple[str, float]] = {}                # checkpoint URL -> (signature, first seen)
        self.counters: dict[tuple[str, str], tuple[int | None, int | None]] = {}

    def check(self) -> None:
        info = call(lambda: self.location.fs.info(self.location.path), self.url)
        if info.get("type") != "directory":
            raise UsageError("is not a folder of checkpoints", self.url)

    def _listing(self) -> dict[str, dict[str, tuple[int, str]]]:
        fs, base = self.location.fs, self.location.path.rstrip("/")
        entries = call(lambda: fs.find(base, detail=True), self.url)
        grouped: dict[str, dict[str, tuple[int, str]]] = {}
        for name, entry in entries.items():
            rel = name.rstrip("/")[len(base):].lstrip("/")
            if entry.get("type") != "file" or not rel:
                continue
            top, _, inside = rel.partition("/")
            # what changes when the object does: S3's ETag, GCS's md5Hash, the Hub's git blob id, else mtime
            tag = str(entry.get("ETag") or entry.get("etag") or entry.get("md5Hash") or entry.get("blob_id")
                      or entry.get("mtime") or "")
            grouped.setdefault(f"{self.url}/{top}", {})[inside] = (int(entry.get("size") or 0), tag)
        return grouped

    def find(self) -> list[Found]:
        self.objects = self._listing()
        found = []
        for url, objects in self.objects.items():
            name = url.rsplit("/", 1)[-1]
            is_file = "" in objects
            if name.startswith(".") or name.endswith(TEMP_SUFFIXES):
                continue
            if is_file and not name.endswith(FILE_SUFFIXES):
                continue
            if not is_file and not any(rel.endswith(WEIGHTS) for rel in objects):
                continue
            step = step_of(name)
            window = step if step is not None and "window" in name.lower() else None
            step = None if window is not None else step
            meta = next((m for m in FOLDER_METADATA if m in objects), None)
            if meta is not None:                   # a metadata JSON inside wins over the name, as locally
                step, window = self._json_counters(url, meta) or (step, window)
            elif step is None and window is None and is_file and name.endswith(PICKLES):
                step, window = self._pickle_counters(url)
            found.append(Found(url, step, window))       # a URL: build_version reads it through opened()
        return sorted((f for f in found if f.version_step is not None), key=lambda f: f.version_step)

    def _pickle_counters(self, url: str) -> tuple[int | None, int | None]:
        key = (url, self._signature(url))
        if key not in self.counters:
            from ..formats.pytorch.reader import pickle_counters
            with mounted(url) as local:
                step, window, _ = pickle_counters(staged(local))
            self.counters[key] = (step, window)
        return self.counters[key]

    def _json_counters(self, url: str, meta: str) -> tuple[int | None, int | None] | None:
        key = (f"{url}/{meta}", self._signature(url))
        if key not in self.counters:
            location = parse(f"{url}/{meta}")
            try:
                data = json.loads(call(lambda: location.fs.cat_file(location.path), location.url))
            except ValueError:
                data = {}
            data = data if isinstance(data, dict) else {}
            step, window = data.get("global_step", data.get("step")), data.get("window")
            self.counters[key] = tuple(v if isinstance(v, int) and not isinstance(v, bool) else None
                                       for v in (step, window))
        found = self.counters[key]
        return found if found != (None, None) else None

    def _signature(self, url: str) -> str:
        parts = sorted(f"{rel}:{size}:{tag}" for rel, (size, tag) in self.objects.get(url, {}).items())
        return hashlib.sha1("|".join(parts).encode()).hexdigest()[:16]

    def signature(self, found: Found) -> str:
        return self._signature(str(found.path))

    def unfinished(self, found: Found, now: float) -> str | None:
        url = str(found.path)
        objects = self.objects.get(url, {})
        if any(rel.endswith(TEMP_SUFFIXES) for rel in objects):
            return "has temporary files inside"
        if self.ready_marker:
            marker = self.ready_marker if "" not in objects else None
            sibling = f"{url.rsplit('/', 1)[-1]}{self.ready_marker}"
            if marker in objects or f"{self.url}/{sibling}" in self.objects:
                return None
            return f"no {self.ready_marker} marker yet"
        if SAFE_INDEX in objects:
            index = json.loads(call(lambda: self.location.fs.cat_file(f"{parse(url).path}/{SAFE_INDEX}"), url))
            missing = sorted(set(index.get("weight_map", {}).values()) - set(objects))
            if missing:
                return f"{len(missing)} shard(s) of the index not written yet ({missing[0]} ...)"
        if any(rel.endswith(".distcp") for rel in objects) and ".metadata" not in objects:
            return "DCP folder without .metadata yet"
        sig = self._signature(url)
        if self.seen.get(url, ("",))[0] != sig:
            self.seen[url] = (sig, now)
        age = now - self.seen[url][1]
        if age < self.settle:
            return f"sizes and ETags unchanged for {age:.1f} s (settle time {self.settle:g} s)"
        return None

    @contextmanager
    def opened(self, found: Found) -> Iterator[Found]:
        with mounted(str(found.path)) as local:
            yield replace(found, path=local)


class LocalReleases:
    def __init__(self, folder: Path) -> None:
        self.folder = folder.absolute()
        self.key = self.folder

    def check(self) -> None:
        if self.folder.exists() and not self.folder.is_dir():
            raise UsageError("--output must be a folder", self.folder)

    def recover(self) -> list[str]:
        return remove_dead_temporaries(self.folder)

    def destination(self, name: str) -> Path:
        return self.folder / name

    def exists(self, name: str) -> bool:
        return (self.folder / name).exists()

    def staging(self, name: str) -> Path:
        self.folder.mkdir(parents=True, exist_ok=True)
        return temp_sibling(self.folder / name)

    def publish(self, staging: Path, name: str) -> None:
        publish(staging, self.folder / name)

    def present(self, names: set[str]) -> list[str]:
        return [n for n in names if (self.folder / n).is_dir()]

    def point_latest(self, name: str, summary: dict) -> None:
        point_latest(self.folder, name, summary)

    def manifest(self, name: str) -> dict:
        return json.loads((self.folder / name / MANIFEST).read_text(encoding="utf-8"))

    def latest(self) -> dict | None:
        path = self.folder / LATEST_JSON
        return {**json.loads(path.read_text(encoding="utf-8")), "mtime": path.stat().st_mtime} if path.is_file() else None

    def retire(self, ours: set[str], keep: int) -> list[str]:
        return retire(self.folder, ours, keep)


class RemoteReleases:
    """Versions under a URL prefix (s3://, gs://): OUTPUT/{version}/..., OUTPUT/latest.json."""

    def __init__(self, url: str) -> None:
        self.location = parse(url)
        if self.location.scheme not in ("s3", "gs"):
            raise UsageError(f"watch publishes to a folder, s3://, gs:// or hf://, not {self.location.scheme}://", url)
        self.key = self.location.url
        self.stage_root = cache_root() / "releases"

    def check(self) -> None:
        bucket = self.location.path.split("/", 1)[0]
        call(lambda: self.location.fs.ls(bucket, detail=False), f"{self.location.scheme}://{bucket}")

    def _versions(self) -> list[str]:
        fs = self.location.fs
        try:
            names = call(lambda: fs.ls(self.location.path, detail=False), self.key)
        except UsageError:           # no prefix yet: nothing published
            return []
        return [n.rstrip("/").rsplit("/", 1)[-1] for n in names if parse_version(n.rstrip("/").rsplit("/", 1)[-1])]

    def recover(self) -> list[str]:
        """Prefixes of versions without a manifest.json (an upload killed before its end) are removed, and
        local staging folders of dead processes."""
        self.stage_root.mkdir(parents=True, exist_ok=True)
        removed = remove_dead_temporaries(self.stage_root)
        fs = self.location.fs
        for name in self._versions():
            prefix = self.location.child(name)
            if not call(lambda: fs.exists(prefix.child(MANIFEST).path), prefix.url):
                call(lambda: fs.rm(prefix.path, recursive=True), prefix.url)
                removed.append(name)
        return removed

    def destination(self, name: str) -> str:
        return self.location.child(name).url

    def exists(self, name: str) -> bool:
        """A complete version (its manifest.json, uploaded last, is there)."""
        manifest = self.location.child(name).child(MANIFEST)
        return bool(call(lambda: manifest.fs.exists(manifest.path), manifest.url))

    def staging(self, name: str) -> Path:
        self.stage_root.mkdir(parents=True, exist_ok=True)
        remove_dead_temporaries(self.stage_root)      # a killed build's: a Ray node never runs recover()
        return self.stage_root / temp_name(name)

    def publish(self, staging: Path, name: str) -> None:
        """Upload under the final prefix, after removing what an earlier attempt at it left."""
        prefix = self.location.child(name)
        try:
            if call(lambda: prefix.fs.exists(prefix.path), prefix.url):
                call(lambda: prefix.fs.rm(prefix.path, recursive=True), prefix.url)
            put_tree(staging, prefix, last=[MANIFEST])
        finally:
            remove_path(staging)

    def present(self, names: set[str]) -> list[str]:
        live = set(self._versions())
        return [n for n in names if n in live]

    def point_latest(self, name: str, summary: dict) -> None:
        self.stage_root.mkdir(parents=True, exist_ok=True)
        local = self.stage_root / temp_name(LATEST_JSON)
        try:
            local.write_text(json.dumps({"name": name, "path": self.destination(name), **summary}, indent=2,
                                        default=str) + "\n", encoding="utf-8")
            put_file(local, self.location.child(LATEST_JSON))
        finally:
            remove_path(local)

    def _json(self, location) -> dict:
        return json.loads(call(lambda: location.fs.cat_file(location.path), location.url))

    def manifest(self, name: str) -> dict:
        return self._json(self.location.child(name).child(MANIFEST))

    def latest(self) -> dict | None:
        pointer = self.location.child(LATEST_JSON)
        if not call(lambda: pointer.fs.exists(pointer.path), pointer.url):
            return None
        return {**self._json(pointer), "mtime": time.time()}

    def retire(self, ours: set[str], keep: int) -> list[str]:
        live = newest_first(self.present(ours))
        retired = live[max(keep, 1):]
        for name in retired:       # the manifest first: a retirement cut short is then a leftover recover() removes
            prefix = self.location.child(name)
            call(lambda: prefix.fs.rm(prefix.child(MANIFEST).path), prefix.url)
            call(lambda: prefix.fs.rm(prefix.path, recursive=True), prefix.url)
        return retired


class HubReleases:
    """Versions as commits to a Hub repository (hf://ORG/NAME): each version one commit of all its files
    and a generated model card (README.md), tagged v{version}. The repository's history is the
    retention (nothing is deleted), and its main branch is the pointer: a commit is atomic."""

    def __init__(self, url: str, base_model: str | None = None) -> None:
        self.location = parse(url)
        self.key = self.location.url
        self.repo, _, _ = hub_repo(self.location)
        self.base_model = base_model
        self.stage_root = cache_root() / "releases"

    def check(self) -> None:
        api = hub_api()
        call(lambda: api.repo_info(self.repo), self.key)

    def recover(self) -> list[str]:
        self.stage_root.mkdir(parents=True, exist_ok=True)
        return remove_dead_temporaries(self.stage_root)

    def destination(self, name: str) -> str:
        return f"{self.key}/{name}"

    def exists(self, name: str) -> bool:
        return False                  # a version committed again is a new commit of the same files

    def staging(self, name: str) -> Path:
        self.stage_root.mkdir(parents=True, exist_ok=True)
        remove_dead_temporaries(self.stage_root)      # a killed build's: a Ray node never runs recover()
        return self.stage_root / temp_name(name)

    def publish(self, staging: Path, name: str) -> None:
        from ..api import inspect
        try:
            manifest = json.loads((staging / MANIFEST).read_text(encoding="utf-8"))
            card = model_card(manifest, inspect(staging)["parameters"], self.base_model)
            (staging / "README.md").write_text(card, encoding="utf-8")
            commit_tree(staging, self.location, f"modelport: {name}", tag=f"v{name}")
        finally:
            remove_path(staging)

    def present(self, names: set[str]) -> list[str]:
        return sorted(names)

    def point_latest(self, name: str, summary: dict) -> None:
        """The main branch already points at the newest commit."""

    def manifest(self, name: str) -> dict:
        location = parse(f"hf://{self.repo}@v{name}/{MANIFEST}")
        return json.loads(call(lambda: location.fs.cat_file(location.path), location.url))

    def latest(self) -> dict | None:
        location = parse(f"hf://{self.repo}/{MANIFEST}")
        if not call(lambda: location.fs.exists(location.path), location.url):
            return None
        return {**json.loads(call(lambda: location.fs.cat_file(location.path), location.url)), "mtime": time.time()}

    def retire(self, ours: set[str], keep: int) -> list[str]:
        return []
