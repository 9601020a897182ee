"""`batch --executor ray --address` on a real two-node Ray cluster (tests/ray_cluster.py) whose nodes
share no disk, only an S3-compatible server: jobs read and write s3:// URLs, and the driver alone
writes the registry. The cluster tests are slow (start-up alone is 15-40 s on 2 cores); the refusals
that happen before any Ray is joined are not."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

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

    # A resource no node has: refused after the bounded wait, before anything runs.
    r = _batch(_jobs(tmp_path / "gpu.yaml", jobs[:1]), "--address", ray_cluster.address, "--resources", "gpu=1",
               env={**env, "MODELPORT_RAY_WAIT": "2"})
    assert r.returncode == 2 and "no node of the Ray cluster has gpu=1" in r.stderr, r.stderr[-2000:]
    assert r.stdout.strip() == "" or json.loads(r.stdout)["ok"] is False
