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


def _halve_q8_0_scales(arrays):
    """A misread dequantization scale: every Q8_0 block of every ffn_down holds half its f16 scale `d`
    (a block is d, then 32 int8 quants)."""
    for name, raw in arrays.items():
        if name.endswith("ffn_down.weight"):
            assert raw.dtype == np.uint8, name
            blocks = raw.reshape(-1, 34)
            blocks[:, :2] = (blocks[:, :2].copy().view(np.float16) * np.float16(0.5)).view(np.uint8)


def _drop_v_bias(arrays):
    """A dropped bias (V's: a K bias shifts every score of a query alike, which softmax ignores)."""
    for name in arrays:
        if name.endswith("attn_v.bias"):
            arrays[name] = np.zeros_like(arrays[name])


def _swap_experts(arrays):
    """Experts 0 and 1 of the first layer exchanged in all three stacked tensors; the router still
    sends each token to the old index."""
    for kind in ("gate", "up", "down"):
        stacked = arrays[f"blk.0.ffn_{kind}_exps.weight"]
        stacked[[0, 1]] = stacked[[1, 0]]


FAULTS = {
    "two layers swapped": (_swap_layers, None),
    "Q/K permutation skipped": (_skip_permutation, None),
    "norm weight perturbed by 1%": (_perturb_norm, None),
    "token id off by one": (None, _token_off_by_one),
    "wrong rope theta": (None, _wrong_rope_theta),
}


@pytest.fixture(scope="module")
def good_q8_0(trained, tmp_path_factory):
    out = tmp_path_factory.mktemp("faults") / "good-q8_0.gguf"
    modelport.convert(trained, out, quant="q8_0")
    return out


def test_wrong_dequantization_scale_is_caught(trained, good_q8_0, tmp_path):
    """At q8_0's own bounds (the noise its types predict), not at f32's."""
    assert run_cli("verify", trained, good_q8_0).code == 0
    bad = tmp_path / "bad.gguf"
    rewrite(good_q8_0, bad, _halve_q8_0_scales)
    run = run_cli("verify", trained, bad, "--json")
    assert run.code == 1, run.stderr
    assert run.json()["dtype"] == "q8_0" and run.json()["failures"]


def _with_biases(sample, folder):
    """The sample's model with its biases drawn at random: a fresh model's are zeros, which no fault moves."""
    import copy
    import shutil
    shutil.copytree(sample.path, folder)
    model = copy.deepcopy(sample.model)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("bias"):
                param.normal_(0, 0.5)
    model.save_pretrained(folder)
    return folder


@pytest.mark.parametrize("family, fault", [("qwen2", _drop_v_bias), ("mixtral", _swap_experts)])
def test_bias_and_expert_faults_are_caught(samples, tmp_path, family, fault):
    model = _with_biases(samples(family), tmp_path / "model") if family == "qwen2" else samples(family).path
    good, bad = tmp_path / "good.gguf", tmp_path / "bad.gguf"
    modelport.convert(model, good, quant="f32")
    assert run_cli("verify", model, good).code == 0
    rewrite(good, bad, fault)
    run = run_cli("verify", model, bad, "--json")
    assert run.code == 1, (family, run.stderr)
    assert run.json()["failures"]


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
    assert run.json()["failures"], fault


def test_threshold_override_and_generation(trained, good_f32, tmp_path):
    bad = tmp_path / "bad.gguf"
    rewrite(good_f32, bad, _perturb_norm)
    loose = ["--threshold", "max_rel_diff=1", "--threshold", "kl_p95=1", "--threshold", "mean_kl=1",
             "--threshold", "top1_agreement=0.5"]
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
