"""Hostile and damaged inputs: each is refused in one line naming the file, exit 1 or 2, within bounded
time and memory, with nothing at the destination and no temporary left; a source is never touched."""
from __future__ import annotations

import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import hostile
import pytest
from conftest import leftovers, run_cli

SECONDS = 10
MEGABYTES = 500


class Hung(BaseException):
    """Raised by the alarm when one case runs past its time (BaseException: nothing may swallow it)."""


def _alarm(_signum, _frame):
    raise Hung()


def cli(capsys, *argv: object) -> tuple[int, str, str, float]:
    """The CLI in this process (its imports are paid once for hundreds of cases), with a time limit."""
    from modelport.cli import main

    capsys.readouterr()
    previous = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(SECONDS)
    started = time.perf_counter()
    try:
        code = main([str(a) for a in argv])
    except Hung:
        pytest.fail(f"modelport {' '.join(map(str, argv))} ran past {SECONDS} s")
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
    out = capsys.readouterr()
    return code, out.out, out.err, time.perf_counter() - started


def refused(result: tuple[int, str, str, float], names: str | Path, dst: Path | None = None) -> str:
    code, _out, err, _seconds = result
    lines = err.strip().splitlines()
    assert code in (1, 2), (code, err)
    errors = [line for line in lines if line.startswith("modelport: error: ")]
    assert len(errors) == 1 and lines[-1] == errors[0], err
    assert "Traceback" not in err and "internal error" not in err, err
    assert str(names) in errors[0], (names, errors[0])
    if dst is not None:
        assert not dst.exists(), dst
        assert leftovers(dst.parent) == []
    return errors[0]


@pytest.fixture(scope="module")
def gguf_file(llama, tmp_path_factory) -> Path:
    from modelport import convert
    out = tmp_path_factory.mktemp("gguf") / "model.gguf"
    convert(llama.path, out, quant="f32")
    return out


def _peak_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def test_gguf_mutations_are_refused(gguf_file, llama, tmp_path, capsys):
    """Every GGUF mutation class, alone (config rebuilt from metadata) and beside the model's own config."""
    data = gguf_file.read_bytes()
    cases = hostile.gguf_mutations(data, seed=1)
    assert len(cases) >= 35
    base = _peak_mb()
    for name, blob in cases.items():
        alone = hostile.write(tmp_path / name / "alone" / "bad.gguf", blob)
        beside = tmp_path / name / "beside"
        shutil.copytree(llama.path, beside, ignore=shutil.ignore_patterns("*.safetensors"))
        hostile.write(beside / "bad.gguf", blob)
        for argv in (["inspect", alone], ["convert", alone, tmp_path / name / "hf"],
                     ["convert", beside / "bad.gguf", tmp_path / name / "out.gguf", "--quant", "q8_0"],
                     ["verify", llama.path, beside / "bad.gguf"]):
            dst = Path(argv[2]) if argv[0] == "convert" else None
            refused(cli(capsys, *argv), "bad.gguf", dst)
        assert beside.joinpath("bad.gguf").read_bytes() == blob, "a source was modified"
    assert _peak_mb() - base < MEGABYTES


def test_safetensors_mutations_are_refused(llama, tmp_path, capsys):
    data = (llama.path / "model.safetensors").read_bytes()
    for name, blob in hostile.safetensors_mutations(data, seed=2).items():
        src = tmp_path / name
        shutil.copytree(llama.path, src, ignore=shutil.ignore_patterns("*.safetensors"))
        hostile.write(src / "model.safetensors", blob)
        for argv in (["inspect", src], ["convert", src, tmp_path / f"{name}.gguf"], ["convert", src, tmp_path / f"{name}-hf"]):
            refused(cli(capsys, *argv), src, Path(argv[2]) if len(argv) > 2 else None)


def test_config_mutations_are_refused(llama, tmp_path, capsys):
    config = json.loads((llama.path / "config.json").read_text())
    for name, text in hostile.config_mutations(config).items():
        src = tmp_path / name.replace("/", "_")
        shutil.copytree(llama.path, src)
        hostile.write(src / "config.json", text)
        for argv in (["inspect", src], ["convert", src, tmp_path / f"{src.name}.gguf"]):
            line = refused(cli(capsys, *argv), "config.json", Path(argv[2]) if len(argv) > 2 else None)
            key = name.split("=")[0]
            if key in hostile.CONFIG_VALUES:
                assert key in line, line


def test_cli_subprocesses_stay_bounded(gguf_file, llama, tmp_path):
    """A sample of the cases through the real command: one line, no traceback, under 10 s and 500 MB."""
    cases = hostile.gguf_mutations(gguf_file.read_bytes(), seed=1)
    for name in ("tokens-array-of-arrays", "block-count-2147483648", "offset-of-another-tensor", "n-tensors-lowered"):
        bad = hostile.write(tmp_path / name / "bad.gguf", cases[name])
        for argv in (["inspect", bad], ["convert", bad, tmp_path / name / "hf"]):
            code, err, seconds, megabytes = _measured(argv, tmp_path / f"{name}-{argv[0]}.err")
            assert code == 1, err
            assert err.strip().count("\n") == 0 and err.startswith("modelport: error: ") and "bad.gguf" in err, err
            assert seconds < SECONDS * 3 and megabytes < MEGABYTES, (name, argv[0], seconds, megabytes)


# The command, reporting its own peak RSS (VmHWM) at exit: a child's ru_maxrss would include the pytest
# process's, which the kernel records when the spawned child execs from its address space.
LAUNCH = ("import atexit, sys\n"
          "report = sys.argv.pop(1)\n"
          "atexit.register(lambda: open(report, 'w').write(next(l.split()[1] for l in open('/proc/self/status')"
          " if l.startswith('VmHWM'))))\n"
          "from modelport.cli import run\n"
          "run()\n")


def _measured(argv: list, err_file: Path) -> tuple[int, str, float, float]:
    """(exit code, stderr, seconds, peak RSS in MB) of one CLI process (a cold start imports torch)."""
    report = err_file.with_suffix(".rss")
    started = time.perf_counter()
    try:
        proc = subprocess.run([sys.executable, "-c", LAUNCH, str(report), *map(str, argv)], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True, timeout=SECONDS * 3)
    except subprocess.TimeoutExpired:
        pytest.fail(f"{argv} hung")
    return proc.returncode, proc.stderr, time.perf_counter() - started, int(report.read_text()) / 1024


def test_gguf_table_lies_are_named(gguf_file, tmp_path, capsys):
    cases = hostile.gguf_mutations(gguf_file.read_bytes(), seed=1)
    expect = {
        "offset-of-another-tensor": "the tensor table lies",
        "type-f32-to-f16-": "the tensor table lies",
        "n-tensors-lowered": "belong to no tensor",
        "block-count-lowered": "is beyond it",
        "tokens-array-of-arrays": "array of arrays",
        "string-not-utf8": "not UTF-8",
        "block-count-2147483648": "block_count",
        "architecture-other-family": "general.architecture",
        "nan-epsilon": "not a finite number",
    }
    for prefix, needle in expect.items():
        name = next(n for n in cases if n.startswith(prefix))
        bad = hostile.write(tmp_path / name / "bad.gguf", cases[name])
        if prefix == "architecture-other-family":       # a config beside it says which family the tensors are
            (bad.parent / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 64,
                                                                 "num_hidden_layers": 2, "num_attention_heads": 4,
                                                                 "intermediate_size": 128, "vocab_size": 400,
                                                                 "max_position_embeddings": 512}))
        assert needle in refused(cli(capsys, "convert", bad, tmp_path / name / "hf"), "bad.gguf"), name


def test_unused_gguf_tensor_fails_unless_allowed(gguf_file, tmp_path, capsys):
    """A tensor nothing maps to is not quietly dropped with a note."""
    import gguf as gguflib
    from gguf_faults import rewrite
    extra = tmp_path / "extra.gguf"
    rewrite(gguf_file, extra)
    reader = gguflib.GGUFReader(extra)
    writer = gguflib.GGUFWriter(tmp_path / "more.gguf", "llama")
    for key, field in reader.fields.items():
        if not key.startswith("GGUF.") and key != "general.architecture":
            vtype = field.types[0]
            writer.add_key_value(key, field.contents(), vtype,
                                 sub_type=field.types[-1] if vtype == gguflib.GGUFValueType.ARRAY else None)
    import numpy as np
    for t in reader.tensors:
        writer.add_tensor(t.name, np.array(t.data), raw_dtype=t.tensor_type)
    writer.add_tensor("blk.0.mystery.weight", np.ones((4, 32), dtype=np.float32))
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    line = refused(cli(capsys, "convert", tmp_path / "more.gguf", tmp_path / "hf"), "more.gguf")
    assert "blk.0.mystery.weight" in line and "--allow-unused" in line
    code, *_ = cli(capsys, "convert", tmp_path / "more.gguf", tmp_path / "hf", "--allow-unused")
    assert code == 0 and (tmp_path / "hf" / "model.safetensors").is_file()


def test_destination_inside_the_source_is_refused_whatever_the_flags(llama, tmp_path, capsys):
    src = tmp_path / "src"
    shutil.copytree(llama.path, src)
    before = {p.name: p.read_bytes() for p in src.iterdir()}
    for argv in (["convert", src, src / "model.safetensors", "--to", "gguf", "--overwrite"],
                 ["convert", src, src / "inner", "--overwrite"],
                 ["convert", src / "model.safetensors", src, "--overwrite"],
                 ["convert", src, src, "--overwrite"],
                 ["convert", src, tmp_path / "out", "--base-model", tmp_path, "--overwrite"]):
        line = refused(cli(capsys, *argv), argv[2])
        assert "a source is never modified" in line
        assert cli(capsys, *argv)[0] == 2
    assert {p.name: p.read_bytes() for p in src.iterdir()} == before


def test_index_paths_and_duplicate_names(llama, tmp_path, capsys):
    from modelport import convert
    sharded = tmp_path / "sharded"
    convert(llama.path, sharded, max_shard_size="100KB")
    index = json.loads((sharded / "model.safetensors.index.json").read_text())
    first = next(iter(index["weight_map"]))
    for label, value in (("absolute", "/etc/passwd"), ("parent", "../escape.safetensors"), ("number", 7)):
        bad = tmp_path / label
        shutil.copytree(sharded, bad)
        edited = {**index, "weight_map": {**index["weight_map"], first: value}}
        (bad / "model.safetensors.index.json").write_text(json.dumps(edited))
        line = refused(cli(capsys, "convert", bad, tmp_path / f"{label}-out"), "model.safetensors.index.json",
                       tmp_path / f"{label}-out")
        assert "weight_map" in line
    twice = tmp_path / "twice"
    shutil.copytree(llama.path, twice)
    shutil.copyfile(twice / "model.safetensors", twice / "copy.safetensors")
    line = refused(cli(capsys, "convert", twice, tmp_path / "twice-out"), "twice")
    assert "model.safetensors" in line and "copy.safetensors" in line


def test_integer_weights_are_refused(llama, tmp_path, capsys):
    import torch
    sd = dict(llama.model.state_dict())
    sd["model.layers.0.mlp.up_proj.weight"] = sd["model.layers.0.mlp.up_proj.weight"].to(torch.int32)
    torch.save(sd, tmp_path / "ints.pth")
    line = refused(cli(capsys, "convert", tmp_path / "ints.pth", tmp_path / "out", "--base-model", llama.path), "ints.pth")
    assert "floating point" in line and "up_proj" in line


def test_quantized_checkpoints_are_refused_by_their_method(llama, tmp_path, capsys):
    """A method modelport does not read is named; one it reads whose weights are not stored its way is corrupt."""
    src = tmp_path / "quantized"
    shutil.copytree(llama.path, src)
    config = json.loads((src / "config.json").read_text())
    for method, says in (("awq", "quantized with 'awq', which modelport does not read"),
                         ("mxfp4", "names mxfp4, but no weight is stored quantized that way")):
        (src / "config.json").write_text(json.dumps({**config, "quantization_config": {"quant_method": method}}))
        line = refused(cli(capsys, "convert", src, tmp_path / "out.gguf"), "config.json", tmp_path / "out.gguf")
        assert says in line


def test_a_huge_tensor_name_is_cut_in_the_message(llama, tmp_path, capsys):
    cases = hostile.safetensors_mutations((llama.path / "model.safetensors").read_bytes())
    src = tmp_path / "named"
    shutil.copytree(llama.path, src)
    hostile.write(src / "model.safetensors", cases["name-100kb"])
    line = refused(cli(capsys, "convert", src, tmp_path / "out"), "named")
    assert len(line) < 2000 and "xxxxx" in line


def test_verify_of_a_corrupt_gguf_is_one_clean_line(gguf_file, llama, tmp_path, capsys):
    cases = hostile.gguf_mutations(gguf_file.read_bytes(), seed=1)
    bad = hostile.write(tmp_path / "bad.gguf", cases["offset-of-another-tensor"])
    assert "the tensor table lies" in refused(cli(capsys, "verify", llama.path, bad), "bad.gguf")


def test_usage_error_with_json_is_one_object(tmp_path):
    run = run_cli("convert", tmp_path / "a", tmp_path / "b", "--bogus-flag", "--json")
    assert run.code == 2
    payload = run.json()
    assert payload["ok"] is False and payload["exit_code"] == 2 and "--bogus-flag" in payload["error"]
    assert run.stderr.strip().splitlines()[-1].startswith("modelport: error: ")


def test_history_never_creates_a_registry(tmp_path):
    where = tmp_path / "no" / "such" / "dir" / "r.sqlite"
    run = run_cli("history", "--registry", where, "--json")
    assert run.code == 0 and run.json()["attempts"] == []
    assert not (tmp_path / "no").exists()


def _big_model(root: Path) -> Path:
    """A model large enough (about 200 MB in float32) that a signal lands while it is being written."""
    from modelport.samples import save_model
    path = root / "big"
    if not (path / "config.json").is_file():
        save_model(path, "llama", hidden_size=512, intermediate_size=1536, num_hidden_layers=12,
                   num_attention_heads=8, num_key_value_heads=4)
    return path


@pytest.fixture(scope="module")
def big_model(tmp_path_factory) -> Path:
    return _big_model(tmp_path_factory.mktemp("big"))


def _signalled(src: Path, dst: Path, sig: int, *extra: str) -> subprocess.CompletedProcess:
    """Run a conversion and send `sig` once its temporary appears (it is then mid-write).

    On a loaded machine the poll can wake after the conversion has already published its output and
    the signal lands on a process that is exiting 0; that run proved nothing, so it is cleaned and
    tried again (three times at most) rather than judged.
    """
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-m", "modelport.cli", "convert", str(src), str(dst), *extra],
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        deadline = time.monotonic() + 120
        while not leftovers(dst.parent) and time.monotonic() < deadline and proc.poll() is None:
            time.sleep(0.002)
        assert proc.poll() is None, f"the conversion ended before it could be signalled: {proc.stderr.read()}"
        proc.send_signal(sig)
        out, err = proc.communicate(timeout=60)
        if proc.returncode != 0:
            return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)
        shutil.rmtree(dst) if dst.is_dir() else dst.unlink()
    raise AssertionError(f"the conversion finished before {sig!r} reached it, three times")


@pytest.mark.parametrize("target", ["out.gguf", "out-hf"])
def test_sigterm_and_sigkill_mid_write(big_model, tmp_path, target):
    dst = tmp_path / target
    proc = _signalled(big_model, dst, signal.SIGTERM, "--json")
    assert proc.returncode == 143, proc.stderr
    assert proc.stderr.strip().splitlines()[-1] == "modelport: interrupted by SIGTERM; nothing was left at the destination"
    assert json.loads(proc.stdout)["exit_code"] == 143
    assert not dst.exists() and leftovers(tmp_path) == []

    proc = _signalled(big_model, dst, signal.SIGKILL)
    assert proc.returncode == -signal.SIGKILL
    assert not dst.exists() and leftovers(tmp_path), "a SIGKILL leaves its temporary (nothing can remove it)"
    assert run_cli("convert", big_model, dst, "--to", "gguf" if target.endswith(".gguf") else "hf").code == 0
    assert dst.exists() and leftovers(tmp_path) == []


def test_sigint_with_json_prints_one_object(big_model, tmp_path):
    proc = _signalled(big_model, tmp_path / "out-hf", signal.SIGINT, "--json")
    assert proc.returncode == 130, proc.stderr
    assert json.loads(proc.stdout) == {"ok": False, "error": "interrupted by SIGINT", "exit_code": 130}
    assert leftovers(tmp_path) == []
    assert os.listdir(tmp_path) == []
