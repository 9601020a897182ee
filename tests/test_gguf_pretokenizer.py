"""The pre-tokenizer is read from tokenizer.json; an unknown one fails naming its regex."""
from __future__ import annotations

import json
import shutil

import pytest
from conftest import run_cli

from modelport.formats.gguf import pretokenizer


def _with_pre_tokenizer(src, dst, pre):
    shutil.copytree(src, dst)
    tj = json.loads((dst / "tokenizer.json").read_text())
    tj["pre_tokenizer"] = pre
    (dst / "tokenizer.json").write_text(json.dumps(tj))


def test_unknown_regex_fails_naming_it_and_override_works(samples, tmp_path):
    custom = {"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": r"\w+|[^\w\s]+"}, "behavior": "Isolated", "invert": False},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": False}]}
    model = tmp_path / "custom"
    _with_pre_tokenizer(samples("llama").path, model, custom)
    run = run_cli("convert", model, tmp_path / "x.gguf")
    assert run.code == 1
    assert r"\w+|[^\w\s]+" in run.stderr and "--pre-tokenizer" in run.stderr and "tokenizer.json" in run.stderr
    assert not (tmp_path / "x.gguf").exists()
    assert run_cli("convert", model, tmp_path / "x.gguf", "--pre-tokenizer", "gpt-2").code == 0


LLAMA3 = pretokenizer.rules("llama-bpe").regexes[0]
QWEN2 = pretokenizer.rules("qwen2").regexes[0]


@pytest.mark.parametrize("pre,ignore_merges,expected", [
    ({"type": "ByteLevel", "add_prefix_space": False, "use_regex": True}, False, "gpt-2"),
    ({"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": LLAMA3}, "behavior": "Isolated"},
        {"type": "ByteLevel", "use_regex": False}]}, True, "llama-bpe"),
    ({"type": "Sequence", "pretokenizers": [
        {"type": "Split", "pattern": {"Regex": QWEN2}, "behavior": "Isolated"},
        {"type": "ByteLevel", "use_regex": False}]}, False, "qwen2"),
    ({"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "use_regex": True}]}, False, "starcoder"),
])
def test_known_pre_tokenizers(pre, ignore_merges, expected):
    assert pretokenizer.detect({"pre_tokenizer": pre, "model": {"ignore_merges": ignore_merges}}) == expected


def test_pre_tokenizer_flag_takes_any_llama_cpp_name(samples, tmp_path):
    """Every name in llama.cpp's table is a choice (written as given); a misspelt one is a usage error
    naming the close ones, before anything is read."""
    import gguf
    assert run_cli("convert", samples("llama").path, tmp_path / "s.gguf", "--pre-tokenizer", "smollm").code == 0
    assert gguf.GGUFReader(tmp_path / "s.gguf").fields["tokenizer.ggml.pre"].contents() == "smollm"
    run = run_cli("convert", samples("llama").path, tmp_path / "x.gguf", "--pre-tokenizer", "smolm")
    assert run.code == 2 and "did you mean smollm" in run.stderr and not (tmp_path / "x.gguf").exists()
