"""Byte-for-byte comparison of two modelport checkouts' outputs on the benchmark models.

A refactor that must not change outputs (the layer reshaping, the torch-free conversion path) is
checked here: each checkout converts the same generated bf16 Llama-shaped model (bench_gguf.py's, 9
layers by default) to GGUF f16, q8_0 and q4_k_m and to HF float16 and bfloat16, and every output
file's sha256 is compared. The other checkout runs from its own `src/` through PYTHONPATH, in this
project's environment.
Run: `.venv/bin/python bench/compare_outputs.py --old ../other-checkout`.
"""
from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

from bench_gguf import make_model

OUT = Path(__file__).resolve().parent / "out" / "compare"
HERE = Path(__file__).resolve().parent.parent
TARGETS = {"f16.gguf": ["--quant", "f16"], "q8_0.gguf": ["--quant", "q8_0"], "q4_k_m.gguf": ["--quant", "q4_k_m"],
           "hf-float16": ["--dtype", "float16"], "hf-bfloat16": ["--dtype", "bfloat16"]}


def digests(path: Path) -> dict[str, str]:
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    out = {}
    for f in files:
        with open(f, "rb") as fh:
            out[str(f.relative_to(path.parent))] = hashlib.file_digest(fh, "sha256").hexdigest()
    return out


def convert(checkout: Path, model: Path, dst: Path, flags: list[str]) -> dict[str, str]:
    env = {**os.environ, "PYTHONPATH": str(checkout / "src"), "MODELPORT_CACHE_DIR": str(OUT / "cache")}
    subprocess.run([sys.executable, "-m", "modelport.cli", "convert", str(model), str(dst), *flags], check=True,
                   env=env, stdout=subprocess.DEVNULL)
    return digests(dst)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--old", type=Path, required=True, help="the other checkout (its src/ is imported)")
    parser.add_argument("--new", type=Path, default=HERE)
    parser.add_argument("--layers", type=int, default=9)
    args = parser.parse_args()
    model = make_model(args.layers)
    same = True
    for name, flags in TARGETS.items():
        results = []
        for label, checkout in (("old", args.old), ("new", args.new)):
            dst = OUT / label / name
            shutil.rmtree(dst.parent, ignore_errors=True)
            dst.parent.mkdir(parents=True)
            results.append(convert(checkout.resolve(), model, dst, flags))
        identical = results[0] == results[1]
        same &= identical
        print(f"{name:12} {'identical' if identical else 'DIFFERENT'} ({len(results[0])} files)")
        if not identical:
            for key in sorted(set(results[0]) | set(results[1])):
                if results[0].get(key) != results[1].get(key):
                    print(f"  {key}: {results[0].get(key)} != {results[1].get(key)}")
    shutil.rmtree(OUT, ignore_errors=True)
    sys.exit(0 if same else 1)


if __name__ == "__main__":
    main()
