"""Importance-matrix quantization without llama.cpp's built tools: the IQ and ternary types get
llama-quantize's per-tensor types and bytes (its library call, given the same importance), imatrix
files are read and written as llama.cpp does, usage errors exit 2, and the in-process calibration
measures what the model's matrices are fed (checked against transformers' own activations)."""
from __future__ import annotations

import struct

import gguf
import numpy as np
import pytest
import torch
from conftest import Sample, run_cli
from test_gguf_quantization import WIDE, _tensors, llama_quantize

import modelport
from modelport.core.errors import CorruptInputError, UsageError
from modelport.formats.gguf import imatrix as imatrix_mod
from modelport.formats.gguf.calibrate import CalibrationSettings, compute
from modelport.formats.gguf.imatrix import Entry, Imatrix
from modelport.formats.gguf.quant_types import FILE_TYPES, ModelShape, choose_types
from modelport.formats.gguf.quantize import Importance, to_type

NEW_TYPES = ["iq1_s", "iq1_m", "iq2_xxs", "iq2_xs", "iq2_s", "iq2_m", "iq3_xxs", "iq3_xs", "iq3_s", "iq3_m",
             "iq4_nl", "iq4_xs", "q2_k_s", "tq1_0", "tq2_0"]


def synthetic_imatrix(f32_path, seed: int = 0) -> Imatrix:
    """Heavy-tailed importance for every matrix llama-imatrix would record (blk.* weights of 2 or 3 dims),
    per expert for stacked ones, with one expert left unreached (count 0) when there are several."""
    rng = np.random.default_rng(seed)
    entries = {}
    for t in gguf.GGUFReader(f32_path).tensors:
        shape = tuple(int(d) for d in reversed(t.shape))
        if not t.name.startswith("blk.") or len(shape) < 2 or not t.name.endswith("weight") or "norm" in t.name:
            continue
        matrices = shape[0] if len(shape) == 3 else 1
        counts = np.full(matrices, 512.0, dtype=np.float32)
        if matrices > 1:
            counts[-1] = 0
        sums = (rng.standard_normal((matrices, shape[-1])) ** 2 * rng.lognormal(0, 1.5, shape[-1])).astype(np.float32)
        entries[t.name] = Entry(sums * counts[:, None], counts)
    return Imatrix(entries, ["synthetic.txt"], 4, 128)


SMALL = dict(hidden_size=256, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2)


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    """A Llama just wide enough for 256-element blocks (IQ search is slow: the default group stays small),
    its F32 GGUF and a synthetic imatrix of it."""
    from modelport.samples import save_model
    folder = tmp_path_factory.mktemp("imatrix")
    model, _ = save_model(folder / "model", "llama", **SMALL)
    f32 = folder / "model-f32.gguf"
    modelport.convert(folder / "model", f32, quant="f32")
    found = synthetic_imatrix(f32)
    found.save(folder / "imatrix.gguf")
    return Sample(folder / "model", model), f32, folder / "imatrix.gguf", found


def _same_as_llama_quantize(src, f32, imatrix_file, found, quant, tmp_path):
    ours, reference = tmp_path / f"ours-{quant}.gguf", tmp_path / f"ref-{quant}.gguf"
    modelport.convert(src, ours, quant=quant, imatrix=imatrix_file)
    llama_quantize(f32, reference, quant, {name: found.importance(name) for name in found.entries})
    mine, theirs = _tensors(ours), _tensors(reference)
    assert list(mine) == list(theirs) or set(mine) == set(theirs)
    assert {n: mine[n][0] for n in mine} == {n: theirs[n][0] for n in theirs}
    assert [n for n in mine if mine[n][1] != theirs[n][1]] == []
    return mine


@pytest.mark.parametrize("quant", ["iq2_xxs", "iq4_xs", "q2_k_s", "tq1_0", "q4_k_m", "q4_0"])
def test_imatrix_quantization_equals_llama_quantize(dense, tmp_path, quant):
    """Types and bytes per tensor equal llama_model_quantize's from our F32 file with the same importance
    (the slow group does every type against the llama-quantize tool reading the file itself)."""
    sample, f32, imatrix_file, found = dense
    mine = _same_as_llama_quantize(sample.path, f32, imatrix_file, found, quant, tmp_path)
    without = tmp_path / "blind.gguf"
    if quant in ("q4_k_m", "q4_0", "iq4_xs", "tq1_0"):        # the importance changes the bytes
        modelport.convert(sample.path, without, quant=quant)
        assert _tensors(without)["blk.1.attn_q.weight"] != mine["blk.1.attn_q.weight"] or quant == "tq1_0"


def test_moe_experts_use_their_own_importance(tmp_path):
    """A stacked expert tensor is quantized expert by expert, each with its own row of the imatrix (an
    unreached expert with 1s), as llama-quantize does."""
    from modelport.samples import save_model
    save_model(tmp_path / "model", "qwen3_moe", **{**WIDE, "num_hidden_layers": 2, "num_experts": 4,
                                                   "moe_intermediate_size": 256, "head_dim": 64})
    f32 = tmp_path / "f32.gguf"
    modelport.convert(tmp_path / "model", f32, quant="f32")
    found = synthetic_imatrix(f32)
    found.save(tmp_path / "imatrix.gguf")
    assert found.entries["blk.0.ffn_down_exps.weight"].sums.shape == (4, 256)
    mine = _same_as_llama_quantize(tmp_path / "model", f32, tmp_path / "imatrix.gguf", found, "iq4_xs", tmp_path)
    assert mine["blk.0.ffn_up_exps.weight"][0] == "IQ4_XS"


def test_every_new_type_has_llama_quantizes_rules():
    """Per-tensor choices on a Llama-3-like shape (GQA 4) and a Mixtral-like one (8 experts), with and
    without an imatrix, spot-checked against llama_tensor_get_type_impl's branches."""
    tensors = {"token_embd.weight": (32000, 4096), "output.weight": (32000, 4096)}
    for i in range(32):
        tensors |= {f"blk.{i}.attn_q.weight": (4096, 4096), f"blk.{i}.attn_k.weight": (1024, 4096),
                    f"blk.{i}.attn_v.weight": (1024, 4096), f"blk.{i}.attn_output.weight": (4096, 4096),
                    f"blk.{i}.ffn_gate.weight": (14336, 4096), f"blk.{i}.ffn_up.weight": (14336, 4096),
                    f"blk.{i}.ffn_down.weight": (4096, 14336), f"blk.{i}.attn_norm.weight": (4096,)}
    llama3 = ModelShape("llama", 32, 32, 8)
    Q = gguf.GGMLQuantizationType

    def types(quant, imatrix=True, model=llama3):
        return {n: t.name for n, t in choose_types(tensors, FILE_TYPES[quant], model, imatrix).items()}

    t = types("iq2_xxs")
    assert (t["output.weight"], t["token_embd.weight"], t["blk.0.attn_v.weight"]) == ("Q5_K", "Q2_K", "Q4_K")
    assert (t["blk.0.ffn_down.weight"], t["blk.4.ffn_down.weight"], t["blk.9.attn_q.weight"]) == \
        ("Q2_K", "IQ2_XXS", "IQ2_XXS")
    t = types("iq1_m")
    assert (t["blk.5.attn_output.weight"], t["blk.5.ffn_gate.weight"]) == ("IQ2_XXS", "IQ1_M")
    t = types("iq2_m")
    assert (t["token_embd.weight"], t["blk.0.ffn_down.weight"], t["blk.9.ffn_up.weight"]) == ("IQ3_S", "IQ3_S", "IQ2_S")
    t = types("iq3_xs")
    assert (t["blk.0.ffn_up.weight"], t["blk.4.ffn_up.weight"], t["blk.31.ffn_up.weight"]) == ("IQ3_S", "IQ3_XXS", "IQ3_S")
    assert (t["blk.3.attn_k.weight"], t["blk.3.attn_v.weight"]) == ("IQ3_XXS", "Q4_K")
    assert types("iq3_xxs")["blk.9.ffn_down.weight"] == "IQ3_XXS"
    assert types("iq3_xxs", imatrix=False)["blk.9.ffn_down.weight"] == "Q3_K"       # llama-quantize's blind fallback
    assert types("iq4_xs")["blk.0.ffn_down.weight"] == "IQ4_XS"
    assert types("iq4_xs", imatrix=False)["blk.0.ffn_down.weight"] == "Q5_K"
    assert types("q4_0")["blk.0.ffn_down.weight"] == "Q4_1" and types("q4_0", imatrix=False)["blk.0.ffn_down.weight"] == "Q4_0"
    assert types("q2_k_s")["blk.0.attn_v.weight"] == "Q4_K" and types("q2_k_s")["blk.0.ffn_down.weight"] == "Q4_K"
    t = types("tq1_0")
    assert (t["token_embd.weight"], t["output.weight"], t["blk.0.attn_q.weight"]) == ("Q4_K", "Q6_K", "TQ1_0")
    mixtral = ModelShape("llama", 32, 32, 8, n_expert=8)
    t = types("iq3_m", model=mixtral)
    assert (t["blk.0.attn_v.weight"], t["blk.0.attn_output.weight"], t["blk.6.ffn_down.weight"], t["blk.5.ffn_down.weight"]) == \
        ("Q8_0", "Q5_K", "Q4_K", "IQ3_S")
    narrow = {"blk.0.attn_q.weight": (64, 64)}
    assert choose_types(narrow, FILE_TYPES["iq2_xxs"], llama3, True)["blk.0.attn_q.weight"] == Q.IQ4_NL
    assert choose_types(narrow, FILE_TYPES["tq2_0"], llama3, True)["blk.0.attn_q.weight"] == Q.Q4_0


def _legacy_dat(found: Imatrix, path) -> None:
    """save_imatrix_legacy's layout: per entry the name, ncall, and (sum / count) * ncall."""
    out = [struct.pack("<i", len(found.entries))]
    for name in sorted(found.entries):
        e, ncall = found.entries[name], 4
        values = (e.sums / np.maximum(e.counts, 1)[:, None] * ncall).astype("<f4")
        out += [struct.pack("<i", len(name)), name.encode(), struct.pack("<ii", ncall, values.size), values.tobytes()]
    out += [struct.pack("<ii", 4, len(b"old.txt")), b"old.txt"]
    path.write_bytes(b"".join(out))


def test_imatrix_files_read_as_llama_cpp_reads_them(tmp_path):
    sums = np.array([[4.0, 8.0], [1.0, 3.0]], dtype=np.float32)
    found = Imatrix({"blk.0.ffn_up_exps.weight": Entry(sums, np.array([2.0, 0.0], dtype=np.float32)),
                     "blk.0.attn_q.weight": Entry(np.array([[6.0, 9.0]], dtype=np.float32),
                                                  np.array([3.0], dtype=np.float32))}, ["wiki.txt"], 7, 512)
    found.save(tmp_path / "m.gguf")
    back = imatrix_mod.read(tmp_path / "m.gguf")
    assert (back.datasets, back.chunk_count, back.chunk_size, back.legacy) == (["wiki.txt"], 7, 512, False)
    reader = gguf.GGUFReader(tmp_path / "m.gguf")
    assert reader.fields["general.type"].contents() == "imatrix" and "general.architecture" not in reader.fields
    assert [t.name for t in reader.tensors] == ["blk.0.attn_q.weight.in_sum2", "blk.0.attn_q.weight.counts",
                                                "blk.0.ffn_up_exps.weight.in_sum2", "blk.0.ffn_up_exps.weight.counts"]
    assert np.array_equal(back.importance("blk.0.ffn_up_exps.weight"), [[2.0, 4.0], [1.0, 1.0]])  # unreached: 1s
    assert np.array_equal(back.importance("blk.0.attn_q.weight"), [[2.0, 3.0]])
    _legacy_dat(back, tmp_path / "m.dat")
    old = imatrix_mod.read(tmp_path / "m.dat")
    assert old.legacy and old.datasets == ["old.txt"] and old.chunk_count == 4
    assert np.allclose(old.importance("blk.0.attn_q.weight"), [[2.0, 3.0]])
    (tmp_path / "bad.dat").write_bytes(b"\x05\x00\x00\x00garbage")
    with pytest.raises(CorruptInputError, match="not a llama.cpp imatrix file"):
        imatrix_mod.read(tmp_path / "bad.dat")


def test_legacy_dat_quantizes_like_its_gguf(dense, tmp_path):
    sample, _, imatrix_file, found = dense
    _legacy_dat(found, tmp_path / "imatrix.dat")
    modelport.convert(sample.path, tmp_path / "a.gguf", quant="q4_k_m", imatrix=imatrix_file)
    modelport.convert(sample.path, tmp_path / "b.gguf", quant="q4_k_m", imatrix=tmp_path / "imatrix.dat")
    a, b = _tensors(tmp_path / "a.gguf"), _tensors(tmp_path / "b.gguf")
    differing = [n for n in a if a[n] != b[n]]
    assert len(differing) <= len(a) // 4       # (sum / count) * 4 / 4 rounds differently in a few columns only


def test_usage_errors(dense, tmp_path):
    sample, _, imatrix_file, found = dense
    src = sample.path
    run = run_cli("convert", src, tmp_path / "x.gguf", "--quant", "iq2_xxs")
    assert run.code == 2 and "--imatrix FILE or --imatrix-corpus" in run.stderr and "IQ2_XXS" in run.stderr
    run = run_cli("convert", src, tmp_path / "x.gguf", "--quant", "q2_k_s")
    assert run.code == 2 and "--imatrix" in run.stderr
    wrong = Imatrix({**found.entries, "blk.99.attn_q.weight": Entry(np.ones((1, 256), np.float32),
                                                                    np.ones(1, np.float32))})
    wrong.save(tmp_path / "other.gguf")
    run = run_cli("convert", src, tmp_path / "x.gguf", "--quant", "iq4_xs", "--imatrix", tmp_path / "other.gguf")
    assert run.code == 2 and "blk.99.attn_q.weight" in run.stderr and "does not match" in run.stderr
    narrow = dict(found.entries)
    narrow["blk.0.ffn_down.weight"] = Entry(np.ones((1, 100), np.float32), np.ones(1, np.float32))
    Imatrix(narrow).save(tmp_path / "narrow.gguf")
    run = run_cli("convert", src, tmp_path / "x.gguf", "--quant", "iq4_xs", "--imatrix", tmp_path / "narrow.gguf")
    assert run.code == 2 and "blk.0.ffn_down.weight" in run.stderr and "100 values" in run.stderr
    missing = {k: v for k, v in found.entries.items() if k != "blk.1.ffn_up.weight"}
    Imatrix(missing).save(tmp_path / "missing.gguf")
    run = run_cli("convert", src, tmp_path / "x.gguf", "--quant", "iq2_xs", "--imatrix", tmp_path / "missing.gguf")
    assert run.code == 2 and "no entry for 'blk.1.ffn_up.weight'" in run.stderr
    for flags, words in [(["--imatrix", imatrix_file, "--imatrix-corpus", "builtin"], "not both"),
                         (["--imatrix-ctx", "64"], "give --imatrix-corpus"),
                         (["--save-imatrix", tmp_path / "s.gguf"], "--save-imatrix"),
                         (["--imatrix", tmp_path / "nope.gguf"], "no such file"),
                         (["--imatrix-corpus", "builtin", "--imatrix-ctx", "8"], "--imatrix-ctx 8"),
                         (["--imatrix-corpus", "builtin", "--save-imatrix", imatrix_file], "never replaced")]:
        run = run_cli("convert", src, tmp_path / "x.gguf", "--quant", "iq4_xs", *flags)
        assert run.code == 2 and words in run.stderr, (flags, run.stderr)
    run = run_cli("convert", src, tmp_path / "x", "--imatrix", imatrix_file)
    assert run.code == 2 and "--imatrix applies to GGUF" in run.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["missing.gguf", "narrow.gguf", "other.gguf"]


def test_requantize_takes_an_imatrix(dense, tmp_path):
    """GGUF -> GGUF with --imatrix: the same bytes as llama-quantize from the same F32 file."""
    sample, f32, imatrix_file, found = dense
    run = run_cli("convert", f32, tmp_path / "ours.gguf", "--quant", "iq4_xs", "--imatrix", imatrix_file)
    assert run.code == 0, run.stderr
    llama_quantize(f32, tmp_path / "ref.gguf", "iq4_xs", {name: found.importance(name) for name in found.entries})
    assert _tensors(tmp_path / "ours.gguf") == _tensors(tmp_path / "ref.gguf")
    fields = gguf.GGUFReader(tmp_path / "ours.gguf").fields
    assert fields["quantize.imatrix.entries_count"].contents() == len(found.entries)
    assert fields["quantize.imatrix.dataset"].contents() == "synthetic.txt"
    run = run_cli("convert", f32, tmp_path / "blind.gguf", "--quant", "iq2_xxs")
    assert run.code == 2 and "--imatrix" in run.stderr


def test_chunks_never_cross_an_expert():
    """Rows of two experts quantized in one call use each expert's weights (the call is split there)."""
    rng = np.random.default_rng(1)
    rows = rng.standard_normal((6, 256)).astype(np.float32)
    weights = rng.random((2, 256)).astype(np.float32) + 0.1
    together = to_type(rows, gguf.GGMLQuantizationType.IQ4_XS, importance=Importance(weights, 4, 2))
    first = to_type(rows[:2], gguf.GGMLQuantizationType.IQ4_XS, importance=Importance(weights[:1], 4))
    second = to_type(rows[2:], gguf.GGMLQuantizationType.IQ4_XS, importance=Importance(weights[1:], 4))
    assert together.tobytes() == first.tobytes() + second.tobytes()


def test_calibration_measures_what_each_matrix_is_fed(dense, tmp_path):
    """The in-process llama-imatrix run: an entry for every blk.* matrix, counts = tokens, and sums of
    squared inputs equal to transformers' own inputs to the same Linear layers over the same ids (the
    slow group compares with llama-imatrix itself)."""
    sample, f32, _, _ = dense
    text = tmp_path / "text.txt"
    text.write_text("The quick brown fox jumps over the lazy dog. " * 15 + "\n")
    found = compute(f32, CalibrationSettings(str(text), ctx=64))
    names = {t.name for t in gguf.GGUFReader(f32).tensors}
    assert set(found.entries) == {n for n in names if n.startswith("blk.") and "norm" not in n}
    assert found.chunk_size == 64 and found.chunk_count >= 2 and found.datasets == [str(text)]
    tokens = found.chunk_count * 64
    assert all(e.counts.tolist() == [tokens] for e in found.entries.values())

    from llama_cpp import Llama
    llm = Llama(model_path=str(f32), vocab_only=True, verbose=False)
    ids = llm.tokenize(text.read_text()[:-1].encode(), add_bos=True, special=False)[:tokens]
    bos = llm.token_bos() if llm.tokenize(b"", add_bos=True) else None
    seen: dict[str, torch.Tensor] = {}

    def hook(name):
        def record(_module, inputs):
            x = inputs[0].reshape(-1, inputs[0].shape[-1]).double()
            seen[name] = seen.get(name, 0) + (x * x).sum(0)
        return record

    layers = sample.model.model.layers
    handles = [m.register_forward_pre_hook(hook(n)) for m, n in [
        (layers[0].self_attn.q_proj, "blk.0.attn_q.weight"), (layers[1].self_attn.o_proj, "blk.1.attn_output.weight"),
        (layers[1].mlp.down_proj, "blk.1.ffn_down.weight")]]
    with torch.no_grad():
        for c in range(found.chunk_count):
            chunk = list(ids[c * 64:(c + 1) * 64])
            chunk[0] = chunk[0] if bos is None else bos
            sample.model(torch.tensor([chunk]))
    for h in handles:
        h.remove()
    for name, ref in seen.items():
        ours, ref = found.entries[name].sums[0].astype(np.float64), ref.numpy()
        assert np.dot(ours, ref) / np.linalg.norm(ours) / np.linalg.norm(ref) > 0.9999, name
        assert np.allclose(ours, ref, rtol=1e-3, atol=1e-4 * ref.max()), name


def test_batch_config_takes_an_imatrix(dense, tmp_path):
    """A batch job's `imatrix:` (relative to the config's folder) quantizes as --imatrix does."""
    import shutil
    sample, _, imatrix_file, found = dense
    shutil.copy(imatrix_file, tmp_path / "imatrix.gguf")
    (tmp_path / "jobs.yaml").write_text(f"task: convert\nconvert:\n  checkpoint_path: {sample.path}\n"
                                        f"  output_dir: out\n  final_format: gguf\n  quant: iq2_xxs\n"
                                        f"  imatrix: imatrix.gguf\n")
    run = run_cli("batch", tmp_path / "jobs.yaml", "--json")
    assert run.code == 0, run.stderr
    out = run.json()["results"][0]["output"]
    assert gguf.GGUFReader(out).fields["quantize.imatrix.entries_count"].contents() == len(found.entries)
    (tmp_path / "jobs.yaml").write_text((tmp_path / "jobs.yaml").read_text().replace("  imatrix: imatrix.gguf\n", "  overwrite: true\n"))
    run = run_cli("batch", tmp_path / "jobs.yaml", "--json")
    assert run.code == 1 and "--imatrix" in run.json()["results"][0]["error"]


def test_watch_config_calibrates_once_per_version(dense, tmp_path, monkeypatch):
    """watch's `imatrix_corpus:` (relative to the YAML's folder) and `imatrix_ctx:` make every GGUF of a
    version with the imatrix of one calibration run; a bad corpus path is refused when the YAML is read."""
    import shutil

    from modelport.formats.gguf import calibrate
    from modelport.service import config
    from modelport.service.watch import WatchService
    sample = dense[0]
    shutil.copytree(sample.path, tmp_path / "run" / "checkpoint-5")
    (tmp_path / "corpus.txt").write_text(calibrate.CalibrationSettings(calibrate.BUILTIN).text())
    runs = []
    compute = calibrate.compute
    monkeypatch.setattr(calibrate, "compute", lambda *a, **k: runs.append(a) or compute(*a, **k))
    yaml = tmp_path / "watch.yaml"
    yaml.write_text("checkpoint_dir: run\noutput: out\nquant: [q4_0, q2_k]\nverify: false\nsettle: 0\n"
                    "once: true\nregistry: r.sqlite\nimatrix_corpus: corpus.txt\nimatrix_ctx: 64\n")
    summary = WatchService(config.load(yaml, {})).run()
    assert summary["ok"] and summary["published"], summary
    assert len(runs) == 1
    version = tmp_path / "out" / summary["published"][0]
    for name in ("model-q4_0.gguf", "model-q2_k.gguf"):
        fields = gguf.GGUFReader(version / name).fields
        assert fields["quantize.imatrix.dataset"].contents() == str(tmp_path / "corpus.txt")
        assert fields["quantize.imatrix.chunks_count"].contents() > 0
    yaml.write_text(yaml.read_text().replace("corpus.txt", "missing.txt"))
    with pytest.raises(UsageError, match="missing.txt"):
        config.load(yaml, {})
