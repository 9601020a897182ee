"""watch on a bucket: checkpoints found by listing, versions uploaded under their prefix with manifest.json,
latest.json written last, retention on the bucket, leftovers of a killed upload removed, faults counted."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import pt_checkpoint
from s3_server import bucket, moto_server, s3  # noqa: F401  (fixtures)

from modelport.service import config
from modelport.service.watch import WatchService


def service(run: str, out: str, tmp_path: Path, **extra) -> WatchService:
    settings = {**dict(checkpoint_dir=run, output=out, registry=str(tmp_path / "registry.sqlite"), settle=0,
                       once=True, verify=False, quant=["q8_0"], backoff=0), **extra}
    return WatchService(config.load(None, settings))


def releases(client, prefix: str) -> dict:
    return {p.rsplit("/", 1)[-1]: p for p in client.ls(prefix)} if client.exists(prefix) else {}


def check_version(client, prefix: str, name: str) -> dict:
    manifest = json.loads(client.cat_file(f"{prefix}/{name}/manifest.json"))
    for entry in manifest["files"]:
        data = client.cat_file(f"{prefix}/{name}/{entry['path']}")
        assert len(data) == entry["size"] and hashlib.sha256(data).hexdigest() == entry["sha256"], entry["path"]
    return manifest


def test_watch_bucket_publishes_versions_and_keeps_n(s3, llama, tmp_path):
    client, _ = s3
    b = bucket(client)
    client.put(str(llama.path), f"{b}/run/checkpoint-100", recursive=True)
    first = service(f"s3://{b}/run/", f"s3://{b}/releases", tmp_path, keep=1).run()
    assert first["published"] == ["0.1.0-alpha+100"], first
    check_version(client, f"{b}/releases", "0.1.0-alpha+100")
    assert json.loads(client.cat_file(f"{b}/releases/latest.json"))["name"] == "0.1.0-alpha+100"
    client.put(str(llama.path), f"{b}/run/checkpoint-200", recursive=True)
    second = service(f"s3://{b}/run", f"s3://{b}/releases", tmp_path, keep=1).run()
    assert second["published"] == ["0.1.0-alpha+200"] and second["retired"] == ["0.1.0-alpha+100"]
    assert sorted(releases(client, f"{b}/releases")) == ["0.1.0-alpha+200", "latest.json"]
    manifest = check_version(client, f"{b}/releases", "0.1.0-alpha+200")
    assert {e["path"] for e in manifest["files"]} >= {"config.json", "model.safetensors", "model-q8_0.gguf"}
    assert json.loads(client.cat_file(f"{b}/releases/latest.json"))["global_step"] == 200


@pytest.mark.slow
def test_templar_pt_counters_name_the_version(s3, llama, tmp_path):
    client, _ = s3
    b = bucket(client)
    run = pt_checkpoint(llama, tmp_path / "run" / "model.pt", global_step=1234, current_window=56,
                        optimizer_state_dict={}).parent
    client.put(str(run), f"{b}/run", recursive=True)
    watch = service(f"s3://{b}/run", f"s3://{b}/releases", tmp_path)
    summary = watch.run()
    assert summary["published"] == ["0.1.0-alpha+1234"], summary
    manifest = check_version(client, f"{b}/releases", "0.1.0-alpha+1234")
    assert manifest["global_step"] == 1234 and manifest["window"] == 56
    assert "modelport_published_window 56.0" in watch.metrics.text()
    assert "modelport_published_global_step 1234.0" in watch.metrics.text()


@pytest.mark.slow
def test_ready_marker_and_settle(s3, llama, tmp_path):
    client, _ = s3
    b = bucket(client)
    client.put(str(llama.path), f"{b}/run/step-5", recursive=True)
    client.put(str(llama.path), f"{b}/run/final", recursive=True)        # its step is in trainer_state.json
    client.pipe(f"{b}/run/final/trainer_state.json", b'{"global_step": 3}')
    waiting = service(f"s3://{b}/run", f"s3://{b}/out", tmp_path, ready_marker="_SUCCESS", settle=3600).run()
    assert waiting["published"] == [] and "no _SUCCESS marker" in waiting["pending"][0]["reason"]
    client.pipe(f"{b}/run/step-5/_SUCCESS", b"")
    done = service(f"s3://{b}/run", f"s3://{b}/out", tmp_path, ready_marker="_SUCCESS", settle=3600).run()
    assert done["published"] == ["0.1.0-alpha+5"]
    settling = service(f"s3://{b}/run", f"s3://{b}/out2", tmp_path, settle=3600).run()
    assert settling["published"] == [] and "settle" in settling["pending"][0]["reason"]
    assert [f.version_step for f in service(f"s3://{b}/run", f"s3://{b}/out3", tmp_path).run_dir.find()] == [3, 5]


@pytest.mark.slow
def test_listing_failures_and_a_vanished_object_fail_one_cycle(s3, llama, tmp_path, monkeypatch):
    client, proxy = s3
    b = bucket(client)
    monkeypatch.setenv("MODELPORT_RETRIES", "2")
    client.put(str(llama.path), f"{b}/run/checkpoint-7", recursive=True)
    watch = service(f"s3://{b}/run", f"s3://{b}/out", tmp_path, max_attempts=3)
    watch.start()
    proxy.fail(10, 503, "GET")
    watch.cycle()
    proxy.clear()
    assert 'modelport_failures_total{stage="list"} 1.0' in watch.metrics.text()
    listed = watch.run_dir.find

    def find_then_delete():                  # the object goes between the listing and the read
        found = listed()
        client.rm(f"{b}/run/checkpoint-7/model.safetensors")
        return found
    watch.run_dir.find = find_then_delete
    watch.cycle()
    failed, = watch.summary["failed"]
    assert failed["error"].startswith(f"s3://{b}/run/checkpoint-7: ")         # one line naming the URL
    assert 'modelport_failures_total{stage="convert"} 1.0' in watch.metrics.text()
    watch.run_dir.find = listed
    client.put(str(llama.path / "model.safetensors"), f"{b}/run/checkpoint-7/model.safetensors")
    watch.cycle()
    assert watch.summary["published"] == ["0.1.0-alpha+7"]
    check_version(client, f"{b}/out", "0.1.0-alpha+7")


@pytest.mark.slow
def test_sigkill_mid_upload_never_leaves_a_pointer_to_a_partial_version(s3, llama, tmp_path):
    client, proxy = s3
    b = bucket(client)
    client.put(str(llama.path), f"{b}/run/checkpoint-1", recursive=True)
    args = [sys.executable, "-m", "modelport.cli", "watch", f"s3://{b}/run", "--output", f"s3://{b}/rel",
            "--registry", str(tmp_path / "registry.sqlite"), "--settle", "0", "--no-verify", "--quant", "q8_0",
            "--backoff", "0"]
    env = {**os.environ, "MODELPORT_RETRY_WAIT": "0.05"}
    proxy.slow["PUT"] = 0.5
    proc = subprocess.Popen(args + ["--interval", "1"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        deadline = time.time() + 120
        while not client.exists(f"{b}/rel/0.1.0-alpha+1/config.json"):
            assert time.time() < deadline and proc.poll() is None, "no upload started"
            time.sleep(0.05)
            client.invalidate_cache()
        os.kill(proc.pid, signal.SIGKILL)
    finally:
        proc.wait()
    proxy.clear()
    client.invalidate_cache()
    assert not client.exists(f"{b}/rel/latest.json")
    assert not client.exists(f"{b}/rel/0.1.0-alpha+1/manifest.json")
    again = subprocess.run(args + ["--once"], capture_output=True, text=True, env=env, timeout=300)
    assert again.returncode == 0, again.stderr
    client.invalidate_cache()
    assert json.loads(client.cat_file(f"{b}/rel/latest.json"))["name"] == "0.1.0-alpha+1"
    check_version(client, f"{b}/rel", "0.1.0-alpha+1")
    listed = set(client.find(f"{b}/rel/0.1.0-alpha+1"))
    manifest = json.loads(client.cat_file(f"{b}/rel/0.1.0-alpha+1/manifest.json"))
    assert listed == {f"{b}/rel/0.1.0-alpha+1/{e['path']}" for e in manifest["files"]} | {
        f"{b}/rel/0.1.0-alpha+1/manifest.json"}


@pytest.mark.slow
def test_thirty_seconds_of_503s_are_survived(s3, llama, tmp_path, monkeypatch):
    client, proxy = s3
    b = bucket(client)
    client.put(str(llama.path), f"{b}/run/checkpoint-3", recursive=True)
    monkeypatch.setenv("MODELPORT_RETRY_WAIT", "0.5")
    watch = service(f"s3://{b}/run", f"s3://{b}/out", tmp_path)
    watch.start()
    proxy.fail(10**6, 503)
    import threading
    threading.Timer(30, proxy.clear).start()
    started = time.time()
    watch.cycle()
    assert time.time() - started >= 30
    assert watch.summary["published"] == ["0.1.0-alpha+3"], watch.summary
    check_version(client, f"{b}/out", "0.1.0-alpha+3")
