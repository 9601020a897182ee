"""Released checkpoints carry multi-token-prediction heads that transformers does not load (each class's
`_keys_to_ignore_on_load_unexpected`): DeepSeek-V3's and GLM-4.5's layer past the last, Qwen3-Next's and
Nemotron-H's `mtp.*`, ERNIE 4.5's `model.mtp_*`. They are dropped with a note, as transformers and
llama.cpp's converter drop them, and the rest converts exactly as without them; a family without such a
head still refuses a tensor nothing uses."""
from __future__ import annotations

import json
import shutil

import gguf
import numpy as np
import pytest
from conftest import run_cli
from safetensors.numpy import load_file, save_file

HEADS = {
    "deepseek_v3": ["model.layers.{n}.eh_proj.weight", "model.layers.{n}.enorm.weight",
                    "model.layers.{n}.self_attn.o_proj.weight"],
    "glm4_moe": ["model.layers.{n}.eh_proj.weight", "model.layers.{n}.shared_head.norm.weight"],
    "qwen3_next": ["mtp.fc.weight", "mtp.layers.0.self_attn.q_proj.weight", "mtp.norm.weight"],
    "nemotron_h-moe": ["mtp.layers.0.eh_proj.weight", "mtp.layers.1.norm.weight"],
    "ernie4_5_moe": ["model.mtp_block.0.self_attn.q_proj.weight", "model.mtp_linear_proj.0.weight",
                     "model.mtp_emb_norm.0.weight"],
}


def with_extra(source, folder, names: list[str]):
    shutil.copytree(source, folder)
    layers = json.loads((folder / "config.json").read_text()).get("num_hidden_layers")
    tensors = load_file(folder / "model.safetensors")
    for name in names:
        tensors[name.format(n=layers)] = np.ones((8, 8), dtype=np.float32)
    save_file(tensors, folder / "model.safetensors", metadata={"format": "pt"})
    return folder


def _tensors(path) -> dict:
    return {t.name: bytes(t.data) for t in gguf.GGUFReader(path).tensors}


@pytest.mark.parametrize("name", list(HEADS))
def test_a_multi_token_prediction_head_is_dropped_with_a_note(samples, tmp_path, name):
    sample = samples(name)
    plain = tmp_path / "plain.gguf"
    assert run_cli("convert", sample.path, plain).code == 0
    source = with_extra(sample.path, tmp_path / "released", HEADS[name])
    run = run_cli("convert", source, tmp_path / "out.gguf", "--json")
    assert run.code == 0, run.stderr
    note, = [n for n in run.json()["notes"] if "does not load either" in n]
    assert note.startswith(f"dropped {len(HEADS[name])} ")
    assert _tensors(tmp_path / "out.gguf") == _tensors(plain)


def test_a_family_without_such_a_head_still_refuses_it(samples, tmp_path):
    source = with_extra(samples("llama").path, tmp_path / "llama", ["model.layers.{n}.eh_proj.weight"])
    run = run_cli("convert", source, tmp_path / "out.gguf")
    assert run.code == 1 and "nothing uses" in run.stderr and "model.layers.2.eh_proj.weight" in run.stderr
    assert not (tmp_path / "out.gguf").exists()
