"""A real two-node Ray cluster on this machine, with token auth, for the `--executor ray --address` tests.

Each node is its own `ray start --block` process (a head with the custom resource `head`, a worker
node with `worker`), each with its own --temp-dir (short: Ray's AF_UNIX socket paths must stay under
108 bytes) and its own process group, so stopping one is a signal to its group: `ray stop` would end
every Ray on the machine, other people's included. The nodes share nothing but the environment
given to them (the S3-compatible server's endpoint and credentials), as machines share a bucket.
"""
from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import psutil
import pytest

from s3_server import ACCESS_KEY, REGION, SECRET_KEY, FaultProxy, free_port

RAY = str(Path(sys.executable).with_name("ray"))
STARTED = "Ray runtime started"
OBJECT_STORE = 80 * 2**20           # the jobs return small dicts: keep each node's shared memory small
# Ray notices a dead node after health_check_period x failure_threshold; 1 s x 3 instead of 3 s x 5.
FAST_FAILURE = {"RAY_health_check_period_ms": "1000", "RAY_health_check_failure_threshold": "3",
                "RAY_health_check_timeout_ms": "1000"}


class Node:
    def __init__(self, name: str, args: list[str], env: dict, root: Path) -> None:
        self.name, self.temp_dir, self.log = name, root / name[0], root / f"{name}.log"
        with open(self.log, "w") as log:
            self.proc = subprocess.Popen(
                [RAY, "start", "--block", "--num-cpus", "1", "--resources", f'{{"{name}": 1}}',
                 "--node-name", name, "--temp-dir", str(self.temp_dir), "--object-store-memory", str(OBJECT_STORE),
                 "--disable-usage-stats", *args],
                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)

    def wait_started(self, deadline: float) -> None:
        while STARTED not in self.log.read_text():
            if self.proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"ray {self.name} node did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)

    def raylet(self) -> psutil.Process:
        return next(p for p in psutil.Process(self.proc.pid).children(recursive=True) if p.name() == "raylet")

    def stop(self) -> None:
        """SIGKILL to the node's process group: nothing of a test cluster needs saving, and Ray's own
        orderly stop waits on timeouts (20 s for a head on a busy machine)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait()


class RayCluster:
    """`address` and `env` (token auth + whatever the nodes were given) are what a driver needs."""

    def __init__(self, env: dict) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="mpray", dir="/tmp"))
        self.port = free_port()
        self.address = f"127.0.0.1:{self.port}"
        self.env = {**env, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(16)}
        self.nodes: dict[str, Node] = {}

    def start(self) -> "RayCluster":
        """Both nodes at once (the worker node waits for the head's GCS): ~15 s on an idle machine."""
        deadline = time.time() + 180
        self.nodes["head"] = Node("head", ["--head", "--port", str(self.port), "--include-dashboard=false"],
                                  self._node_env("head"), self.root)
        self.start_worker(deadline)
        self.nodes["head"].wait_started(deadline)
        return self

    def start_worker(self, deadline: float | None = None) -> None:
        self.nodes["worker"] = Node("worker", ["--address", self.address], self._node_env("worker"), self.root)
        self.nodes["worker"].wait_started(deadline or time.time() + 180)

    def _node_env(self, name: str) -> dict:
        """Each node its own cache and registry, as on machines of their own (the tests check that a
        job leaves nothing in the one and never writes the other)."""
        env = {**os.environ, **self.env, **FAST_FAILURE, "MODELPORT_CACHE_DIR": str(self.cache(name)),
               "MODELPORT_REGISTRY": str(self.root / f"{name}-registry.sqlite")}
        env.pop("RAY_ADDRESS", None)
        return env

    def cache(self, name: str) -> Path:
        return self.root / f"{name}-cache"

    def stop(self) -> None:
        for name in ("worker", "head"):
            if name in self.nodes:
                self.nodes[name].stop()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster_s3(moto_server, tmp_path_factory):
    """The bucket's endpoint and credentials as a worker machine would hold them, for the module's nodes
    and drivers (a proxy of its own: the per-test `s3` fixture's proxy changes with every test)."""
    server, _ = moto_server
    proxy = FaultProxy(server.port)
    home = tmp_path_factory.mktemp("cluster-env")
    env = {"AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY, "AWS_DEFAULT_REGION": REGION,
           "AWS_ENDPOINT_URL": proxy.endpoint, "AWS_CONFIG_FILE": str(home / "no-aws-config"),
           "AWS_SHARED_CREDENTIALS_FILE": str(home / "no-aws-credentials"), "MODELPORT_RETRY_WAIT": "0.02",
           "PYTHONPATH": str(Path(__file__).parents[1] / "src")}
    import s3fs
    client = s3fs.S3FileSystem(key=ACCESS_KEY, secret=SECRET_KEY, endpoint_url=server.endpoint,
                               skip_instance_cache=True, use_listings_cache=False)
    yield SimpleNamespace(client=client, proxy=proxy, env=env)
    proxy.stop()


@pytest.fixture(scope="module")
def ray_cluster(cluster_s3):
    """Two nodes (resources `head` and `worker`), stopped whatever happens, start-up failures included."""
    cluster = RayCluster(cluster_s3.env)
    try:
        yield cluster.start()
    finally:
        cluster.stop()
