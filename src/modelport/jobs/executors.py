"""Where `batch` runs its jobs: a local process pool (the default) or a Ray cluster.

Both run the same plain conversion (`job.convert_job`) on the same job dicts and return the same
result rows. In the pool each job writes its own registry row (one machine); on Ray the driver writes
them from the results the tasks return, since a task may run on a machine that cannot see the
driver's registry. Each Ray task declares the CPUs and memory it needs, plus any custom resource; a
task whose worker or node dies is retried elsewhere (Ray's `max_retries` for system failures; a job
that fails for a model reason returns its failure and is not retried), and because every output is
published atomically, a lost attempt leaves nothing under the final name.
"""
from __future__ import annotations

import logging
from concurrent.futures import ProcessPoolExecutor, as_completed

from ..cluster import Cluster, Failure, mark_output_free, node_id, output_was_free

log = logging.getLogger("modelport")

BASE_MEMORY = 1024 ** 3      # interpreter, torch, llama.cpp and the streaming window (docs/performance.md)


def _failed(job: dict, error: str) -> dict:
    return {"job": job["job"], "checkpoint": job["checkpoint"], "seconds": 0.0, "ok": False, "output": None,
            "error": error}


def _report(result: dict, done: int, total: int) -> None:
    log.info("[%d/%d] %s %s -> %s%s%s", done, total, "ok" if result["ok"] else "FAILED", result["checkpoint"],
             result["output"] or "-", f" on {result['node']}" if result.get("node") else "",
             f" ({result['error']})" if result["error"] else "")


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
    tensor (a tensor a reader must load whole, cast once). Only headers are read to know it (by range,
    for a URL)."""
    from ..api import load
    from ..core.errors import ModelportError
    from ..storage import mounted
    from .job import local_setting
    try:
        with mounted(job["checkpoint"]) as local:
            largest = max((t.nbytes for t in load(local, local_setting(job["base_model"]))), default=0)
    except ModelportError:
        return BASE_MEMORY                       # the job itself will fail and say why
    return BASE_MEMORY + 2 * largest


def run_ray(jobs: list[dict], address: str | None = None, workers: int = 2,
            resources: dict[str, float] | None = None) -> list[dict]:
    """Each job as a Ray task; results stream back as tasks finish (progress is logged per job).

    Without `address` a local Ray instance is started with `workers` CPUs; with one the jobs run on
    that cluster, whose nodes share no disk with this one: they read and write URLs, stage in their
    own cache, and return their results, from which this process alone writes the registry rows.
    `resources` (e.g. {"gpu": 1}) are asked by every task on top of each job's own; a demand no node
    can meet refuses the run before anything starts. Ctrl-C cancels the tasks still running.
    """
    from ..history import ABANDONED, History
    from .job import finish_row, start_row

    with Cluster(address, workers) as cluster:
        demands = [{"CPU": 1.0, "memory": float(memory_for(job)), **job.get("resources", {}), **(resources or {})}
                   for job in jobs]
        cluster.wait_placeable(demands)
        registry = History.open()
        registry.mark_killed("batch")
        pending, rows = {}, {}
        for i, (job, demand) in enumerate(zip(jobs, demands)):
            pending[cluster.submit(_on_worker, demand, job)], rows[i] = i, start_row(registry, job)
        results: dict[int, dict] = {}
        remaining = list(pending)
        try:
            while remaining:
                ready, remaining = cluster.next_done(remaining)
                for ref in ready:
                    i = pending[ref]
                    result = cluster.result(ref)
                    results[i] = _failed(jobs[i], result.error) if isinstance(result, Failure) else result
                    finish_row(registry, rows[i], results[i])
                    _report(results[i], len(results), len(jobs))
        except KeyboardInterrupt:                 # Ctrl-C (or SIGTERM): no task keeps converting for nobody
            cluster.cancel(remaining)
            for ref in remaining:
                registry.finish(rows[pending[ref]], ABANDONED, error="interrupted")
            raise
    return [results[i] for i in range(len(jobs))]


def _on_worker(job: dict) -> dict:
    """The task: the conversion, and the node it ran on (so the summary can say where).

    A node lost after its attempt published (a raylet killed while its worker lives on) leaves the
    output in place: the retry finds it there and, knowing the first attempt found the name free,
    reports the job done instead of "already exists"."""
    from ..core.errors import ModelportError
    from ..storage import taken
    from .job import convert_job, job_result
    try:
        found = not job["overwrite"] and taken(job["output"])
    except ModelportError:              # the store's failure, reported by the conversion in its own words
        return {**convert_job(job), "node": node_id()}
    if found and output_was_free():
        done = {"ok": True, "output": job["output"], "error": None, "bytes_written": None,
                "notes": ["published by an earlier attempt, whose node was lost before it reported"]}
        return {**job_result(job, 0.0, done), "node": node_id()}
    if not found:
        mark_output_free()
    return {**convert_job(job), "node": node_id()}
