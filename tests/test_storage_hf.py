"""Models read from the Hub by hf:// URL (huggingface_hub's HfFileSystem) against tests/fake_hub.py:
tree listing, paths-info and ranged reads; the result byte-identical to the local conversion."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import run_cli

FAKE_HUB = Path(__file__).with_name("fake_hub.py")


@pytest.fixture
def hub(tmp_path, llama, monkeypatch):
    root = tmp_path / "hub"
    shutil.copytree(llama.path, root / "org" / "tiny")
    log = tmp_path / "hub.log"
    proc = subprocess.Popen([sys.executable, str(FAKE_HUB), str(root), "0"], stdout=subprocess.PIPE,
                            stderr=open(log, "w"), text=True)
    port = int(proc.stdout.readline())
    monkeypatch.setenv("HF_ENDPOINT", f"http://127.0.0.1:{port}")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    monkeypatch.setenv("HF_TOKEN", "hf_modelport_test_token_1234")
    monkeypatch.setenv("MODELPORT_CACHE_DIR", str(tmp_path / "cache"))
    from modelport.storage import urls
    urls.filesystem.cache_clear()
    yield root, log
    proc.kill()
    proc.wait()
    urls.filesystem.cache_clear()


def test_hf_url_converts_by_range(hub, tmp_path):
    root, log = hub
    local = tmp_path / "local.gguf"
    assert run_cli("convert", root / "org" / "tiny", local, "--quant", "q8_0").code == 0
    out = tmp_path / "remote.gguf"
    run = run_cli("convert", "hf://org/tiny", out, "--quant", "q8_0")
    assert run.code == 0, run.stderr
    assert out.read_bytes() == local.read_bytes()
    requests = log.read_text()
    assert "/resolve/" in requests and "model.safetensors" in requests
    assert "hf_modelport_test_token_1234" not in run.stderr
    info = run_cli("inspect", "hf://org/tiny@main", "--json")
    assert info.code == 0, info.stderr
    assert info.json()["format"] == "hf" and info.json()["path"] == "hf://org/tiny@main"


def test_missing_hf_repo_is_one_line(hub, tmp_path):
    run = run_cli("convert", "hf://org/absent", tmp_path / "x.gguf")
    assert run.code == 2, run.stderr
    line, = run.stderr.strip().splitlines()
    assert "hf://org/absent" in line and "hf_modelport_test_token_1234" not in line
