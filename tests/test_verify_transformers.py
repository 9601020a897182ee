"""`modelport verify` (transformers on both sides): passes a good conversion, catches a bad one."""
from __future__ import annotations

import json

import torch
from conftest import run_cli
from safetensors.torch import load_file, save_file


def test_convert_with_verify_passes_and_writes_sidecar(llama, tmp_path):
    torch.save({"model": llama.model.state_dict()}, tmp_path / "ckpt.pth")
    run = run_cli("convert", tmp_path / "ckpt.pth", tmp_path / "hf", "--base-model", llama.path, "--verify", "--json")
    assert run.code == 0, run.stderr
    report = run.json()["verification"]
    assert report["ok"] and report["metrics"]["max_abs_diff"] == 0.0
    assert report["tokenization_agreement"] == 1.0
    assert json.loads((tmp_path / "hf.verify.json").read_text())["ok"] is True
    assert "PASS" in run.stderr


def test_perturbed_norm_fails_with_exit_1(llama, tmp_path):
    assert run_cli("convert", llama.path, tmp_path / "hf").code == 0
    weights = load_file(tmp_path / "hf" / "model.safetensors")
    weights["model.layers.0.input_layernorm.weight"] *= 1.5
    save_file(weights, tmp_path / "hf" / "model.safetensors", metadata={"format": "pt"})
    run = run_cli("verify", llama.path, tmp_path / "hf", "--json")
    assert run.code == 1, run.stderr
    report = run.json()
    assert not report["ok"] and report["failures"]
    assert "FAIL" in run.stderr


def test_half_precision_output_passes_its_threshold(llama, tmp_path):
    run = run_cli("convert", llama.path, tmp_path / "bf16", "--dtype", "bfloat16", "--verify", "--json")
    assert run.code == 0, run.stderr
    assert run.json()["verification"]["dtype"] == "bfloat16"


def test_gguf_verify_runs_llama_cpp(llama, tmp_path):
    run = run_cli("convert", llama.path, tmp_path / "m.gguf", "--quant", "f16", "--verify", "--json")
    assert run.code == 0, run.stderr
    report = run.json()["verification"]
    assert report["runtime"]["converted"] == "llama.cpp" and report["dtype"] == "float16"
    assert report["tokenization_agreement"] == 1.0 and report["metrics"]["max_abs_diff"] < 1e-2
    assert (tmp_path / "m.gguf.verify.json").is_file()


def test_gguf_with_wrong_rope_theta_fails(llama, tmp_path):
    """A planted metadata fault: the GGUF says rope theta 1e6 instead of the model's 1e4."""
    import json
    import shutil
    wrong = tmp_path / "wrong"
    shutil.copytree(llama.path, wrong)
    config = json.loads((wrong / "config.json").read_text())
    config["rope_theta"] = 1e6
    config.pop("rope_parameters", None)
    (wrong / "config.json").write_text(json.dumps(config))
    assert run_cli("convert", wrong, tmp_path / "m.gguf", "--quant", "f32").code == 0
    run = run_cli("verify", llama.path, tmp_path / "m.gguf", "--json")
    assert run.code == 1, run.stderr
    assert run.json()["failures"]
