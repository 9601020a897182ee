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
from modelport.runtimes import layerwise
from modelport.runtimes.layerwise import LayerwiseRuntime, build, unserved, whole_model_bytes
from modelport.runtimes.rows import LogitRows
from modelport.runtimes.transformers import TransformersRuntime
from modelport.samples import save_model

DOCS = Path(__file__).resolve().parents[1] / "docs" / "verify.md"
TEXTS = ("The quick brown fox jumps over the lazy dog.", "def add(a, b):\n    return a + b", "42")
SPECS = [s for s in registered() if s.tiny]


def _compare(path: Path, monkeypatch) -> tuple[int, float]:
    """(passes, largest |difference|) of layer-major against whole-model logits on TEXTS, in one pass;
    both as whole sequences and as verify reads them (from position 1, in blocks of 2 positions)."""
    bundle = load(path, ReadOptions())
    parts, why = build(bundle)
    assert parts is not None, why
    layered = LayerwiseRuntime(bundle, parts, 8 << 30)
    whole = TransformersRuntime.open(bundle)
    sequences = [layered.tokenize(t) for t in TEXTS]
    assert len({len(s) for s in sequences}) == len(sequences)       # lengths differ: no padding hides in it
    monkeypatch.setattr(layerwise, "block_positions", lambda vocab: 2)
    worst = 0.0
    for ids, hidden in zip(sequences, layered.hidden_many(sequences)):
        want, got = whole.logits(ids), layered.logits_from(ids, hidden)
        rows = layered.rows_from(ids, hidden, 1)
        assert got.shape == want.shape and rows.shape == (len(ids) - 1, want.shape[1])
        blocked = np.concatenate([rows[i:i + 3] for i in range(0, len(rows), 3)])      # across block edges
        worst = max(worst, float(np.abs(got - want).max()), float(np.abs(blocked - want[1:]).max()))
        scored = layered.rows_from(ids, hidden, 1, len(ids) - 1)          # a chunk's scored positions
        assert scored.shape == (len(ids) - 2, want.shape[1])
        if len(ids) > 2:
            worst = max(worst, float(np.abs(scored[0:len(scored)] - want[1:-1]).max()))
    return layered.pass_count, worst


@pytest.mark.parametrize("family", ["llama", "qwen2", "gpt2"])
def test_layer_major_equals_whole_model(samples, family, monkeypatch):
    passes, worst = _compare(samples(family).path, monkeypatch)
    assert passes == 1 and worst <= 1e-5, worst


@pytest.mark.slow
@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.model_type)
def test_every_served_family_equals_whole_model(spec, tmp_path, monkeypatch):
    config = {"model_type": spec.model_type, "vocab_size": 96, **spec.tiny}
    if _why(spec, config):
        pytest.skip(f"not served: {_why(spec, config)}")
    save_model(tmp_path / "m", spec.model_type)
    passes, worst = _compare(tmp_path / "m", monkeypatch)
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
    assert len(run.stderr.strip().splitlines()) == 1, run.stderr          # one line, nothing else
    line = run.stderr.strip()
    assert "--max-memory 100.0 MB is too small" in line and "the smallest that works is" in line
    smallest = re.search(r"smallest that works is ([\d.]+ [MG]B)", line).group(1)
    enough = run_cli("verify", llama.path, tmp_path / "m.gguf", "--max-memory", smallest.replace(" ", ""), "--json")
    assert enough.code == 0, enough.stderr
    default = run_cli("verify", llama.path, tmp_path / "m.gguf", "--json")         # the tiny model fits whole
    assert default.json()["memory"]["source_path"] == "whole-model", default.stderr
    assert run_cli("convert", llama.path, tmp_path / "x", "--max-memory", "1GB").code == 2      # needs --verify


def test_llama_cpp_logits_in_batches_equal_one_batch(llama, tmp_path, monkeypatch):
    """llama.cpp's buffers hold a batch of positions' logits, not the context's: a 300-position sequence
    in batches of BATCH gives the logits one 300-token batch gives."""
    from modelport.runtimes import llama_cpp

    assert run_cli("convert", llama.path, tmp_path / "m.gguf", "--quant", "f32").code == 0
    ids = [1] + [(7 * i) % 90 + 3 for i in range(299)]
    batched = llama_cpp.LlamaCppRuntime(tmp_path / "m.gguf", n_ctx=len(ids))
    assert batched.llm.n_batch == llama_cpp.BATCH < len(ids)
    monkeypatch.setattr(llama_cpp, "BATCH", len(ids))
    whole = llama_cpp.LlamaCppRuntime(tmp_path / "m.gguf", n_ctx=len(ids))
    assert whole.llm.n_batch == len(ids)
    assert np.abs(batched.logits(ids) - whole.logits(ids)).max() <= 1e-5


def test_llama_cpp_logit_rows_and_given_back_pages(llama, tmp_path):
    """llama.cpp's logits taken a batch at a time from position `first` equal the whole sequence's; after
    loading, none of the file's pages stay counted in this process (llama.cpp populated them all), and
    a sequence maps back only what it touches: not the unused rows of the embedding table."""
    from modelport.runtimes import llama_cpp

    path = tmp_path / "m.gguf"
    assert run_cli("convert", llama.path, path, "--quant", "f32").code == 0
    ids = [1] + [(7 * i) % 90 + 3 for i in range(299)]
    runtime = llama_cpp.LlamaCppRuntime(path, n_ctx=len(ids))
    assert _mapped_kb(path) == 0
    whole = runtime.logits(ids)
    rows = runtime.logit_rows(ids, 7)
    assert rows.shape == (len(ids) - 7, runtime.vocab_size)
    assert np.array_equal(np.concatenate([rows[i:i + 50] for i in range(0, len(rows), 50)]), whole[7:])
    assert np.array_equal(runtime.logit_rows(ids, 7, 17)[0:10], whole[7:17])        # fed no further than 17
    assert 0 < _mapped_kb(path) <= path.stat().st_size // 1024 + 4


def _mapped_kb(path: Path) -> int:
    """kB of `path`'s mappings resident in this process (/proc/self/smaps)."""
    total, ours = 0, False
    for line in Path("/proc/self/smaps").read_text().splitlines():
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            ours = line.endswith(str(path.resolve()))
        elif ours and line.startswith("Rss:"):
            total += int(line.split()[1])
    return total


def test_logit_rows_slice_like_the_array_holding_one_block():
    data = np.arange(23 * 5, dtype=np.float32).reshape(23, 5)
    made = []

    def blocks():
        for start in range(0, 23, 4):
            made.append(start)
            yield data[start:start + 4]
    rows = LogitRows(blocks, 23, 5)
    assert rows.shape == (23, 5) and rows.nbytes == data.nbytes
    for a, b in ((0, 3), (3, 9), (9, 9), (9, 23), (2, 6), (20, 23)):        # in order, then back, then on
        assert np.array_equal(rows[a:b], data[a:b]), (a, b)
    assert made == [0, 4, 8, 12, 16, 20, 0, 4, 8, 12, 16, 20]                   # the step back started again
    assert np.array_equal(rows.materialize(), data) and np.array_equal(rows[-3:], data[-3:])
    with pytest.raises(TypeError):
        rows[3]


def test_comparison_blocks_do_not_change_the_figures(monkeypatch):
    """compare() and the corpus statistics work a block of positions at a time (fewer at large
    vocabularies); one position per block gives the same figures."""
    from modelport.verify import metrics
    from modelport.verify.quality import QualityStats

    rng = np.random.default_rng(0)
    source, converted = rng.normal(size=(70, 500)).astype(np.float32), rng.normal(size=(70, 500)).astype(np.float32)
    tokens = rng.integers(0, 500, size=70)
    assert metrics.block_rows(500) == 32 and metrics.block_rows(128256) == 8
    blocked = metrics.compare(source, converted), QualityStats().add(source, converted, tokens)
    monkeypatch.setattr(metrics, "BLOCK", 1)
    assert metrics.block_rows(500) == 1
    single = metrics.compare(source, converted), QualityStats().add(source, converted, tokens)
    assert blocked[0].figures == pytest.approx(single[0].figures, rel=1e-12)
    assert np.array_equal(blocked[0].kl, single[0].kl) and vars(blocked[1]) == pytest.approx(vars(single[1]), rel=1e-12)
