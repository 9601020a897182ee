"""Every bad input: a clear one-line error naming the file, a non-zero exit, nothing at DST."""
from __future__ import annotations

import json
import os
import random
import re
import resource
import shutil

import pytest
import torch
from conftest import leftovers, run_cli


def _assert_failed(run, dst, code: int, *needles: str) -> None:
    assert run.code == code, (run.code, run.stderr)
    last = run.stderr.strip().splitlines()[-1]
    assert last.startswith("modelport: error: "), run.stderr
    for needle in needles:
        assert needle in last, last
    assert not dst.exists()
    assert leftovers(dst.parent) == []


def test_truncated_safetensors(llama, tmp_path):
    src = tmp_path / "broken"
    shutil.copytree(llama.path, src)
    data = (src / "model.safetensors").read_bytes()
    (src / "model.safetensors").write_bytes(data[: len(data) // 2])
    dst = tmp_path / "out"
    _assert_failed(run_cli("convert", src, dst), dst, 1, "model.safetensors", "truncated or corrupt")


def test_corrupt_pickle(llama, tmp_path):
    ckpt = tmp_path / "bad.pth"
    ckpt.write_bytes(random.Random(7).randbytes(4096))
    dst = tmp_path / "out"
    _assert_failed(run_cli("convert", ckpt, dst, "--base-model", llama.path), dst, 1, "bad.pth", "not a readable")


def test_any_garbage_is_a_clean_corrupt_input_error(tmp_path):
    """Random bytes make torch's loader fail in many ways; each must become CorruptInputError."""
    from modelport.core.errors import CorruptInputError, UnsafeCheckpointError
    from modelport.formats.pytorch.pickle_io import load_pickle
    for seed in range(60):
        blob = random.Random(seed).randbytes(random.Random(seed).randint(1, 8192))
        path = tmp_path / f"g{seed}.pth"
        path.write_bytes(blob)
        with pytest.raises((CorruptInputError, UnsafeCheckpointError), match=re.escape(str(path))):
            load_pickle(path)


def test_truncated_zip_checkpoint(llama, tmp_path):
    torch.save(llama.model.state_dict(), tmp_path / "full.pth")
    data = (tmp_path / "full.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 3])
    dst = tmp_path / "out"
    _assert_failed(run_cli("convert", tmp_path / "cut.pth", dst, "--base-model", llama.path), dst, 1, "cut.pth")


def test_pickle_without_a_state_dict(llama, tmp_path):
    torch.save([1, 2, 3], tmp_path / "list.pth")
    torch.save({"epoch": 3, "lr": 0.1}, tmp_path / "meta.pth")
    for name, needle in (("list.pth", "not a model state dict"), ("meta.pth", "no model state dict")):
        dst = tmp_path / f"out-{name}"
        _assert_failed(run_cli("convert", tmp_path / name, dst, "--base-model", llama.path), dst, 1, name, needle)


class _RunsCode:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_would_run_code_is_refused(llama, tmp_path):
    marker = tmp_path / "executed"
    torch.save({"model": llama.model.state_dict(), "evil": _RunsCode(str(marker))}, tmp_path / "evil.pth")
    dst = tmp_path / "out"
    run = run_cli("convert", tmp_path / "evil.pth", dst, "--base-model", llama.path)
    _assert_failed(run, dst, 1, "evil.pth", "refusing to load", "--trust-remote-code")
    assert not marker.exists()


def test_missing_config(llama, tmp_path):
    torch.save(llama.model.state_dict(), tmp_path / "bare.pth")
    dst = tmp_path / "out"
    _assert_failed(run_cli("convert", tmp_path / "bare.pth", dst), dst, 1, "bare.pth", "config.json", "--base-model")


def test_unknown_architecture(llama, tmp_path):
    src = tmp_path / "weird"
    shutil.copytree(llama.path, src)
    config = json.loads((src / "config.json").read_text())
    config["model_type"] = "weirdformer"
    (src / "config.json").write_text(json.dumps(config))
    dst = tmp_path / "out"
    _assert_failed(run_cli("convert", src, dst), dst, 1, "weirdformer", "supported: ", "llama", "docs/architectures.md")


def test_a_config_without_a_value_its_architecture_needs(samples, tmp_path):
    """Qwen3-Next's layer kinds come from `layer_types`: a config without them is the input's fault, one
    line naming the folder and the value for inspect, convert and verify, nothing written."""
    src = tmp_path / "qwen3_next"
    shutil.copytree(samples("qwen3_next").path, src)
    config = json.loads((src / "config.json").read_text())
    del config["layer_types"]
    (src / "config.json").write_text(json.dumps(config))
    dst = tmp_path / "out.gguf"
    _assert_failed(run_cli("convert", src, dst), dst, 1, str(src), "does not give 'layer_types'")
    for run in (run_cli("inspect", src), run_cli("verify", src, samples("qwen3_next").path)):
        assert run.code == 1 and run.stderr.count("\n") == 1, run.stderr
        assert str(src) in run.stderr and "does not give 'layer_types'" in run.stderr and "internal" not in run.stderr


def test_wrong_shapes_and_missing_keys(llama, gpt2, tmp_path):
    torch.save(gpt2.model.state_dict(), tmp_path / "gpt2.pth")
    dst = tmp_path / "out"
    _assert_failed(run_cli("convert", tmp_path / "gpt2.pth", dst, "--base-model", llama.path), dst, 1,
                   "gpt2.pth", "missing", "model.layers.0")
    sd = dict(llama.model.state_dict())
    sd["model.norm.weight"] = torch.ones(3)
    torch.save(sd, tmp_path / "shape.pth")
    _assert_failed(run_cli("convert", tmp_path / "shape.pth", dst, "--base-model", llama.path), dst, 1,
                   "shape mismatch", "model.norm.weight")


def test_destination_parent_is_a_file(llama, tmp_path):
    (tmp_path / "afile").write_text("x")
    dst = tmp_path / "afile" / "out"
    run = run_cli("convert", llama.path, dst)
    assert run.code == 2 and "is not a directory" in run.stderr
    assert (tmp_path / "afile").read_text() == "x"


def _limit_file_size() -> None:
    resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))


def test_write_failing_part_way_leaves_nothing(llama, tmp_path):
    dst = tmp_path / "out"
    run = run_cli("convert", llama.path, dst, preexec_fn=_limit_file_size)
    _assert_failed(run, dst, 1, str(dst), "write failed")


def test_missing_shard_of_an_index(llama, tmp_path):
    sharded = tmp_path / "sharded"
    assert run_cli("convert", llama.path, sharded, "--max-shard-size", "100KB").code == 0
    next(sharded.glob("model-00002-*.safetensors")).unlink()
    dst = tmp_path / "out"
    _assert_failed(run_cli("convert", sharded, dst), dst, 1, "model.safetensors.index.json", "missing")


def test_dcp_without_metadata(llama, tmp_path):
    assert run_cli("convert", llama.path, tmp_path / "dcp", "--to", "dcp").code == 0
    (tmp_path / "dcp" / ".metadata").unlink()
    dst = tmp_path / "out"
    _assert_failed(run_cli("convert", tmp_path / "dcp", dst), dst, 1, "no .metadata")


@pytest.mark.parametrize("args", [
    ["convert", "/nonexistent/model", "{tmp}/out"],
    ["convert", "{model}", "{tmp}/out", "--dtype", "float8"],
    ["convert", "{model}", "{tmp}/out", "--max-shard-size", "lots"],
    ["convert", "{model}", "{tmp}/out.onnx", "--quant", "q4_k_m"],
    ["convert", "{model}", "{tmp}/out", "--to", "gguf", "--quant", "q9_k"],
    ["convert", "{model}", "{tmp}/out", "--bogus-flag"],
])
def test_usage_errors_exit_2(llama, tmp_path, args):
    argv = [a.format(tmp=tmp_path, model=llama.path) for a in args]
    run = run_cli(*argv)
    assert run.code == 2, run.stderr
    assert list(tmp_path.iterdir()) == []


def test_existing_destination_needs_overwrite(llama, tmp_path):
    dst = tmp_path / "out"
    dst.mkdir()
    (dst / "keep.txt").write_text("mine")
    run = run_cli("convert", llama.path, dst)
    assert run.code == 2 and "--overwrite" in run.stderr
    assert (dst / "keep.txt").read_text() == "mine"
    assert run_cli("convert", llama.path, dst, "--overwrite").code == 0
    assert not (dst / "keep.txt").exists() and (dst / "model.safetensors").is_file()


def test_json_error_is_one_object_on_stdout(tmp_path):
    run = run_cli("convert", tmp_path / "missing", tmp_path / "out", "--json")
    assert run.code == 2
    payload = run.json()
    assert payload["ok"] is False and payload["exit_code"] == 2 and "no such file" in payload["error"]
