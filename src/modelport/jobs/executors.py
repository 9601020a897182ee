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

import contextlib
import logging
import os
import socket
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed

from ..core.errors import UsageError

log = logging.getLogger("modelport")

BASE_MEMORY = 1024 ** 3      # interpreter, torch, llama.cpp and the streaming window (docs/performance.md)
RAY_RETRIES = 3
PLACEMENT_WAIT = 60.0        # seconds a task's resources may take to appear in the cluster
PROBE_SECONDS = 5.0
FORWARDED = ("MODELPORT_", "HF_")                     # settings passed to the tasks (runtime_env)
LOCAL_ONLY = ("MODELPORT_CACHE_DIR", "MODELPORT_REGISTRY", "HF_HOME", "HF_HUB_CACHE")   # paths of this machine


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

    Without `address` a local Ray instance is started with `workers` CPUs; with one (`host:6379`,
    `auto`, or `ray://host:10001`) the jobs run on that cluster, whose nodes share no disk with this
    one: they read and write URLs, stage in their own cache, and return their results, from which this
    process alone writes the registry rows. `resources` (e.g. {"gpu": 1}) are asked by every task, on
    top of each job's own; a demand no node can meet fails the run before anything starts.
    """
    with contextlib.redirect_stdout(sys.stderr):      # Ray prints worker logs; stdout is --json's alone
        return _run_ray(jobs, address, workers, resources or {})


def _run_ray(jobs: list[dict], address: str | None, workers: int, resources: dict[str, float]) -> list[dict]:
    import ray

    from ..history import ABANDONED, History
    from .job import finish_row, start_row

    _connect(address, workers)
    try:
        demands = [{"CPU": 1.0, "memory": float(memory_for(job)), **job.get("resources", {}), **resources}
                   for job in jobs]
        _wait_placeable(demands, address)
        registry = History.open()
        registry.mark_killed("batch")
        task = ray.remote(_on_worker)
        pending, rows = {}, {}
        for i, (job, demand) in enumerate(zip(jobs, demands)):
            custom = {k: v for k, v in demand.items() if k not in ("CPU", "memory")}
            ref = task.options(num_cpus=1, memory=int(demand["memory"]), resources=custom,
                               max_retries=RAY_RETRIES, retry_exceptions=False).remote(job)
            pending[ref], rows[i] = i, start_row(registry, job)
        results: dict[int, dict] = {}
        remaining = list(pending)
        try:
            while remaining:
                ready, remaining = ray.wait(remaining, num_returns=1)
                for ref in ready:
                    i = pending[ref]
                    results[i] = _collected(ref, jobs[i])
                    finish_row(registry, rows[i], results[i])
                    _report(results[i], len(results), len(jobs))
        except KeyboardInterrupt:                 # Ctrl-C: no task keeps converting for nobody
            for ref in remaining:
                ray.cancel(ref, force=True)
                registry.finish(rows[pending[ref]], ABANDONED, error="interrupted")
            log.info("interrupted: %d task(s) cancelled", len(remaining))
            raise
    finally:
        ray.shutdown()                            # with an address: this driver leaves, the cluster stays
    return [results[i] for i in range(len(jobs))]


def _on_worker(job: dict) -> dict:
    """The task: the conversion, and the node it ran on (so the summary can say where)."""
    import ray

    from .job import convert_job
    return {**convert_job(job), "node": ray.get_runtime_context().get_node_id()}


def _collected(ref, job: dict) -> dict:
    import ray
    try:
        result = ray.get(ref)
    except ray.exceptions.RayTaskError as exc:    # the job raised something not a ModelportError: not retried
        return _failed(job, f"job raised {str(exc).strip().splitlines()[-1]}")
    except ray.exceptions.RayError as exc:        # retries used up (workers kept dying), or a Ray fault
        return _failed(job, f"worker lost after {RAY_RETRIES} retries: {str(exc).strip().splitlines()[0]}")
    names = {n["NodeID"]: n["NodeName"] for n in ray.nodes()}
    return {**result, "node": names.get(result["node"], result["node"])}


def _connect(address: str | None, workers: int) -> None:
    """Join the cluster at `address` (one line and exit 2 when nothing answers there, or it refuses
    this driver), or start a local instance. Settings that name this machine's paths stay here."""
    import ray
    if address is None:
        ray.init(num_cpus=max(workers, 1), include_dashboard=False, log_to_driver=True, ignore_reinit_error=True)
        return
    _probe(address)
    env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED) and k not in LOCAL_ONLY}
    try:
        ray.init(address=address, runtime_env={"env_vars": env}, log_to_driver=True)
    except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as exc:
        raise UsageError(f"cannot join the Ray cluster: {str(exc).strip().splitlines()[0]}", address) from None


def _probe(address: str) -> None:
    """A TCP connection to host:port first: ray.init waits minutes on an address where nothing listens."""
    if address == "auto":
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=PROBE_SECONDS).close()
    except ValueError:
        raise UsageError("a Ray address is HOST:PORT, ray://HOST:PORT or auto", address) from None
    except OSError as exc:
        raise UsageError(f"no Ray cluster answers there ({exc.strerror or exc})", address) from None


def _wait_placeable(demands: list[dict], address: str | None) -> None:
    """Every task's demand must fit some node; nodes may still be joining (an autoscaler, a worker
    starting), so a demand gets MODELPORT_RAY_WAIT seconds (default 60) before the run is refused."""
    import ray
    wait = float(os.environ.get("MODELPORT_RAY_WAIT", PLACEMENT_WAIT))
    deadline = time.monotonic() + wait
    while True:
        nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
        unmet = [d for d in demands if not any(all(r.get(k, 0) >= v for k, v in d.items()) for r in nodes)]
        if not unmet:
            return
        if time.monotonic() > deadline:
            demand = unmet[0]
            lacking = [k for k, v in demand.items() if not any(r.get(k, 0) >= v for r in nodes)] or list(demand)
            asked = ", ".join(f"{k}={demand[k]:g}" if k != "memory" else f"memory={demand[k] / 2**30:.1f} GiB"
                              for k in lacking)
            raise UsageError(f"no node of the Ray cluster has {asked} (waited {wait:g} s for one to join)",
                             address or "local Ray")
        time.sleep(1.0)
