"""A GGUF as the only source: files made by llama.cpp's own converter and quantizer (a byte-level BPE, a
SentencePiece-style and a WordPiece model) come back as HF models whose tokenizer and config are rebuilt
from the metadata, are re-quantized keeping every metadata key, and are read as split files too."""
from __future__ import annotations

import ctypes
import glob
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from conftest import leftovers, run_cli

import modelport
from modelport.runtimes.llama_cpp import LlamaCppRuntime
from modelport.samples import corpus_text

ROOT = Path(__file__).resolve().parents[1]
TEMPLATE = "{% for m in messages %}<s>{{ m['role'] }}\n{{ m['content'] }}</s>\n{% endfor %}"
# llama.cpp's converter names a BPE pre-tokenizer by hashing how a reference text encodes, and a
# tokenizer trained here is in no table; it is told the name (what modelport detects from the regexes)
CONVERT = """
import sys
sys.argv = [sys.argv[0], *sys.argv[2:]]
import conversion.base as base
pre = {pre!r}
if pre:
    base.TextModel.get_vocab_base_pre = lambda self, tokenizer: pre
import convert_hf_to_gguf
convert_hf_to_gguf.main()
"""
HANGUL = re.compile("[\uac00-\ud7a3]")
FTYPES = {"q4_1": 3, "q8_0": 7, "q4_k_m": 15, "f16": 1}


def llama_cpp_source() -> Path:
    """llama.cpp's source from the llama-cpp-python sdist `make install` unpacks (or $MODELPORT_LLAMA_CPP_SRC)."""
    found = [os.environ["MODELPORT_LLAMA_CPP_SRC"]] if os.environ.get("MODELPORT_LLAMA_CPP_SRC") else \
        glob.glob(str(ROOT / ".venv" / "src" / "llama_cpp_python-*" / "vendor" / "llama.cpp"))
    assert found, "llama.cpp's source is missing: run `make install` (it unpacks the llama-cpp-python sdist)"
    return Path(found[0])


def run_reference_convert(model: Path, out: Path, pre: str | None, outtype: str = "f32") -> subprocess.CompletedProcess:
    """llama.cpp's convert_hf_to_gguf.py on `model`, told the BPE pre-tokenizer name `pre`."""
    src = llama_cpp_source()
    env = {**os.environ, "PYTHONPATH": f"{src}:{src / 'gguf-py'}"}
    return subprocess.run([sys.executable, "-c", CONVERT.format(pre=pre), "convert", str(model), "--outfile", str(out),
                           "--outtype", outtype], env=env, capture_output=True, text=True, cwd=src)


def reference_convert(model: Path, out: Path, pre: str | None, outtype: str = "f32") -> Path:
    run = run_reference_convert(model, out, pre, outtype)
    assert run.returncode == 0, run.stderr[-3000:]
    return out


def same_as_converter(ours: Path, source: Path, out: Path, ignored: tuple[str, ...] = (), general: bool = False):
    """llama.cpp's converter on `source` (told our file's pre-tokenizer) writes what `ours` holds: the same
    metadata but the keys `ignored` (and `general.*` unless `general`), the same tensors, types, shapes and
    bytes; A = -exp(A_log) (`ssm_a`) within float32 rounding (two exps). Returns (ours, theirs) readers."""
    mine = gguf.GGUFReader(ours)
    theirs = gguf.GGUFReader(reference_convert(source, out, mine.fields["tokenizer.ggml.pre"].contents()))

    def fields(reader) -> dict:
        return {key: (f.types, f.contents()) for key, f in reader.fields.items()
                if (general or not key.startswith("general.")) and key not in ("GGUF.kv_count", *ignored)}
    assert fields(mine) == fields(theirs)
    by_name = {t.name: t for t in theirs.tensors}
    assert sorted(t.name for t in mine.tensors) == sorted(by_name)
    for t in mine.tensors:
        other = by_name[t.name]
        assert (t.tensor_type, list(t.shape)) == (other.tensor_type, list(other.shape)), t.name
        if t.name.endswith("ssm_a"):
            np.testing.assert_allclose(np.asarray(t.data), np.asarray(other.data), rtol=2e-7, atol=0)
        else:
            assert np.array_equal(np.asarray(t.data), np.asarray(other.data)), t.name
    return mine, theirs


def llama_quantize(src: Path, dst: Path, quant: str) -> Path:
    import llama_cpp
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype, params.nthread, params.allow_requantize = FTYPES[quant], 2, True
    assert llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params)) == 0
    return dst


def with_template(sample_path: Path, folder: Path) -> Path:
    shutil.copytree(sample_path, folder)
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": TEMPLATE}))
    return folder


def smollm_style(folder: Path) -> Path:
    """SmolLM2's tokenizer.json pre-tokenizer (single digits, then GPT-2's byte-level regex), which
    llama.cpp's converter names "smollm" (by the hash of SmolLM2's own vocabulary; told here)."""
    tj = json.loads((folder / "tokenizer.json").read_text())
    tj["pre_tokenizer"] = {"type": "Sequence", "pretokenizers": [
        {"type": "Digits", "individual_digits": True},
        {"type": "ByteLevel", "add_prefix_space": False, "trim_offsets": True, "use_regex": True}]}
    (folder / "tokenizer.json").write_text(json.dumps(tj))
    return folder


KINDS = {"spm": ("llama-spm", None), "bpe": ("qwen2", "qwen2"), "wordpiece": ("bert", "default"),
         "smollm": ("llama", "smollm"), "spm-spaces": ("llama-spm", None)}
SPACE_RUNS = range(2, 8)


def gemma_style(folder: Path) -> Path:
    """Gemma's whitespace runs: pieces "▁▁".."▁▁▁▁▁▁▁" that tokenizer.model marks user-defined and
    tokenizer_config.json lists as added, not special, tokens (here they replace the last pieces)."""
    from sentencepiece import sentencepiece_model_pb2 as pb
    model = pb.ModelProto()
    model.ParseFromString((folder / "tokenizer.model").read_bytes())
    where = {p.piece: i for i, p in enumerate(model.pieces)}
    spare = (i for i in reversed(range(len(model.pieces))) if model.pieces[i].piece.strip("\u2581"))
    decoder = {}
    for n in SPACE_RUNS:
        index = where.get("\u2581" * n)
        index = next(spare) if index is None else index
        piece = model.pieces[index]
        piece.piece, piece.type, piece.score = "\u2581" * n, pb.ModelProto.SentencePiece.USER_DEFINED, 0.0
        decoder[str(index)] = {"content": "\u2581" * n, "special": False, "normalized": False,
                               "lstrip": False, "rstrip": False, "single_word": False}
    for i in range(3):                              # <unk>, <s>, </s>
        decoder[str(i)] = {"content": model.pieces[i].piece, "special": True, "normalized": False,
                           "lstrip": False, "rstrip": False, "single_word": False}
    (folder / "tokenizer.model").write_bytes(model.SerializeToString())
    config = json.loads((folder / "tokenizer_config.json").read_text())
    (folder / "tokenizer_config.json").write_text(json.dumps({**config, "added_tokens_decoder": decoder}))
    (folder / "tokenizer.json").unlink()           # made again from tokenizer.model by whoever needs it
    return folder


class Made(dict):
    """kind -> (HF source folder, the f32 GGUF llama.cpp's converter made of it), each made when first asked
    for (a converter run costs seconds: a test group that never asks for a kind never pays for it)."""

    def __init__(self, samples, root: Path) -> None:
        super().__init__()
        self.samples, self.root = samples, root

    def __missing__(self, kind: str) -> tuple[Path, Path]:
        family, pre = KINDS[kind]
        folder = with_template(self.samples(family).path, self.root / kind)
        if kind == "smollm":
            smollm_style(folder)
        if kind == "spm-spaces":
            gemma_style(folder)
        self[kind] = (folder, reference_convert(folder, self.root / f"{kind}.gguf", pre))
        return self[kind]


@pytest.fixture(scope="module")
def made(samples, tmp_path_factory) -> Made:
    return Made(samples, tmp_path_factory.mktemp("llama-cpp-made"))


def corpus() -> list[str]:
    return [*corpus_text().splitlines()[:40], "  leading spaces", "trailing   ", "tabs\tand\nnewlines\n\n",
            "x=1;y=22;z=333;w=4444", "ÀÉÎõü ßæø Ünïcödé", "", "<s>user\nhello</s>\n<s>assistant\nhi there</s>",
            "emoji 🙂 and CJK 漢字", "v1.2.3 on 2024-06-01: 12345678 x 3.14159"]


@pytest.mark.parametrize("kind", ["spm", "bpe", "wordpiece", pytest.param("smollm", marks=pytest.mark.slow)])
def test_gguf_to_hf_without_base_model(made, tmp_path, kind):
    """Config and tokenizer come from the metadata alone: transformers loads both, the tokenizer splits a
    varied corpus (specials, chat markup) exactly as llama.cpp does on the source file, and the model
    computes what transformers' own GGUF loader computes from the same file. "smollm" is a SmolLM2-style
    file (tokenizer.ggml.pre "smollm"), as llama.cpp's converter makes one of SmolLM2."""
    from transformers import AutoModel, AutoModelForCausalLM, AutoTokenizer
    source, gguf_file = made[kind]
    result = modelport.convert(gguf_file, tmp_path / "hf")
    assert any("tokenizer rebuilt" in n for n in result["notes"]), result["notes"]
    tok = AutoTokenizer.from_pretrained(tmp_path / "hf")
    original = AutoTokenizer.from_pretrained(source)
    runtime = LlamaCppRuntime(gguf_file, embedding=kind == "wordpiece")
    for text in corpus():
        if kind == "wordpiece" and HANGUL.search(text):
            # llama.cpp's WordPiece drops Hangul vowel jamo after NFD (BERT's own tokenizer keeps them):
            # there the rebuilt tokenizer follows the tokenizer the model was trained with
            assert tok(text)["input_ids"] == original(text)["input_ids"] != runtime.tokenize(text), text
            continue
        assert tok(text)["input_ids"] == runtime.tokenize(text), (kind, text)
    assert tok.chat_template == TEMPLATE
    config = json.loads((tmp_path / "hf" / "config.json").read_text())
    original = json.loads((source / "config.json").read_text())
    assert config["model_type"] == original["model_type"]
    ids = torch.tensor([tok(corpus()[0])["input_ids"]])
    if kind == "wordpiece":         # transformers reads no BERT GGUF: against the model it was made from
        ours, theirs = AutoModel.from_pretrained(tmp_path / "hf"), AutoModel.from_pretrained(source)
        with torch.no_grad():
            diff = (ours(ids).last_hidden_state - theirs(ids).last_hidden_state).abs().max().item()
    else:
        ours = AutoModelForCausalLM.from_pretrained(tmp_path / "hf")
        theirs = AutoModelForCausalLM.from_pretrained(gguf_file.parent, gguf_file=gguf_file.name)
        with torch.no_grad():
            diff = (ours(ids).logits - theirs(ids).logits).abs().max().item()
    assert diff <= 1e-4, (kind, diff)


def _metadata(path: Path) -> dict:
    reader = gguf.GGUFReader(path)
    return {key: field.contents() for key, field in reader.fields.items() if not key.startswith("GGUF.")}


@pytest.mark.parametrize("source_type", ["q4_1", "q8_0", "q4_k_m"])
@pytest.mark.parametrize("target", ["q8_0", "q4_k_m"])
def test_requantize_keeps_every_key(made, tmp_path, source_type, target):
    """A llama.cpp-quantized GGUF re-quantized: every metadata key kept, tensors byte-identical to
    llama_model_quantize's re-quantization of the same file, and it runs in llama.cpp."""
    _, f32 = made["bpe"]
    source = llama_quantize(f32, tmp_path / f"src-{source_type}.gguf", source_type)
    ours = tmp_path / "ours.gguf"
    result = modelport.convert(source, ours, quant=target)
    assert result["source_format"] == "gguf" and result["format"] == "gguf"
    reference = llama_quantize(source, tmp_path / "ref.gguf", target)
    before, after = _metadata(source), _metadata(ours)
    changed = {"general.file_type", "general.quantization_version"}
    assert {k: v for k, v in before.items() if k not in changed} == {k: v for k, v in after.items() if k not in changed}
    assert after["general.file_type"] == FTYPES[target]
    mine, theirs = gguf.GGUFReader(ours), gguf.GGUFReader(reference)
    assert [t.name for t in mine.tensors] == [t.name for t in theirs.tensors]
    for a, b in zip(mine.tensors, theirs.tensors):
        assert a.tensor_type == b.tensor_type and bytes(a.data) == bytes(b.data), a.name
    assert LlamaCppRuntime(ours).logits(LlamaCppRuntime(ours).tokenize("hello world")).shape[0] > 0


def test_requantize_close_types_keep_greedy_output(made, tmp_path):
    _, f32 = made["bpe"]
    source = llama_quantize(f32, tmp_path / "src.gguf", "q4_1")
    modelport.convert(source, tmp_path / "q8.gguf", quant="q8_0")
    prompt = LlamaCppRuntime(source).tokenize("the quick brown")
    assert _greedy(source, prompt, 20) == _greedy(tmp_path / "q8.gguf", prompt, 20)


def test_same_types_are_copied_byte_for_byte(made, tmp_path):
    _, f32 = made["spm"]
    source = llama_quantize(f32, tmp_path / "src.gguf", "q8_0")
    result = modelport.convert(source, tmp_path / "again.gguf", quant="q8_0")
    mine, theirs = gguf.GGUFReader(tmp_path / "again.gguf"), gguf.GGUFReader(source)
    for a, b in zip(mine.tensors, theirs.tensors):
        assert a.tensor_type == b.tensor_type and bytes(a.data) == bytes(b.data), a.name
    assert any("copied byte for byte" in n for n in result["notes"])


def _greedy(path: Path, prompt: list[int], n: int) -> list[int]:
    runtime, ids = LlamaCppRuntime(path), list(prompt)
    for _ in range(n):
        ids.append(int(np.argmax(runtime.logits(ids)[-1])))
    return ids[len(prompt):]


@pytest.mark.parametrize("kind", ["spm", "bpe", "wordpiece"])
def test_hf_from_gguf_then_gguf_keeps_the_vocabulary(made, tmp_path, kind):
    _, gguf_file = made[kind]
    modelport.convert(gguf_file, tmp_path / "hf")
    modelport.convert(tmp_path / "hf", tmp_path / "again.gguf", quant="f32")
    before, after = _metadata(gguf_file), _metadata(tmp_path / "again.gguf")
    # scores are compared by what they do (a SentencePiece vocabulary merges by them): llama.cpp splits
    # the corpus the same with both files
    keys = [k for k in before if k.startswith("tokenizer.ggml.") and k not in ("tokenizer.ggml.pre",
                                                                                "tokenizer.ggml.scores")]
    assert {k: before.get(k) for k in [*keys, "tokenizer.chat_template"]} == \
        {k: after.get(k) for k in [*keys, "tokenizer.chat_template"]}
    original, again = LlamaCppRuntime(gguf_file, embedding=True), LlamaCppRuntime(tmp_path / "again.gguf", embedding=True)
    assert all(original.tokenize(text) == again.tokenize(text) for text in corpus())


def test_split_gguf_reads_as_one_model(made, tmp_path):
    _, f32 = made["spm"]
    split = tmp_path / "split" / "model.gguf"
    split.parent.mkdir()
    modelport.convert(f32, split, split_max_size="100K")
    shards = sorted(p.name for p in split.parent.iterdir())
    assert len(shards) > 1 and shards[0] == "model-00001-of-%05d.gguf" % len(shards), shards
    first = split.parent / shards[0]
    one = modelport.convert(first, tmp_path / "one.gguf")
    mine, theirs = gguf.GGUFReader(tmp_path / "one.gguf"), gguf.GGUFReader(f32)
    assert [(t.name, bytes(t.data)) for t in mine.tensors] == [(t.name, bytes(t.data)) for t in theirs.tensors]
    assert one["tensors"] == len(theirs.tensors)
    modelport.convert(split.parent / shards[-1], tmp_path / "hf")        # any shard stands for the model
    modelport.convert(f32, tmp_path / "hf-whole")
    from safetensors.numpy import load_file
    a, b = load_file(tmp_path / "hf" / "model.safetensors"), load_file(tmp_path / "hf-whole" / "model.safetensors")
    assert a.keys() == b.keys() and all(np.array_equal(a[k], b[k]) for k in a)
    info = run_cli("inspect", first, "--json")
    assert info.code == 0 and info.json()["tensors"] == len(theirs.tensors)


def _rewritten(src: Path, dst: Path, **changes) -> Path:
    """`src` with some metadata values replaced (gguf-py writes it anew)."""
    reader = gguf.GGUFReader(src)
    writer = gguf.GGUFWriter(dst, reader.fields["general.architecture"].contents())
    for key, field in reader.fields.items():
        if key.startswith("GGUF.") or key == "general.architecture":
            continue
        value = changes.get(key, field.contents())
        sub = field.types[-1] if field.types[0] == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(key, value, field.types[0], sub)
    for t in reader.tensors:
        writer.add_tensor(t.name, np.array(t.data), raw_shape=list(reversed([int(d) for d in t.shape])),
                          raw_dtype=t.tensor_type)
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return dst


def test_bad_gguf_sources_are_one_line(made, tmp_path, capsys):
    _, f32 = made["bpe"]
    split = tmp_path / "split" / "m.gguf"
    split.parent.mkdir()
    modelport.convert(f32, split, split_max_size="100K")
    shards = sorted(split.parent.iterdir())
    cases = []
    missing = tmp_path / "missing"
    shutil.copytree(split.parent, missing)
    (missing / shards[1].name).unlink()
    both = (tmp_path / "out-hf", tmp_path / "out.gguf")
    cases.append((missing / shards[0].name, "missing", 1, both))
    cut = tmp_path / "cut"
    shutil.copytree(split.parent, cut)
    with open(cut / shards[-1].name, "r+b") as f:
        f.truncate(f.seek(0, 2) - 1000)
    cases.append((cut / shards[0].name, "truncated", 1, both))
    pre = _rewritten(f32, tmp_path / "pre.gguf", **{"tokenizer.ggml.pre": "mystery-pre"})
    cases.append((pre, "mystery-pre", 2, both[:1]))       # only a rebuilt tokenizer needs its rules
    tokens = gguf.GGUFReader(f32).fields["tokenizer.ggml.tokens"].contents()
    short = _rewritten(f32, tmp_path / "short.gguf", **{"tokenizer.ggml.tokens": tokens[:-3],
                                                        "tokenizer.ggml.token_type": [1] * (len(tokens) - 3)})
    cases.append((short, "token_embd.weight has", 1, both[:1]))
    for src, words, code, destinations in cases:
        for dst in destinations:
            run = run_cli("convert", src, dst)
            lines = run.stderr.strip().splitlines()
            assert run.code == code, (src, dst, run.stderr)
            assert len(lines) == 1 and words in lines[0] and "Traceback" not in run.stderr, run.stderr
            assert not dst.exists() and leftovers(tmp_path) == []
    assert run_cli("convert", pre, tmp_path / "ok-hf", "--pre-tokenizer", "qwen2").code == 0


def test_verify_a_requantized_gguf_against_its_gguf_source(made, tmp_path):
    """Both run in llama.cpp on the same token ids; a file with its tensors scrambled fails."""
    _, f32 = made["spm"]
    source = llama_quantize(f32, tmp_path / "src.gguf", "q8_0")
    modelport.convert(source, tmp_path / "q4.gguf", quant="q4_k_m")
    run = run_cli("verify", source, tmp_path / "q4.gguf", "--json")
    assert run.code == 0, run.stderr
    report = run.json()
    assert report["runtime"] == {"source": "llama.cpp", "converted": "llama.cpp"}
    assert report["tokenization_agreement"] == 1.0 and report["metrics"]["min_cosine"] > 0.9
    other = tmp_path / "other.gguf"
    modelport.convert(made["bpe"][1], other, quant="q8_0")
    wrong = run_cli("verify", source, other, "--json")
    assert wrong.code == 1


# add_bos/add_eos and add_space_prefix are compared by what llama.cpp does with them: modelport writes what
# the tokenizer does (False included) where llama.cpp's converter writes what some configs say
VOCABULARY = ("tokenizer.ggml.model", "tokenizer.ggml.pre", "tokenizer.ggml.tokens", "tokenizer.ggml.token_type",
              "tokenizer.ggml.merges", "tokenizer.ggml.scores", "tokenizer.ggml.bos_token_id",
              "tokenizer.ggml.eos_token_id", "tokenizer.ggml.unknown_token_id", "tokenizer.ggml.padding_token_id",
              "tokenizer.ggml.seperator_token_id", "tokenizer.ggml.cls_token_id", "tokenizer.ggml.mask_token_id")


@pytest.mark.parametrize("kind", [pytest.param("spm-spaces", marks=pytest.mark.slow), "bpe", "wordpiece"])
def test_vocabulary_as_llama_cpp_writes_it(made, tmp_path, kind):
    """HF -> GGUF writes the vocabulary llama.cpp's converter writes from the same folder (tokens, their
    types, merges or scores, special ids): user-defined tokens (Gemma's whitespace runs) as USER_DEFINED
    with their literal text, control and unknown tokens as llama.cpp types them. GGUF -> HF -> GGUF then
    gives the same vocabulary back."""
    source, reference = made[kind]
    modelport.convert(source, tmp_path / "ours.gguf", quant="f32")
    theirs, ours = _metadata(reference), _metadata(tmp_path / "ours.gguf")
    if kind == "spm-spaces":
        spaced = {t: k for t, k in zip(theirs["tokenizer.ggml.tokens"], theirs["tokenizer.ggml.token_type"])
                  if t and set(t) == {" "}}
        assert spaced == {" " * n: gguf.TokenType.USER_DEFINED for n in SPACE_RUNS}
    assert {k: ours.get(k) for k in VOCABULARY} == {k: theirs.get(k) for k in VOCABULARY}
    modelport.convert(reference, tmp_path / "hf")
    modelport.convert(tmp_path / "hf", tmp_path / "again.gguf", quant="f32")
    again = _metadata(tmp_path / "again.gguf")
    assert {k: again.get(k) for k in VOCABULARY} == {k: theirs.get(k) for k in VOCABULARY}
    texts = [*corpus(), *(" " * n + "x" + " " * n for n in SPACE_RUNS)]
    runs = [LlamaCppRuntime(path, embedding=True) for path in (reference, tmp_path / "ours.gguf", tmp_path / "again.gguf")]
    for text in texts:
        assert runs[0].tokenize(text) == runs[1].tokenize(text) == runs[2].tokenize(text), text
