"""One conversion job, a plain function of its settings (a dict), so any executor can ship it to any
worker: the local process pool and Ray tasks both call `run_job`."""
from __future__ import annotations

import logging
import time
from pathlib import Path

from ..api import convert
from ..core.errors import ModelportError, UsageError
from ..files.atomic import remove_dead_temporaries, temp_name
from ..formats import detect_or_fail
from ..history import FAILED, PUBLISHED, History

log = logging.getLogger("modelport")

INITIAL = {"auto": None, "fsdp": "torch", "torch": "torch", "pth": "torch", "ddp": "torch",
           "lightning": "torch", "hf": "hf", "huggingface": "hf", "dcp": "dcp"}


def is_url(value: str) -> bool:
    """An fsspec URL (s3://, gs://, file://, ...): outputs there are staged locally, then uploaded."""
    return "://" in value


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts]) if is_url(base) else str(Path(base, *parts))


def run_job(job: dict) -> dict:
    """One conversion, a plain function of its settings: the local pool and Ray workers both call it.

    A previous attempt killed mid-write (a lost Ray worker) left only a hidden temporary beside the
    output; it is removed first, and that attempt's registry row is marked killed.
    """
    item, dst = Path(job["checkpoint"]), job["output"]
    log.info("[%s] converting %s -> %s", job["job"], item, dst)
    started = time.perf_counter()
    registry = History.open()
    registry.mark_killed("batch")
    row = registry.start("batch", item, destination=dst)
    try:
        expected = INITIAL[job["initial_format"]]
        found = detect_or_fail(item)
        if expected is not None and found != expected:
            raise UsageError(f"initial_format {job['initial_format']!r} does not match what this is ({found})", item)
        options = dict(to=job["to"], dtype=job["dtype"], quant=job["quant"], base_model=job["base_model"],
                       max_shard_size=job["max_shard_size"], overwrite=job["overwrite"], allow_unused=job["allow_unused"],
                       **{key: job.get(key) for key in ("imatrix", "imatrix_corpus", "imatrix_ctx", "imatrix_tokens")})
        if is_url(dst):
            result = _convert_to_url(item, dst, options)
        else:
            remove_dead_temporaries(Path(dst).parent, Path(dst).name)
            result = convert(item, dst, **options)
        entry = {"ok": True, "output": dst, "error": None, "notes": result["notes"]}
        registry.finish(row, PUBLISHED, bytes_written=result["bytes_written"],
                        details={"job": job["job"], "quant": job["quant"]})
    except ModelportError as exc:
        entry = {"ok": False, "output": None, "error": str(exc)}
        registry.finish(row, FAILED, error=str(exc), details={"job": job["job"]})
    seconds = round(time.perf_counter() - started, 3)
    log.info("[%s] %s %s (%.1f s)", job["job"], "ok" if entry["ok"] else "FAILED", dst, seconds)
    return {"job": job["job"], "checkpoint": str(item), "seconds": seconds, **entry}


def _convert_to_url(item: Path, url: str, options: dict) -> dict:
    """Convert into a local staging folder, upload under a hidden temporary name, then move it into
    place: readers of the URL see the output whole or not at all (on object stores the move is a copy,
    so the final name appears only once the upload has completed)."""
    import tempfile

    import fsspec

    fs, path = fsspec.core.url_to_fs(url)
    if fs.exists(path) and not options["overwrite"]:
        raise UsageError("already exists (set overwrite: true to replace it)", url)
    parent, _, name = path.rstrip("/").rpartition("/")
    with tempfile.TemporaryDirectory(prefix="modelport-stage-") as stage:
        local = Path(stage) / name
        result = convert(item, local, **options)
        hidden = f"{parent}/{temp_name(name)}"
        try:
            fs.makedirs(parent, exist_ok=True)
            fs.put(str(local), hidden, recursive=local.is_dir())
            if fs.exists(path):
                fs.rm(path, recursive=True)
            fs.mv(hidden, path, recursive=True)
        except BaseException:
            if fs.exists(hidden):
                fs.rm(hidden, recursive=True)
            raise
    return result
