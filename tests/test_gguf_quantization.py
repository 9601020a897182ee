"""Quantized GGUF files are what llama.cpp itself makes: same per-tensor types, same bytes."""
from __future__ import annotations

import ctypes

import gguf
import numpy as np
import pytest
import torch
from conftest import run_cli

import modelport
from modelport.formats.gguf.quant_types import FILE_TYPES
from modelport.formats.gguf.quantize import to_type
from modelport.runtimes.llama_cpp import LlamaCppRuntime


def _tensors(path) -> dict[str, tuple[str, bytes]]:
    return {t.name: (t.tensor_type.name, bytes(t.data.tobytes())) for t in gguf.GGUFReader(path).tensors}


def llama_quantize(src, dst, quant: str, importance: dict[str, np.ndarray] | None = None) -> None:
    """llama_model_quantize (llama-quantize's library call), with `importance` (name -> the float32 weights
    llama-quantize's load_imatrix makes of a file) when given."""
    import llama_cpp
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = int(FILE_TYPES[quant])
    params.nthread = 2
    if importance:
        vectors = {name: np.ascontiguousarray(v, dtype=np.float32).reshape(-1) for name, v in importance.items()}
        table = (llama_cpp.llama_model_imatrix_data * (len(vectors) + 1))()
        for row, (name, v) in zip(table, vectors.items()):
            row.name, row.data, row.size = name.encode(), v.ctypes.data_as(ctypes.POINTER(ctypes.c_float)), v.size
        params.imatrix = table
    assert llama_cpp.llama_model_quantize(str(src).encode(), str(dst).encode(), ctypes.byref(params)) == 0


@pytest.fixture(scope="module")
def f32_file(samples, tmp_path_factory):
    sample = samples("llama-quant")
    out = tmp_path_factory.mktemp("q") / "model-f32.gguf"
    modelport.convert(sample.path, out, quant="f32")
    return sample, out


@pytest.mark.parametrize("quant", ["q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "f16", "bf16",
                                   "q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m", "q6_k"])
def test_one_step_equals_f32_then_llama_quantize(f32_file, tmp_path, quant):
    sample, f32 = f32_file
    ours = tmp_path / f"ours-{quant}.gguf"
    reference = tmp_path / f"ref-{quant}.gguf"
    result = modelport.convert(sample.path, ours, quant=quant)
    llama_quantize(f32, reference, quant)
    mine, theirs = _tensors(ours), _tensors(reference)
    assert list(mine) == list(theirs) or set(mine) == set(theirs)
    type_diff = {n: (mine[n][0], theirs[n][0]) for n in mine if mine[n][0] != theirs[n][0]}
    assert not type_diff, type_diff
    byte_diff = [n for n in mine if mine[n][1] != theirs[n][1]]
    assert not byte_diff, byte_diff
    assert sum(result["tensor_types"].values()) == len(mine)


WIDE = dict(hidden_size=256, intermediate_size=512, num_hidden_layers=4, num_attention_heads=4, num_key_value_heads=2)


@pytest.mark.parametrize("family,overrides", [
    ("mixtral", dict(num_local_experts=8)),                      # llama-quantize's 8-expert special cases
    ("qwen3_moe", dict(num_experts=4, moe_intermediate_size=256, head_dim=64)),
    ("glm4_moe", dict(n_routed_experts=4, moe_intermediate_size=256, head_dim=64, first_k_dense_replace=1)),
    ("falcon", dict(num_kv_heads=2, ffn_hidden_size=1024)),      # its own output and ffn_down rules
    ("phi3", dict(num_key_value_heads=4)),                       # a fused attn_qkv counts as attn_v
    ("gpt_oss", dict(intermediate_size=256, head_dim=64)),       # experts split from 3-D gate_up, expert biases
    ("granitemoeshared", dict(intermediate_size=256, shared_intermediate_size=256)),  # split across rows
    ("llama4_text", dict(intermediate_size=256, intermediate_size_mlp=512, head_dim=64)),  # dense + MoE layers
    ("deepseek_v3", dict(moe_intermediate_size=256, q_lora_rank=256, kv_lora_rank=256,   # MLA's split kv_b
                         qk_nope_head_dim=64, v_head_dim=64, qk_rope_head_dim=64, head_dim=64, num_key_value_heads=4)),
], ids=lambda v: v if isinstance(v, str) else "")
@pytest.mark.parametrize("quant", ["q4_k_m", "q3_k_m"])
def test_families_quantize_like_llama_quantize(tmp_path, family, overrides, quant):
    """MoE and other families: every tensor's type and bytes equal llama_model_quantize's from our F32 file."""
    equal_to_llama_quantize(tmp_path, family, {**WIDE, **overrides}, quant)


def equal_to_llama_quantize(tmp_path, family: str, config: dict, quant: str) -> dict:
    """A `family` model of `config` quantized by modelport and by llama_model_quantize from our F32 file: the
    same tensors, types and bytes (asserted); modelport's tensors (name -> (type, bytes))."""
    from modelport.samples import save_model
    save_model(tmp_path / "model", family, **config)
    f32, ours, reference = tmp_path / "f32.gguf", tmp_path / "ours.gguf", tmp_path / "ref.gguf"
    modelport.convert(tmp_path / "model", f32, quant="f32")
    modelport.convert(tmp_path / "model", ours, quant=quant)
    llama_quantize(f32, reference, quant)
    mine, theirs = _tensors(ours), _tensors(reference)
    assert set(mine) == set(theirs)
    assert {n: mine[n][0] for n in mine} == {n: theirs[n][0] for n in theirs}
    assert [n for n in mine if mine[n][1] != theirs[n][1]] == []
    return mine


def test_mix_gives_sensitive_tensors_more_bits(f32_file, tmp_path):
    sample, _ = f32_file
    out = tmp_path / "m.gguf"
    modelport.convert(sample.path, out, quant="q4_k_m")
    types = {n: t for n, (t, _) in _tensors(out).items()}
    assert types["output.weight"] == "Q6_K"
    assert types["blk.0.attn_v.weight"] == "Q6_K" and types["blk.0.ffn_down.weight"] == "Q6_K"
    assert types["blk.3.attn_q.weight"] == "Q4_K"
    assert types["blk.0.attn_norm.weight"] == "F32"


def test_rows_not_fitting_a_block_fall_back(samples, tmp_path):
    """The 64-wide tiny model cannot hold 256-element K-quant blocks: llama.cpp's fallbacks apply."""
    sample = samples("llama")
    out = tmp_path / "small.gguf"
    modelport.convert(sample.path, out, quant="q4_k_m")
    ref_f32, ref = tmp_path / "f32.gguf", tmp_path / "ref.gguf"
    modelport.convert(sample.path, ref_f32, quant="f32")
    llama_quantize(ref_f32, ref, "q4_k_m")
    assert {n: t for n, (t, _) in _tensors(out).items()} == {n: t for n, (t, _) in _tensors(ref).items()}
    assert _tensors(out)["blk.0.attn_q.weight"][0] == "Q5_0"


@pytest.mark.parametrize("qtype", [gguf.GGMLQuantizationType.Q8_0, gguf.GGMLQuantizationType.Q4_0,
                                   gguf.GGMLQuantizationType.Q4_1, gguf.GGMLQuantizationType.Q5_0,
                                   gguf.GGMLQuantizationType.Q5_1])
def test_gguf_py_quantizers_agree_with_llama_cpp(qtype):
    from modelport.formats.gguf.quantize import libggml
    assert libggml() is not None, "llama.cpp's quantizer must be there, or gguf-py is compared with itself"
    data = (torch.randn(64, 512) * 0.05).numpy()
    theirs = gguf.quants.quantize(data, qtype)
    assert np.array_equal(to_type(data, qtype).reshape(-1), theirs.reshape(-1))


def test_quantized_file_runs_close_to_source(f32_file, tmp_path):
    sample, _ = f32_file
    out = tmp_path / "q8.gguf"
    modelport.convert(sample.path, out, quant="q8_0")
    ids = list(range(1, 60))
    with torch.no_grad():
        ref = sample.model(torch.tensor([ids])).logits[0].numpy()
    got = LlamaCppRuntime(out).logits(ids)
    cos = (ref * got).sum(-1) / np.linalg.norm(ref, axis=-1) / np.linalg.norm(got, axis=-1)
    assert cos.min() > 0.99


def test_split_output_loads_in_llama_cpp(f32_file, tmp_path):
    sample, _ = f32_file
    run = run_cli("convert", sample.path, tmp_path / "split.gguf", "--quant", "f16", "--split-max-size", "4M",
                  "--json")
    assert run.code == 0, run.stderr
    files = run.json()["files"]
    assert len(files) > 2 and files[0] == f"split-00001-of-{len(files):05d}.gguf"
    assert sorted(p.name for p in tmp_path.iterdir()) == files
    first = gguf.GGUFReader(tmp_path / files[0])
    assert int(first.fields["split.count"].parts[-1][0]) == len(files)
    ids = list(range(1, 40))
    with torch.no_grad():
        ref = sample.model(torch.tensor([ids])).logits[0].numpy()
    assert np.abs(LlamaCppRuntime(tmp_path / files[0]).logits(ids) - ref).max() < 1e-2


def test_bad_quant_and_unsupported_target(samples, tmp_path):
    run = run_cli("convert", samples("llama").path, tmp_path / "x.gguf", "--quant", "q9_9")
    assert run.code == 2 and "q4_k_m" in run.stderr
    run = run_cli("convert", samples("llama").path, tmp_path / "x", "--quant", "q8_0")
    assert run.code == 2 and "applies to GGUF and ONNX output only" in run.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("quant", ["f16", "q4_k_m"])
def test_row_chunked_streaming_changes_no_byte(f32_file, tmp_path, monkeypatch, quant):
    """Tensors streamed in many small row chunks (whole heads for permuted Q/K) give the same file."""
    from modelport.formats.gguf import writer
    sample, _ = f32_file
    modelport.convert(sample.path, tmp_path / "whole.gguf", quant=quant)
    monkeypatch.setattr("modelport.core.bundle.ROW_BLOCK_BYTES", 8 * 1024)       # 8 rows of 256 floats per chunk
    bundle = modelport.load(sample.path)
    mapping, hp = writer.mapping_for(bundle), writer.hparams(bundle.config)
    by_name = {p.gguf_name: p for p in writer.plan(bundle, mapping, hp, quant)}
    assert len(writer.pieces(by_name["blk.0.attn_q.weight"], hp)) == 4      # one 64-row head each
    assert len(writer.pieces(by_name["blk.0.ffn_down.weight"], hp)) == 256 // 2  # 768-wide rows
    modelport.convert(sample.path, tmp_path / "chunked.gguf", quant=quant)
    assert _tensors(tmp_path / "whole.gguf") == _tensors(tmp_path / "chunked.gguf")


def test_training_checkpoint_streams_rows_and_dcp_gives_tensors_whole(f32_file, tmp_path, monkeypatch):
    """A .pth (memory-mapped) is read a row block at a time like safetensors, with the same bytes out; a
    DCP source, which cannot read rows alone, is read once per tensor instead of once per block."""
    from modelport.formats.gguf import writer
    sample, _ = f32_file
    state = modelport.load(sample.path)
    torch.save({"model": {f"module.{t.name}": torch.from_numpy(t.load().copy()) for t in state if t.alias_of is None}},
               tmp_path / "ckpt.pth")
    modelport.convert(tmp_path / "ckpt.pth", tmp_path / "whole.gguf", quant="q4_k_m", base_model=sample.path)
    monkeypatch.setattr("modelport.core.bundle.ROW_BLOCK_BYTES", 8 * 1024)
    bundle = modelport.load(tmp_path / "ckpt.pth", base_model=sample.path)
    mapping, hp = writer.mapping_for(bundle), writer.hparams(bundle.config)
    ffn = next(p for p in writer.plan(bundle, mapping, hp, "q4_k_m") if p.gguf_name == "blk.0.ffn_down.weight")
    assert len(writer.pieces(ffn, hp)) == 128
    # converted in blocks of 21 rows (a .pth is re-opened per block: 128 blocks of every tensor take a minute)
    monkeypatch.setattr("modelport.core.bundle.ROW_BLOCK_BYTES", 64 * 1024)
    assert len(writer.pieces(ffn, hp)) == 13
    modelport.convert(tmp_path / "ckpt.pth", tmp_path / "chunked.gguf", quant="q4_k_m", base_model=sample.path)
    assert _tensors(tmp_path / "whole.gguf") == _tensors(tmp_path / "chunked.gguf")

    modelport.convert(sample.path, tmp_path / "dcp", to="dcp")
    dcp_bundle = modelport.load(tmp_path / "dcp", base_model=sample.path)
    ffn = next(p for p in writer.plan(dcp_bundle, mapping, hp, "q4_k_m") if p.gguf_name == "blk.0.ffn_down.weight")
    assert len(writer.pieces(ffn, hp)) == 1


def test_hf_cast_streams_row_blocks_with_the_same_bytes(samples, tmp_path, monkeypatch):
    from safetensors.torch import load_file

    sample = samples("llama-quant")
    modelport.convert(sample.path, tmp_path / "whole", dtype="bfloat16")
    monkeypatch.setattr("modelport.core.bundle.ROW_BLOCK_BYTES", 4096)
    modelport.convert(sample.path, tmp_path / "blocks", dtype="bfloat16")
    whole, blocks = load_file(tmp_path / "whole" / "model.safetensors"), load_file(tmp_path / "blocks" / "model.safetensors")
    assert whole.keys() == blocks.keys() and all(torch.equal(whole[k], blocks[k]) for k in whole)
    assert (tmp_path / "whole" / "model.safetensors").read_bytes() == (tmp_path / "blocks" / "model.safetensors").read_bytes()
