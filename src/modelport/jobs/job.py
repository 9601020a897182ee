"""One conversion job, a plain function of its settings (a dict), so any executor can ship it to any
worker: the local process pool and Ray tasks both call `run_job`."""
from __future__ import annotations

import logging
import time
from pathlib import Path

from ..api import convert
from ..core.errors import ModelportError, UsageError
from ..files.atomic import remove_dead_temporaries
from ..formats import detect_or_fail
from ..history import FAILED, PUBLISHED, History
from ..storage import is_url

log = logging.getLogger("modelport")

INITIAL = {"auto": None, "fsdp": "torch", "torch": "torch", "pth": "torch", "ddp": "torch",
           "lightning": "torch", "hf": "hf", "huggingface": "hf", "dcp": "dcp"}


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
        if not is_url(dst):
            remove_dead_temporaries(Path(dst).parent, Path(dst).name)
        result = convert(item, dst, **options)         # a URL: staged in the cache, uploaded, checked
        entry = {"ok": True, "output": dst, "error": None, "notes": result["notes"]}
        registry.finish(row, PUBLISHED, bytes_written=result["bytes_written"],
                        details={"job": job["job"], "quant": job["quant"]})
    except ModelportError as exc:
        entry = {"ok": False, "output": None, "error": str(exc)}
        registry.finish(row, FAILED, error=str(exc), details={"job": job["job"]})
    seconds = round(time.perf_counter() - started, 3)
    log.info("[%s] %s %s (%.1f s)", job["job"], "ok" if entry["ok"] else "FAILED", dst, seconds)
    return {"job": job["job"], "checkpoint": str(item), "seconds": seconds, **entry}
