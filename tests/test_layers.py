"""The layer contracts in pyproject.toml (import-linter): lower layers never import higher ones, no cycles."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_linter_contracts_hold():
    lint = Path(sys.executable).with_name("lint-imports")
    run = subprocess.run([str(lint), "--config", str(ROOT / "pyproject.toml")], capture_output=True, text=True,
                         cwd=ROOT)
    assert run.returncode == 0, run.stdout + run.stderr
    assert "2 kept, 0 broken" in run.stdout, run.stdout


def test_starting_the_package_imports_no_heavy_library():
    """`import modelport` and `--help` never import torch, transformers, onnx, llama_cpp or numpy."""
    code = ("import sys, modelport, modelport.cli\n"
            "modelport.cli.build_parser()\n"
            "heavy = [m for m in ('torch', 'transformers', 'onnx', 'llama_cpp', 'numpy') if m in sys.modules]\n"
            "print(','.join(heavy))")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert run.stdout.strip() == ""


def test_hf_to_gguf_and_inspect_never_import_torch(llama, tmp_path):
    """The numpy path: safetensors -> GGUF (a quantized type), GGUF -> GGUF and inspect, through the API and
    the command's own entry, and verify of one GGUF against another (both in llama.cpp), with an empty
    cache, without torch or transformers ever imported."""
    cli = "from modelport.cli import main\n" + "".join(
        f"assert main({argv!r}) in (0, None)\n" for argv in (
            ["convert", str(llama.path), str(tmp_path / "c.gguf"), "--quant", "q8_0"],
            ["convert", str(tmp_path / "c.gguf"), str(tmp_path / "d.gguf"), "--quant", "q4_k_m"],
            ["inspect", str(tmp_path / "d.gguf")]))
    code = ("import sys\n"
            "from modelport import convert, inspect\n"
            f"convert({str(llama.path)!r}, {str(tmp_path / 'm.gguf')!r}, quant='q8_0')\n"
            f"inspect({str(llama.path)!r}); inspect({str(tmp_path / 'm.gguf')!r})\n"
            f"{cli}"
            "from modelport.verify import verify\n"
            f"verify({str(tmp_path / 'c.gguf')!r}, {str(tmp_path / 'd.gguf')!r}, write_sidecar=False, "
            "thresholds={'min_cosine': 0, 'mean_kl': 100, 'max_rel_diff': 100})\n"
            "print('heavy:' + ','.join(m for m in ('torch', 'transformers') if m in sys.modules))")
    env = {**__import__("os").environ, "MODELPORT_CACHE_DIR": str(tmp_path / "cache")}
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env)
    assert run.returncode == 0, run.stderr
    assert run.stdout.strip().splitlines()[-1] == "heavy:" and (tmp_path / "d.gguf").stat().st_size > 0
