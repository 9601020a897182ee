"""Training checkpoints of every common wrapper convert to HF folders with identical logits."""
from __future__ import annotations

import torch
import torch.distributed.checkpoint as dcp
from conftest import hf_logits, run_cli
from safetensors.torch import load_file

import modelport


def _fsdp_names(sd: dict) -> dict:
    """Names as an FSDP1 model with activation checkpointing yields outside FULL_STATE_DICT mode."""
    out = {}
    for name, value in sd.items():
        name = name.replace("layers.", "layers._fsdp_wrapped_module._checkpoint_wrapped_module.", 1) \
            if ".layers." in name else name
        out["_fsdp_wrapped_module." + name] = value
    return out


WRAPPERS = {
    "plain": lambda sd: sd,
    "fsdp": lambda sd: {"model": _fsdp_names(sd), "optimizer": {"state": {}, "param_groups": []}, "step": 10},
    "ddp": lambda sd: {"module." + k: v for k, v in sd.items()},
    "lightning": lambda sd: {"state_dict": {"model." + k: v for k, v in sd.items()}, "epoch": 1,
                             "global_step": 20, "optimizer_states": [{}], "lr_schedulers": []},
    "deepspeed_module": lambda sd: {"module": sd, "global_steps": 5},
}


def test_each_wrapper_converts_with_identical_logits(llama, tmp_path):
    sd = llama.model.state_dict()
    for name, wrap in WRAPPERS.items():
        ckpt = tmp_path / f"{name}.pth"
        torch.save(wrap(sd), ckpt)
        out = tmp_path / f"{name}-hf"
        result = modelport.convert(ckpt, out, base_model=llama.path)
        assert result["source_format"] == "torch"
        assert torch.equal(hf_logits(out), llama.logits()), name
        assert (out / "tokenizer.json").is_file() and (out / "config.json").is_file()


def test_torch_compile_names(llama, tmp_path):
    compiled = torch.compile(llama.model)
    sd = compiled.state_dict()
    assert any(k.startswith("_orig_mod.") for k in sd)
    torch.save(sd, tmp_path / "compiled.pt")
    run = run_cli("convert", tmp_path / "compiled.pt", tmp_path / "out", "--base-model", llama.path, "--json")
    assert run.code == 0, run.stderr
    assert torch.equal(hf_logits(tmp_path / "out"), llama.logits())


def test_fsdp_cli_reports_ignored_entries(llama, tmp_path):
    torch.save(WRAPPERS["fsdp"](llama.model.state_dict()), tmp_path / "epoch-001-final-ckpt.pth")
    run = run_cli("convert", tmp_path / "epoch-001-final-ckpt.pth", tmp_path / "hf", "--base-model", llama.path)
    assert run.code == 0, run.stderr
    assert "ignored non-model entries: optimizer, step" in run.stderr
    assert torch.equal(hf_logits(tmp_path / "hf"), llama.logits())


def test_tied_lm_head_is_retied(gpt2, tmp_path):
    sd = {k: v for k, v in gpt2.model.state_dict().items() if k != "lm_head.weight"}
    torch.save(sd, tmp_path / "gpt2.pth")
    result = modelport.convert(tmp_path / "gpt2.pth", tmp_path / "hf", base_model=gpt2.path)
    assert any("re-tied lm_head.weight" in n for n in result["notes"])
    assert torch.equal(hf_logits(tmp_path / "hf"), gpt2.logits())


def test_dcp_folder_with_optimizer_converts(qwen2, tmp_path):
    sd = {k: v.clone() for k, v in qwen2.model.state_dict().items()}
    state = {"model": sd, "optim": {"state": {"0": {"exp_avg": torch.zeros(3)}}}, "step": 7}
    dcp.save(state, checkpoint_id=str(tmp_path / "step_7"), no_dist=True)
    result = modelport.convert(tmp_path / "step_7", tmp_path / "hf", base_model=qwen2.path)
    assert result["source_format"] == "dcp"
    assert torch.equal(hf_logits(tmp_path / "hf"), qwen2.logits())


def test_hf_dcp_hf_is_bit_identical(qwen2, tmp_path):
    run = run_cli("convert", qwen2.path, tmp_path / "dcp", "--to", "dcp", "--json")
    assert run.code == 0, run.stderr
    assert (tmp_path / "dcp" / ".metadata").is_file()
    assert run_cli("convert", tmp_path / "dcp", tmp_path / "back").code == 0
    original = load_file(qwen2.path / "model.safetensors")
    back = load_file(tmp_path / "back" / "model.safetensors")
    assert original.keys() == back.keys()
    assert all(torch.equal(original[k], back[k]) and original[k].dtype == back[k].dtype for k in original)


def test_dcp_output_loads_into_a_model_state_dict(llama, tmp_path):
    """What FSDP2 training does with it: dcp.load into the model's own state dict."""
    modelport.convert(llama.path, tmp_path / "dcp", to="dcp")
    target = {k: torch.zeros_like(v) for k, v in llama.model.state_dict().items()}
    dcp.load(target, checkpoint_id=str(tmp_path / "dcp"), no_dist=True)
    assert all(torch.equal(target[k], v) for k, v in llama.model.state_dict().items())


def test_sharded_output_with_index(llama, tmp_path):
    run = run_cli("convert", llama.path, tmp_path / "sharded", "--max-shard-size", "100KB", "--json")
    assert run.code == 0, run.stderr
    files = run.json()["files"]
    assert len(files) > 2 and files[0] == f"model-00001-of-{len(files):05d}.safetensors"
    assert (tmp_path / "sharded" / "model.safetensors.index.json").is_file()
    assert torch.equal(hf_logits(tmp_path / "sharded"), llama.logits())
    # and a sharded folder reads back
    assert run_cli("convert", tmp_path / "sharded", tmp_path / "single").code == 0
    assert torch.equal(hf_logits(tmp_path / "single"), llama.logits())


def test_dtype_precedence(llama, tmp_path):
    bf16 = {k: v.to(torch.bfloat16) for k, v in llama.model.state_dict().items()}
    torch.save(bf16, tmp_path / "bf16.pth")
    # config says float32 and wins over the tensors' bf16
    r = modelport.convert(tmp_path / "bf16.pth", tmp_path / "a", base_model=llama.path)
    assert r["dtype"] == "float32"
    # the flag wins over the config
    r = modelport.convert(tmp_path / "bf16.pth", tmp_path / "b", base_model=llama.path, dtype="float16")
    assert r["dtype"] == "float16"
    assert {t.dtype for t in load_file(tmp_path / "b" / "model.safetensors").values()} == {torch.float16}
    import json
    config = json.loads((tmp_path / "b" / "config.json").read_text())
    assert config["dtype"] == "float16"


def test_checkpoint_folder_picks_latest_or_named(llama, tmp_path):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    sd = llama.model.state_dict()
    for step in (100, 2000, 300):
        scaled = {k: v * (step / 1000) if v.is_floating_point() else v for k, v in sd.items()}
        torch.save({"model": scaled}, run_dir / f"checkpoint-{step}.pth")
    (run_dir / "checkpoint-9999.pth.tmp").write_bytes(b"partial")
    r = modelport.convert(run_dir, tmp_path / "latest", base_model=llama.path)
    assert r["source"].endswith("checkpoint-2000.pth")
    r = modelport.convert(run_dir, tmp_path / "named", base_model=llama.path, checkpoint="checkpoint-300")
    assert r["source"].endswith("checkpoint-300.pth")
    w = load_file(tmp_path / "named" / "model.safetensors")["model.norm.weight"]
    assert torch.allclose(w, sd["model.norm.weight"] * 0.3)
    bad = run_cli("convert", run_dir, tmp_path / "x", "--base-model", llama.path, "--checkpoint", "nope")
    assert bad.code == 2 and "checkpoint-2000.pth" in bad.stderr


def test_bin_weights_in_hf_folder(llama, tmp_path):
    folder = tmp_path / "binmodel"
    folder.mkdir()
    torch.save(llama.model.state_dict(), folder / "pytorch_model.bin")
    for name in ("config.json", "tokenizer.json", "tokenizer_config.json"):
        (folder / name).write_bytes((llama.path / name).read_bytes())
    info = modelport.inspect(folder)
    assert info["format"] == "hf" and info["tokenizer"] is True
    modelport.convert(folder, tmp_path / "out")
    assert torch.equal(hf_logits(tmp_path / "out"), llama.logits())
