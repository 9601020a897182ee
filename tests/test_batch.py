"""`modelport batch`: LMTK-shaped YAML, one output folder per checkpoint, failures don't stop the rest."""
from __future__ import annotations

from pathlib import Path

import torch
from conftest import hf_logits, leftovers, run_cli


def _run_dir(tmp_path, llama):
    ckpts = tmp_path / "output"
    ckpts.mkdir()
    sd = llama.model.state_dict()
    torch.save({"model": sd, "optimizer": {}}, ckpts / "epoch-001-final-ckpt.pth")
    torch.save({"model": sd}, ckpts / "epoch-002-final-ckpt.pth")
    (ckpts / "epoch-003-final-ckpt.pth").write_bytes(b"not a checkpoint at all")
    return ckpts


def test_batch_converts_each_checkpoint_and_reports_failures(llama, tmp_path):
    _run_dir(tmp_path, llama)
    config = tmp_path / "convert.yaml"
    config.write_text(f"""
task: convert
experiment_name: gpt2_fsdp_to_hf
verbose_level: 2
convert:
  base_model: {llama.path}
  checkpoint_path: output          # relative to this file
  initial_format: fsdp
  final_format: huggingface
  output_dir: converted
""")
    run = run_cli("batch", config, "--json")
    assert run.code == 1, run.stderr
    summary = run.json()
    assert (summary["total"], summary["succeeded"], summary["failed"]) == (3, 2, 1)
    by_name = {r["checkpoint"].rsplit("/", 1)[-1]: r for r in summary["results"]}
    bad = by_name["epoch-003-final-ckpt.pth"]
    assert not bad["ok"] and "epoch-003-final-ckpt.pth" in bad["error"]
    for name in ("epoch-001-final-ckpt", "epoch-002-final-ckpt"):
        assert by_name[name + ".pth"]["ok"]
        assert torch.equal(hf_logits(tmp_path / "converted" / name), llama.logits())
    assert not (tmp_path / "converted" / "epoch-003-final-ckpt").exists()
    assert leftovers(tmp_path / "converted") == []
    assert "2 of 3 succeeded" in run.stderr
    rows = [r for r in run_cli("history", "--json").json()["attempts"] if r["source"].startswith(str(tmp_path))]
    assert sorted((Path(r["source"]).name, r["status"], r["command"]) for r in rows) == [
        ("epoch-001-final-ckpt.pth", "published", "batch"), ("epoch-002-final-ckpt.pth", "published", "batch"),
        ("epoch-003-final-ckpt.pth", "failed", "batch")]
    assert [r["error"] is None for r in sorted(rows, key=lambda r: r["source"])] == [True, True, False]


def test_batch_jobs_list_all_ok(llama, tmp_path):
    config = tmp_path / "jobs.yaml"
    config.write_text(f"""
jobs:
  - task: convert
    convert: {{checkpoint_path: {llama.path}, output_dir: {tmp_path}/a, final_format: hf}}
  - task: convert
    convert: {{checkpoint_path: {llama.path}, output_dir: {tmp_path}/b, final_format: dcp, dtype: bfloat16}}
""")
    run = run_cli("batch", config, "--json")
    assert run.code == 0, run.stderr
    assert run.json()["succeeded"] == 2
    assert (tmp_path / "a" / "model" / "model.safetensors").is_file()
    assert (tmp_path / "b" / "model" / ".metadata").is_file()


def test_batch_unknown_key_is_a_usage_error(tmp_path):
    config = tmp_path / "typo.yaml"
    config.write_text("task: convert\nconvert:\n  checkpoint_path: x\n  output_dir: y\n  base_modle: z\n")
    run = run_cli("batch", config)
    assert run.code == 2
    assert "convert.base_modle" in run.stderr and "typo.yaml" in run.stderr


def test_batch_initial_format_mismatch(llama, tmp_path):
    config = tmp_path / "mismatch.yaml"
    config.write_text(f"task: convert\nconvert:\n  checkpoint_path: {llama.path}\n  initial_format: dcp\n"
                      f"  output_dir: {tmp_path}/out\n")
    run = run_cli("batch", config, "--json")
    assert run.code == 1
    assert "does not match" in run.json()["results"][0]["error"]


def test_batch_targets_write_one_gguf_per_profile_type(llama, tmp_path):
    config = tmp_path / "targets.yaml"
    config.write_text(f"""
task: convert
convert:
  checkpoint_path: {llama.path}
  final_format: gguf
  targets: [cpu, gpu]
  output_dir: out
""")
    run = run_cli("batch", config, "--json")
    assert run.code == 0, run.stderr
    written = sorted(str(p.relative_to(tmp_path / "out")) for p in (tmp_path / "out").rglob("*.gguf"))
    assert written == ["cpu/model-q4_k_m.gguf", "cpu/model-q8_0.gguf", "gpu/model-f16.gguf", "gpu/model-q8_0.gguf"]
    assert run.json()["succeeded"] == 4
    for name in written:
        assert _file_type(tmp_path / "out" / name) == name.split("model-")[1].removesuffix(".gguf")


def test_convert_profile_flag(llama, tmp_path):
    run = run_cli("convert", llama.path, tmp_path / "edge", "--profile", "edge", "--json")
    assert run.code == 0, run.stderr
    assert sorted(p.name for p in (tmp_path / "edge").iterdir()) == ["model-q3_k_m.gguf", "model-q4_k_s.gguf"]
    assert [o["dtype"] for o in run.json()["outputs"]] == ["q3_k_m", "q4_k_s"]
    assert [_file_type(tmp_path / "edge" / f"model-{q}.gguf") for q in ("q3_k_m", "q4_k_s")] == ["q3_k_m", "q4_k_s"]
    assert run_cli("convert", llama.path, tmp_path / "x", "--profile", "cpu", "--quant", "f16").code == 2


def _file_type(path) -> str:
    """The llama.cpp file type a GGUF declares, in --quant spelling."""
    import gguf

    from modelport.formats.gguf.quant_types import FILE_TYPES
    value = int(gguf.GGUFReader(path).fields["general.file_type"].contents())
    return next(name for name, ft in FILE_TYPES.items() if int(ft) == value)


def test_fsspec_url_output_is_staged_then_moved_into_place(llama, tmp_path):
    config = tmp_path / "url.yaml"
    remote = tmp_path / "remote"
    config.write_text(f"""
jobs:
  - convert:
      checkpoint_path: {llama.path}
      output_dir: file://{remote}
  - convert:
      checkpoint_path: {llama.path}
      output_dir: file://{remote}/gguf
      final_format: gguf
      quant: q8_0
""")
    run = run_cli("batch", config, "--workers", "2", "--json", subprocess_only=True)     # forks workers
    assert run.code == 0, run.stderr
    results = run.json()["results"]
    assert [r["output"] for r in results] == [f"file://{remote}/model", f"file://{remote}/gguf/model"]
    assert torch.equal(hf_logits(remote / "model"), llama.logits())
    assert (remote / "gguf" / "model").read_bytes()[:4] == b"GGUF"
    assert not [p for p in remote.rglob("*") if ".modelport-tmp-" in p.name]
    again = run_cli("batch", config, "--json")
    assert again.code == 1 and "already exists" in again.json()["results"][0]["error"]
