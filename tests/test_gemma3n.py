"""Gemma 3n's text model (architectures/families/gemma3n.py): what the registry-generated tests cannot say.

- llama.cpp's GEMMA3N cuts activations at the sample std (n - 1) and runs its GELU through an fp16 table;
  with transformers' cut and GELU made so, llama.cpp's f32 logits equal transformers' within 1e-3 at every
  position (unchanged, 3.9e-2 apart: the family's tolerance). So the rest of the file is the model exactly.
- The f32 file is what llama.cpp's converter writes from the same checkpoint (given the K and V
  projections llama.cpp loads for every layer, which transformers 5 does not save): the same tensors,
  bytes, metadata and types, but the vocabulary size modelport adds. (The per-layer table's added rows are
  copies of row 0, the padding token's, which transformers keeps at zero: the converter's zero rows.)
- ONNX is refused before anything is exported: torch.onnx cannot export the sparsity cut's erf_inv.
"""
from __future__ import annotations

import copy
import shutil

import numpy as np
import pytest
import torch
from conftest import run_cli
from safetensors.numpy import load_file, save_file
from test_gguf_source import same_as_converter

import modelport
from modelport.runtimes.llama_cpp import LlamaCppRuntime
from modelport.verify.prompts import PROMPTS

SPARSE_CUT = 1.6448533535003662        # llama.cpp's hard-coded normal quantile of 0.95


def _sample_std_cut(mlp, inputs: torch.Tensor) -> torch.Tensor:
    """Gemma3nTextMLP._gaussian_topk as llama.cpp computes it: the std of the sample, not the population."""
    cutoff = inputs.mean(-1, keepdim=True) + inputs.std(-1, keepdim=True, unbiased=True) * SPARSE_CUT
    return torch.relu(inputs - cutoff)


class TableGelu(torch.nn.Module):
    """ggml's CPU GELU: the tanh GELU of the input rounded to fp16, read as fp16 (identity past ±10)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        table = torch.nn.functional.gelu(x.half().float(), approximate="tanh").half().float()
        return torch.where(x <= -10, torch.zeros_like(x), torch.where(x >= 10, x, table))


@pytest.mark.slow
def test_llama_cpp_equals_transformers_with_its_numerics(samples, tmp_path, monkeypatch):
    from transformers import AutoTokenizer
    from transformers.models.gemma3n import modeling_gemma3n

    sample = samples("gemma3n_text")
    modelport.convert(sample.path, tmp_path / "m.gguf", quant="f32")
    runtime, tok = LlamaCppRuntime(tmp_path / "m.gguf"), AutoTokenizer.from_pretrained(sample.path)
    monkeypatch.setattr(modeling_gemma3n.Gemma3nTextMLP, "_gaussian_topk", _sample_std_cut)
    model = copy.deepcopy(sample.model)         # the shared sample keeps transformers' own activation
    for module in model.modules():
        if hasattr(module, "act_fn"):
            module.act_fn = TableGelu()
    for text in PROMPTS[:4]:
        ids = tok(text)["input_ids"]
        with torch.no_grad():
            ref = model(torch.tensor([ids])).logits[0].numpy()
        diff = np.abs(runtime.logits(ids) - ref).max()
        assert diff < 1e-3, (text, diff)


@pytest.mark.slow
def test_the_file_is_what_llama_cpps_converter_writes(samples, tmp_path):
    sample = samples("gemma3n_text")
    ours = tmp_path / "ours.gguf"
    modelport.convert(sample.path, ours, quant="f32")
    source = tmp_path / "source"
    shutil.copytree(sample.path, source)
    config = sample.model.config
    tensors = load_file(source / "model.safetensors")
    kv = (config.num_key_value_heads * config.head_dim, config.hidden_size)
    for layer in range(config.num_hidden_layers - config.num_kv_shared_layers, config.num_hidden_layers):
        prefix = f"model.layers.{layer}.self_attn"
        tensors.update({f"{prefix}.k_proj.weight": np.zeros(kv, np.float32),
                        f"{prefix}.v_proj.weight": np.zeros(kv, np.float32),
                        f"{prefix}.k_norm.weight": np.zeros(config.head_dim, np.float32)})
    save_file(tensors, source / "model.safetensors", metadata={"format": "pt"})
    same_as_converter(ours, source, tmp_path / "ref.gguf",
                      ("gemma3n.vocab_size", "tokenizer.ggml.add_bos_token", "tokenizer.ggml.add_eos_token"))


@pytest.mark.slow
def test_onnx_is_refused_before_export(samples, tmp_path):
    run = run_cli("convert", samples("gemma3n_text").path, tmp_path / "m.onnx")
    assert run.code == 1 and "erf_inv" in run.stderr and len(run.stderr.strip().splitlines()) == 1, run.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_verify_holds_the_f32_file_to_its_runtime_types_bounds(samples, tmp_path):
    """llama.cpp computes Gemma 3n's GELU from an F16 table, so verify's f32 verdict counts F16's error as
    noise between the runtimes (`runtimes`) and the correct file passes; the exact bounds it would otherwise
    get (mean KL 1e-6, max relative difference 1e-3) fail it, as --threshold shows."""
    sample = samples("gemma3n_text")
    out = tmp_path / "m.gguf"
    modelport.convert(sample.path, out, quant="f32")
    run = run_cli("verify", sample.path, out, "--json")
    assert run.code == 0, run.stdout
    report = run.json()
    assert report["expected_noise"]["runtimes"] == pytest.approx(2.1e-4) and report["metrics"]["max_rel_diff"] > 1e-3
    exact = run_cli("verify", sample.path, out, "--threshold", "mean_kl=1e-6", "--threshold", "max_rel_diff=1e-3")
    assert exact.code == 1 and "max_rel_diff" in exact.stderr
