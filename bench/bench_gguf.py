"""Issue 3 benchmark: HF -> GGUF against llama.cpp's convert_hf_to_gguf.py (+ llama-quantize).

Generates bf16 Llama-shaped models with TinyLlama's widths (hidden 2048, ffn 5632, 32 heads, 4 kv
heads, vocab 32000): 22 layers (1.1B parameters) and 9 layers (0.5B), with a small SentencePiece
tokenizer. llama.cpp's converter comes from llama-cpp-python's source distribution, fetched with pip
into bench/out (never committed) and run with its own gguf-py. Everything starts from a warm page
cache and a synced disk (no run pays for the previous one's writeback); wall time is the median of
--repeat runs, peak RSS the largest (GNU time %M).
Run: `.venv/bin/python bench/bench_gguf.py` (about 10 minutes on 2 cores).
"""
from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from common import MODELPORT, best_of, folder_bytes, llama_config, remove, warm, write_hf_model

OUT = Path(__file__).resolve().parent / "out" / "gguf"
QUANTIZE = ("import ctypes, sys, llama_cpp; p = llama_cpp.llama_model_quantize_default_params(); "
            "p.ftype = int(sys.argv[3]); p.nthread = 2; "
            "sys.exit(llama_cpp.llama_model_quantize(sys.argv[1].encode(), sys.argv[2].encode(), ctypes.byref(p)))")
Q4_K_M = 15


def llama_cpp_source() -> Path:
    root = OUT / "llama-cpp-src"
    found = glob.glob(str(root / "llama_cpp_python-*" / "vendor" / "llama.cpp"))
    if found:
        return Path(found[0])
    root.mkdir(parents=True, exist_ok=True)
    subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
                    "llama-cpp-python", "-d", str(root)], check=True)
    with tarfile.open(next(root.glob("llama_cpp_python-*.tar.gz"))) as tar:
        tar.extractall(root, filter="data")
    return Path(glob.glob(str(root / "llama_cpp_python-*" / "vendor" / "llama.cpp"))[0])


def make_model(layers: int) -> Path:
    path = OUT / f"llama-{layers}l"
    if (path / "config.json").exists():
        return path
    from modelport.samples import train_tokenizer
    train_tokenizer("spm", workdir=path)            # tokenizer.model + tokenizer_config.json
    write_hf_model(path, llama_config(2048, 5632, layers, 32, 4, 32000), shard_bytes=2_000_000_000)
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--layers", type=int, nargs="+", default=[22, 9])
    args = parser.parse_args()
    src = llama_cpp_source()
    env = {**os.environ, "PYTHONPATH": str(src / "gguf-py")}
    converter = [sys.executable, str(src / "convert_hf_to_gguf.py")]
    for layers in args.layers:
        model = make_model(layers)
        size = folder_bytes(model)
        warm(model)
        dst = OUT / "out.gguf"
        ref = OUT / "ref.gguf"
        rows = []
        cp = best_of(args.repeat, ["cp", str(next(model.glob("*.safetensors"))), str(dst)], cleanup=dst)
        for quant in ("f16", "q8_0", "q4_k_m"):
            ours = best_of(args.repeat, [*MODELPORT, "convert", str(model), str(dst), "--quant", quant, "--json"],
                           cleanup=dst)
            if quant == "q4_k_m":
                theirs = best_of(args.repeat, [*converter, str(model), "--outfile", str(ref), "--outtype", "f16"],
                                 cleanup=ref, env=env)
                quantize = best_of(args.repeat, [sys.executable, "-c", QUANTIZE, str(ref), str(dst), str(Q4_K_M)],
                                   cleanup=dst)
                label, their_s = "llama.cpp f16 + quantize", theirs.seconds + quantize.seconds
                their_rss = max(theirs.peak_rss_mb, quantize.peak_rss_mb)
            else:
                theirs = best_of(args.repeat, [*converter, str(model), "--outfile", str(ref), "--outtype", quant],
                                 cleanup=ref, env=env)
                label, their_s, their_rss = "convert_hf_to_gguf.py", theirs.seconds, theirs.peak_rss_mb
            rows.append((quant, ours.seconds, ours.peak_rss_mb, label, their_s, their_rss))
            remove(ref)
            remove(dst)
        print(f"\n{layers} layers: {size / 1e9:.2f} GB bf16 safetensors; cp of it {cp.seconds:.2f} s; "
              f"median of {args.repeat}")
        print(f"{'type':7} {'modelport s':>11} {'RSS MB':>7} | {'reference':26} {'s':>6} {'RSS MB':>7} | "
              f"{'time ratio':>10} {'RSS ratio':>9} {'x cp':>5}")
        for quant, s, rss, label, ts, trss in rows:
            print(f"{quant:7} {s:11.2f} {rss:7.0f} | {label:26} {ts:6.2f} {trss:7.0f} | {s / ts:10.2f} "
                  f"{rss / trss:9.2f} {s / cp.seconds:5.1f}")


if __name__ == "__main__":
    main()
