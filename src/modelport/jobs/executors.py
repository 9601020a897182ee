"""Where `batch` runs its jobs: a local process pool (the default) or a Ray cluster.

Both run the same plain function (`job.run_job`) on the same job dicts and return the same
result rows; the registry rows are written by the job itself, wherever it runs. On Ray each job is a
task declaring the CPUs and memory it needs; a task whose worker dies is retried elsewhere (Ray's
`max_retries` for system failures), and because every output is published atomically, a lost
attempt leaves nothing at the destination (the retry removes its hidden temporary).
"""
from __future__ import annotations

import contextlib
import logging
import os
import sys
from concurrent.futures import ProcessPoolExecutor, as_completed

log = logging.getLogger("modelport")

BASE_MEMORY = 1024 ** 3      # interpreter, torch, llama.cpp and the streaming window (docs/performance.md)
RAY_RETRIES = 3


def _failed(job: dict, error: str) -> dict:
    return {"job": job["job"], "checkpoint": job["checkpoint"], "seconds": 0.0, "ok": False, "output": None,
            "error": error}


def _report(result: dict, done: int, total: int) -> None:
    log.info("[%d/%d] %s %s -> %s%s", done, total, "ok" if result["ok"] else "FAILED", result["checkpoint"],
             result["output"] or "-", f" ({result['error']})" if result["error"] else "")


def run_local(jobs: list[dict], workers: int = 1) -> list[dict]:
    """In this process when one worker is asked for; else a pool of `workers` processes."""
    from .job import run_job

    if workers <= 1:
        results = []
        for i, job in enumerate(jobs, 1):
            results.append(run_job(job))
            _report(results[-1], i, len(jobs))
        return results
    results: dict[int, dict] = {}
    with ProcessPoolExecutor(max_workers=workers) as pool:
        futures = {pool.submit(run_job, job): i for i, job in enumerate(jobs)}
        for done, future in enumerate(as_completed(futures), 1):
            i = futures[future]
            try:
                results[i] = future.result()
            except Exception as exc:  # the worker process died: its job is failed, the rest go on
                results[i] = _failed(jobs[i], f"worker lost: {type(exc).__name__}: {exc}")
            _report(results[i], done, len(jobs))
    return [results[i] for i in range(len(jobs))]


def memory_for(job: dict) -> int:
    """Bytes a job declares to Ray, from the model: the base working set plus twice its largest
    tensor (a tensor a reader must load whole, cast once). Only headers are read to know it."""
    from ..api import load
    from ..core.errors import ModelportError
    try:
        bundle = load(job["checkpoint"], job["base_model"])
    except ModelportError:
        return BASE_MEMORY                       # the job itself will fail and say why
    return BASE_MEMORY + 2 * max((t.nbytes for t in bundle), default=0)


def run_ray(jobs: list[dict], address: str | None = None, workers: int = 2) -> list[dict]:
    """Each job as a Ray task; results stream back as tasks finish (progress is logged per job).

    Without `address` a local Ray instance is started with `workers` CPUs; with one (`auto`, or
    `ray://host:10001`) the existing cluster runs the jobs, and every worker must see the same paths
    (a shared filesystem) and have modelport installed.
    """
    with contextlib.redirect_stdout(sys.stderr):      # Ray prints worker logs; stdout is --json's alone
        return _run_ray(jobs, address, workers)


def _run_ray(jobs: list[dict], address: str | None, workers: int) -> list[dict]:
    import ray

    from .job import run_job

    env = {k: v for k, v in os.environ.items() if k.startswith(("MODELPORT_", "HF_"))}
    if address:
        ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=True, ignore_reinit_error=True)
    else:
        ray.init(num_cpus=max(workers, 1), include_dashboard=False, log_to_driver=True, ignore_reinit_error=True)
    task = ray.remote(run_job)
    pending = {task.options(num_cpus=1, memory=memory_for(job), max_retries=RAY_RETRIES,
                            retry_exceptions=False).remote(job): i for i, job in enumerate(jobs)}
    results: dict[int, dict] = {}
    remaining = list(pending)
    try:
        while remaining:
            ready, remaining = ray.wait(remaining, num_returns=1)
            for ref in ready:
                i = pending[ref]
                try:
                    results[i] = ray.get(ref)
                except ray.exceptions.RayError as exc:   # retries used up (workers kept dying), or a Ray fault
                    results[i] = _failed(jobs[i], f"worker lost after {RAY_RETRIES} retries: "
                                                  f"{str(exc).strip().splitlines()[0]}")
                _report(results[i], len(results), len(jobs))
    finally:
        if not address:
            ray.shutdown()
    return [results[i] for i in range(len(jobs))]
