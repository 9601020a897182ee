"""The watch service against a simulated training run: a separate process writes checkpoints over time."""
from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from conftest import run_cli

WRITER = Path(__file__).with_name("checkpoint_writer.py")


def write(mode: str, dst: Path, model: Path, seed: int = 0, wait: bool = True) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, str(WRITER), mode, str(dst), str(model), str(seed)],
                            stdout=subprocess.PIPE, text=True)
    if wait:
        assert proc.wait(timeout=120) == 0
    return proc


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def until(condition, timeout: float = 120.0, what: str = "condition"):
    deadline = time.time() + timeout
    while time.time() < deadline:
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}")


def rows(registry: Path) -> list[dict]:
    if not registry.exists():
        return []
    db = sqlite3.connect(registry)
    db.row_factory = sqlite3.Row
    try:
        return [dict(r) for r in db.execute("SELECT * FROM attempts ORDER BY id")]
    except sqlite3.OperationalError:
        return []
    finally:
        db.close()


def latest_step(out: Path) -> int | None:
    try:
        return json.loads((out / "latest.json").read_text())["global_step"]
    except (OSError, ValueError, KeyError):
        return None


def visible(out: Path) -> list[str]:
    return sorted(p.name for p in out.iterdir() if not p.name.startswith(".")) if out.exists() else []


def service(run: Path, out: Path, registry: Path, *extra: object) -> subprocess.Popen:
    args = [sys.executable, "-m", "modelport.cli", "watch", str(run), "--output", str(out), "--registry", str(registry),
            "--settle", "1", "--quant", "q8_0", "--version", "1.2.3", *map(str, extra)]
    return subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def test_service_publishes_a_training_run(llama, tmp_path):
    run, out, registry = tmp_path / "run", tmp_path / "out", tmp_path / "registry.sqlite"
    run.mkdir()
    out.mkdir()
    (out / "0.0.1-alpha+5").mkdir()          # a version this service did not publish: never retired
    port = free_port()
    svc = service(run, out, registry, "--base-model", llama.path, "--interval", "60", "--keep", "2",
                  "--backoff", "0.5", "--max-attempts", "2", "--metrics-port", port)
    try:
        write("normal", run / "checkpoint-100.pth", llama.path, 100)
        until(lambda: latest_step(out) == 100, what="step 100 published")       # woken by a file event
        slow = write("slow", run / "checkpoint-200.pth", llama.path, 200, wait=False)
        assert slow.wait(timeout=60) == 0
        until(lambda: latest_step(out) == 200, what="step 200 published")
        write("corrupt", run / "checkpoint-300.pth", llama.path)
        until(lambda: sum(r["step"] == 300 and r["status"] == "failed" for r in rows(registry)) == 2,
              what="two failed attempts at the corrupt step 300")
        half = write("halfway", run / "checkpoint-400.pth", llama.path, 400, wait=False)
        assert half.stdout.readline().strip() == "half"
        half.kill()
        half.wait()
        until(lambda: sum(r["step"] == 400 and r["status"] == "failed" for r in rows(registry)) == 2,
              what="two failed attempts at the half-written step 400")
        write("normal", run / "checkpoint-500.pth", llama.path, 500)
        until(lambda: latest_step(out) == 500, what="step 500 published")
        metrics = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        svc.send_signal(signal.SIGTERM)
        _, err = svc.communicate(timeout=60)
    assert svc.returncode == 0, err

    # Versions, order and retention: keep 2 of ours; the foreign folder stays.
    assert visible(out) == ["0.0.1-alpha+5", "1.2.3-alpha+200", "1.2.3-alpha+500", "events.jsonl", "latest",
                            "latest.json"]
    assert os.readlink(out / "latest") == "1.2.3-alpha+500"
    # The slowly written checkpoint was never read before it was complete: no failed attempt at 200.
    history = rows(registry)
    assert [(r["step"], r["status"]) for r in history] == [
        (100, "published"), (200, "published"), (300, "failed"), (300, "failed"), (400, "failed"), (400, "failed"),
        (500, "published")]
    assert all(r["finished"] >= r["started"] for r in history)
    # The manifest's checksums are the files'.
    manifest = json.loads((out / "latest" / "manifest.json").read_text())
    assert manifest["global_step"] == 500 and manifest["version"] == "1.2.3"
    names = {f["path"] for f in manifest["files"]}
    assert {"config.json", "model.safetensors", "model-q8_0.gguf", "tokenizer.json"} <= names
    for entry in manifest["files"]:
        data = (out / "latest" / entry["path"]).read_bytes()
        assert len(data) == entry["size"] and hashlib.sha256(data).hexdigest() == entry["sha256"], entry["path"]
    assert manifest["verification"]["hf"]["ok"] and manifest["verification"]["model-q8_0.gguf"]["ok"]
    assert manifest["source"]["path"].endswith("checkpoint-500.pth")
    # Metrics as Prometheus text.
    assert 'modelport_conversions_total{result="published"} 3.0' in metrics
    assert 'modelport_conversions_total{result="failed"} 4.0' in metrics
    assert "modelport_published_global_step 500.0" in metrics
    assert "modelport_conversion_duration_seconds_count 3.0" in metrics
    assert 'modelport_verification_min_cosine{artifact="model-q8_0.gguf"}' in metrics
    events = [json.loads(line)["event"] for line in (out / "events.jsonl").read_text().splitlines()]
    assert events.count("published") == 3 and events.count("failed") == 4 and events.count("retired") == 1

    # A restart redoes nothing; `history` shows every attempt.
    again = run_cli("watch", run, "--output", out, "--registry", registry, "--once", "--settle", "0", "--json")
    assert again.code == 0, again.stderr
    assert again.json()["published"] == [] and len(rows(registry)) == 7
    listed = run_cli("history", "--registry", registry, "--json").json()["attempts"]
    assert [r["status"] for r in listed][:2] == ["published", "failed"] and len(listed) == 7


def test_kill_mid_conversion_leaves_nothing_visible(llama, tmp_path):
    run, out, registry = tmp_path / "run", tmp_path / "out", tmp_path / "registry.sqlite"
    run.mkdir()
    write("normal", run / "step_7.pth", llama.path, 7)

    def killed_while_building(sig: int) -> subprocess.Popen:
        svc = service(run, out, registry, "--base-model", llama.path, "--settle", "0", "--interval", "60")
        until(lambda: out.exists() and any(".modelport-tmp-" in p.name for p in out.iterdir()), timeout=60,
              what="a temporary version folder")
        svc.send_signal(sig)
        svc.communicate(timeout=60)
        return svc

    term = killed_while_building(signal.SIGTERM)
    assert term.returncode == 0                     # stopped cleanly: the job abandoned, its temporaries gone
    assert os.listdir(out) == ["events.jsonl"]
    assert [r["status"] for r in rows(registry)] == ["abandoned"]

    kill = killed_while_building(signal.SIGKILL)
    assert kill.returncode == -signal.SIGKILL
    assert visible(out) == ["events.jsonl"]         # only the hidden temporary is left, no version, no latest
    assert [p for p in out.iterdir() if ".modelport-tmp-" in p.name]
    assert [r["status"] for r in rows(registry)] == ["abandoned", "running"]

    done = run_cli("watch", run, "--output", out, "--registry", registry, "--base-model", llama.path, "--once",
                   "--settle", "0", "--backoff", "0", "--no-verify", "--to", "hf", "--json")
    assert done.code == 0, done.stderr
    assert done.json()["published"] == ["0.1.0-alpha+7"]
    assert not [p for p in out.iterdir() if ".modelport-tmp-" in p.name]
    assert [r["status"] for r in rows(registry)] == ["abandoned", "killed", "published"]
    assert not list((out / "latest").glob("*.gguf"))       # --to hf publishes the HF files only


def test_once_skips_checkpoints_still_being_written(llama, tmp_path):
    run, out, registry = tmp_path / "run", tmp_path / "out", tmp_path / "reg.sqlite"
    (run / "checkpoint-3").mkdir(parents=True)              # a DCP folder without .metadata yet
    (run / "checkpoint-3" / "__0_0.distcp").write_bytes(b"x")
    write("normal", run / "checkpoint-2.pth", llama.path, 2)
    (run / "checkpoint-9.pth.partial").write_bytes(b"partial")
    fresh = run_cli("watch", run, "--output", out, "--registry", registry, "--base-model", llama.path, "--once",
                    "--settle", "600", "--json")
    assert fresh.code == 0
    summary = fresh.json()
    reasons = {Path(p["path"]).name: p["reason"] for p in summary["pending"]}
    assert summary["published"] == [] and reasons.keys() == {"checkpoint-2.pth", "checkpoint-3"}
    assert "settle" in reasons["checkpoint-2.pth"] and ".metadata" in reasons["checkpoint-3"]
    assert rows(registry) == []
    settled = run_cli("watch", run, "--output", out, "--registry", registry, "--base-model", llama.path, "--once",
                      "--settle", "0", "--no-verify", "--json")
    assert settled.json()["published"] == ["0.1.0-alpha+2"], settled.stderr
    assert any(p["path"].endswith("checkpoint-3") and ".metadata" in p["reason"] for p in settled.json()["pending"])


def test_yaml_config_and_window_metadata(llama, tmp_path):
    run, out = tmp_path / "run", tmp_path / "out"
    run.mkdir()
    write("normal", run / "latest_model.pth", llama.path, 1)
    (run / "latest_model.json").write_text(json.dumps({"global_step": 1234, "window": 42}))
    config = tmp_path / "watch.yaml"
    config.write_text(f"checkpoint_dir: run\noutput: out\nbase_model: {llama.path}\nversion: 2.0.0\nsettle: 0\n"
                      "to: hf\nverify: false\nregistry: reg.sqlite\n")
    result = run_cli("watch", "--config", config, "--once", "--json")
    assert result.code == 0, result.stderr
    assert result.json()["published"] == ["2.0.0-alpha+1234"]
    info = json.loads((out / "latest.json").read_text())
    assert (info["global_step"], info["window"]) == (1234, 42)

    config.write_text("checkpoint_dir: run\noutput: out\nintervall: 5\n")
    bad = run_cli("watch", "--config", config, "--once")
    assert bad.code == 2 and "intervall" in bad.stderr
    assert run_cli("watch", run, "--output", out, "--version", "1.0.0-beta").code == 2


def test_versions_sort_by_semver_then_step():
    from modelport.service.versioning import newest_first
    assert newest_first(["0.2.84-alpha+1000", "latest", "0.10.0-alpha+5", "0.2.84-alpha+200", "0.9.1-alpha+99999"]) \
        == ["0.10.0-alpha+5", "0.9.1-alpha+99999", "0.2.84-alpha+1000", "0.2.84-alpha+200"]


@pytest.mark.parametrize("name,meta,expected", [
    ("checkpoint-1000", None, (1000, None)),
    ("global_step1000", None, (1000, None)),
    ("window-42", None, (None, 42)),
    ("epoch-001-final-ckpt.pth", None, (1, None)),
    ("ckpt.pth", {"global_step": 77, "window": 3}, (77, 3)),
])
def test_counters_from_names_and_metadata(tmp_path, name, meta, expected):
    from modelport.formats.checkpoints import Checkpoint, step_of
    from modelport.service.discovery import counters
    path = tmp_path / name
    path.write_bytes(b"x")
    if meta:
        path.with_suffix(".json").write_text(json.dumps(meta))
    found = counters(Checkpoint(path, step_of(name)))
    assert (found.step, found.window) == expected


def test_versions_carry_quality_statistics_and_a_report(llama, tmp_path):
    """With --corpus, every artifact's manifest entry holds the corpus statistics, the metrics carry them,
    and the version holds a page comparing its quants (size against KLD)."""
    from prometheus_client import generate_latest

    from modelport.service import config
    from modelport.service.watch import WatchService
    run, out = tmp_path / "run", tmp_path / "out"
    run.mkdir()
    write("normal", run / "latest_model.pth", llama.path, 1)
    (run / "latest_model.json").write_text(json.dumps({"global_step": 5}))
    service = WatchService(config.load(None, dict(
        checkpoint_dir=run, output=out, base_model=llama.path, quant=["q8_0", "q2_k"], settle=0, once=True,
        registry=tmp_path / "r.sqlite", corpus="builtin", ctx=64, tokens=256)))
    summary = service.run()
    assert summary["ok"] and summary["published"], summary
    version = out / summary["published"][0]
    manifest = json.loads((version / "manifest.json").read_text())
    assert manifest["conversion"]["corpus"] == {"corpus": "builtin", "ctx": 64, "tokens": 256}
    kld = {name: manifest["verification"][name]["quality"]["kld_mean"] for name in ("model-q8_0.gguf", "model-q2_k.gguf")}
    assert 0 < kld["model-q8_0.gguf"] < kld["model-q2_k.gguf"]
    assert manifest["verification"]["hf"]["quality"]["chunks"] == 4
    page = (version / "verify.html").read_text()
    assert "model-q8_0.gguf" in page and "Size against KL divergence" in page
    metrics = generate_latest(service.metrics.registry).decode()
    assert f'modelport_verification_kld_mean{{artifact="model-q2_k.gguf"}} {kld["model-q2_k.gguf"]!r}' in metrics
    assert 'modelport_verification_same_top1{artifact="model-q8_0.gguf"}' in metrics
    assert run_cli("watch", run, "--output", out, "--corpus", tmp_path / "none.txt", "--once").code == 2
