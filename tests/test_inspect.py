"""`modelport inspect`: what a path holds, read from headers only."""
from __future__ import annotations

import torch
from conftest import run_cli


def test_inspect_hf_folder(qwen2):
    run = run_cli("inspect", qwen2.path, "--json")
    assert run.code == 0, run.stderr
    info = run.json()
    n_params = sum(p.numel() for p in qwen2.model.parameters())  # parameters() counts tied weights once
    assert info["format"] == "hf" and info["architecture"] == "qwen2"
    assert info["parameters"] == n_params
    assert info["dtypes"] == {"float32": info["tensors"]}
    assert info["bytes"] == 4 * n_params
    assert info["tokenizer"] is True and "tokenizer.json" in info["tokenizer_files"]
    assert info["tied"] == ["lm_head.weight"]


def test_inspect_checkpoint_with_base_and_human_output(llama, tmp_path):
    torch.save({"model": {k: v.half() for k, v in llama.model.state_dict().items()}}, tmp_path / "step_5.pth")
    run = run_cli("inspect", tmp_path / "step_5.pth", "--base-model", llama.path, "--json")
    info = run.json()
    assert info["format"] == "torch" and info["dtypes"] == {"float16": 21}
    human = run_cli("inspect", tmp_path, "--base-model", llama.path)
    assert human.code == 0 and "checkpoints" in human.stdout and "step_5.pth" in human.stdout
