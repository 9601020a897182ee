"""`modelport ensure` and `cache`: find a model file or make it, download with retries, clean the cache."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from conftest import run_cli

FAKE_HUB = Path(__file__).with_name("fake_hub.py")


class FakeHub:
    def __init__(self, root: Path, fail_gets: int, log: Path) -> None:
        self.log = log
        self.proc = subprocess.Popen([sys.executable, str(FAKE_HUB), str(root), str(fail_gets)],
                                     stdout=subprocess.PIPE, stderr=open(log, "w"), text=True)
        self.port = int(self.proc.stdout.readline())

    def env(self, home: Path, **extra: str) -> dict:
        return {"HF_ENDPOINT": f"http://127.0.0.1:{self.port}", "HF_HOME": str(home), "HF_HUB_DISABLE_TELEMETRY": "1",
                **extra}

    def requests(self, method: str, suffix: str) -> int:
        return sum(1 for line in self.log.read_text().splitlines() if line.startswith(method + " ")
                   and line.endswith(suffix))

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def hub_root(tmp_path, samples):
    root = tmp_path / "hub"
    (root / "org" / "ready").mkdir(parents=True)
    (root / "org" / "ready" / "model.onnx").write_bytes(b"onnx bytes " * 1000)
    (root / "org" / "ready" / "config.json").write_text("{}")
    shutil.copytree(samples("bert").path, root / "org" / "tiny-bert")
    return root


def serve(hub_root: Path, tmp_path: Path, fail_gets: int) -> FakeHub:
    return FakeHub(hub_root, fail_gets, tmp_path / f"hub-{time.monotonic_ns()}.log")


def test_download_retries_with_backoff_until_the_budget_is_spent(hub_root, tmp_path):
    hub = serve(hub_root, tmp_path, fail_gets=2)
    try:
        failed = run_cli("ensure", "org/ready", "--cache-dir", tmp_path / "c", "--retries", "1", "--retry-delay",
                         "0.05", "--json", env=hub.env(tmp_path / "home1"))
        assert failed.code == 1 and "after 2 attempts" in failed.json()["error"], failed.stderr
        assert hub.requests("GET", "/model.onnx") == 2
    finally:
        hub.stop()
    hub = serve(hub_root, tmp_path, fail_gets=2)
    try:
        started = time.monotonic()
        ok = run_cli("ensure", "org/ready", "--cache-dir", tmp_path / "c", "--retries", "3", "--retry-delay", "0.5",
                     "--json", env=hub.env(tmp_path / "home2"))
        assert ok.code == 0, ok.stderr
        assert hub.requests("GET", "/model.onnx") == 3          # two 503s, then the file
        assert time.monotonic() - started > 0.5 + 1.0           # waited 0.5 s, then 1.0 s (doubling)
        result = ok.json()
        assert result["source"] == "hub" and not result["converted"]
        assert Path(result["path"]).read_bytes() == (hub_root / "org" / "ready" / "model.onnx").read_bytes()
        assert "retry 1 of 3" in ok.stderr and "retry 2 of 3" in ok.stderr
    finally:
        hub.stop()
    # Offline: the hub cache answers; a file never fetched is a clear error, with no network attempt.
    offline = hub.env(tmp_path / "home2", HF_HUB_OFFLINE="1")
    again = run_cli("ensure", "org/ready", "--cache-dir", tmp_path / "c", "--json", env=offline)
    assert again.code == 0 and again.json()["source"] == "hub cache"
    missing = run_cli("ensure", "org/tiny-bert", "--cache-dir", tmp_path / "c", "--json", env=offline)
    assert missing.code == 1 and "offline" in missing.json()["error"]


def test_convert_from_the_hub_when_there_is_no_onnx(hub_root, tmp_path):
    hub = serve(hub_root, tmp_path, fail_gets=1)
    try:
        env = hub.env(tmp_path / "home")
        made = run_cli("ensure", "org/tiny-bert", "--cache-dir", tmp_path / "c", "--retry-delay", "0.05", "--json",
                       env=env)
        assert made.code == 0, made.stderr
        result = made.json()
        assert result["converted"] and result["source"] == "converted" and result["validation"][0]["ok"]
        assert Path(result["path"]).is_file() and Path(result["path"]).parent.parent == tmp_path / "c" / "artifacts"
        cached = run_cli("ensure", "org/tiny-bert", "--cache-dir", tmp_path / "c", "--json", env=env)
        assert cached.json()["source"] == "cache" and cached.json()["path"] == result["path"]
        unknown = run_cli("ensure", "org/nothing-here", "--cache-dir", tmp_path / "c", "--json", env=env)
        assert unknown.code == 1 and "no such model on the Hub" in unknown.json()["error"]
        exists = run_cli("ensure", "org/tiny-bert", "--file", "other.onnx", "--check-exists", "--cache-dir",
                         tmp_path / "c", "--json", env=env)
        assert exists.code == 1 and exists.json()["exists"] is False
        assert not (tmp_path / "c" / "artifacts" / Path(result["path"]).parent.name / "other.onnx").exists()
    finally:
        hub.stop()
    rows = run_cli("history", "--command", "ensure", "--json").json()["attempts"]
    mine = [(r["status"], r["details"]["how"] if r["details"] and "how" in r["details"] else None)
            for r in rows if r["source"] in ("org/tiny-bert", "org/nothing-here")][:3]
    assert mine == [("failed", None), ("found", "cache"), ("converted", "converted")]


def test_local_folder_batch_and_metadata(samples, tmp_path):
    bert = samples("bert")
    batch = tmp_path / "models.json"
    batch.write_text(json.dumps([{"model_id": str(bert.path), "file_path": "model.onnx", "model_type": "bert"},
                                 {"model_id": str(tmp_path / "missing"), "file_path": "model.onnx"}]))
    run = run_cli("ensure", "--batch", batch, "--cache-dir", tmp_path / "c", "--json")
    assert run.code == 1
    results = run.json()["results"]
    assert results[0]["ok"] and results[0]["converted"] and not results[1]["ok"] and results[1]["exit_code"] == 2
    assert run_cli("ensure", bert.path, "--check-exists", "--cache-dir", tmp_path / "c").code == 0

    meta = run_cli("ensure", bert.path, "--metadata", "--json").json()
    assert meta["architecture"] == "BertModel" and meta["model_type"] == "bert"
    assert meta["parameters"] == sum(p.numel() for p in bert.model.state_dict().values())
    assert meta["files"]["model.safetensors"] == (bert.path / "model.safetensors").stat().st_size


def _entry(root: Path, name: str, size: int, created_days_ago: float, used_days_ago: float, now: float) -> Path:
    entry = root / "artifacts" / name
    entry.mkdir(parents=True)
    data = entry / "model.onnx"
    data.write_bytes(b"\0" * size)
    os.utime(data, (now - created_days_ago * 86400,) * 2)
    (entry / ".last-used").touch()
    os.utime(entry / ".last-used", (now - used_days_ago * 86400,) * 2)
    return entry


def test_cache_cleanup_by_size_and_age(tmp_path):
    now = time.time()
    root = tmp_path / "cache"
    old_unused = _entry(root, "a", 400_000, created_days_ago=30, used_days_ago=20, now=now)
    old_used = _entry(root, "b", 400_000, created_days_ago=30, used_days_ago=1, now=now)
    young = _entry(root, "c", 400_000, created_days_ago=1, used_days_ago=25, now=now)
    listed = run_cli("cache", "ls", "--cache-dir", root, "--json").json()
    assert [Path(e["path"]).name for e in listed["entries"]] == ["c", "a", "b"]      # least recently used first
    assert listed["size"] == 1_200_000
    # Down to 0.0005 GB = 500 kB: the young entry is spared although least recently used; "a" goes, then "b".
    cleaned = run_cli("cache", "clean", "--cache-dir", root, "--max-size-gb", "0.0005", "--min-age-days", "7",
                      "--json").json()
    assert [Path(p).name for p in cleaned["removed"]] == ["a", "b"]
    assert [Path(p).name for p in cleaned["spared_as_young"]] == ["c"]
    assert not old_unused.exists() and not old_used.exists() and young.exists()
    # The environment sets the defaults.
    env = {"MODELPORT_CACHE_MAX_GB": "0.0001", "MODELPORT_CACHE_MIN_AGE_DAYS": "0"}
    assert run_cli("cache", "clean", "--cache-dir", root, "--json", env=env).json()["removed"] == [str(young)]
