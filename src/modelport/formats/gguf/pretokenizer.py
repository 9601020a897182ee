"""llama.cpp's pre-tokenizer name (`tokenizer.ggml.pre`) from what tokenizer.json's pre_tokenizer says.

llama.cpp's own converter hashes the token ids a reference text encodes to, so any fine-tuned or
freshly trained tokenizer misses its table. Here the pre-tokenizer is read as what it is: the list
of regexes it splits with (Split patterns, ByteLevel's built-in GPT-2 regex, Digits), compared with
the regex lists llama.cpp implements for each name (from its llama-vocab.cpp, in tokenizer.json's
original spelling).
"""
from __future__ import annotations

from ...core.errors import ModelConversionError

GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)"
LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
          r"\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|"
         r"\s*[\r\n]+|\s+(?!\S)|\s+")
QWEN35 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|"
          r"\s*[\r\n]+|\s+(?!\S)|\s+")
GPT4O = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
         r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|"
         r"\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+")
TEKKEN = (r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|"
          r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|"
          r"\s*[\r\n]+|\s+(?!\S)|\s+")
DIGIT = r"\p{N}"

# (regexes in order, tokenizer.json's BPE `ignore_merges`) -> llama.cpp name
KNOWN: list[tuple[tuple[str, ...], bool | None, str]] = [
    ((GPT2,), None, "gpt-2"),
    ((LLAMA3,), True, "llama-bpe"),
    ((LLAMA3,), False, "smaug-bpe"),
    ((QWEN2,), None, "qwen2"),
    ((QWEN35,), None, "qwen35"),
    ((GPT4O,), None, "gpt-4o"),
    ((TEKKEN,), None, "tekken"),
    ((DIGIT, GPT2), None, "starcoder"),
]
NAMES = sorted({name for _, _, name in KNOWN} | {"default"})


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
    """The llama.cpp pre-tokenizer for a byte-level BPE tokenizer.json; fails naming the regex."""
    regexes = tuple(split_regexes(tokenizer_json.get("pre_tokenizer")))
    ignore_merges = bool(tokenizer_json.get("model", {}).get("ignore_merges", False))
    for known, merges_flag, name in KNOWN:
        if known == regexes and (merges_flag is None or merges_flag == ignore_merges):
            return name
    shown = " + ".join(regexes) if regexes else "(none)"
    raise ModelConversionError(
        f"tokenizer.json pre-tokenizer splits with /{shown}/, which matches no llama.cpp pre-tokenizer; "
        f"pass --pre-tokenizer NAME (one of {', '.join(NAMES)}) if you know which one behaves the same",
        source)
