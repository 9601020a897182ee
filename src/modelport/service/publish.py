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
import tempfile
import time
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from ..core.version import __version__
from ..formats.checkpoints import FILE_SUFFIXES
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
    adapters_only: bool = False                 # a LoRA checkpoint as a GGUF LoRA beside its base's GGUF, not merged
    imatrix: dict = field(default_factory=dict)   # imatrix / imatrix_corpus / imatrix_ctx / imatrix_tokens for the GGUFs


@dataclass
class Build:
    """What building a version did; `stage` says where a failure happened."""

    stage: str = "convert"
    timings: dict[str, float] = field(default_factory=dict)
    verification: dict[str, dict] = field(default_factory=dict)
    kind: str = "model"                  # "model", "merged adapter", or "adapter"
    base_files: list[str] = field(default_factory=list)     # an adapter's base GGUF(s), relative to the version


def gguf_name(quant: str) -> str:
    return f"model-{quant.lower()}.gguf"


def build_version(found: Found, staging: Path, options: BuildOptions, build: Build) -> None:
    """Write every artifact of `found` into `staging` (which must not exist), verifying each.

    The HF files are verified against the checkpoint, each GGUF against those HF files; reports
    name artifacts relative to the version folder ("." is its HF model), never the temporary path.
    """
    from ..api import convert
    from ..api.convert import calibrated_once
    from ..verify import Reference, check, verify
    from ..verify.report import write_report

    started = time.perf_counter()
    base = adapter_base(found.path, options.base_model)
    if base is not None and options.adapters_only:
        _adapter_beside_base(found, staging, base, options, build)
        return
    if base is not None:        # a LoRA checkpoint: the model it makes of its base (nothing to verify it against)
        build.kind = "merged adapter"
        convert(base, staging, to="hf", dtype=options.dtype, threads=options.threads, allow_unused=options.allow_unused,
                merge_adapter=found.path)
    else:
        convert(found.path, staging, to="hf", dtype=options.dtype, base_model=options.base_model,
                threads=options.threads, allow_unused=options.allow_unused)
    _named_after(found, staging)
    build.timings["hf"] = round(time.perf_counter() - started, 3)
    if options.verify and base is None:
        build.stage = "verify"
        t = time.perf_counter()
        _recorded(build, "hf", lambda: verify(found.path, staging, base_model=options.base_model, write_sidecar=False,
                                              corpus=options.corpus), converted=".")
        build.timings["verify_hf"] = round(time.perf_counter() - t, 3)
    targets = []
    with tempfile.TemporaryDirectory(prefix="modelport-imatrix-") as work:       # a corpus is run once per version
        for quant, settings in zip(options.quants, calibrated_once(options.imatrix, Path(work))):
            build.stage = "convert"
            t = time.perf_counter()
            target = staging / gguf_name(quant)
            _gguf_beside(staging, target, quant, options.threads, settings)
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


def adapter_base(path: Path, base_model: Path | None) -> Path | None:
    """For a LoRA adapter checkpoint, its base model folder (--base-model, or the local one it names); None
    for a model checkpoint. An adapter without a base it can find is a usage error."""
    from ..core.errors import UsageError
    from ..formats import sniff
    from ..formats.base import ReadOptions
    found = sniff(path)
    if found is None or not found.adapter:
        return None
    base = found.read(path, ReadOptions(base_model)).adapter.base
    if base is None:
        raise UsageError("a LoRA adapter checkpoint needs its base model: pass --base-model DIR", path)
    return base


def _adapter_beside_base(found: Found, staging: Path, base: Path, options: BuildOptions, build: Build) -> None:
    """--adapters-only: the version holds adapter.gguf, a GGUF LoRA; the base becomes OUTPUT/base/model-{quant}.gguf
    once (each appears whole), shared by every version."""
    from ..api import convert
    build.kind = "adapter"
    shared = staging.parent / "base"
    shared.mkdir(exist_ok=True)
    for quant in options.quants or ["f16"]:
        target = shared / gguf_name(quant)
        if not target.exists():
            t = time.perf_counter()
            convert(base, target, quant=quant, threads=options.threads, allow_unused=options.allow_unused)
            build.timings[f"base/{target.name}"] = round(time.perf_counter() - t, 3)
        build.base_files.append(f"../base/{target.name}")
    t = time.perf_counter()
    staging.mkdir()
    convert(found.path, staging / "adapter.gguf", base_model=base, threads=options.threads)
    build.timings["adapter.gguf"] = round(time.perf_counter() - t, 3)
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


def _named_after(found: Found, staging: Path) -> None:
    """The version's HF config names its checkpoint (`_name_or_path`, as transformers records a model's
    origin) unless it names one already: the GGUFs made from these files take their `general.name` from
    it, as `convert CHECKPOINT` names them, and not from the staging folder's temporary name."""
    config_path = staging / "config.json"
    config = json.loads(config_path.read_text(encoding="utf-8"))
    if config.get("_name_or_path"):
        return
    last = str(found.path).split("?", 1)[0].rstrip("/").rsplit("/", 1)[-1]     # no query: a URL's may sign it
    config["_name_or_path"] = Path(last).stem if last.endswith(FILE_SUFFIXES) else last
    config_path.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")


def _gguf_beside(staging: Path, target: Path, quant: str, threads: int | None, imatrix: dict) -> None:
    """GGUF from the version's HF files, placed among them: written outside the folder it reads (a
    conversion never writes into its source), then moved in."""
    from ..api import convert

    outside = temp_sibling(staging.parent / target.name)
    outside.mkdir()
    try:
        convert(staging, outside / target.name, quant=quant, threads=threads, **imatrix)
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



def model_card(manifest: dict, parameters: int, base_model: str | None = None) -> str:
    """README.md for a version on the Hub: the standard metadata block (base_model, library, tags,
    quantization) and a table of its files: type, size, bits per weight and, where the version was
    scored over a corpus, mean KLD and same-top-1 against its source."""
    files = [f for f in manifest["files"] if f["path"] != MANIFEST]
    quants = sorted({_kind(f["path"]) for f in files if f["path"].endswith(".gguf")})
    meta = ["---", "library_name: gguf" if quants else "library_name: transformers",
            *([f"base_model: {base_model}"] if base_model else []),
            "tags:", "- modelport", *([f"- gguf"] if quants else []), *(f"- {q}" for q in quants),
            *(["quantization:", *(f"- {q}" for q in quants)] if quants else []), "---", ""]
    step = manifest.get("global_step")
    lines = [f"# {manifest['name']}", "",
             f"Version {manifest['version']}, global step {step}, window {manifest.get('window')}, made by modelport "
             f"{manifest.get('modelport_version')} on {manifest.get('created')}.", "",
             "| file | type | size (bytes) | bits per weight | mean KLD | same top-1 |", "|---|---|---|---|---|---|"]
    reports = manifest.get("verification") or {}
    for f in files:
        if not f["path"].endswith((".gguf", ".safetensors")):
            continue
        quality = (reports.get(f["path"]) or {}).get("quality") or {}
        kld = f"{quality['kld_mean']:.4g}" if "kld_mean" in quality else "-"
        top1 = f"{100 * quality['same_top1']:.2f} %" if "same_top1" in quality else "-"
        lines.append(f"| {f['path']} | {_kind(f['path'])} | {f['size']} | {8 * f['size'] / max(parameters, 1):.2f} "
                     f"| {kld} | {top1} |")
    return "\n".join(meta + lines) + "\n"


def _kind(path: str) -> str:
    """A file's type for the card: the GGUF quant its name carries (model-q8_0.gguf), or safetensors."""
    if path.endswith(".gguf"):
        return path.rsplit(".", 1)[0].rsplit("-", 1)[-1]
    return "safetensors"
