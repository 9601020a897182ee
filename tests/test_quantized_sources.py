"""Quantized checkpoints (fp8, compressed-tensors, gptq, mxfp4) read as what they dequantize to.

Each is made from a tiny random model by tests/quantized_sources.py. The strongest check is the peer:
the f32 GGUF modelport writes equals, tensor for tensor and byte for byte, the one llama.cpp's own
`convert_hf_to_gguf.py --outtype f32` writes from the same folder (all folders converted in one process).
Where transformers dequantizes on CPU (FineGrainedFP8 and Mxfp4 with dequantize=True, compressed-tensors
through its own library), the HF output is its weights exactly and llama.cpp's logits on our GGUF are its
logits. No GPTQ dequantizer runs on CPU here (GPTQModel and optimum are GPU-first): llama.cpp's is the peer.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from conftest import IDS, leftovers, run_cli
from quantized_sources import VARIANTS, quantize, quantize_mxfp4
from test_gguf_source import llama_cpp_source

import modelport

# llama.cpp's converter, once for every folder: importing torch and the converter is most of its time
CONVERT_ALL = """
import sys, json
import conversion.base as base
base.TextModel.get_vocab_base_pre = lambda self, tokenizer: "default"
import convert_hf_to_gguf
for model, out in json.loads(sys.argv[1]):
    sys.argv = ["convert", model, "--outfile", out, "--outtype", "f32"]
    convert_hf_to_gguf.main()
"""


def reference_convert_all(pairs: list[tuple[Path, Path]]) -> None:
    src = llama_cpp_source()
    env = {**os.environ, "PYTHONPATH": f"{src}:{src / 'gguf-py'}"}
    run = subprocess.run([sys.executable, "-c", CONVERT_ALL, json.dumps([[str(m), str(o)] for m, o in pairs])],
                         env=env, capture_output=True, text=True, cwd=src)
    assert run.returncode == 0, run.stderr[-3000:]


@pytest.fixture(scope="module")
def made(samples, tmp_path_factory):
    """variant -> (quantized folder, llama.cpp's f32 GGUF of it)."""
    root = tmp_path_factory.mktemp("quantized")
    folders = {v: quantize(samples("llama-spm").path, root / v, v) for v in VARIANTS}
    folders["mxfp4"] = quantize_mxfp4(samples("gpt_oss").path, root / "mxfp4")
    pairs = {v: (folder, root / f"{v}.gguf") for v, folder in folders.items()}
    reference_convert_all(list(pairs.values()))
    return pairs


def tensors(path: Path) -> dict[str, tuple[str, tuple[int, ...], bytes]]:
    reader = gguf.GGUFReader(path)
    return {t.name: (t.tensor_type.name, tuple(int(d) for d in t.shape), bytes(t.data.tobytes()))
            for t in reader.tensors}


@pytest.mark.parametrize("variant", [*VARIANTS, "mxfp4"])
def test_f32_gguf_is_llama_cpps(made, tmp_path, variant):
    """Every tensor llama.cpp's converter writes, with its name, type, shape and bytes (mxfp4: the experts
    kept as MXFP4 blocks, bit for bit)."""
    folder, reference = made[variant]
    result = modelport.convert(folder, tmp_path / "ours.gguf", quant="f32")
    ours, theirs = tensors(tmp_path / "ours.gguf"), tensors(reference)
    assert sorted(ours) == sorted(theirs)
    different = [n for n in theirs if ours[n] != theirs[n]]
    assert not different, [(n, ours[n][:2], theirs[n][:2]) for n in different[:5]]
    types = {t for t, _, _ in ours.values()}
    assert types == ({"F32", "MXFP4"} if variant == "mxfp4" else {"F32"})
    assert any(n.startswith("quantized source") for n in result["notes"]), result["notes"]


def dequantizing_load(folder: Path, variant: str):
    from transformers import AutoModelForCausalLM, FineGrainedFP8Config, Mxfp4Config
    config = Mxfp4Config(dequantize=True) if variant == "mxfp4" else FineGrainedFP8Config(dequantize=True)
    return AutoModelForCausalLM.from_pretrained(folder, quantization_config=config, dtype=torch.float32).eval()


@pytest.mark.parametrize("variant", ["fp8-block", "fp8-tensor", "mxfp4"])
def test_hf_output_is_transformers_dequantized(made, tmp_path, variant):
    """HF output at float32 is transformers' own dequantized weights exactly; with --dtype auto it is
    bf16 (the choice noted), and its config no longer says it is quantized."""
    from safetensors.numpy import load_file
    folder, _ = made[variant]
    theirs = dequantizing_load(folder, variant).state_dict()
    modelport.convert(folder, tmp_path / "f32", dtype="float32")
    ours = load_file(tmp_path / "f32" / "model.safetensors")
    for name, array in ours.items():
        expected = theirs[name].numpy()
        assert array.shape == expected.shape and np.array_equal(array, expected), name
    result = modelport.convert(folder, tmp_path / "auto")
    config = json.loads((tmp_path / "auto" / "config.json").read_text())
    assert "quantization_config" not in config and result["dtype"] == "bfloat16"
    assert {v.dtype.name for v in load_file(tmp_path / "auto" / "model.safetensors").values()} == {"bfloat16"}


@pytest.mark.parametrize("variant", [v if v == "ct-pack4-zp" else pytest.param(v, marks=pytest.mark.slow)
                                     for v in VARIANTS if v.startswith("ct-")])
def test_hf_output_is_compressed_tensors_dequantized(made, tmp_path, variant):
    """compressed-tensors' own library (through transformers, on CPU) dequantizes in the scale's dtype
    (bf16 here): the bf16 HF output (--dtype auto) is its weights exactly. The integer times the scale is
    exact in float32, so rounding that product once to bf16 is what a bf16 multiply gives."""
    from safetensors.numpy import load_file
    from transformers import AutoModelForCausalLM, CompressedTensorsConfig
    folder, _ = made[variant]
    theirs = AutoModelForCausalLM.from_pretrained(folder, quantization_config=CompressedTensorsConfig(dequantize=True),
                                                  dtype=torch.bfloat16).state_dict()
    modelport.convert(folder, tmp_path / "hf")
    ours = load_file(tmp_path / "hf" / "model.safetensors")
    assert {a.dtype.name for a in ours.values()} == {"bfloat16"}
    for name, array in ours.items():
        assert np.array_equal(array.astype(np.float32), theirs[name].float().numpy()), name


@pytest.mark.parametrize("variant", ["fp8-block", "mxfp4"])
def test_logits_in_llama_cpp_are_transformers(made, tmp_path, variant):
    """The f32 GGUF's logits in llama.cpp are transformers' on its dequantizing load. A GGUF that keeps the
    experts as MXFP4 runs them on activations llama.cpp rounds to Q8_0 (its MXFP4 kernel), which moves
    these logits by about 2e-3 (measured 2.4e-3): within 1e-3 is asked of the experts dequantized to F32
    (through the HF output), and the MXFP4 file within 5e-3."""
    from modelport.runtimes.llama_cpp import LlamaCppRuntime
    folder, _ = made[variant]
    with torch.no_grad():
        expected = dequantizing_load(folder, variant)(IDS).logits[0].numpy()
    if variant == "mxfp4":
        modelport.convert(folder, tmp_path / "kept.gguf", quant="f32")
        kept = LlamaCppRuntime(tmp_path / "kept.gguf").logits(IDS[0].tolist())
        assert np.abs(kept - expected).max() < 5e-3
        modelport.convert(folder, tmp_path / "hf", dtype="float32")
        folder = tmp_path / "hf"
    modelport.convert(folder, tmp_path / "m.gguf", quant="f32")
    got = LlamaCppRuntime(tmp_path / "m.gguf").logits(IDS[0].tolist())
    assert np.abs(got - expected).max() < 1e-3


def test_gguf_default_type_and_requantized_experts(made, tmp_path):
    """--dtype auto is f16 for a GGUF (the experts stay MXFP4, as llama.cpp keeps them); a quantized type
    re-quantizes the dequantized experts."""
    folder, _ = made["mxfp4"]
    result = modelport.convert(folder, tmp_path / "auto.gguf")
    assert result["dtype"] == "f16" and set(result["tensor_types"]) == {"F16", "F32", "MXFP4"}
    q8 = modelport.convert(folder, tmp_path / "q8.gguf", quant="q8_0")
    assert "MXFP4" not in q8["tensor_types"]
    assert gguf.GGUFReader(tmp_path / "auto.gguf").get_field("general.file_type").contents() == \
        gguf.LlamaFileType.MOSTLY_MXFP4_MOE


def test_inspect_names_the_method(made):
    info = modelport.inspect(made["gptq-4-desc-act"][0])
    assert info["quantization"]["method"] == "gptq" and info["quantization"]["bits"] == 4
    assert info["quantization"]["block"] == "group 32, desc_act"
    info = modelport.inspect(made["fp8-block"][0])
    assert (info["quantization"]["method"], info["quantization"]["block"]) == ("fp8", "32x32")


def edited(folder: Path, out: Path, config: dict | None = None, drop: str | None = None) -> Path:
    import shutil

    from safetensors.torch import load_file, save_file
    shutil.copytree(folder, out)
    if config is not None:
        original = json.loads((out / "config.json").read_text())
        (out / "config.json").write_text(json.dumps({**original, "quantization_config": config}))
    if drop is not None:
        stored = load_file(out / "model.safetensors")
        del stored[drop]
        save_file(stored, out / "model.safetensors")
    return out


@pytest.mark.parametrize("case,message", [
    ("awq", "quantized with 'awq', which modelport does not read (it reads fp8, compressed-tensors, gptq, mxfp4)"),
    ("missing-scale", "tensor 'model.layers.1.self_attn.k_proj.weight_scale_inv' (the scale of the quantized weight "
                      "'model.layers.1.self_attn.k_proj.weight') is missing"),
    ("groups", "compressed-tensors with 2 config groups is not supported"),
])
def test_bad_quantized_sources(made, tmp_path, case, message):
    folder = made["ct-int8-channel" if case == "groups" else "fp8-block"][0]
    if case == "awq":
        bad = edited(folder, tmp_path / "src", config={"quant_method": "awq", "bits": 4})
    elif case == "groups":
        settings = json.loads((folder / "config.json").read_text())["quantization_config"]
        groups = settings["config_groups"]
        two = {**groups, "group_1": groups["group_0"]}
        bad = edited(folder, tmp_path / "src", config={**settings, "config_groups": two})
    else:
        bad = edited(folder, tmp_path / "src", drop="model.layers.1.self_attn.k_proj.weight_scale_inv")
    for dst in (tmp_path / "out.gguf", tmp_path / "out"):
        proc = run_cli("convert", str(bad), str(dst))
        assert proc.code == 1, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], proc.stderr
        assert not dst.exists() and not leftovers(tmp_path)


@pytest.mark.parametrize("variant", [*VARIANTS, "mxfp4"])
def test_row_blocks_are_the_whole_tensor(made, variant):
    """Rows read in blocks of 5 (across scale blocks, packed words and groups) are the tensor read whole:
    the streamed path computes what llama.cpp's comparison checked."""
    bundle = modelport.load(made[variant][0])
    streamed = 0
    for ref in bundle:
        if ref.alias_of is None and ref.rows is not None and ref.dtype == "float32" and len(ref.shape) >= 2:
            rows = ref.shape[0]
            joined = np.concatenate([ref.load_rows(s, min(rows, s + 5)) for s in range(0, rows, 5)])
            assert np.array_equal(joined, ref.load()), ref.name
            streamed += 1
    assert streamed >= (2 if variant == "mxfp4" else 14)


def test_verify_runs_a_quantized_source_as_it_dequantizes(made, tmp_path):
    """transformers has no CPU loader for GPTQ: verify builds the source from its dequantized bundle."""
    proc = run_cli("convert", made["gptq-4-desc-act"][0], tmp_path / "m.gguf", "--quant", "f32", "--verify", "--json")
    assert proc.code == 0, proc.stderr
    assert proc.json()["verification"]["ok"] is True
