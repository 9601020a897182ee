"""llama.cpp's pre-tokenizers (`tokenizer.ggml.pre`), as data taken from its own source.

`data/llama_cpp_pretokenizers.json` is written by scripts/extract_pretokenizers.py from the
llama-vocab.cpp and unicode.cpp of the llama.cpp that llama-cpp-python builds (a test re-extracts it):
every name llama.cpp accepts, the pre-tokenizer type it stands for and the flags it sets, and each
type's regexes in llama.cpp's order, with the tokenizer.json spelling llama.cpp notes beside the ones
it adapted for its own regex engine.

Both directions use it:
- HF -> GGUF (`detect`): llama.cpp's own converter hashes the token ids a reference text encodes to,
  so any fine-tuned or freshly trained tokenizer misses its table. Here the pre-tokenizer is read as
  what it is, the list of regexes it splits with (Split patterns, ByteLevel's built-in GPT-2 regex,
  Digits), and named by the type that splits with the same list.
- GGUF -> HF (`rules`): the name's regexes become `Split` steps in llama.cpp's order, each in the
  spelling the model family's tokenizer.json uses, then `ByteLevel` (or, for the types llama.cpp runs
  over raw UTF-8, none).

Two types cannot be rebuilt (`PreTokenizer.refusal`): llama.cpp splits KIMI_K2 and AFMOE with code in
unicode.cpp that no regex in the table restates.
"""
from __future__ import annotations

import difflib
import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources

from ...core.errors import ModelConversionError, UsageError

DATA = "llama_cpp_pretokenizers.json"
# unicode.cpp functions that split exactly as the regex they stand in for; any other stands in for
# code of its own, which only a tokenizer.json spelling noted beside it can restate
EXACT_HANDLERS = frozenset({"gpt2", "llama3", "qwen2", "qwen35", "newlines"})
GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
DIGIT = r"\p{N}"
# the name written for a type when several name it: the ones modelport has always written first
PREFERRED = ("gpt-2", "llama-bpe", "smaug-bpe", "qwen2", "qwen35", "gpt-4o", "tekken", "starcoder")


@dataclass(frozen=True)
class PreTokenizer:
    name: str                           # tokenizer.ggml.pre
    type: str                           # llama.cpp's LLAMA_VOCAB_PRE_TYPE_<type>
    regexes: tuple[str, ...]            # as tokenizer.json spells them, in llama.cpp's order
    llama_regexes: tuple[str, ...]      # as llama.cpp runs them
    byte_encode: bool
    flags: dict = field(default_factory=dict)       # what the name sets beyond the BPE defaults
    forced: dict = field(default_factory=dict)      # what the type sets whatever the file says (add_bos)
    refusal: str | None = None          # why an HF tokenizer cannot split the same way

    @property
    def ignore_merges(self) -> bool:
        return bool(self.flags.get("ignore_merges", False))


@lru_cache(maxsize=1)
def table() -> dict:
    return json.loads(resources.files("modelport").joinpath("data", DATA).read_text(encoding="utf-8"))


def _refusal(kind: str, entry: dict) -> str | None:
    custom = entry.get("custom") or [None] * len(entry["regexes"])
    original = entry.get("original") or [None] * len(entry["regexes"])
    for handler, spelled in zip(custom, original):
        if handler and handler not in EXACT_HANDLERS and not spelled:
            return (f"llama.cpp splits pre-tokenizer type {kind} with code of its own (unicode.cpp's {handler} "
                    "split), which no regex restates")
    return None


@lru_cache(maxsize=None)
def rules(name: str) -> PreTokenizer | None:
    """What llama.cpp's pre-tokenizer `name` does; None when llama.cpp does not know the name."""
    found = table()["names"].get(name)
    if found is None:
        return None
    entry = table()["types"][found["type"]]
    original = entry.get("original") or [None] * len(entry["regexes"])
    return PreTokenizer(name, found["type"], tuple(o or r for o, r in zip(original, entry["regexes"])),
                        tuple(entry["regexes"]), entry["byte_encode"], dict(found["flags"]),
                        dict(entry.get("forced", {})), _refusal(found["type"], entry))


def unknown(name: str, flag: str = "--pre-tokenizer") -> UsageError | None:
    """The error for a name llama.cpp does not know (with the close ones), or None."""
    if rules(name) is not None:
        return None
    close = difflib.get_close_matches(name, names(), n=3)
    hint = f"did you mean {' or '.join(close)}? " if close else ""
    return UsageError(f"{flag} {name!r} is not a pre-tokenizer llama.cpp knows ({hint}docs/tokenizers.md lists all "
                      f"{len(names())})")


def names() -> list[str]:
    """Every name llama.cpp accepts in tokenizer.ggml.pre (the --pre-tokenizer choices)."""
    return sorted(table()["names"])


def split_regexes(pre: dict | None) -> list[str]:
    """The regexes a tokenizers pre_tokenizer applies, in order."""
    if not pre:
        return []
    kind = pre.get("type")
    if kind == "Sequence":
        return [r for p in pre.get("pretokenizers", []) for r in split_regexes(p)]
    if kind == "Split":
        pattern = pre.get("pattern", {})
        return [pattern.get("Regex") or _escape(pattern.get("String", ""))]
    if kind == "ByteLevel":
        return [GPT2] if pre.get("use_regex", True) else []
    if kind == "Digits":
        return [DIGIT if pre.get("individual_digits") else r"\p{N}+"]
    return [f"<{kind}>"]


def _escape(text: str) -> str:
    import re
    return re.escape(text)


def detect(tokenizer_json: dict, source: object = None) -> str:
    """The llama.cpp pre-tokenizer for a byte-level BPE tokenizer.json; fails naming the regex.

    Of the names whose type splits with the same regexes (in either spelling), one that agrees on
    ignore_merges wins, then the names in PREFERRED, then the first by name."""
    regexes = tuple(split_regexes(tokenizer_json.get("pre_tokenizer")))
    ignore_merges = bool(tokenizer_json.get("model", {}).get("ignore_merges", False))
    matching = [r for r in map(rules, names()) if r.byte_encode and regexes in (r.regexes, r.llama_regexes)]
    if matching:
        def rank(r: PreTokenizer) -> tuple:
            return (r.ignore_merges != ignore_merges,
                    PREFERRED.index(r.name) if r.name in PREFERRED else len(PREFERRED), r.name)
        return min(matching, key=rank).name
    shown = " + ".join(regexes) if regexes else "(none)"
    raise ModelConversionError(
        f"tokenizer.json pre-tokenizer splits with /{shown}/, which matches no llama.cpp pre-tokenizer; "
        "pass --pre-tokenizer NAME (see docs/tokenizers.md for the names) if you know which one behaves the same",
        source)
