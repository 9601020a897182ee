"""Quality statistics over a corpus (verify --corpus), their thresholds, and the HTML report in a real browser."""
from __future__ import annotations

import json
import math
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest
from conftest import run_cli

import modelport
from modelport.samples import corpus_text, trained_model
from modelport.verify import Reference, check
from modelport.verify.corpus import CorpusSettings
from modelport.verify.quality import QualityStats
from modelport.verify.report import render

QUANTS = ("q8_0", "q4_k_m", "q2_k")


@pytest.fixture(scope="module")
def quants(tmp_path_factory):
    """The trained tiny Llama (the threshold fixture) and three GGUF quantizations of it."""
    source = trained_model()
    out = tmp_path_factory.mktemp("quality")
    for quant in QUANTS:
        modelport.convert(source, out / f"{quant}.gguf", quant=quant)
    text = out / "corpus.txt"
    text.write_text(corpus_text() * 4)      # the text it was trained on: its perplexity is meaningful
    return source, out, text


def _plain_numpy(p_logits: np.ndarray, q_logits: np.ndarray, tokens: np.ndarray) -> dict:
    """The statistics written out the long way, one position at a time."""
    kld, nll_p, nll_q, same, dp = [], [], [], [], []
    for lp, lq, t in zip(p_logits.astype(np.float64), q_logits.astype(np.float64), tokens):
        p = np.exp(lp - lp.max()) / np.exp(lp - lp.max()).sum()
        q = np.exp(lq - lq.max()) / np.exp(lq - lq.max()).sum()
        kld.append(float(np.sum(p * np.log(p / q))))
        nll_p.append(-math.log(p[t]))
        nll_q.append(-math.log(q[t]))
        same.append(int(np.argmax(p) == np.argmax(q)))
        dp.append(q[t] - p[t])
    kld, dp = np.array(kld), np.array(dp)
    return {"kld_mean": kld.mean(), "kld_median": np.median(kld), "kld_p90": np.quantile(kld, 0.9),
            "kld_p99": np.quantile(kld, 0.99), "kld_p99_9": np.quantile(kld, 0.999), "kld_max": kld.max(),
            "ppl_source": math.exp(np.mean(nll_p)), "ppl_converted": math.exp(np.mean(nll_q)),
            "ln_ppl_ratio": np.mean(nll_q) - np.mean(nll_p), "same_top1": np.mean(same),
            "dp_rms": math.sqrt(np.mean(dp ** 2)), "dp_p1": np.quantile(dp, 0.01), "dp_p99": np.quantile(dp, 0.99),
            "dp_mean": dp.mean()}


def test_statistics_equal_a_plain_numpy_computation():
    rng = np.random.default_rng(7)
    stats, ps, qs, ts = QualityStats(), [], [], []
    for _ in range(3):                                     # three chunks of 127 scored positions
        p = rng.normal(0, 3, (127, 300)).astype(np.float32)
        q = (p + rng.normal(0, 0.4, p.shape)).astype(np.float32)
        t = rng.integers(0, 300, 127)
        stats.add(p, q, t)
        ps.append(p), qs.append(q), ts.append(t)
    got = stats.summary()
    want = _plain_numpy(np.concatenate(ps), np.concatenate(qs), np.concatenate(ts))
    assert got["positions"] == 381 and got["chunks"] == 3
    for key, value in want.items():
        assert got[key] == pytest.approx(value, rel=1e-6, abs=1e-9), key
    assert 0 < got["same_top1"] < 1 and got["kld_mean"] > 0           # the data exercise both sides


def test_drift_grows_as_bits_shrink(quants):
    source, out, text = quants
    reference = Reference(source, None, None, CorpusSettings(str(text), ctx=64, tokens=2048))
    stats = {q: check(reference, out / f"{q}.gguf", write_sidecar=False,
                      thresholds={"min_cosine": 0, "mean_kl": 10})["quality"] for q in QUANTS}
    kld = [stats[q]["kld_mean"] for q in QUANTS]
    top = [stats[q]["same_top1"] for q in QUANTS]
    assert kld[0] < kld[1] < kld[2], kld
    assert top[0] > top[1] > top[2], top
    assert stats["q8_0"]["positions"] == stats["q8_0"]["chunks"] * 31          # ctx 64: positions 32..62 scored
    # the source's perplexity on its own training text is low, and the same for every result
    assert stats["q8_0"]["ppl_source"] == pytest.approx(stats["q2_k"]["ppl_source"], rel=1e-6)
    assert stats["q8_0"]["ppl_source"] < 20


def test_verify_corpus_cli_json_thresholds_and_report(quants, tmp_path):
    source, out, text = quants
    page = tmp_path / "report.html"
    r = run_cli("verify", source, out / "q4_k_m.gguf", "--corpus", text, "--ctx", "64", "--tokens", "1024",
                "--report", page, "--json")
    assert r.code == 0, r.stderr
    q = json.loads(r.stdout)["quality"]
    assert q["corpus"] == str(text) and q["ctx"] == 64 and q["chunks"] == 16 and q["positions"] == 16 * 31
    for key in ("ppl_source", "ppl_converted", "ppl_ratio", "ln_ppl_ratio", "ln_ppl_ratio_error", "kld_mean",
                "kld_median", "kld_p90", "kld_p99", "kld_p99_9", "kld_max", "same_top1", "dp_rms", "dp_p1", "dp_p99"):
        assert isinstance(q[key], float), key
    assert len(q["per_chunk"]) == 16 and sum(c["positions"] for c in q["per_chunk"]) == q["positions"]
    assert sum(q["kld_histogram"]["counts"]) == q["positions"]
    assert "PASS" in page.read_text()

    strict = run_cli("verify", source, out / "q4_k_m.gguf", "--corpus", text, "--ctx", "64", "--tokens", "256",
                     "--threshold", "kld_p99=1e-9", "--report", page)
    assert strict.code == 1 and "kld_p99" in strict.stderr
    assert "FAIL" in page.read_text() and "kld_p99" in page.read_text()      # the page is written on failure too

    before = (out / "q8_0.gguf").read_bytes()
    for argv, message in ((["--threshold", "kld_mean=0.1"], "--corpus"), (["--ctx", "64"], "--corpus"),
                          (["--corpus", text, "--ctx", "4096"], "512 positions"),
                          (["--corpus", text, "--ctx", str(10 ** 9)], "use 4"),
                          (["--corpus", tmp_path / "missing.txt"], "no such file"),
                          (["--report", out / "q8_0.gguf"], "a model being verified"),
                          (["--report", source / "report.html"], "a model being verified"),
                          (["--report", tmp_path], "names a folder")):
        bad = run_cli("verify", source, out / "q8_0.gguf", *argv)
        assert bad.code == 2 and message in bad.stderr, (argv, bad.stderr)
    assert (out / "q8_0.gguf").read_bytes() == before and not (source / "report.html").exists()


def test_a_gguf_source_is_scored_in_llama_cpp(quants, tmp_path):
    """verify A.gguf B.gguf --corpus: both in llama.cpp, the source's context length from its metadata."""
    _source, out, text = quants
    r = run_cli("verify", out / "q8_0.gguf", out / "q2_k.gguf", "--corpus", text, "--ctx", "64", "--tokens", "512",
                "--threshold", "min_cosine=0", "--threshold", "mean_kl=100", "--json")
    assert r.code == 0, r.stderr
    report = json.loads(r.stdout)
    assert report["runtime"] == {"source": "llama.cpp", "converted": "llama.cpp"}
    assert report["quality"]["chunks"] == 8 and report["quality"]["kld_mean"] > 0
    long = run_cli("verify", out / "q8_0.gguf", out / "q2_k.gguf", "--corpus", text, "--ctx", "1024")
    assert long.code == 2 and "512 positions" in long.stderr


def test_an_encoder_has_nothing_to_score(samples, tmp_path):
    bert = samples("bert").path
    r = run_cli("convert", bert, tmp_path / "b", "--dtype", "float16", "--verify", "--corpus", "builtin")
    assert r.code == 2 and "no language-model head" in r.stderr, r.stderr


def test_convert_verify_carries_the_statistics(quants, tmp_path):
    source, _out, text = quants
    r = run_cli("convert", source, tmp_path / "m.gguf", "--quant", "q8_0", "--verify", "--corpus", text,
                "--ctx", "64", "--tokens", "256", "--json")
    assert r.code == 0, r.stderr
    assert json.loads(r.stdout)["verification"]["quality"]["chunks"] == 4
    bad = run_cli("convert", source, tmp_path / "n.gguf", "--corpus", text)
    assert bad.code == 2 and "--verify" in bad.stderr and not (tmp_path / "n.gguf").exists()
    over = run_cli("convert", source, tmp_path / "n.gguf", "--verify", "--report", source / "config.json")
    assert over.code == 2 and "a model being verified" in over.stderr and not (tmp_path / "n.gguf").exists()


def test_report_renders_in_a_real_browser(quants, tmp_path):
    """The page of three results against one source, opened by headless Chromium: its DOM holds the
    verdicts and every plot, and a screenshot is kept as the test's artifact."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("headless Chromium is not installed (Debian: apt-get install chromium)")
    source, out, text = quants
    reference = Reference(source, None, None, CorpusSettings(str(text), ctx=64, tokens=1024))
    reports = [check(reference, out / f"{q}.gguf", write_sidecar=False, thresholds={"min_cosine": 0, "mean_kl": 10},
                     generate=8) for q in QUANTS]
    page = tmp_path / "report.html"
    page.write_text(render(reports))
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    dom = subprocess.run([browser, *flags, "--dump-dom", page.as_uri()], capture_output=True, text=True,
                         timeout=120).stdout
    assert dom.count("<svg") == 4                       # histogram, along the corpus, per prompt, size vs KLD
    for text_seen in ("KLD histogram", "KLD along the corpus", "Top-1 agreement per prompt",
                      "Size against KL divergence", "Greedy generation", *(f"PASS · {q}.gguf" for q in QUANTS)):
        assert text_seen in dom, text_seen
    artifacts = Path(os.environ.get("MODELPORT_TEST_ARTIFACTS", tmp_path))
    artifacts.mkdir(parents=True, exist_ok=True)
    shot = artifacts / "verify-report.png"
    subprocess.run([browser, *flags, "--window-size=1200,3000", f"--screenshot={shot}", page.as_uri()],
                   capture_output=True, timeout=120, check=True)
    from PIL import Image
    with Image.open(shot) as image:
        assert image.size == (1200, 3000)
        colours = image.convert("RGB").getcolors(maxcolors=1 << 20)
    assert colours is not None and len(colours) > 50           # drawn plots, not a blank or error page


def test_profile_verifies_every_file_on_one_page(quants, tmp_path):
    """convert --profile --verify --corpus: each file checked against one run of the source, and the page
    plots size against KLD with a point per file."""
    source, _out, text = quants
    page = tmp_path / "edge.html"
    r = run_cli("convert", source, tmp_path / "edge", "--profile", "edge", "--verify", "--corpus", text, "--ctx", "64",
                "--tokens", "256", "--report", page, "--json")
    assert r.code == 0, r.stderr
    reports = json.loads(r.stdout)["verification"]
    assert [Path(v["converted"]).name for v in reports] == ["model-q3_k_m.gguf", "model-q4_k_s.gguf"]
    assert all(v["quality"]["chunks"] == 4 and v["bytes"] > 0 for v in reports)
    html = page.read_text()
    assert "Size against KL divergence" in html and html.count("<svg") == 4
