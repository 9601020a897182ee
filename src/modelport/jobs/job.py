"""One conversion job, a plain function of its settings (a dict), so any executor can ship it to any
worker: the local process pool calls `run_job` (the conversion and its registry row); a Ray task calls
`convert_job` alone and the driver writes the row from what it returns."""
from __future__ import annotations

import logging
import time
from pathlib import Path

from ..api import convert
from ..core.errors import ModelportError, UsageError
from ..files.atomic import remove_dead_temporaries
from ..formats import detect_or_fail
from ..history import FAILED, PUBLISHED, History
from ..storage import is_url, mounted, parse

log = logging.getLogger("modelport")

INITIAL = {"auto": None, "fsdp": "torch", "torch": "torch", "pth": "torch", "ddp": "torch",
           "lightning": "torch", "hf": "hf", "huggingface": "hf", "dcp": "dcp"}


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts]) if is_url(base) else str(Path(base, *parts))


def run_job(job: dict) -> dict:
    """One conversion with its registry row, in the process that converts (the local executor).

    A previous attempt killed mid-write left only a hidden temporary beside the output; it is removed
    first, and that attempt's registry row is marked killed.
    """
    registry = History.open()
    registry.mark_killed("batch")
    row = start_row(registry, job)
    result = convert_job(job)
    finish_row(registry, row, result)
    return result


def start_row(registry: History, job: dict) -> int:
    return registry.start("batch", job["checkpoint"], destination=job["output"])


def finish_row(registry: History, row: int, result: dict) -> None:
    if result["ok"]:
        registry.finish(row, PUBLISHED, bytes_written=result["bytes_written"],
                        details={"job": result["job"], "quant": result["quant"], "node": result.get("node")})
    else:
        registry.finish(row, FAILED, error=result["error"], details={"job": result["job"], "node": result.get("node")})


def convert_job(job: dict) -> dict:
    """One conversion, a plain function of its settings that touches no registry: a Ray worker on
    another machine runs it and the driver records what it returns. `file://` settings name a
    filesystem every node mounts; they are read as the local paths they name."""
    src, dst = job["checkpoint"], job["output"]
    log.info("[%s] converting %s -> %s", job["job"], src, dst)
    started = time.perf_counter()
    try:
        _check_initial_format(src, job["initial_format"])
        files = {key: local_setting(job.get(key)) for key in ("base_model", "imatrix", "imatrix_corpus")}
        options = dict(to=job["to"], dtype=job["dtype"], quant=job["quant"], max_shard_size=job["max_shard_size"],
                       overwrite=job["overwrite"], allow_unused=job["allow_unused"], **files,
                       **{key: job.get(key) for key in ("imatrix_ctx", "imatrix_tokens")})
        if not is_url(dst):
            remove_dead_temporaries(Path(dst).parent, Path(dst).name)
        result = convert(src, dst, **options)         # a URL: staged in this node's cache, uploaded, checked
        entry = {"ok": True, "output": dst, "error": None, "notes": result["notes"],
                 "bytes_written": result["bytes_written"]}
    except ModelportError as exc:
        entry = {"ok": False, "output": None, "error": str(exc)}
    seconds = round(time.perf_counter() - started, 3)
    log.info("[%s] %s %s (%.1f s)", job["job"], "ok" if entry["ok"] else "FAILED", dst, seconds)
    return job_result(job, seconds, entry)


def job_result(job: dict, seconds: float, entry: dict) -> dict:
    """What a job returns to the driver, which records it: the job, its time and `entry` (ok, output,
    error, and on success notes and bytes_written)."""
    return {"job": job["job"], "checkpoint": job["checkpoint"], "quant": job["quant"], "seconds": seconds, **entry}


def _check_initial_format(src: str, initial_format: str) -> None:
    expected = INITIAL[initial_format]
    if expected is None:
        return
    with mounted(src) as local:
        found = detect_or_fail(local)
    if found != expected:
        raise UsageError(f"initial_format {initial_format!r} does not match what this is ({found})", src)


def local_setting(value: str | None) -> str | None:
    """A file:// setting as the path it names on this node; a path or "builtin" as it is."""
    local = parse(value).local if value and is_url(value) else None
    return str(local) if local is not None else value
