"""PEFT LoRA adapters: to a GGUF LoRA llama.cpp runs beside its base (PEFT's logits, llama.cpp's own
converter's bytes), merged while converting (merge_and_unload()'s tensors and logits), detected and refused
with a reason where a GGUF LoRA cannot carry them."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import gguf
import numpy as np
import pytest
import torch
from conftest import IDS, leftovers, run_cli
from safetensors.numpy import load_file
from test_gguf_source import llama_cpp_source

import modelport
from modelport.runtimes.llama_cpp import LlamaCppRuntime

TARGETS = {"llama": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
           "qwen2": ["q_proj", "k_proj", "v_proj", "o_proj", "down_proj"],
           "phi3": ["qkv_proj", "o_proj", "gate_up_proj", "down_proj"],
           "qwen2_moe": ["q_proj", "k_proj", "v_proj", "gate_proj", "up_proj", "down_proj"]}   # + the shared expert
# transformers 5 holds routed experts as 3-D parameters, which PEFT adapts through target_parameters
SETTINGS = {"qwen2_moe": {"target_parameters": ["mlp.experts.gate_up_proj", "mlp.experts.down_proj"]}}


def make_adapter(base: Path, out: Path, targets, seed: int = 1, **settings):
    """A PEFT LoRA of `base` with random A and B (a trained adapter's B is not zero either), saved to `out`;
    returns the PEFT model."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32).eval()
    peft_model = get_peft_model(model, LoraConfig(**{"r": 8, "lora_alpha": 16, "target_modules": targets,
                                                     "init_lora_weights": False, **settings})).eval()
    with torch.no_grad():        # PEFT's random B is small; make the change visible in the logits
        for name, p in peft_model.named_parameters():
            if "lora_B" in name or "lora_embedding_B" in name:
                p.mul_(20)
    peft_model.save_pretrained(out)
    return peft_model


def peft_logits(peft_model) -> np.ndarray:
    with torch.no_grad():
        return peft_model(IDS).logits[0].numpy()


@pytest.fixture(scope="module")
def adapters(samples, tmp_path_factory):
    """family -> (base folder, adapter folder, the PEFT model's logits, f32 base GGUF)."""
    root = tmp_path_factory.mktemp("adapters")
    made = {}

    def make(family: str):
        if family not in made:
            base = samples(family).path
            peft_model = make_adapter(base, root / f"{family}-adapter", TARGETS[family], **SETTINGS.get(family, {}))
            base_gguf = root / f"{family}-base.gguf"
            modelport.convert(base, base_gguf, quant="f32")
            made[family] = (base, root / f"{family}-adapter", peft_logits(peft_model), base_gguf)
        return made[family]
    return make


def llama_cpp_logits(base_gguf: Path, lora: Path | None = None) -> np.ndarray:
    return LlamaCppRuntime(base_gguf, n_ctx=64, lora=lora).logits(IDS[0].tolist())


def reference_lora(adapter: Path, base: Path, out: Path, outtype: str = "f32") -> Path:
    """llama.cpp's own convert_lora_to_gguf.py on the same adapter."""
    src = llama_cpp_source()
    env = {**os.environ, "PYTHONPATH": f"{src}:{src / 'gguf-py'}"}
    run = subprocess.run([sys.executable, str(src / "convert_lora_to_gguf.py"), "--base", str(base), "--outfile",
                          str(out), "--outtype", outtype, str(adapter)], env=env, capture_output=True, text=True, cwd=src)
    assert run.returncode == 0, run.stderr[-3000:]
    return out


@pytest.mark.parametrize("family", ["llama", "qwen2", "phi3", pytest.param("qwen2_moe", marks=pytest.mark.slow)])
def test_adapter_gguf_runs_as_peft_does(adapters, tmp_path, family):
    """Llama (Q/K rows permuted in the pair's B), Qwen2 (base biases beside the LoRA), Phi-3 (fused QKV and
    gate-up), Qwen2-MoE (every routed expert, stacked into the *_exps pairs, and the shared expert):
    llama.cpp with the f32 base GGUF and our adapter gives the PEFT model's logits; the base alone does not."""
    base, adapter, expected, base_gguf = adapters(family)
    result = modelport.convert(adapter, tmp_path / "adapter.gguf")        # the base: the folder the adapter names
    assert result["source_format"] == "peft" and result["dtype"] == "f32"
    reader = gguf.GGUFReader(tmp_path / "adapter.gguf")
    assert reader.fields["general.type"].contents() == "adapter"
    assert reader.fields["adapter.type"].contents() == "lora"
    assert reader.fields["adapter.lora.alpha"].contents() == 16.0
    names = {t.name: t.data.shape for t in reader.tensors}
    stacked = {n for n in names if "_exps." in n}           # one pair for all experts of a layer
    experts = 4 if stacked else 0
    assert len(names) - len(stacked) + experts * len(stacked) == 2 * modelport.inspect(adapter)["adapter"]["adapted_tensors"]
    assert all(names[n][0] == experts for n in stacked)
    assert all(n.startswith("blk.") and n.endswith((".weight.lora_a", ".weight.lora_b")) for n in names), names
    got = llama_cpp_logits(base_gguf, tmp_path / "adapter.gguf")
    assert np.abs(got - expected).max() < 1e-3
    assert np.abs(llama_cpp_logits(base_gguf) - expected).max() > 0.05      # the adapter matters


@pytest.mark.slow          # llama.cpp's converter in a process of its own: ~20 s each
@pytest.mark.parametrize("family", ["llama", "phi3"])
def test_adapter_gguf_is_llama_cpps_own(adapters, tmp_path, family):
    """Byte for byte the file llama.cpp's convert_lora_to_gguf.py writes from the same adapter and base."""
    base, adapter, _, _ = adapters(family)
    ours = tmp_path / "ours.gguf"
    modelport.convert(adapter, ours, base_model=base)
    theirs = reference_lora(adapter, base, tmp_path / "theirs.gguf")
    a, b = gguf.GGUFReader(ours), gguf.GGUFReader(theirs)
    assert [(t.name, t.tensor_type, t.data.tobytes()) for t in a.tensors] == \
        [(t.name, t.tensor_type, t.data.tobytes()) for t in b.tensors]
    assert {k: f.contents() for k, f in a.fields.items()} == {k: f.contents() for k, f in b.fields.items()}
    assert ours.read_bytes() == theirs.read_bytes()


def test_rslora_and_rank_pattern_scales_are_honoured(samples, tmp_path):
    """rsLoRA (alpha / sqrt(r)) and per-module ranks and alphas: llama.cpp divides one alpha by each pair's
    rank, so alpha is written for rsLoRA and other scales are folded into B; the logits stay PEFT's."""
    base = samples("llama").path
    peft_model = make_adapter(base, tmp_path / "adapter", TARGETS["llama"], use_rslora=True,
                              rank_pattern={"v_proj": 4}, alpha_pattern={"o_proj": 32})
    modelport.convert(tmp_path / "adapter", tmp_path / "adapter.gguf")
    modelport.convert(base, tmp_path / "base.gguf", quant="f32")
    got = llama_cpp_logits(tmp_path / "base.gguf", tmp_path / "adapter.gguf")
    assert np.abs(got - peft_logits(peft_model)).max() < 1e-3


def test_embedding_and_output_lora_run_in_llama_cpp(samples, tmp_path):
    """A LoRA on the input embedding (stored for row lookup, A transposed) and on lm_head: llama.cpp runs both;
    merged, the embedding's product is transposed (W is vocab x hidden)."""
    base = samples("llama").path
    peft_model = make_adapter(base, tmp_path / "adapter", ["embed_tokens", "lm_head", "q_proj"])
    modelport.convert(tmp_path / "adapter", tmp_path / "adapter.gguf")
    names = {t.name: t.data.shape for t in gguf.GGUFReader(tmp_path / "adapter.gguf").tensors}
    assert "token_embd.weight.lora_a" in names and "output.weight.lora_b" in names
    modelport.convert(base, tmp_path / "base.gguf", quant="f32")
    got = llama_cpp_logits(tmp_path / "base.gguf", tmp_path / "adapter.gguf")
    assert np.abs(got - peft_logits(peft_model)).max() < 1e-3
    modelport.convert(base, tmp_path / "hf", merge_adapter=tmp_path / "adapter")
    ours, reference = load_file(tmp_path / "hf" / "model.safetensors"), merged_reference(base, tmp_path / "adapter")
    assert all(np.array_equal(ours[k], reference[k]) for k in ours)


def merged_reference(base: Path, adapter: Path) -> dict[str, np.ndarray]:
    from peft import PeftModel
    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    merged = PeftModel.from_pretrained(model, adapter).merge_and_unload()
    with tempfile.TemporaryDirectory() as folder:       # under the names checkpoints save (experts one by one)
        merged.save_pretrained(folder)
        return load_file(Path(folder) / "model.safetensors")


@pytest.mark.parametrize("family", ["llama", "phi3", pytest.param("qwen2_moe", marks=pytest.mark.slow)])
def test_merge_adapter_is_merge_and_unload(adapters, tmp_path, family):
    """HF output: every tensor exactly what PEFT's merge_and_unload() makes; GGUF f32: its logits."""
    base, adapter, expected, _ = adapters(family)
    result = modelport.convert(base, tmp_path / "hf", merge_adapter=adapter)
    assert any("merged the LoRA adapter" in n for n in result["notes"])
    ours = load_file(tmp_path / "hf" / "model.safetensors")
    reference = merged_reference(base, adapter)
    assert set(ours) == set(reference)
    for name, array in ours.items():
        assert np.array_equal(array, reference[name]), name
    run = run_cli("convert", base, tmp_path / "merged.gguf", "--quant", "f32", "--merge-adapter", adapter)
    assert run.code == 0, run.stderr
    assert np.abs(llama_cpp_logits(tmp_path / "merged.gguf") - expected).max() < 1e-3


def test_dora_and_modules_to_save_merge_but_are_no_gguf_lora(samples, tmp_path):
    """A GGUF LoRA cannot rescale rows (DoRA) or replace a tensor (modules_to_save): refused with the reason,
    nothing written; merged, they are PEFT's merge."""
    base = samples("llama").path
    make_adapter(base, tmp_path / "dora", ["q_proj", "v_proj"], use_dora=True)
    make_adapter(base, tmp_path / "saved", ["q_proj"], modules_to_save=["lm_head"])
    for adapter, why in ((tmp_path / "dora", "DoRA"), (tmp_path / "saved", "modules_to_save")):
        run = run_cli("convert", adapter, tmp_path / "out.gguf")
        assert run.code == 2 and why in run.stderr and "--merge-adapter" in run.stderr, run.stderr
        assert len(run.stderr.strip().splitlines()) == 1
        assert not (tmp_path / "out.gguf").exists() and not leftovers(tmp_path)
    modelport.convert(base, tmp_path / "saved-hf", merge_adapter=tmp_path / "saved")
    ours, reference = load_file(tmp_path / "saved-hf" / "model.safetensors"), merged_reference(base, tmp_path / "saved")
    assert all(np.array_equal(ours[k], reference[k]) for k in ours)
    modelport.convert(base, tmp_path / "dora-hf", merge_adapter=tmp_path / "dora")
    ours, reference = load_file(tmp_path / "dora-hf" / "model.safetensors"), merged_reference(base, tmp_path / "dora")
    assert max(np.abs(ours[k] - reference[k]).max() for k in ours) < 1e-6


def test_inspect_shows_the_adapter(adapters):
    base, adapter, _, _ = adapters("llama")
    run = run_cli("inspect", adapter, "--json")
    assert run.code == 0, run.stderr
    info = run.json()
    assert info["format"] == "peft" and info["architecture"] == "llama"
    assert info["adapter"]["base_model"] == str(base) and info["adapter"]["rank"] == 8
    assert info["adapter"]["alpha"] == 16 and info["adapter"]["rslora"] is False and info["adapter"]["dora"] is False
    assert info["adapter"]["target_modules"] == sorted(TARGETS["llama"])


def test_bad_adapters_are_one_line_and_write_nothing(adapters, samples, tmp_path):
    base, adapter, _, _ = adapters("llama")
    phi_base, phi_adapter, _, _ = adapters("phi3")
    # no base to be found: asked for
    lost = tmp_path / "lost"
    lost.mkdir()
    for name in ("adapter_model.safetensors", "adapter_config.json"):
        (lost / name).write_bytes((adapter / name).read_bytes())
    settings = json.loads((lost / "adapter_config.json").read_text())
    (lost / "adapter_config.json").write_text(json.dumps({**settings, "base_model_name_or_path": "org/unknown"}))
    unnamed = tmp_path / "unnamed"        # a Phi-3 adapter whose base is not at hand: told by its targets
    unnamed.mkdir()
    (unnamed / "adapter_model.safetensors").write_bytes((phi_adapter / "adapter_model.safetensors").read_bytes())
    phi_settings = json.loads((phi_adapter / "adapter_config.json").read_text())
    (unnamed / "adapter_config.json").write_text(json.dumps({**phi_settings, "base_model_name_or_path": "org/phi"}))
    cases = [((lost, tmp_path / "a.gguf"), 2, "--base-model"),
             ((phi_adapter, tmp_path / "a.gguf", "--base-model", base), 1, "made for a phi3 model"),
             ((base, tmp_path / "m", "--merge-adapter", phi_adapter), 1, "made for a phi3 model"),
             ((unnamed, tmp_path / "a.gguf", "--base-model", base), 1, "4 target(s) not in the llama base"),
             ((base, tmp_path / "m", "--merge-adapter", unnamed), 1, "4 target(s) not in the llama model"),
             ((adapter, tmp_path / "hf"), 2, "--merge-adapter")]
    wrong_rank = tmp_path / "rank"
    wrong_rank.mkdir()
    (wrong_rank / "adapter_model.safetensors").write_bytes((adapter / "adapter_model.safetensors").read_bytes())
    (wrong_rank / "adapter_config.json").write_text(json.dumps({**settings, "r": 4}))
    cases.append(((wrong_rank, tmp_path / "a.gguf"), 1, "rank mismatch"))
    cases.append(((base, tmp_path / "m", "--merge-adapter", wrong_rank), 1, "rank mismatch"))
    for args, code, words in cases:
        run = run_cli("convert", *args)
        assert run.code == code and words in run.stderr, (args, run.stderr)
        assert len(run.stderr.strip().splitlines()) == 1, run.stderr
        assert not Path(args[1]).exists() and not leftovers(tmp_path)


@pytest.mark.slow          # three watch cycles, each a conversion and a verification: ~15 s
def test_watch_publishes_adapter_checkpoints(samples, tmp_path):
    """A LoRA run's checkpoint-N/ folders become versions: merged into the base (the default), their steps
    from trainer_state.json; --adapters-only publishes a GGUF LoRA per version beside one base GGUF."""
    base = samples("llama").path
    run, out, registry = tmp_path / "run", tmp_path / "out", tmp_path / "registry.sqlite"
    run.mkdir()
    for step, seed in ((10, 3), (20, 4)):
        make_adapter(base, run / f"checkpoint-{step}", ["q_proj", "v_proj"], seed=seed)
        (run / f"checkpoint-{step}" / "trainer_state.json").write_text(json.dumps({"global_step": step}))
        result = run_cli("watch", run, "--output", out, "--registry", registry, "--once", "--settle", "0",
                         "--quant", "f32", "--json")
        assert result.code == 0, result.stderr
        version = out / f"0.1.0-alpha+{step}"
        manifest = json.loads((version / "manifest.json").read_text())
        assert manifest["global_step"] == step and manifest["source"]["kind"] == "merged adapter"
        assert manifest["verification"]["model-f32.gguf"]["ok"]
        reference = merged_reference(base, run / f"checkpoint-{step}")
        ours = load_file(version / "model.safetensors")
        assert all(np.array_equal(ours[k], reference[k]) for k in ours)
    lora_out = tmp_path / "lora-out"
    result = run_cli("watch", run, "--output", lora_out, "--registry", registry, "--once", "--settle", "0",
                     "--adapters-only", "--quant", "f32", "--json")
    assert result.code == 0, result.stderr
    manifest = json.loads((lora_out / "0.1.0-alpha+20" / "manifest.json").read_text())
    assert manifest["source"]["kind"] == "adapter" and manifest["base"] == ["../base/model-f32.gguf"]
    with torch.no_grad():
        from peft import PeftModel
        from transformers import AutoModelForCausalLM
        expected = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base), run / "checkpoint-20")(IDS)
    got = llama_cpp_logits(lora_out / "base" / "model-f32.gguf", lora_out / "0.1.0-alpha+20" / "adapter.gguf")
    assert np.abs(got - expected.logits[0].numpy()).max() < 1e-3
