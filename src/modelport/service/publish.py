"""Building one version folder, publishing it atomically, pointing `latest` at it, retiring old ones.

A version is built whole in a hidden temporary sibling (HF files, one GGUF per quant, each
verified, then manifest.json), fsynced and renamed into place, so a reader of OUTPUT sees a
version complete or not at all. Retiring renames a version aside before deleting it, for the
same reason, and only ever touches versions the registry says this service published.
"""
from __future__ import annotations

import hashlib
import json
import os
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..core.version import __version__
from ..files.atomic import fsync_dir, fsync_tree, remove_path, temp_sibling
from .discovery import Found
from .versioning import newest_first

if TYPE_CHECKING:
    from ..verify.corpus import CorpusSettings

MANIFEST = "manifest.json"
LATEST, LATEST_JSON = "latest", "latest.json"


@dataclass
class BuildOptions:
    quants: list[str]
    base_model: Path | None = None
    dtype: str = "auto"
    verify: bool = True
    threads: int | None = None
    allow_unused: bool = False
    corpus: "CorpusSettings | None" = None      # quality statistics over a corpus, when set


@dataclass
class Build:
    """What building a version did; `stage` says where a failure happened."""

    stage: str = "convert"
    timings: dict[str, float] = field(default_factory=dict)
    verification: dict[str, dict] = field(default_factory=dict)


def gguf_name(quant: str) -> str:
    return f"model-{quant.lower()}.gguf"


def build_version(found: Found, staging: Path, options: BuildOptions, build: Build) -> None:
    """Write every artifact of `found` into `staging` (which must not exist), verifying each.

    The HF files are verified against the checkpoint, each GGUF against those HF files; reports
    name artifacts relative to the version folder ("." is its HF model), never the temporary path.
    """
    from ..api import convert
    from ..verify import Reference, check, verify
    from ..verify.report import write_report

    started = time.perf_counter()
    convert(found.path, staging, to="hf", dtype=options.dtype, base_model=options.base_model, threads=options.threads,
            allow_unused=options.allow_unused)
    build.timings["hf"] = round(time.perf_counter() - started, 3)
    if options.verify:
        build.stage = "verify"
        t = time.perf_counter()
        _recorded(build, "hf", lambda: verify(found.path, staging, base_model=options.base_model, write_sidecar=False,
                                              corpus=options.corpus), converted=".")
        build.timings["verify_hf"] = round(time.perf_counter() - t, 3)
    targets = []
    for quant in options.quants:
        build.stage = "convert"
        t = time.perf_counter()
        target = staging / gguf_name(quant)
        _gguf_beside(staging, target, quant, options.threads)
        build.timings[target.name] = round(time.perf_counter() - t, 3)
        targets.append(target)
    if options.verify and targets:
        build.stage = "verify"
        t = time.perf_counter()
        reference = Reference(staging, None, None, options.corpus)     # the HF files, run once for every GGUF
        for target in targets:
            _recorded(build, target.name, lambda: check(reference, target, write_sidecar=False), source=".",
                      converted=target.name)
        build.timings["verify_gguf"] = round(time.perf_counter() - t, 3)
        if options.corpus:            # a page per version: each quant's drift, and size against KLD
            write_report([build.verification[t.name] for t in targets], staging / "verify.html")
    build.stage = "publish"


def _recorded(build: Build, artifact: str, run: Callable[[], dict], **names: str) -> None:
    """Run one verification and keep its report under `artifact`, passed or failed (the same shape
    either way), its paths renamed relative to the version folder."""
    from ..core.errors import ModelVerificationError
    try:
        report = run()
    except ModelVerificationError as exc:
        if exc.report is not None:
            build.verification[artifact] = {**exc.report, **names}
        raise
    build.verification[artifact] = {**report, **names}


def _gguf_beside(staging: Path, target: Path, quant: str, threads: int | None) -> None:
    """GGUF from the version's HF files, placed among them: written outside the folder it reads (a
    conversion never writes into its source), then moved in."""
    from ..api import convert

    outside = temp_sibling(staging.parent / target.name)
    outside.mkdir()
    try:
        convert(staging, outside / target.name, quant=quant, threads=threads)
        for part in sorted(outside.iterdir()):
            os.rename(part, staging / part.name)
    finally:
        remove_path(outside)


def file_entries(folder: Path) -> list[dict]:
    entries = []
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        with open(path, "rb") as f:
            digest = hashlib.file_digest(f, "sha256").hexdigest()
        entries.append({"path": str(path.relative_to(folder)), "size": path.stat().st_size, "sha256": digest})
    return entries


def write_manifest(staging: Path, manifest: dict) -> dict:
    """Checksums every file already in `staging`, then writes manifest.json (which cannot list itself)."""
    manifest = {**manifest, "files": file_entries(staging), "modelport_version": __version__,
                "created": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    (staging / MANIFEST).write_text(json.dumps(manifest, indent=2, default=str) + "\n", encoding="utf-8")
    return manifest


def publish(staging: Path, final: Path) -> None:
    fsync_tree(staging)
    os.rename(staging, final)
    fsync_dir(final.parent)


def point_latest(output: Path, name: str, summary: dict) -> None:
    """`latest` symlink and `latest.json`, each replaced atomically (never absent, never partial)."""
    link = temp_sibling(output / LATEST)
    os.symlink(name, link)
    os.replace(link, output / LATEST)
    tmp = temp_sibling(output / LATEST_JSON)
    with open(tmp, "w", encoding="utf-8") as f:
        f.write(json.dumps({"name": name, "path": str(output / name), **summary}, indent=2, default=str) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, output / LATEST_JSON)
    fsync_dir(output)


def retire(output: Path, ours: set[str], keep: int) -> list[str]:
    """Remove all but the `keep` newest of the versions in `ours` (by semver, then step)."""
    live = [n for n in newest_first(list(ours)) if (output / n).is_dir()]
    retired = live[max(keep, 1):]
    for name in retired:
        aside = temp_sibling(output / name)
        os.rename(output / name, aside)
        remove_path(aside)
    return retired

