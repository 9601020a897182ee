"""GGUF -> HF: names, Q/K permutation, transposes and norm offsets undone; transformers loads it."""
from __future__ import annotations

import pytest
import torch
from conftest import hf_logits, leftovers, run_cli

import modelport


@pytest.mark.parametrize("name", ["llama", "qwen2", "qwen3"])
def test_f32_round_trip_rebuilds_config_with_identical_logits(samples, tmp_path, name):
    sample = samples(name)
    lone = tmp_path / "lone"
    lone.mkdir()
    modelport.convert(sample.path, lone / "m.gguf", quant="f32")
    result = modelport.convert(lone / "m.gguf", tmp_path / "hf")
    assert any("rebuilt from GGUF metadata" in n for n in result["notes"])
    assert torch.equal(hf_logits(tmp_path / "hf"), sample.logits())


@pytest.mark.parametrize("name", ["gpt2", "gemma2", "phi3", "mistral"])
def test_round_trip_with_base_model(samples, tmp_path, name):
    sample = samples(name)
    modelport.convert(sample.path, tmp_path / "m.gguf", quant="f32")
    run = run_cli("convert", tmp_path / "m.gguf", tmp_path / "hf", "--base-model", sample.path, "--json")
    assert run.code == 0, run.stderr
    assert (tmp_path / "hf" / "tokenizer.json").is_file()
    assert torch.allclose(hf_logits(tmp_path / "hf"), sample.logits(), atol=1e-5)


def test_f16_and_q8_round_trips_stay_close(samples, tmp_path):
    sample = samples("llama")
    for quant, tol in (("f16", 1e-2), ("q8_0", 5e-2)):
        folder = tmp_path / quant
        folder.mkdir()
        modelport.convert(sample.path, folder / "m.gguf", quant=quant)
        modelport.convert(folder / "m.gguf", folder / "hf", base_model=sample.path, dtype="float32")
        assert (hf_logits(folder / "hf") - sample.logits()).abs().max() < tol, quant


def test_corrupt_gguf_fails_cleanly(samples, tmp_path):
    modelport.convert(samples("llama").path, tmp_path / "m.gguf", quant="f32")
    data = (tmp_path / "m.gguf").read_bytes()
    (tmp_path / "cut.gguf").write_bytes(data[: len(data) // 2])
    (tmp_path / "junk.gguf").write_bytes(b"GGUF" + bytes(100))
    for bad in ("cut.gguf", "junk.gguf"):
        run = run_cli("convert", tmp_path / bad, tmp_path / "out", "--base-model", samples("llama").path)
        assert run.code == 1, run.stderr
        assert bad in run.stderr.strip().splitlines()[-1]
        assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []


@pytest.mark.parametrize("quant", ["f16", "q8_0", "q4_k_m"])
def test_row_blocks_from_gguf_give_the_same_model(samples, tmp_path, monkeypatch, quant):
    """Rows of a GGUF tensor are read and dequantized alone (the 70B-sized embedding never whole),
    except permuted Q/K, which must be rearranged whole: the output is the same either way."""
    from safetensors.torch import load_file

    sample = samples("llama-quant")
    modelport.convert(sample.path, tmp_path / "m.gguf", quant=quant)
    modelport.convert(tmp_path / "m.gguf", tmp_path / "whole", base_model=sample.path, dtype="float32")
    bundle = modelport.load(tmp_path / "m.gguf", base_model=sample.path)
    refs = {t.name: t for t in bundle}
    assert refs["model.embed_tokens.weight"].rows is not None and refs["model.layers.0.mlp.down_proj.weight"].rows
    assert refs["model.layers.0.self_attn.q_proj.weight"].rows is None
    monkeypatch.setattr("modelport.core.bundle.ROW_BLOCK_BYTES", 4096)
    modelport.convert(tmp_path / "m.gguf", tmp_path / "blocks", base_model=sample.path, dtype="float32")
    whole = load_file(tmp_path / "whole" / "model.safetensors")
    blocks = load_file(tmp_path / "blocks" / "model.safetensors")
    assert whole.keys() == blocks.keys() and all(torch.equal(whole[k], blocks[k]) for k in whole)
