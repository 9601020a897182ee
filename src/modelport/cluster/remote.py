"""One Ray session of a driver: connect, check placement, submit, collect, cancel, leave.

Without an address a local Ray instance is started (one machine: the tasks see this machine's
paths); with one (`HOST:PORT`, `auto`, `ray://HOST:10001`) the tasks run on the cluster's nodes,
which see only URLs, keep their own cache, and send results back. A task whose worker or node dies
is retried by Ray (`max_retries`) on another node; an exception a task raises is not retried.
"""
from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass
from typing import Any, Callable

from ..core.errors import UsageError
from ..storage import is_url

log = logging.getLogger("modelport")

RETRIES = 3
PLACEMENT_WAIT = 60.0        # seconds a task's resources may take to appear (nodes joining, an autoscaler)
PROBE_SECONDS = 5.0
FORWARDED = ("MODELPORT_", "HF_")                     # settings passed to the tasks (runtime_env)
LOCAL_ONLY = ("MODELPORT_CACHE_DIR", "MODELPORT_REGISTRY", "HF_HOME", "HF_HUB_CACHE")   # paths of this machine


@dataclass
class Failure:
    """A task that returned nothing: its worker kept dying, or it raised."""

    error: str


def require_url(value: str | None, key: str) -> None:
    """With a cluster every file a job names must be reachable from any node: a URL, not a path here."""
    if value is not None and value != "builtin" and not is_url(str(value)):
        raise UsageError(f"{key} is a path on this machine only, and with --address the jobs run on other "
                         "machines: give an s3://, gs://, hf:// or https:// URL (file:///… for a filesystem "
                         "every node mounts)", str(value))


class Cluster:
    """`with Cluster(address, workers) as cluster:` joins (or starts) Ray and leaves it afterwards;
    Ray's own output goes to stderr (stdout is --json's alone)."""

    def __init__(self, address: str | None, workers: int = 1) -> None:
        self.address, self.workers = address, workers
        self._quiet = contextlib.redirect_stdout(sys.stderr)
        self._tasks: dict[Callable, Any] = {}

    def __enter__(self) -> "Cluster":
        import ray
        if self.address is not None:
            _probe(self.address)
        self._quiet.__enter__()
        if self.address is None:
            ray.init(num_cpus=max(self.workers, 1), include_dashboard=False, log_to_driver=True,
                     ignore_reinit_error=True, logging_level=logging.WARNING)
            return self
        env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED) and k not in LOCAL_ONLY}
        try:
            ray.init(address=self.address, runtime_env={"env_vars": env}, log_to_driver=True,
                     logging_level=logging.WARNING)       # no "Connecting to..." lines: errors stay one line
        except (ConnectionError, RuntimeError, ValueError, ray.exceptions.RayError) as exc:
            self._quiet.__exit__(None, None, None)
            # Something answered the TCP probe but refused the driver: most often the token.
            raise UsageError(f"cannot join the Ray cluster: {str(exc).strip().splitlines()[0]} (is RAY_AUTH_MODE=token "
                             "set here, with the cluster's token in RAY_AUTH_TOKEN or ~/.ray/auth_token?)",
                             self.address) from None
        return self

    def __exit__(self, *exc: object) -> None:
        import ray
        ray.shutdown()                            # with an address: this driver leaves, the cluster stays
        self._quiet.__exit__(None, None, None)

    @property
    def where(self) -> str:
        return self.address or "local Ray"

    def wait_placeable(self, demands: list[dict[str, float]]) -> None:
        """Every demand must fit some node; nodes may still be joining, so each gets MODELPORT_RAY_WAIT
        seconds (default 60) before the run is refused, naming what no node has."""
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
                asked = ", ".join(f"memory={demand[k] / 2**30:.1f} GiB" if k == "memory" else f"{k}={demand[k]:g}"
                                  for k in lacking)
                raise UsageError(f"no node of the Ray cluster has {asked} (waited {wait:g} s for one to join)",
                                 self.where)
            time.sleep(1.0)

    def submit(self, fn: Callable, demand: dict[str, float], *args: Any):
        """`fn(*args)` as a task asking for `demand` (CPU, memory in bytes, custom resources)."""
        import ray
        custom = {k: v for k, v in demand.items() if k not in ("CPU", "memory")}
        if fn not in self._tasks:                 # made once: each ray.remote exports the function again
            self._tasks[fn] = ray.remote(fn)
        return self._tasks[fn].options(num_cpus=demand.get("CPU", 1), memory=int(demand.get("memory", 0)) or None,
                                      resources=custom, max_retries=RETRIES, retry_exceptions=False).remote(*args)

    def next_done(self, refs: list, timeout: float | None = None) -> tuple[list, list]:
        """(finished, still running); a short timeout keeps Python's signal handlers running."""
        import ray
        return ray.wait(refs, num_returns=1, timeout=timeout)

    def result(self, ref) -> Any:
        """What the task returned, with `node` set to its node's name; or a Failure saying why not."""
        import ray
        try:
            result = ray.get(ref)
        except ray.exceptions.RayTaskError as exc:    # it raised something: not retried
            return Failure(f"the task raised {str(exc).strip().splitlines()[-1]}")
        except ray.exceptions.RayError as exc:        # retries used up (workers kept dying), or a Ray fault
            return Failure(f"worker lost after {RETRIES} retries: {str(exc).strip().splitlines()[0]}")
        if isinstance(result, dict) and "node" in result:
            names = {n["NodeID"]: n["NodeName"] for n in ray.nodes()}
            result["node"] = names.get(result["node"], result["node"])
        return result

    def cancel(self, refs: list) -> None:
        """Stop tasks now (their worker processes are killed): nobody will collect them."""
        import ray
        for ref in refs:
            ray.cancel(ref, force=True)
        log.info("interrupted: %d task(s) cancelled", len(refs))


def _output_free_key() -> str:
    # Ray retries a task under its own task id, and the GCS's key-value store outlives a lost node
    import ray
    return f"output-free:{ray.get_runtime_context().get_task_id()}"


def mark_output_free() -> None:
    """Record, for this task's retries, that its output was free when it started."""
    from ray.experimental.internal_kv import _internal_kv_put
    _internal_kv_put(_output_free_key(), b"1", namespace="modelport")


def output_was_free() -> bool:
    """Whether an earlier attempt of this task (its node lost) found the output free: then whatever is
    under the output's name now was published by that attempt, whole (publishing is atomic)."""
    from ray.experimental.internal_kv import _internal_kv_exists
    return _internal_kv_exists(_output_free_key(), namespace="modelport")


def node_id() -> str:
    """The node a task runs on (the driver turns it into the node's name)."""
    import ray
    return ray.get_runtime_context().get_node_id()


def _probe(address: str) -> None:
    """A TCP connection to HOST:PORT first: ray.init waits minutes on an address where nothing listens."""
    if address == "auto":
        return
    host, _, port = address.split("://", 1)[-1].rpartition(":")
    try:
        socket.create_connection((host or "127.0.0.1", int(port)), timeout=PROBE_SECONDS).close()
    except ValueError:
        raise UsageError("a Ray address is HOST:PORT, ray://HOST:PORT or auto", address) from None
    except OSError as exc:
        raise UsageError(f"no Ray cluster answers there ({exc.strerror or exc})", address) from None
