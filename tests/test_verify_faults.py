"""Verification catches planted faults in otherwise good conversions, and passes good ones."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import run_cli
from gguf_faults import rewrite

import modelport
from modelport.architectures.rules import unpermute_rows
from modelport.samples import trained_model


@pytest.fixture(scope="module")
def trained():
    return trained_model()


@pytest.fixture(scope="module")
def good_f32(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("faults") / "good.gguf"
    modelport.convert(trained, out, quant="f32")
    return out


def _swap_layers(arrays):
    arrays["blk.0.ffn_up.weight"], arrays["blk.1.ffn_up.weight"] = (
        arrays["blk.1.ffn_up.weight"].copy(), arrays["blk.0.ffn_up.weight"].copy())


def _skip_permutation(arrays):
    for name, heads in (("blk.0.attn_q.weight", 4), ("blk.0.attn_k.weight", 2)):
        arrays[name] = unpermute_rows(torch.from_numpy(arrays[name]), heads).numpy()


def _perturb_norm(arrays):
    arrays["blk.1.attn_norm.weight"] = arrays["blk.1.attn_norm.weight"] * np.float32(1.01)


def _token_off_by_one(values):
    tokens = list(values["tokenizer.ggml.tokens"])
    tokens[200], tokens[201] = tokens[201], tokens[200]
    values["tokenizer.ggml.tokens"] = tokens


def _wrong_rope_theta(values):
    values["llama.rope.freq_base"] = 1_000_000.0


FAULTS = {
    "two layers swapped": (_swap_layers, None),
    "Q/K permutation skipped": (_skip_permutation, None),
    "norm weight perturbed by 1%": (_perturb_norm, None),
    "token id off by one": (None, _token_off_by_one),
    "wrong rope theta": (None, _wrong_rope_theta),
}


def test_good_conversion_passes(trained, good_f32):
    run = run_cli("verify", trained, good_f32, "--json")
    assert run.code == 0, run.stderr
    assert run.json()["ok"] is True


@pytest.mark.parametrize("fault", list(FAULTS))
def test_planted_fault_is_caught(trained, good_f32, tmp_path, fault):
    edit_tensors, edit_fields = FAULTS[fault]
    bad = tmp_path / "bad.gguf"
    rewrite(good_f32, bad, edit_tensors, edit_fields)
    run = run_cli("verify", trained, bad, "--json")
    assert run.code == 1, (fault, run.stderr)
    report = run.json()["report"]
    assert report["failures"], fault


def test_threshold_override_and_generation(trained, good_f32, tmp_path):
    bad = tmp_path / "bad.gguf"
    rewrite(good_f32, bad, _perturb_norm)
    loose = ["--threshold", "max_rel_diff=1", "--threshold", "min_cosine=0.9", "--threshold", "mean_kl=1"]
    run = run_cli("verify", trained, bad, *loose, "--generate", "8", "--json")
    assert run.code == 0, run.stderr
    gen = run.json()["generation"]
    assert len(gen["source_ids"]) == 8 and len(gen["converted_ids"]) == 8
    assert "source    |" in run.stderr and "converted |" in run.stderr
    assert run_cli("verify", trained, good_f32, "--threshold", "bogus=1").code == 2


@pytest.mark.parametrize("quant", ["f16", "bf16", "q8_0", "q6_k", "q5_k_m", "q4_k_m", "q4_0", "q3_k_m", "q2_k"])
def test_every_type_of_a_trained_model_passes(trained, tmp_path, quant):
    run = run_cli("convert", trained, tmp_path / f"m-{quant}.gguf", "--quant", quant, "--verify", "--json")
    assert run.code == 0, run.stderr
