"""Small models made locally (no hub): for the demo, the tests and the benchmarks.

Weights are random, the tokenizer is a byte-level BPE trained on a bundled text, so everything a
conversion touches (config, tokenizer files, tied weights, every tensor kind) is real but tiny.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch

CORPUS = "corpus.txt"

TINY_CONFIGS: dict[str, dict] = {
    "llama": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=256, rms_norm_eps=1e-5, tie_word_embeddings=False),
    "qwen2": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=256, tie_word_embeddings=True),
    "gpt2": dict(n_embd=64, n_layer=2, n_head=4, n_positions=256, tie_word_embeddings=True),
}


def corpus_text() -> str:
    return resources.files("modelport").joinpath("data", CORPUS).read_text(encoding="utf-8")


def train_tokenizer(vocab_size: int = 400):
    """A byte-level BPE tokenizer trained on the bundled corpus, wrapped for transformers."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "</s>", "<unk>"],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(corpus_text().splitlines(), trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def make_model(family: str = "llama", seed: int = 0, dtype: torch.dtype = torch.float32, **overrides):
    """A random-weight transformers model and its tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM

    tokenizer = train_tokenizer()
    settings = {**TINY_CONFIGS[family], **overrides}
    config = AutoConfig.for_model(family, vocab_size=len(tokenizer), bos_token_id=tokenizer.bos_token_id,
                                  eos_token_id=tokenizer.eos_token_id, **settings)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config).to(dtype).eval()
    return model, tokenizer


def save_model(out: Path, family: str = "llama", seed: int = 0, dtype: torch.dtype = torch.float32, **overrides):
    """Save a sample model as an HF folder at `out`; returns (model, tokenizer)."""
    model, tokenizer = make_model(family, seed, dtype, **overrides)
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    return model, tokenizer
