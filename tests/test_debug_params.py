"""--debug-params shows where every tensor goes; a tensor nothing uses fails unless --allow-unused."""
from __future__ import annotations

import torch
from conftest import leftovers, run_cli


def test_unused_tensor_fails_then_is_dropped_on_request(llama, tmp_path):
    sd = {f"_orig_mod.{k}": v for k, v in llama.model.state_dict().items()}
    sd["_orig_mod.value_head.weight"] = torch.zeros(1, 64)          # an RLHF value head: no target takes it
    sd["_orig_mod.model.layers.0.self_attn.rotary_emb.inv_freq"] = torch.ones(8)   # recomputed: never an error
    torch.save(sd, tmp_path / "step_5.pt")
    failed = run_cli("convert", tmp_path / "step_5.pt", tmp_path / "out", "--base-model", llama.path)
    assert failed.code == 1 and "value_head.weight" in failed.stderr and "--allow-unused" in failed.stderr
    assert "inv_freq" not in failed.stderr.splitlines()[-1]
    assert not (tmp_path / "out").exists() and leftovers(tmp_path) == []

    run = run_cli("convert", tmp_path / "step_5.pt", tmp_path / "out.gguf", "--base-model", llama.path,
                  "--allow-unused", "--debug-params", "--quant", "q8_0", "--json")
    assert run.code == 0, run.stderr
    result = run.json()
    rows = {r["source"]: r for r in result["params"]}
    q = rows["_orig_mod.model.layers.0.self_attn.q_proj.weight"]
    assert (q["target"], q["shape"], q["dtype"], q["target_type"]) == ("blk.0.attn_q.weight", [64, 64], "float32",
                                                                         "Q8_0")
    assert rows["_orig_mod.model.norm.weight"]["target_type"] == "F32"       # norms stay F32
    assert result["unused"] == ["_orig_mod.value_head.weight"]
    assert "_orig_mod.value_head.weight" in run.stderr and "-> (unused)" in run.stderr
    assert "blk.0.attn_q.weight" in run.stderr


def test_debug_params_for_hf_output_names_tied_aliases(gpt2, tmp_path):
    run = run_cli("convert", gpt2.path, tmp_path / "out", "--dtype", "bfloat16", "--debug-params", "--json")
    assert run.code == 0, run.stderr
    rows = {r["target"]: r for r in run.json()["params"]}
    assert rows["lm_head.weight"]["target_type"] == "tied to transformer.wte.weight"
    assert rows["transformer.h.0.attn.c_attn.weight"]["target_type"] == "bfloat16"
