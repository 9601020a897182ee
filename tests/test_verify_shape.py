"""One JSON shape whatever the verdict: `verify --json`, `convert --verify --json`, the `.verify.json`
sidecar and a watch manifest hold every figure at the same paths on a pass and on a fail."""
from __future__ import annotations

import importlib
import json

import pytest
from conftest import run_cli
from gguf_faults import rewrite

check_module = importlib.import_module("modelport.verify.check")      # the module (the package binds `check` to the function)

TOP = {"ok", "exit_code", "error", "source", "converted", "runtime", "dtype", "expected_noise", "thresholds",
       "failures", "metrics", "quality", "prompts", "tokenization_agreement", "per_prompt", "generation", "bytes",
       "seconds", "sidecar", "report", "memory"}


def shape(report: dict) -> dict:
    """Every key path of a report, down to the figures (per-prompt rows by their first row); the bounds
    applied (`thresholds`) are data, whose keys depend on the bounds asked for."""
    out = {}
    for key, value in report.items():
        if isinstance(value, dict) and key != "thresholds":
            out[key] = shape(value)
        elif isinstance(value, list) and value and isinstance(value[0], dict):
            out[key] = [shape(value[0])]
        else:
            out[key] = None
    return out


@pytest.fixture(scope="module")
def pair(llama, tmp_path_factory):
    folder = tmp_path_factory.mktemp("shape")
    good, bad = folder / "good.gguf", folder / "bad.gguf"
    assert run_cli("convert", llama.path, good, "--quant", "f32").code == 0

    def perturb(arrays):
        arrays["blk.0.attn_norm.weight"] = arrays["blk.0.attn_norm.weight"] * 1.5
    rewrite(good, bad, perturb)
    return good, bad


def test_verify_json_has_one_shape(llama, pair, tmp_path):
    good, bad = pair
    passed = run_cli("verify", llama.path, good, "--json", "--report", tmp_path / "good.html")
    failed = run_cli("verify", llama.path, bad, "--json", "--report", tmp_path / "bad.html")
    assert (passed.code, failed.code) == (0, 1), failed.stderr
    p, f = passed.json(), failed.json()
    assert set(p) == TOP and shape(p) == shape(f)
    assert (p["ok"], p["exit_code"], p["error"], p["failures"]) == (True, 0, None, [])
    assert (f["ok"], f["exit_code"]) == (False, 1) and f["failures"] and f["error"].startswith(str(bad))
    assert f["report"] == str(tmp_path / "bad.html") and f["quality"] is None and f["generation"] is None
    assert {"mean_kl_error", "top1_agreement_error", "kl_p95"} <= set(f["metrics"])
    # the sidecar is the same object as the CLI's (but for the page, written after it)
    for run, path in ((p, good), (f, bad)):
        side = json.loads(path.with_name(path.name + ".verify.json").read_text())
        assert shape(side) == shape(run) and side["ok"] == run["ok"] and side["error"] == run["error"]
        assert side["metrics"] == run["metrics"]


def test_convert_verify_json_has_one_shape(llama, tmp_path, monkeypatch):
    passed = run_cli("convert", llama.path, tmp_path / "a.gguf", "--quant", "q8_0", "--verify", "--json")
    assert passed.code == 0, passed.stderr
    impossible = lambda klass, error: {"mean_kl": -1.0}  # noqa: E731  (every result fails it)
    monkeypatch.setattr(check_module, "default_limits", impossible)
    failed = run_cli("convert", llama.path, tmp_path / "b.gguf", "--quant", "q8_0", "--verify", "--json")
    assert failed.code == 1 and "verification failed: mean_kl" in failed.stderr
    p, f = passed.json(), failed.json()
    assert shape(p) == shape(f) and set(p["verification"]) == TOP
    assert (f["ok"], f["exit_code"], f["verification"]["ok"]) == (False, 1, False)
    assert f["error"] == f["verification"]["error"] and p["error"] is None
    assert f["destination"] == str(tmp_path / "b.gguf") and (tmp_path / "b.gguf").is_file()
    side = json.loads((tmp_path / "b.gguf.verify.json").read_text())
    assert shape(side) == shape(p["verification"])


def test_watch_manifest_and_failure_have_the_verify_shape(llama, pair, tmp_path, monkeypatch):
    """A published version's manifest holds each artifact's report as verify --json gives it; a version
    that failed verification carries the same reports in the run's summary."""
    from test_watch import write

    from modelport.service import config
    from modelport.service.watch import WatchService
    expected = shape(run_cli("verify", llama.path, pair[0], "--json").json())

    def watch(output):
        run = tmp_path / f"run-{output}"
        run.mkdir()
        write("normal", run / "latest_model.pth", llama.path, 1)
        (run / "latest_model.json").write_text(json.dumps({"global_step": 5}))
        return WatchService(config.load(None, dict(checkpoint_dir=run, output=tmp_path / output, base_model=llama.path,
                                                   quant=["q8_0"], settle=0, once=True,
                                                   registry=tmp_path / f"{output}.sqlite"))).run()

    summary = watch("good")
    assert summary["published"], summary
    manifest = json.loads((tmp_path / "good" / summary["published"][0] / "manifest.json").read_text())
    for report in manifest["verification"].values():
        assert shape(report) == expected
    monkeypatch.setattr(check_module, "default_limits", lambda klass, error: {"mean_kl": -1.0})
    summary = watch("bad")
    assert not summary["published"] and summary["failed"]
    reports = summary["failed"][0]["verification"]
    assert reports and all(shape(r) == expected and not r["ok"] for r in reports.values())
