"""A working HF tokenizer (tokenizer.json, tokenizer_config.json) rebuilt from a GGUF's `tokenizer.ggml.*`.

- "gpt2" byte-level BPE and "llama" SentencePiece-style vocabularies go through transformers' own
  GGUF tokenizer builder (integrations/gguf), which knows their normalizers, decoders, merges
  recovered from scores and added tokens. The split regexes are then set from what
  `tokenizer.ggml.pre` stands for in llama.cpp (pretokenizer.py: llama.cpp's own table, every name it
  knows); a name not in it is an error unless --pre-tokenizer says which rules to use, and the two
  types no HF pre-tokenizer can restate are refused, naming the type. The types llama.cpp runs over
  raw UTF-8 (no byte-level encoding) are built here with `tokenizers`.
- "bert" WordPiece, which transformers cannot rebuild, is built here with `tokenizers`. llama.cpp
  lowercases and strips accents, writes word starts with a phantom "▁" and continuations bare; the
  HF vocabulary spells those as words and "##" pieces.

Special token ids, add_bos/add_eos and the chat template come along, and for "llama" a SentencePiece
tokenizer.model holding the scores and token types (spm_model.py). The files are made on first use
(`LazyTokenizerFiles`), so reading a GGUF to inspect it never imports transformers.
"""
from __future__ import annotations

import shutil
import tempfile
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import Iterator

from ...core.errors import ModelConversionError, ModelportError, UsageError
from .header import GGUFHeader
from . import pretokenizer, spm_model

TOKEN_TYPE_CONTROL = 3
TOKEN_TYPE_USER_DEFINED = 4
SPECIALS = {"bos_token": "bos_token_id", "eos_token": "eos_token_id", "unk_token": "unknown_token_id",
            "pad_token": "padding_token_id", "sep_token": "seperator_token_id", "cls_token": "cls_token_id",
            "mask_token": "mask_token_id"}


def problem(header: GGUFHeader, pre_tokenizer: str | None) -> ModelportError | None:
    """Why the tokenizer cannot be rebuilt from this header (the error a conversion raises), or None
    when it can: a vocabulary there is, of a kind and pre-tokenizer this rebuilds."""
    kind = header.get("tokenizer.ggml.model")
    if kind is None or not header.get("tokenizer.ggml.tokens"):
        return ModelConversionError("has no tokenizer.ggml.* vocabulary to rebuild a tokenizer from; pass --base-model "
                                    "DIR with the tokenizer files", header.path)
    if kind not in ("gpt2", "llama", "bert"):
        return ModelConversionError(f"tokenizer.ggml.model {kind!r} cannot be rebuilt as an HF tokenizer (gpt2, llama "
                                    "and bert can); pass --base-model DIR with the tokenizer files", header.path)
    if kind != "gpt2":
        return None
    if pre_tokenizer is not None and (unknown := pretokenizer.unknown(pre_tokenizer)) is not None:
        return unknown
    pre = pre_tokenizer or header.get("tokenizer.ggml.pre", "default")
    rules = pretokenizer.rules(pre)
    if rules is None:
        return UsageError(f"tokenizer.ggml.pre {pre!r} is not a pre-tokenizer llama.cpp knows; pass --pre-tokenizer "
                          f"NAME (one of the {len(pretokenizer.names())} in docs/tokenizers.md) to split text as NAME "
                          "does", header.path)
    source = "--pre-tokenizer" if pre_tokenizer else "tokenizer.ggml.pre"
    return UsageError(f"{source} {pre!r}: {rules.refusal}; pass --base-model DIR with the tokenizer files",
                      header.path) if rules.refusal else None


def check(header: GGUFHeader, pre_tokenizer: str | None) -> None:
    """What can be known without building; raises the problem() there is."""
    found = problem(header, pre_tokenizer)
    if found is not None:
        raise found


def build(header: GGUFHeader, folder: Path, pre_tokenizer: str | None) -> dict[str, Path]:
    """Write the tokenizer files into `folder`; their names and paths."""
    check(header, pre_tokenizer)
    tokenizer = _wordpiece(header) if header.get("tokenizer.ggml.model") == "bert" else _from_transformers(
        header, pre_tokenizer)
    template = header.get("tokenizer.chat_template")
    if template:
        tokenizer.chat_template = template
    tokenizer.save_pretrained(folder)
    if header.get("tokenizer.ggml.model") == "llama":
        spm_model.write(header, folder)
    return {p.name: p for p in sorted(folder.iterdir()) if p.is_file()}


def _from_transformers(header: GGUFHeader, pre_tokenizer: str | None):
    from tokenizers import Regex, normalizers, pre_tokenizers
    from transformers import PreTrainedTokenizerFast
    from transformers.integrations.gguf.gguf_tokenizer_mapping import convert_gguf_tokenizer, get_gguf_tokenizer

    architecture, tokenizer_dict, config = get_gguf_tokenizer(str(header.path))
    rules = pretokenizer.rules(pre_tokenizer or header.get("tokenizer.ggml.pre", "default"))
    if tokenizer_dict.get("tokenizer_type") == "gpt2" and not rules.byte_encode:
        backend = _raw_bpe(header, rules)
    else:
        backend, _ = convert_gguf_tokenizer(architecture, tokenizer_dict)
    if tokenizer_dict.get("tokenizer_type") == "gpt2" and rules.byte_encode:
        backend.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in rules.regexes]
            + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        backend.model.ignore_merges = rules.ignore_merges
    elif tokenizer_dict.get("tokenizer_type") == "llama":
        # llama.cpp escapes the text (" " -> "▁", one "▁" prepended) and does not split it: "  hi" is
        # "▁▁▁hi", where a Metaspace pre-tokenizer would make "▁▁hi"
        steps = [normalizers.Replace(pattern=" ", content="\u2581")]
        if header.get("tokenizer.ggml.add_space_prefix", True):
            steps.insert(0, normalizers.Prepend(prepend="\u2581"))
        backend.normalizer = normalizers.Sequence(steps)
        backend.pre_tokenizer = None
        unk = header.get("tokenizer.ggml.unknown_token_id")
        if isinstance(unk, int) and 0 <= unk < len(tokenizer_dict["tokens"]):
            backend.model.unk_token = tokenizer_dict["tokens"][unk]
    kwargs = {k: v for k, v in config.items() if k not in ("chat_template",) and v is not None}
    if tokenizer_dict.get("tokenizer_type") == "gpt2":
        kwargs.update({f"{flag}_token": value for flag, value in rules.forced.items()})   # as llama.cpp overrides
    return PreTrainedTokenizerFast(tokenizer_object=backend, **kwargs)


def _raw_bpe(header: GGUFHeader, rules: pretokenizer.PreTokenizer):
    """A BPE over raw UTF-8, as llama.cpp runs its types that do not byte-encode (GEMMA4, SARVAM_MOE,
    WHITESPACE): spaces written as "▁" where the name says to escape them, the type's Split regexes,
    merges as the file lists them (split at the first space after the first character, as llama.cpp
    does), and a character the vocabulary lacks as its <0xXX> byte tokens."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers

    tokens, types = header.get("tokenizer.ggml.tokens"), header.get("tokenizer.ggml.token_type") or []
    vocab: dict[str, int] = {}
    for index, token in enumerate(tokens):
        vocab.setdefault(token, index)
    merges = []
    for merge in header.get("tokenizer.ggml.merges") or []:
        cut = merge.find(" ", 1)
        left, right = merge[:cut], merge[cut + 1:]
        if left in vocab and right in vocab and left + right in vocab:   # HF's BPE refuses any other
            merges.append((left, right))
    backend = Tokenizer(models.BPE(vocab, merges, byte_fallback=True, ignore_merges=rules.ignore_merges))
    escape = bool(rules.flags.get("escape_whitespaces"))
    if escape:
        backend.normalizer = normalizers.Replace(" ", "\u2581")
    backend.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in rules.regexes])
    backend.decoder = decoders.Sequence([*([decoders.Replace("\u2581", " ")] if escape else []),
                                         decoders.ByteFallback(), decoders.Fuse()])
    backend.add_special_tokens([AddedToken(t, special=True, normalized=False)
                                for t, kind in zip(tokens, types) if kind == TOKEN_TYPE_CONTROL])
    backend.add_tokens([AddedToken(t, special=False, normalized=False)
                        for t, kind in zip(tokens, types) if kind == TOKEN_TYPE_USER_DEFINED])
    return backend


def _wordpiece(header: GGUFHeader):
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    tokens, types = header.get("tokenizer.ggml.tokens"), header.get("tokenizer.ggml.token_type") or []
    spelled = [t if (i < len(types) and types[i] == TOKEN_TYPE_CONTROL) or (t.startswith("[") and t.endswith("]"))
               else (t[1:] if t.startswith("\u2581") else "##" + t) for i, t in enumerate(tokens)]
    vocab = {}
    for index, token in enumerate(spelled):
        vocab.setdefault(token, index)
    specials = {name: spelled[i] for name, key in SPECIALS.items()
                if isinstance(i := header.get(f"tokenizer.ggml.{key}"), int) and 0 <= i < len(spelled)}
    for name, text in (("cls_token", "[CLS]"), ("sep_token", "[SEP]")):      # llama.cpp finds them by name too
        if name not in specials and text in vocab:
            specials[name] = text
    lowercase = bool(header.get("tokenizer.ggml.normalizer.lowercase", True))
    tokenizer = Tokenizer(models.WordPiece(vocab, unk_token=specials.get("unk_token", "[UNK]")))
    tokenizer.normalizer = normalizers.BertNormalizer(clean_text=True, handle_chinese_chars=True,
                                                      strip_accents=lowercase, lowercase=lowercase)
    tokenizer.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    tokenizer.decoder = decoders.WordPiece()
    first = specials.get("cls_token", specials.get("bos_token")) if header.get("tokenizer.ggml.add_bos_token", True) \
        else None
    last = specials.get("sep_token", specials.get("eos_token")) if header.get("tokenizer.ggml.add_eos_token", True) \
        else None
    single = " ".join(p for p in (first, "$A", last) if p)
    pair = " ".join(p for p in (first, "$A", last, "$B:1", f"{last}:1" if last else None) if p)
    tokenizer.post_processor = processors.TemplateProcessing(
        single=single, pair=pair, special_tokens=[(t, vocab[t]) for t in dict.fromkeys((first, last)) if t])
    return PreTrainedTokenizerFast(tokenizer_object=tokenizer, **specials)


class LazyTokenizerFiles(Mapping):
    """Tokenizer files rebuilt from a GGUF when a writer first asks for one (a path, or every item): the
    usual names are known at once, for `inspect`; the files are made in a folder that lives as long as
    this mapping."""

    NAMES = ("tokenizer.json", "tokenizer_config.json")

    def __init__(self, header: GGUFHeader, pre_tokenizer: str | None) -> None:
        self._header, self._pre = header, pre_tokenizer
        self._files: dict[str, Path] | None = None

    def _built(self) -> dict[str, Path]:
        if self._files is None:
            folder = Path(tempfile.mkdtemp(prefix="modelport-gguf-tokenizer-"))
            weakref.finalize(self, shutil.rmtree, folder, True)
            self._files = build(self._header, folder, self._pre)
        return self._files

    def __getitem__(self, name: str) -> Path:
        return self._built()[name]

    def items(self):                # the files as made (a chat template adds one)
        return self._built().items()

    def values(self):
        return self._built().values()

    def __contains__(self, name: object) -> bool:
        return name in (self._files if self._files is not None else self.NAMES)

    def __iter__(self) -> Iterator[str]:
        return iter(self._files if self._files is not None else self.NAMES)

    def __len__(self) -> int:
        return len(self._files) if self._files is not None else len(self.NAMES)
