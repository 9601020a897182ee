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


@pytest.mark.slow
def test_watch_publishes_each_version_as_one_tagged_commit_with_a_model_card(hub, llama, tmp_path):
    import json

    from modelport.service import config
    from modelport.service.watch import WatchService
    root, _ = hub
    (root / "org" / "releases").mkdir()
    run = tmp_path / "run"
    settings = dict(checkpoint_dir=str(run), output="hf://org/releases", registry=str(tmp_path / "registry.sqlite"),
                    settle=0, once=True, verify=False, quant=["q8_0"], keep=1)
    for step in (10, 20):
        shutil.copytree(llama.path, run / f"checkpoint-{step}")
        summary = WatchService(config.load(None, settings)).run()
        assert summary["published"] == [f"0.1.0-alpha+{step}"], summary
    events = [json.loads(line) for line in (root / "org" / "releases.commits.jsonl").read_text().splitlines()]
    assert [(e["kind"], e.get("tag")) for e in events] == [("commit", None), ("tag", "v0.1.0-alpha+10"),
                                                          ("commit", None), ("tag", "v0.1.0-alpha+20")]
    repo = root / "org" / "releases"
    manifest = json.loads((repo / "manifest.json").read_text())
    assert manifest["global_step"] == 20
    assert sorted(events[2]["files"]) == sorted([e["path"] for e in manifest["files"]] + ["manifest.json", "README.md"])
    card = (repo / "README.md").read_text()
    assert card.startswith("---\nlibrary_name: gguf\n") and "- q8_0" in card
    rows = [line.split(" | ") for line in card.splitlines() if line.startswith("| model")]
    sizes = {e["path"]: e["size"] for e in manifest["files"]}
    assert {row[0][2:]: int(row[2]) for row in rows} == {p: s for p, s in sizes.items()
                                                         if p.endswith((".gguf", ".safetensors"))}
    assert (repo / "model-q8_0.gguf").stat().st_size == sizes["model-q8_0.gguf"]


def test_single_file_over_http_is_read_by_range(hub, llama, tmp_path):
    root, log = hub
    source = root / "org" / "tiny" / "model.gguf"
    assert run_cli("convert", llama.path, source, "--quant", "f32").code == 0
    local = tmp_path / "local.gguf"
    assert run_cli("convert", source, local, "--quant", "q8_0").code == 0
    import os
    url = f"{os.environ['HF_ENDPOINT']}/org/tiny/resolve/main/model.gguf"
    out = tmp_path / "remote.gguf"
    run = run_cli("convert", url, out, "--quant", "q8_0")
    assert run.code == 0, run.stderr
    assert out.read_bytes() == local.read_bytes()
    bad = run_cli("convert", url.replace("model.gguf", "absent.gguf"), tmp_path / "x.gguf")
    assert bad.code == 2 and "absent.gguf" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1


def test_watch_finds_checkpoints_in_a_hub_repo(hub, llama, tmp_path):
    """watch on hf://org/run: the repo's checkpoint folders are found by listing (the tree API), each
    object's blob id is its change signature, and a version is published from what is read by URL."""
    import json

    from modelport.service import config
    from modelport.service.watch import WatchService
    root, log = hub
    shutil.copytree(llama.path, root / "org" / "run" / "checkpoint-30")
    (root / "org" / "run" / "notes").mkdir()
    (root / "org" / "run" / "notes" / "README.txt").write_text("not a checkpoint")
    settings = dict(checkpoint_dir="hf://org/run", output=str(tmp_path / "out"), registry=str(tmp_path / "r.sqlite"),
                    settle=0, once=True, verify=False, quant=["q8_0"])
    summary = WatchService(config.load(None, settings)).run()
    assert summary["ok"] and summary["published"] == ["0.1.0-alpha+30"], summary
    version = tmp_path / "out" / "0.1.0-alpha+30"
    manifest = json.loads((version / "manifest.json").read_text())
    assert manifest["global_step"] == 30
    local = tmp_path / "local.gguf"
    shutil.copytree(llama.path, tmp_path / "checkpoint-30")      # the same name: general.name comes from it
    assert run_cli("convert", tmp_path / "checkpoint-30", local, "--quant", "q8_0").code == 0
    assert (version / "model-q8_0.gguf").read_bytes() == local.read_bytes()
    assert "tree" in log.read_text()
    from modelport.service.places import RemoteRun
    run = RemoteRun("hf://org/run", settle=0, ready_marker=None)
    run.find()
    signatures = {tag for objects in run.objects.values() for _, tag in objects.values()}
    assert "" not in signatures, run.objects
