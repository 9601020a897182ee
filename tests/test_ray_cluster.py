"""`batch --executor ray --address` on a real two-node Ray cluster (tests/ray_cluster.py) whose nodes
share no disk, only an S3-compatible server: jobs read and write s3:// URLs, and the driver alone
writes the registry. The cluster tests are slow (start-up alone is 15-40 s on 2 cores); the refusals
that happen before any Ray is joined are not."""
from __future__ import annotations

import contextlib
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from conftest import run_cli
from ray_cluster import cluster_s3, ray_cluster  # noqa: F401  (fixtures)
from s3_server import bucket, free_port, moto_server  # noqa: F401  (fixtures)

pytest.importorskip("ray")


def _batch(config: Path, *flags: str, env: dict, timeout: float = 400) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "modelport.cli", "batch", str(config), "--executor", "ray",
                           *flags, "--json"], capture_output=True, text=True, env={**os.environ, **env},
                          timeout=timeout)


def _jobs(config: Path, jobs: list[dict]) -> Path:
    config.write_text(json.dumps({"jobs": jobs}))
    return config


def test_cluster_refusals_before_anything_runs(tmp_path):
    """A source only this machine sees, and an address where nothing listens: one line, exit 2."""
    local = _jobs(tmp_path / "local.yaml", [{"convert": {"checkpoint_path": "model", "output_dir": "s3://b/out"}}])
    r = run_cli("batch", local, "--executor", "ray", "--address", "127.0.0.1:6379")
    assert r.code == 2 and "checkpoint_path is a path on this machine only" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and str(tmp_path / "model") in r.stderr
    remote = _jobs(tmp_path / "remote.yaml", [{"convert": {"checkpoint_path": "s3://b/run/model",
                                                           "output_dir": "s3://b/out"}}])
    port = free_port()                           # nothing listens there
    r = run_cli("batch", remote, "--executor", "ray", "--address", f"127.0.0.1:{port}")
    assert r.code == 2 and "no Ray cluster answers there" in r.stderr and f"127.0.0.1:{port}" in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1
    r = run_cli("batch", remote, "--executor", "ray", "--resources", "gpu")
    assert r.code == 2 and "NAME=AMOUNT" in r.stderr


@pytest.mark.slow
def test_jobs_pinned_to_each_node_convert_s3_to_s3_like_a_local_conversion(ray_cluster, cluster_s3, samples, tmp_path):
    client, env = cluster_s3.client, {**cluster_s3.env, **ray_cluster.env}
    b = bucket(client)
    for name in ("llama", "gpt2"):
        client.put(str(samples(name).path), f"{b}/run/{name}/model", recursive=True)   # same name: same GGUF
    client.pipe(f"{b}/run/broken/config.json", (samples("llama").path / "config.json").read_bytes())
    client.pipe(f"{b}/run/broken/model.safetensors", b"\x10\x00\x00\x00\x00\x00\x00\x00{not a header}")
    jobs = [{"experiment_name": f"{name}-{quant}", "convert": {
                "checkpoint_path": f"s3://{b}/run/{name}/model", "output_dir": f"s3://{b}/out/{node}/{name}-{quant}",
                "final_format": "gguf", "quant": quant, "resources": {node: 1}}}
            for name, quant, node in (("llama", "f16", "head"), ("llama", "q8_0", "worker"),
                                      ("gpt2", "f16", "worker"), ("gpt2", "q8_0", "head"))]
    jobs.append({"experiment_name": "broken", "convert": {"checkpoint_path": f"s3://{b}/run/broken",
                                                          "output_dir": f"s3://{b}/out/broken", "final_format": "gguf"}})
    registry = tmp_path / "driver.sqlite"
    r = _batch(_jobs(tmp_path / "jobs.yaml", jobs), "--address", ray_cluster.address,
               env={**env, "MODELPORT_REGISTRY": str(registry)})
    assert r.returncode == 1, r.stderr[-3000:]
    summary = json.loads(r.stdout)
    by_job = {x["job"]: x for x in summary["results"]}
    assert (summary["total"], summary["succeeded"], summary["failed"]) == (5, 4, 1)
    assert not by_job["broken"]["ok"] and "model.safetensors" in by_job["broken"]["error"]
    for job in jobs[:4]:
        name, quant = job["experiment_name"].split("-")
        node = next(iter(job["convert"]["resources"]))
        result = by_job[job["experiment_name"]]
        assert result["ok"] and result["node"] == node, result
        local = tmp_path / f"{name}-{quant}.gguf"
        assert run_cli("convert", samples(name).path, local, "--quant", quant).code == 0
        assert client.cat(f"{b}/out/{node}/{name}-{quant}/model") == local.read_bytes()     # byte for byte
    assert len(client.find(f"{b}/out")) == 4

    # The driver wrote every row; no node wrote a registry; nothing is left in the nodes' caches.
    rows = run_cli("history", "--registry", registry, "--command", "batch", "--json").json()["attempts"]
    assert sorted(x["status"] for x in rows) == ["failed"] + ["published"] * 4
    assert not list(ray_cluster.root.glob("*-registry.sqlite"))
    for node in ("head", "worker"):
        cache = ray_cluster.cache(node)
        assert not [p for p in cache.rglob("*") if p.is_file()] if cache.exists() else True

    # A driver without the cluster's token is refused (after Ray's own C++ warnings, which it prints
    # itself while it retries for ~10 s) with one line of modelport's.
    r = _batch(_jobs(tmp_path / "one.yaml", jobs[:1]), "--address", ray_cluster.address,
               env={**env, "RAY_AUTH_TOKEN": "0" * 32})
    ours = [line for line in r.stderr.splitlines() if line.startswith("modelport")]
    assert r.returncode == 2 and len(ours) == 1 and "cannot join the Ray cluster" in ours[0], r.stderr[-2000:]
    assert "RAY_AUTH_TOKEN" in ours[0] and env["RAY_AUTH_TOKEN"] not in r.stderr + r.stdout

    # A resource no node has: refused after the bounded wait, before anything runs.
    r = _batch(_jobs(tmp_path / "gpu.yaml", jobs[:1]), "--address", ray_cluster.address, "--resources", "gpu=1",
               env={**env, "MODELPORT_RAY_WAIT": "2"})
    assert r.returncode == 2 and "no node of the Ray cluster has gpu=1" in r.stderr, r.stderr[-2000:]
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr[-2000:]


@pytest.fixture(scope="module")
def big_run(cluster_s3, tmp_path_factory):
    """A model a conversion of which lasts seconds (time to interrupt it), uploaded once: its URL, bucket."""
    from modelport.samples import save_model
    path = tmp_path_factory.mktemp("big") / "model"
    save_model(path, "llama", hidden_size=384, intermediate_size=1024, num_hidden_layers=8, num_attention_heads=6,
               num_key_value_heads=2)
    b = bucket(cluster_s3.client)
    cluster_s3.client.put(str(path), f"{b}/run/model", recursive=True)
    return f"s3://{b}/run/model", b


def _task_process(node, deadline: float, task: str = "_on_worker"):
    """The Ray worker process running a task on `node` (Ray titles it ray::FUNCTION: batch's
    _on_worker, watch's version_on_worker)."""
    while time.time() < deadline:
        for proc in node.raylet().children(recursive=True):
            with contextlib.suppress(psutil.Error):
                if f"ray::{task}" in " ".join(proc.cmdline()):
                    return proc
        time.sleep(0.1)
    raise AssertionError(f"no task started on the {node.name} node")


@pytest.mark.slow
def test_ctrl_c_cancels_the_tasks_and_exits_130(ray_cluster, cluster_s3, big_run, tmp_path):
    source, b = big_run
    out = f"s3://{b}/interrupted"
    config = _jobs(tmp_path / "jobs.yaml", [{"experiment_name": "long", "convert": {
        "checkpoint_path": source, "output_dir": out, "final_format": "gguf", "quant": "q8_0"}}])
    registry = tmp_path / "driver.sqlite"
    driver = subprocess.Popen([sys.executable, "-m", "modelport.cli", "batch", str(config), "--executor", "ray",
                               "--address", ray_cluster.address], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env={**os.environ, **cluster_s3.env, **ray_cluster.env,
                                              "MODELPORT_REGISTRY": str(registry)})
    deadline = time.time() + 120
    task = None
    while task is None and time.time() < deadline:
        for node in ray_cluster.nodes.values():
            with contextlib.suppress(AssertionError):
                task = _task_process(node, time.time() + 0.5)
                break
    assert task is not None, "the task never started"
    driver.send_signal(signal.SIGINT)
    _, stderr = driver.communicate(timeout=60)
    assert driver.returncode == 130, stderr[-3000:]
    assert psutil.wait_procs([task], timeout=30)[1] == [], "the cancelled task kept running"
    assert not cluster_s3.client.exists(f"{b}/interrupted")
    rows = run_cli("history", "--registry", registry, "--json").json()["attempts"]
    assert [(x["status"], x["error"]) for x in rows] == [("abandoned", "interrupted")]


@pytest.mark.slow
def test_watch_publishes_a_version_converted_on_the_worker_node(ray_cluster, cluster_s3, llama, tmp_path):
    """The watch loop, registry and metrics here; the conversion (verified) and upload on the worker node."""
    client = cluster_s3.client
    b = bucket(client)
    client.put(str(llama.path), f"{b}/run/checkpoint-100", recursive=True)
    registry, events = tmp_path / "watch.sqlite", tmp_path / "events.jsonl"
    r = subprocess.run([sys.executable, "-m", "modelport.cli", "watch", f"s3://{b}/run", "--output",
                        f"s3://{b}/releases", "--quant", "q8_0", "--settle", "0", "--once", "--executor", "ray",
                        "--address", ray_cluster.address, "--resources", "worker=1", "--registry", str(registry),
                        "--event-log", str(events), "--json"],
                       capture_output=True, text=True, timeout=400, env={**os.environ, **cluster_s3.env, **ray_cluster.env})
    assert r.returncode == 0, r.stderr[-3000:]
    summary = json.loads(r.stdout)
    assert summary["published"] == ["0.1.0-alpha+100"] and summary["nodes"] == {"0.1.0-alpha+100": "worker"}
    manifest = json.loads(client.cat_file(f"{b}/releases/0.1.0-alpha+100/manifest.json"))
    assert manifest["verification"]["model-q8_0.gguf"]["ok"], manifest["verification"]      # verified there
    for entry in manifest["files"]:                           # every file whole, as the worker checksummed it
        data = client.cat_file(f"{b}/releases/0.1.0-alpha+100/{entry['path']}")
        assert hashlib.sha256(data).hexdigest() == entry["sha256"], entry["path"]
    assert json.loads(client.cat_file(f"{b}/releases/latest.json"))["name"] == "0.1.0-alpha+100"
    rows = run_cli("history", "--registry", registry, "--json").json()["attempts"]
    assert [(x["status"], x["step"]) for x in rows] == [("published", 100)]
    assert "published" in [json.loads(line)["event"] for line in events.read_text().splitlines()]
    assert not list(ray_cluster.root.glob("*-registry.sqlite"))

    # Stopped (SIGTERM) while the worker node builds the next version: the task is cancelled, nothing
    # is published, the attempt is recorded abandoned, and the service exits 0 as it does locally.
    client.put(str(llama.path), f"{b}/run/checkpoint-200", recursive=True)
    watch = subprocess.Popen([sys.executable, "-m", "modelport.cli", "watch", f"s3://{b}/run", "--output",
                              f"s3://{b}/releases", "--quant", "q8_0", "--settle", "0", "--interval", "3600",
                              "--executor", "ray", "--address", ray_cluster.address, "--resources", "worker=1",
                              "--registry", str(registry)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                             text=True, env={**os.environ, **cluster_s3.env, **ray_cluster.env})
    task = _task_process(ray_cluster.nodes["worker"], time.time() + 120, "version_on_worker")
    watch.send_signal(signal.SIGTERM)
    _, stderr = watch.communicate(timeout=60)
    assert watch.returncode == 0, stderr[-3000:]
    assert psutil.wait_procs([task], timeout=30)[1] == [], "the cancelled task kept running"
    assert not client.exists(f"{b}/releases/0.1.0-alpha+200/manifest.json")
    assert json.loads(client.cat_file(f"{b}/releases/latest.json"))["name"] == "0.1.0-alpha+100"
    rows = run_cli("history", "--registry", registry, "--json").json()["attempts"]
    assert [(x["status"], x["step"]) for x in rows] == [("abandoned", 200), ("published", 100)]


_RETRY_DRIVER = """
import json, sys
from pathlib import Path
import ray
from modelport.jobs.batch import plan
from modelport.jobs.executors import _on_worker
ray.init(address=sys.argv[2], logging_level="ERROR")
job = plan(Path(sys.argv[1]), remote=True)[0][0]
taken = ray.remote(lambda j: json.dumps(_on_worker({**j, "job": "outsider"})))
# One task running the job twice stands for an attempt and its retry (the same task id); a task of its
# own finding the same output taken is an outsider: it must fail "already exists".
both = ray.remote(lambda j: json.dumps([_on_worker(j), _on_worker(j)]))
print(json.dumps({"retried": json.loads(ray.get(both.remote(job))), "other": json.loads(ray.get(taken.remote(job)))}))
"""


@pytest.mark.slow
def test_a_retry_that_finds_its_first_attempts_output_reports_it_done(ray_cluster, cluster_s3, big_run, tmp_path):
    """A raylet killed while its worker lives on: that worker may publish before the retry starts. The
    retry (same task id: Ray's key-value store says the name was free at the first attempt) reports the
    job done with a note; any other task finding the name taken still fails "already exists"."""
    source, b = big_run
    config = _jobs(tmp_path / "jobs.yaml", [{"experiment_name": "twice", "convert": {
        "checkpoint_path": source, "output_dir": f"s3://{b}/twice", "final_format": "gguf", "quant": "q8_0"}}])
    r = subprocess.run([sys.executable, "-c", _RETRY_DRIVER, str(config), ray_cluster.address], capture_output=True,
                       text=True, timeout=400, env={**os.environ, **cluster_s3.env, **ray_cluster.env})
    assert r.returncode == 0, r.stderr[-3000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    first, retry = out["retried"]
    assert first["ok"] and first["bytes_written"], first
    assert retry["ok"] and retry["notes"] == ["published by an earlier attempt, whose node was lost before it reported"]
    assert not out["other"]["ok"] and "already exists" in out["other"]["error"], out["other"]
    assert cluster_s3.client.find(f"{b}/twice") == [f"{b}/twice/model"]


@pytest.mark.slow
def test_a_job_whose_node_dies_is_retried_on_the_head_and_nothing_partial_is_left(
        ray_cluster, cluster_s3, big_run, tmp_path):
    """Last in this module: it leaves the cluster without its worker node. The head's one CPU is taken by a
    job pinned there, so the other lands on the worker node, which dies mid-conversion (its raylet and
    workers killed): Ray retries the job on the head once the first is done."""
    source, b = big_run
    client = cluster_s3.client
    config = _jobs(tmp_path / "jobs.yaml", [
        {"experiment_name": "pinned", "convert": {"checkpoint_path": source, "output_dir": f"s3://{b}/pinned",
                                                  "final_format": "gguf", "quant": "q8_0", "resources": {"head": 1}}},
        {"experiment_name": "victim", "convert": {"checkpoint_path": source, "output_dir": f"s3://{b}/victim",
                                                  "final_format": "gguf", "quant": "q8_0"}}])
    driver = subprocess.Popen([sys.executable, "-m", "modelport.cli", "batch", str(config), "--executor", "ray",
                               "--address", ray_cluster.address, "--json"], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True,
                              env={**os.environ, **cluster_s3.env, **ray_cluster.env,
                                   "MODELPORT_REGISTRY": str(tmp_path / "driver.sqlite")})
    worker = ray_cluster.nodes["worker"]
    _task_process(worker, time.time() + 120)
    uploads = ray_cluster.cache("worker") / "uploads"
    deadline = time.time() + 120
    while not any(p.is_file() and p.stat().st_size for p in uploads.rglob("*")) if uploads.exists() else True:
        assert time.time() < deadline, "the victim never started writing"
        time.sleep(0.05)
    # The node is gone mid-job, as when its machine goes: the raylet and every worker process of it at
    # once. (A raylet killed alone can leave its worker to finish, publish and even report the job done
    # itself; a retry that then finds the output is test_a_retry_that_finds_its_first_attempts_output...)
    raylet = worker.raylet()
    for proc in [raylet, *raylet.children(recursive=True)]:
        with contextlib.suppress(psutil.Error):
            proc.kill()
    stdout, stderr = driver.communicate(timeout=400)
    assert driver.returncode == 0, stderr[-3000:]
    by_job = {x["job"]: x for x in json.loads(stdout)["results"]}
    assert by_job["victim"]["ok"] and by_job["victim"]["node"] == "head", by_job["victim"]
    assert client.find(f"{b}/victim") == [f"{b}/victim/model"]      # no partial object under any name
    # Byte for byte what the same conversion made on the head (the first test ties that to a local one).
    assert client.cat(f"{b}/victim/model") == client.cat(f"{b}/pinned/model")
