"""Every architecture's GGUF runs in llama.cpp and computes what transformers computes."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import run_cli

import modelport
from modelport.architectures import registered, spec_for
from modelport.runtimes.llama_cpp import LlamaCppRuntime
from modelport.verify.prompts import PROMPTS

DECODERS = [s.model_type for s in registered() if s.gguf is not None and s.tiny and s.hf_class.endswith("CausalLM")]
# each family variant's tiny model too (another llama.cpp arch, chosen by the config)
VARIANTS = [f"{s.model_type}-{v.name}" for s in registered() if s.model_type in DECODERS for v in s.variants]
TOKENIZER_VARIANTS = ["llama-spm", "llama-bfb"]
TOLERANCE = {"f32": 1e-3, "f16": 1e-2}     # a family whose llama.cpp graph computes it its own way says its own
# families whose HF config the GGUF metadata does not determine (docs/architectures.md says why)
NEEDS_BASE_MODEL: dict[str, str] = {}
# state-space and hybrid families beyond one of each kind (mamba, lfm2 stay here): transformers runs their scans
# through its slow reference code on CPU, so they run in `make test-slow`; so do the newest plain decoders added
# after the default group reached its time limit
SLOW_FAMILIES = {"falcon_mamba", "mamba2", "granitemoehybrid", "bamba", "nemotron_h", "hunyuan_v1_moe", "apertus",
                 "minimax_m2", "afmoe", "arcee", "bitnet",
                 "jamba", "jamba-dense", "falcon_h1", "lfm2_moe", "qwen3_next", "kimi_linear", "gemma3n_text",
                 "nemotron_h-moe"}


def _tokenizer(path):
    from transformers import AutoTokenizer
    return AutoTokenizer.from_pretrained(path)


def _hf_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].numpy()


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.slow) if n.partition("-")[0] in SLOW_FAMILIES
                                  else n for n in DECODERS + VARIANTS + TOKENIZER_VARIANTS])
def test_family_runs_in_llama_cpp_and_comes_back(samples, tmp_path, name):
    """Every registered family, and each of its variants: its f32 GGUF gives transformers' logits in
    llama.cpp (f32 KV cache) at every position, llama.cpp tokenizes the prompts as transformers does, and the
    GGUF read back to HF (config and tokenizer from the source) gives the same logits in transformers; f16
    stays within its own bound."""
    sample = samples(name)
    bound = {kind: max(limit, spec_for({"model_type": name.partition("-")[0]}).gguf.tolerance)
             for kind, limit in TOLERANCE.items()}
    out = tmp_path / "m.gguf"
    result = modelport.convert(sample.path, out, quant="f32")
    assert result["format"] == "gguf" and out.is_file()
    tok = _tokenizer(sample.path)
    runtime = LlamaCppRuntime(out)
    for text in PROMPTS[:4]:
        ids = tok(text)["input_ids"]
        assert runtime.tokenize(text) == ids, (name, text)
        diff = np.abs(runtime.logits(ids) - _hf_logits(sample.model, ids)).max()
        assert diff < bound["f32"], (name, text, diff)
    modelport.convert(out, tmp_path / "hf", base_model=sample.path)
    back = modelport.load(tmp_path / "hf")
    assert back.model_type == sample.model.config.model_type
    from conftest import hf_logits
    assert torch.allclose(hf_logits(tmp_path / "hf"), sample.logits(), atol=1e-4), name
    if name.partition("-")[0] not in NEEDS_BASE_MODEL:     # config and tokenizer from the metadata alone
        modelport.convert(out, tmp_path / "rebuilt")
        assert torch.allclose(hf_logits(tmp_path / "rebuilt"), sample.logits(), atol=1e-4), name
        rebuilt = _tokenizer(tmp_path / "rebuilt")
        assert all(rebuilt(text)["input_ids"] == tok(text)["input_ids"] for text in PROMPTS), name
    half = tmp_path / "m16.gguf"
    modelport.convert(sample.path, half, quant="f16")
    ids = tok(PROMPTS[0])["input_ids"]
    assert np.abs(LlamaCppRuntime(half).logits(ids) - _hf_logits(sample.model, ids)).max() < bound["f16"], name


def _corpus() -> list[str]:
    from modelport.samples import corpus_text
    return corpus_text().splitlines() + list(PROMPTS) + [
        "  leading spaces", "trailing   ", "tabs\tand\nnewlines\n\n", "x=1;y=22;z=333;w=4444", "ÀÉÎõü ßæø", "",
    ]


def test_byte_level_bpe_tokenization_equals_hf(samples, tmp_path):
    """llama.cpp tokenizes a varied corpus, special tokens included, exactly as the HF tokenizer does."""
    sample = samples("llama")
    out = tmp_path / "t.gguf"
    modelport.convert(sample.path, out, quant="f16")
    tok = _tokenizer(sample.path)
    runtime = LlamaCppRuntime(out)
    texts = _corpus() + [f"{tok.eos_token} after an eos, {tok.bos_token}and a bos<unk>"]
    mismatches = [t for t in texts if runtime.tokenize(t) != tok(t)["input_ids"]]
    assert not mismatches, mismatches[:3]


def test_byte_fallback_bpe_tokenization_equals_hf(samples, tmp_path):
    """A Metaspace + byte-fallback BPE tokenizer.json (no tokenizer.model) runs as llama.cpp's "llama" vocab.

    Texts starting with whitespace, and special tokens inside text, are left out: tokenizers' Metaspace
    adds no "▁" when one is already there or after a special token, llama.cpp always adds it, and GGUF
    has no key for the difference (see README)."""
    sample = samples("llama-bfb")
    out = tmp_path / "t.gguf"
    modelport.convert(sample.path, out, quant="f16")
    tok = _tokenizer(sample.path)
    runtime = LlamaCppRuntime(out)
    texts = [t for t in _corpus() if not t[:1].isspace()] + ["emoji 🙂🚀 and 中文 via byte fallback"]
    mismatches = [t for t in texts if runtime.tokenize(t) != tok(t)["input_ids"]]
    assert not mismatches, mismatches[:3]


def test_sentencepiece_tokenization_equals_the_model(samples, tmp_path):
    """SentencePiece: llama.cpp equals the tokenizer.model run by sentencepiece itself (plus BOS).

    transformers' converted fast tokenizer is not the reference here: it departs from sentencepiece
    on leading whitespace runs (see README)."""
    import sentencepiece as spm
    sample = samples("llama-spm")
    out = tmp_path / "t.gguf"
    modelport.convert(sample.path, out, quant="f16")
    sp = spm.SentencePieceProcessor(model_file=str(sample.path / "tokenizer.model"))
    runtime = LlamaCppRuntime(out)
    mismatches = [t for t in _corpus() if runtime.tokenize(t, parse_special=False) != [sp.bos_id(), *sp.encode(t)]]
    assert not mismatches, mismatches[:3]
    plain = [t for t in _corpus() if not t.startswith(" ")]
    hf = _tokenizer(sample.path)
    assert [runtime.tokenize(t) for t in plain] == [hf(t)["input_ids"] for t in plain]


def test_bert_embeddings_match(samples, tmp_path):
    sample = samples("bert")
    out = tmp_path / "bert.gguf"
    modelport.convert(sample.path, out, quant="f32")
    tok = _tokenizer(sample.path)
    runtime = LlamaCppRuntime(out, embedding=True, pooling=1)
    for text in PROMPTS[:3]:
        ids = tok(text)["input_ids"]
        with torch.no_grad():
            ref = sample.model(torch.tensor([ids])).last_hidden_state[0].mean(0).numpy()
        got = runtime.embed(text)
        assert runtime.tokenize(text) == ids
        assert float(np.dot(ref, got) / np.linalg.norm(ref) / np.linalg.norm(got)) > 0.9999


def test_llama3_rope_scaling_writes_rope_freqs(samples, tmp_path):
    from modelport.samples import save_model
    scaling = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 64}
    path = tmp_path / "llama3"
    model, tok = save_model(path, "llama", rope_scaling=scaling, rope_theta=500000.0)
    out = tmp_path / "llama3.gguf"
    modelport.convert(path, out, quant="f32")
    import gguf
    names = [t.name for t in gguf.GGUFReader(out).tensors]
    assert "rope_freqs.weight" in names
    ids = tok(PROMPTS[4])["input_ids"][:200]
    diff = np.abs(LlamaCppRuntime(out).logits(ids) - _hf_logits(model, ids)).max()
    assert diff < 1e-3, diff


def test_from_training_checkpoint_and_dcp_without_hf_copy(samples, tmp_path):
    sample = samples("qwen2")
    torch.save({"model": {"module." + k: v for k, v in sample.model.state_dict().items()}}, tmp_path / "step_9.pth")
    run = run_cli("convert", tmp_path / "step_9.pth", tmp_path / "a.gguf", "--base-model", sample.path,
                  "--quant", "f32", "--json")
    assert run.code == 0, run.stderr
    assert run_cli("convert", sample.path, tmp_path / "dcp", "--to", "dcp").code == 0
    assert run_cli("convert", tmp_path / "dcp", tmp_path / "b.gguf", "--quant", "f32").code == 0
    ids = _tokenizer(sample.path)(PROMPTS[0])["input_ids"]
    ref = _hf_logits(sample.model, ids)
    for name in ("a.gguf", "b.gguf"):
        assert np.abs(LlamaCppRuntime(tmp_path / name).logits(ids) - ref).max() < 1e-3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.gguf", "b.gguf", "dcp", "step_9.pth"]
