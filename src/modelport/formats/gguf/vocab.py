"""The tokenizer, written as GGUF vocabulary metadata llama.cpp can tokenize with.

Three kinds, decided by the tokenizer files: SentencePiece (`tokenizer.model` -> llama.cpp "llama"),
byte-level BPE (tokenizer.json BPE with ByteLevel -> "gpt2", with merges and a pre-tokenizer), and
WordPiece (-> "bert", with llama.cpp's phantom-space spelling). gguf-py reads SentencePiece models
and the special tokens, merges, add-bos/eos flags and chat template (SpecialVocab). Added tokens are
typed as llama.cpp's converter types them (`added_token`): special -> CONTROL, others -> USER_DEFINED
with their literal text, so special tokens in text stay special and the same folder gives the same
vocabulary here as there.
"""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import gguf
from gguf import TokenType

from ...core.bundle import ModelBundle
from ...core.errors import ModelConversionError, ModelFileNotFoundError
from . import pretokenizer


@dataclass
class Vocab:
    model: str                     # tokenizer.ggml.model
    pre: str                       # tokenizer.ggml.pre
    tokens: list[str]
    types: list[int]
    scores: list[float] | None = None
    merges: bool = False
    extra: dict = field(default_factory=dict)


def _folder(bundle: ModelBundle) -> Path:
    if not bundle.tokenizer_files:
        raise ModelFileNotFoundError("no tokenizer files (tokenizer.json, tokenizer.model or vocab.txt) found; "
                                     "GGUF needs one: pass --base-model DIR", bundle.source)
    return next(iter(bundle.tokenizer_files.values())).parent


def _pad(tokens: list[str], types: list[int], scores: list[float] | None, size: int) -> None:
    """llama.cpp needs one entry per embedding row; rows past the tokenizer become unused tokens (scored
    as llama.cpp's converter scores them)."""
    for i in range(len(tokens), size):
        tokens.append(f"[PAD{i}]")
        types.append(TokenType.UNUSED)
        if scores is not None:
            scores.append(-10000.0)


def looks_special(token: str) -> bool:
    """Added tokens llama.cpp's converter makes CONTROL although their tokenizer does not mark them special
    (conversion/base.py `does_token_look_special`: command-r, deepseek-coder, gemma)."""
    return (token in ("<pad>", "<mask>", "<2mass>", "[@BOS@]") or (token.startswith("<|") and token.endswith("|>"))
            or (token.startswith("<\uff5c") and token.endswith("\uff5c>"))
            or (token.startswith("<unused") and token.endswith(">")))


def added_token(content: str, special: bool) -> tuple[str, int]:
    """(text, type) of an added token as llama.cpp writes it: CONTROL when special or looking special,
    else USER_DEFINED with SentencePiece's "\u2581" written as the spaces it stands for (Gemma's
    whitespace runs), since llama.cpp matches user-defined tokens in the raw text."""
    if special or looks_special(content):
        return content, TokenType.CONTROL
    return content.replace("\u2581", " "), TokenType.USER_DEFINED


def _from_json_vocab(tj: dict, n_vocab: int, source: Path) -> tuple[list[str], list[int]]:
    by_id: dict[int, str] = {i: t for t, i in tj["model"]["vocab"].items()} if isinstance(tj["model"]["vocab"], dict) \
        else {i: t for i, (t, _s) in enumerate(tj["model"]["vocab"])}
    kinds: dict[int, int] = {}
    for added in tj.get("added_tokens", []):
        by_id[added["id"]], kinds[added["id"]] = added_token(added["content"], bool(added.get("special")))
    size = max(n_vocab, max(by_id) + 1)
    if max(by_id) >= n_vocab:
        raise ModelConversionError(f"tokenizer has token id {max(by_id)} but the model has only {n_vocab} "
                                   "embedding rows", source)
    tokens, types = [], []
    for i in range(size):
        if i in by_id:
            tokens.append(by_id[i])
            types.append(kinds.get(i, TokenType.NORMAL))
        else:
            tokens.append(f"[PAD{i}]")
            types.append(TokenType.UNUSED)
    return tokens, types


def build(bundle: ModelBundle, n_vocab: int, pre_override: str | None) -> Vocab:
    folder = _folder(bundle)
    files = bundle.tokenizer_files
    tj = json.loads(files["tokenizer.json"].read_text(encoding="utf-8")) if "tokenizer.json" in files else None
    kind = (tj or {}).get("model", {}).get("type")
    if "tokenizer.model" in files and (tj is None or kind != "WordPiece"):
        return _sentencepiece(folder, n_vocab, tj)
    if tj is None:
        raise ModelFileNotFoundError("no tokenizer.json or tokenizer.model to build a GGUF vocabulary from", folder)
    if kind == "WordPiece":
        tokens, types = _from_json_vocab(tj, n_vocab, files["tokenizer.json"])
        phantom = [t if ty == TokenType.CONTROL else (t[2:] if t.startswith("##") else "\u2581" + t)
                   for t, ty in zip(tokens, types)]
        return Vocab("bert", pre_override or "default", phantom, types)
    if kind == "BPE" and not tj["model"].get("byte_fallback"):
        tokens, types = _from_json_vocab(tj, n_vocab, files["tokenizer.json"])
        pre = pre_override or pretokenizer.detect(tj, files["tokenizer.json"])
        return Vocab("gpt2", pre, tokens, types, merges=True)
    if kind == "BPE":
        return _byte_fallback_bpe(tj, n_vocab, files["tokenizer.json"])
    raise ModelConversionError(f"tokenizer.json model {kind!r} is not supported for GGUF", files["tokenizer.json"])


def _byte_fallback_bpe(tj: dict, n_vocab: int, source: Path) -> Vocab:
    """A SentencePiece-style BPE saved as tokenizer.json only (Llama-2/Mistral fast tokenizers).

    llama.cpp runs these with its SentencePiece tokenizer, which merges the adjacent pair whose
    result scores highest; scoring each token by minus the rank of the merge that makes it gives the
    same priority as HF's BPE (lowest rank first).
    """
    tokens, types = _from_json_vocab(tj, n_vocab, source)
    rank: dict[str, int] = {}
    for i, merge in enumerate(tj["model"].get("merges", [])):
        left, right = merge.split(" ", 1) if isinstance(merge, str) else merge
        rank.setdefault(left + right, i)
    unk = tj["model"].get("unk_token")
    scores = []
    for i, (token, kind) in enumerate(zip(tokens, types)):
        if kind == TokenType.NORMAL and len(token) == 6 and token.startswith("<0x") and token.endswith(">"):
            types[i] = TokenType.BYTE
        elif token == unk:
            types[i] = TokenType.UNKNOWN
        scores.append(-float(rank[token]) if token in rank else (0.0 if kind == TokenType.NORMAL else -1000.0))
    return Vocab("llama", "default", tokens, types, scores=scores,
                 extra={"add_space_prefix": _prepends_space(tj)})


def _prepends_space(tj: dict) -> bool:
    """Whether the tokenizer adds a leading "▁" (SentencePiece's dummy prefix) to the text."""
    def walk(node: dict | None) -> list[dict]:
        if not node:
            return []
        inner = node.get("normalizers") or node.get("pretokenizers")
        return [n for child in inner for n in walk(child)] if inner else [node]
    for node in walk(tj.get("normalizer")) + walk(tj.get("pre_tokenizer")):
        if node.get("type") == "Prepend" and node.get("prepend") == "\u2581":
            return True
        if node.get("type") == "Metaspace":
            return node.get("prepend_scheme", "always" if node.get("add_prefix_space", True) else "never") != "never"
    return False


def _sentencepiece(folder: Path, n_vocab: int, tj: dict | None) -> Vocab:
    """tokenizer.model's pieces, plus the tokens added beyond them that tokenizer.json records
    (transformers 5 keeps added tokens there, not in added_tokens.json)."""
    spm = gguf.vocab.SentencePieceVocab(folder)
    tokens, scores, types = [], [], []
    for text, score, toktype in spm.all_tokens():
        tokens.append(text.decode("utf-8") if isinstance(text, bytes) else text)
        scores.append(score)
        types.append(int(toktype))
    pieces = len(tokens)
    for added in sorted((tj or {}).get("added_tokens", []), key=lambda a: a["id"]):
        if added["id"] >= pieces and added["id"] < n_vocab:
            _pad(tokens, types, scores, added["id"])
            text, kind = added_token(added["content"], bool(added.get("special")))
            tokens.append(text)
            types.append(kind)
            scores.append(-1000.0)
    # tokenizer_config.json's added tokens over the pieces, as llama.cpp's converter reads them
    config = folder / "tokenizer_config.json"
    decoder = json.loads(config.read_text(encoding="utf-8")).get("added_tokens_decoder", {}) if config.is_file() else {}
    for key, added in decoder.items():
        if key.isdigit() and int(key) < min(len(tokens), n_vocab) and isinstance(added.get("content"), str):
            tokens[int(key)], types[int(key)] = added_token(added["content"], bool(added.get("special")))
            scores[int(key)] = -1000.0
    if len(tokens) > n_vocab:
        raise ModelConversionError(f"tokenizer.model has {len(tokens)} pieces but the model has only {n_vocab} "
                                   "embedding rows", folder / "tokenizer.model")
    _pad(tokens, types, scores, n_vocab)
    proto = spm.sentencepiece_tokenizer
    extra = {}
    try:
        from sentencepiece import sentencepiece_model_pb2 as pb
        model = pb.ModelProto()
        model.ParseFromString(proto.serialized_model_proto())
        extra["add_space_prefix"] = model.normalizer_spec.add_dummy_prefix
    except Exception:  # older sentencepiece without the proto module: llama.cpp's default applies
        pass
    return Vocab("llama", "default", tokens, types, scores=scores, extra=extra)


def add_to_writer(writer: gguf.GGUFWriter, bundle: ModelBundle, vocab: Vocab, n_vocab: int) -> None:
    writer.add_tokenizer_model(vocab.model)
    writer.add_tokenizer_pre(vocab.pre)
    writer.add_token_list(vocab.tokens)
    writer.add_token_types(vocab.types)
    if vocab.scores is not None:
        writer.add_token_scores(vocab.scores)
    if "add_space_prefix" in vocab.extra:
        writer.add_add_space_prefix(vocab.extra["add_space_prefix"])
    special = gguf.SpecialVocab(_folder(bundle), load_merges=vocab.merges, n_vocab=n_vocab)
    special.add_special_token.update(_observed_special_flags(bundle, special))
    special.add_to_gguf(writer, quiet=True)


def _observed_special_flags(bundle: ModelBundle, special: gguf.SpecialVocab) -> dict[str, bool]:
    """Whether tokenizer.json's own post-processor adds BOS/EOS, asked of the tokenizers library
    rather than read from config keys (which often disagree with what the tokenizer does)."""
    path = bundle.tokenizer_files.get("tokenizer.json")
    if path is None:
        return {}
    try:
        from tokenizers import Tokenizer
        ids = Tokenizer.from_file(str(path)).encode("a").ids
    except Exception:  # unreadable by this tokenizers version: keep what the files say
        return {}
    flags = {}
    for kind in ("bos", "eos"):
        token_id = special.special_token_ids.get(kind)
        if token_id is not None and ids:
            flags[kind] = ids[0 if kind == "bos" else -1] == token_id
    return flags
