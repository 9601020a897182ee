"""The layer-major reference (runtimes/layerwise.py) against the whole model, and verify's --max-memory.

- For every registered family it serves, its logits equal those of the model transformers loads whole
  (from_pretrained on the same folder), at every position of sequences of different lengths run in one
  pass, within 1e-5; three families in the default group, the whole registry in the slow sweep.
- The families it does not serve are exactly those docs/verify.md lists, each with the reason given.
- verify takes the layer-major path under a small --max-memory and says so; too small: exit 2.
"""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

from modelport.architectures import registered
from modelport.architectures.expected import expected_tensors
from modelport.core.bundle import ModelBundle, TensorRef
from modelport.formats import ReadOptions, load
from modelport.runtimes.layerwise import LayerwiseRuntime, build, unserved, whole_model_bytes
from modelport.runtimes.transformers import TransformersRuntime
from modelport.samples import save_model

DOCS = Path(__file__).resolve().parents[1] / "docs" / "verify.md"
TEXTS = ("The quick brown fox jumps over the lazy dog.", "def add(a, b):\n    return a + b", "42")
SPECS = [s for s in registered() if s.tiny]


def _compare(path: Path) -> tuple[int, float]:
    """(passes, largest |difference|) of layer-major against whole-model logits on TEXTS, in one pass."""
    bundle = load(path, ReadOptions())
    parts, why = build(bundle)
    assert parts is not None, why
    layered = LayerwiseRuntime(bundle, parts, 8 << 30)
    whole = TransformersRuntime.open(bundle)
    sequences = [layered.tokenize(t) for t in TEXTS]
    assert len({len(s) for s in sequences}) == len(sequences)       # lengths differ: no padding hides in it
    worst = 0.0
    for ids, got in zip(sequences, layered.logits_many(sequences)):
        want = whole.logits(ids)
        assert got.shape == want.shape
        worst = max(worst, float(np.abs(got - want).max()))
    return layered.pass_count, worst


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2"])
def test_layer_major_equals_whole_model(samples, family):
    passes, worst = _compare(samples(family).path)
    assert passes == 1 and worst <= 1e-5, worst


@pytest.mark.slow
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.model_type)
def test_every_served_family_equals_whole_model(spec, tmp_path):
    config = {"model_type": spec.model_type, "vocab_size": 96, **spec.tiny}
    if _why(spec, config):
        pytest.skip(f"not served: {_why(spec, config)}")
    save_model(tmp_path / "m", spec.model_type)
    passes, worst = _compare(tmp_path / "m")
    assert worst <= 1e-5, worst


def _why(spec, config: dict) -> str:
    """unserved() on a bundle of the family's expected tensors (names and shapes only: nothing is loaded)."""
    refs = {name: TensorRef(name, shape, "float32", loader=lambda: None)
            for name, shape in expected_tensors(spec, config).shapes.items()}
    return unserved(ModelBundle(config, refs, Path("."), "hf"))


@pytest.mark.slow
def test_docs_list_the_families_it_does_not_serve():
    listed = dict(re.findall(r"^\| `([\w.-]+)` \| (.+?) \|$", DOCS.read_text(), re.M))
    found = {}
    for spec in SPECS:
        why = _why(spec, {"model_type": spec.model_type, "vocab_size": 96, **spec.tiny})
        if why:
            found[spec.model_type] = why
    assert listed == found


def test_max_memory_below_the_whole_model_takes_the_layer_major_path(samples, tmp_path):
    source = samples("llama-quant").path
    assert run_cli("convert", source, tmp_path / "m.gguf", "--quant", "f32").code == 0
    budget = whole_model_bytes(load(source, ReadOptions())) - 1
    run = run_cli("verify", source, tmp_path / "m.gguf", "--max-memory", budget, "--corpus", "builtin", "--ctx", "64",
                  "--tokens", "256", "--generate", "2", "--json")
    assert run.code == 0, run.stderr
    report = run.json()
    memory = report["memory"]
    assert memory["source_path"] == "layer-major" and memory["converted_path"] == "mapped"
    assert memory["max_memory"] == budget and memory["peak_rss"] > 0
    assert report["metrics"]["max_abs_diff"] < 1e-4 and report["generation"]["same"]
    assert report["quality"]["kld_max"] < 1e-6
    assert "source layer-major" in run.stderr


def test_max_memory_too_small_exits_2_naming_the_smallest(llama, tmp_path):
    assert run_cli("convert", llama.path, tmp_path / "m.gguf", "--quant", "f32").code == 0
    run = run_cli("verify", llama.path, tmp_path / "m.gguf", "--max-memory", "100MB")
    assert run.code == 2, run.stderr
    line = run.stderr.strip().splitlines()[-1]
    assert "--max-memory 100.0 MB is too small" in line and "the smallest that works is" in line
    smallest = re.search(r"smallest that works is ([\d.]+ [MG]B)", line).group(1)
    enough = run_cli("verify", llama.path, tmp_path / "m.gguf", "--max-memory", smallest.replace(" ", ""), "--json")
    assert enough.code == 0, enough.stderr
    default = run_cli("verify", llama.path, tmp_path / "m.gguf", "--json")         # the tiny model fits whole
    assert default.json()["memory"]["source_path"] == "whole-model", default.stderr
    assert run_cli("convert", llama.path, tmp_path / "x", "--max-memory", "1GB").code == 2      # needs --verify
