"""llama.cpp's pre-tokenizer table, as data: the committed file is what scripts/extract_pretokenizers.py
extracts from the llama.cpp in use, and for every pre-tokenizer type a BPE vocabulary trained with its
regexes, written as a GGUF naming it, is rebuilt into an HF tokenizer that encodes a varied corpus
exactly as llama.cpp does on that GGUF (vocab-only load)."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import gguf
import pytest

from modelport.formats.gguf import pretokenizer, tokenizer_rebuild
from modelport.formats.gguf.shards import read_model
from modelport.samples import corpus_text

ROOT = Path(__file__).resolve().parents[1]
SPECIALS = ["<|endoftext|>", "<|user|>", "<|assistant|>"]
CORPUS = [
    "def f(x):\n    return x**2  # square\n\n\tif x != 0: print(f'{x:>10}')",
    "for (int i = 0; i < n; ++i) { sum += a[i] * b[i]; } // C++\r\n",
    "1234567890 3.14159 1,000,000 2024-06-01 v1.2.3 0xFF 12345678 007 42nd",
    "漢字かなカナ 한국어 텍스트 中文测试，标点。 日本語のテキスト",
    "emoji 🙂👍🏽 and 🇺🇸 flags ✨ sparkles",
    "   leading spaces", "trailing   ", "a  b   c    d     e", "\n\n\nnewlines\r\n\ttabs\t\tend", " ",
    "I'm you're we'll they'd it's can't DON'T He'S I've",
    "ÀÉÎõü ßæø Ünïcödé naïve café résumé Ελληνικά Русский текст",
    "camelCaseWords HTTPServer iPhone McDonald's XMLHttpRequest",
    "<|user|>hello there<|endoftext|><|assistant|> hi!",
    "punctuation!!! ??? ... --- ((brackets)) [x] {y} <z> $100 +5 =7 ^2 ~3 |pipe| `tick` @home #tag",
    "mixed123abc456 a1b2c3 x=1;y=22;z=333;w=4444",
]
# types whose rebuilt tokenizer follows the model family's tokenizer.json where llama.cpp's adaptation of
# its regex splits some texts otherwise: text -> why (checked to differ, so a fix upstream shows here)
CAMEL = "camelCaseWords HTTPServer iPhone McDonald's XMLHttpRequest"
LETTER_CASES = ("llama.cpp reads \\p{Lu}, \\p{Ll}, \\p{Lt}, \\p{Lm} and \\p{Lo} all as 'any letter' (unicode.cpp collapses "
                "the letter categories into one), so it does not cut camelCase where tokenizer.json's regex does")
EXCEPTIONS: dict[str, dict[str, str]] = {"TINY_AYA": {CAMEL: LETTER_CASES}, "YOUTU": {CAMEL: LETTER_CASES}}
# texts llama.cpp cannot tokenize at all for a type: type -> (what marks them, why)
UNTOKENIZABLE = {"WHITESPACE": ("  ", "llama.cpp aborts (GGML_ASSERT in find_bpe_rank) on two spaces in a row: "
                                      "this type keeps spaces unescaped, and a merge lookup of a space asserts")}


def _extractor():
    spec = importlib.util.spec_from_file_location("extract_pretokenizers", ROOT / "scripts" / "extract_pretokenizers.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_committed_table_is_what_llama_cpp_source_says():
    """A llama.cpp upgrade (a new name, a changed regex) fails here until the script is run again."""
    script = _extractor()
    extracted = script.rendered(script.extract(script.default_source()))
    committed = (ROOT / "src" / "modelport" / "data" / pretokenizer.DATA).read_text(encoding="utf-8")
    assert committed == extracted, "run: python scripts/extract_pretokenizers.py"


def test_table_covers_every_name_and_its_regexes_compile():
    from tokenizers import Regex
    table = pretokenizer.table()
    assert len(table["names"]) >= 90 and {"smollm", "llama-bpe", "qwen2", "gpt-4o", "tekken"} <= set(table["names"])
    refused = {}
    for name in pretokenizer.names():
        rules = pretokenizer.rules(name)
        assert rules.regexes and len(rules.regexes) == len(rules.llama_regexes), name
        if rules.refusal:
            refused[rules.type] = rules.refusal
            continue
        for regex in rules.regexes:
            Regex(regex)
    # the documented list (pretokenizer.py's docstring, docs/tokenizers.md)
    assert sorted(refused) == ["AFMOE", "KIMI_K2"], refused
    assert pretokenizer.unknown("smollm") is None
    assert "did you mean smollm" in str(pretokenizer.unknown("smolm"))


BYTES = [f"<0x{b:02X}>" for b in range(256)]


def _bpe(rules: pretokenizer.PreTokenizer, split: bool) -> dict:
    """tokenizer.json of a small BPE trained on a varied text the way llama.cpp runs `rules`' type:
    byte-level, or over raw UTF-8 (spaces as "▁" where the name escapes them, <0xXX> byte tokens);
    split by the type's regexes, or not at all."""
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    tok = Tokenizer(models.BPE(ignore_merges=rules.ignore_merges, byte_fallback=not rules.byte_encode))
    steps = [pre_tokenizers.Split(Regex(r), behavior="isolated") for r in rules.regexes] if split else []
    if rules.byte_encode:
        steps.append(pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False))
        tok.decoder = decoders.ByteLevel()
    elif rules.flags.get("escape_whitespaces"):
        tok.normalizer = normalizers.Replace(" ", "\u2581")
    tok.pre_tokenizer = pre_tokenizers.Sequence(steps)
    alphabet = pre_tokenizers.ByteLevel.alphabet() if rules.byte_encode else []
    trainer = trainers.BpeTrainer(vocab_size=700, special_tokens=SPECIALS, show_progress=False,
                                  initial_alphabet=alphabet)
    tok.train_from_iterator([*corpus_text().splitlines(), *CORPUS] * 2, trainer)
    return json.loads(tok.to_str())


def _train(rules: pretokenizer.PreTokenizer) -> dict:
    """tokenizer.json of a small BPE trained with `rules`' regexes, its merges then extended by those
    learned over unsplit lines: merges across every boundary the regexes draw, so a rebuilt splitter
    that cuts anywhere else gives other ids."""
    tj, unsplit = _bpe(rules, split=True), _bpe(rules, split=False)
    vocab, merges = tj["model"]["vocab"], tj["model"]["merges"]
    known = {tuple(m) for m in merges}
    extra = [] if rules.byte_encode else [b for b in BYTES if b not in vocab]
    for token in [*sorted(unsplit["model"]["vocab"], key=unsplit["model"]["vocab"].get), *extra]:
        vocab.setdefault(token, len(vocab))
    merges += [m for m in unsplit["model"]["merges"] if tuple(m) not in known]
    # llama.cpp cannot hold a merge of tokens with a space in them (its "a b" form; it asserts), which only a
    # raw-UTF-8 vocabulary that keeps spaces (WHITESPACE) could have learned
    merges[:] = [m for m in merges if " " not in m[0] and " " not in m[1]]
    return tj


def vocab_gguf(path: Path, tj: dict, pre: str) -> Path:
    """A GGUF holding only a BPE vocabulary (and the few llama hparams llama.cpp's loader reads)."""
    by_id = {i: t for t, i in tj["model"]["vocab"].items()}
    specials = {a["id"] for a in tj["added_tokens"] if a["special"]}
    writer = gguf.GGUFWriter(path, "llama")
    for key, value in (("context_length", 256), ("embedding_length", 8), ("block_count", 1),
                       ("feed_forward_length", 16), ("attention.head_count", 2)):
        writer.add_uint32(f"llama.{key}", value)
    writer.add_float32("llama.attention.layer_norm_rms_epsilon", 1e-5)
    writer.add_tokenizer_model("gpt2")
    writer.add_tokenizer_pre(pre)
    writer.add_token_list([by_id[i] for i in range(len(by_id))])
    writer.add_token_types([gguf.TokenType.CONTROL if i in specials else
                            gguf.TokenType.BYTE if by_id[i] in BYTES else gguf.TokenType.NORMAL
                            for i in range(len(by_id))])
    writer.add_token_merges([m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]])
    writer.add_bos_token_id(0)
    writer.add_eos_token_id(0)
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def _types() -> list[tuple[str, str]]:
    """(type, the name written for it) for every type llama.cpp names, first name by PREFERRED order."""
    chosen: dict[str, str] = {}
    for name in sorted(pretokenizer.names(), key=lambda n: (n not in pretokenizer.PREFERRED, n)):
        chosen.setdefault(pretokenizer.rules(name).type, name)
    return sorted(chosen.items())


@pytest.mark.parametrize("kind,name", _types())
def test_rebuilt_tokenizer_splits_as_llama_cpp(kind, name, tmp_path):
    rules = pretokenizer.rules(name)
    if rules.refusal:
        pytest.skip(rules.refusal)
    from llama_cpp import Llama
    from transformers import AutoTokenizer
    from modelport.runtimes.llama_cpp import _quiet_stderr
    path = vocab_gguf(tmp_path / "vocab.gguf", _train(rules), name)
    tokenizer_rebuild.build(read_model(path), tmp_path / "hf", None)
    tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    with _quiet_stderr():
        llm = Llama(model_path=str(path), vocab_only=True, verbose=False)
    differ = {}
    marker, _why = UNTOKENIZABLE.get(kind, (None, None))
    for text in CORPUS:
        if marker is not None and marker in text:
            continue
        ours = tok(text)["input_ids"]
        theirs = llm.tokenize(text.encode("utf-8"), add_bos=True, special=True)
        if ours != theirs:
            differ[text] = (tok.convert_ids_to_tokens(ours), tok.convert_ids_to_tokens(theirs))
    expected = EXCEPTIONS.get(kind, {})
    assert set(differ) == set(expected), {t: d for t, d in differ.items() if t not in expected}


def test_docs_list_the_types_from_the_data_file():
    script = _extractor()
    docs = (ROOT / "docs" / "tokenizers.md").read_text(encoding="utf-8")
    assert script.with_docs_table(docs, script.docs_table()) == docs, "run: python scripts/extract_pretokenizers.py"
