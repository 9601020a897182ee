"""Issue 3 benchmark: HF -> GGUF against llama.cpp's convert_hf_to_gguf.py (+ llama-quantize).

Generates bf16 Llama-shaped models with TinyLlama's widths (hidden 2048, ffn 5632, 32 heads, 4 kv
heads, vocab 32000): 22 layers (1.1B parameters) and 9 layers (0.5B), with a small SentencePiece
tokenizer. llama.cpp's converter comes from llama-cpp-python's source distribution, fetched with pip
into bench/out (never committed) and run with its own gguf-py. Everything starts from a warm page
cache and a synced disk (no run pays for the previous one's writeback); each round runs every
contender once (ours, the reference, `cp` of the model folder and `cp` followed by fsync of the copies,
the durability our atomic publishing gives), each after a synced disk and a 3 s pause; wall time is
the median over --repeat rounds (the fastest is printed too), peak RSS the largest (GNU time %M).
Run: `.venv/bin/python bench/bench_gguf.py` (about 15 minutes on 2 cores).
"""
from __future__ import annotations

import argparse
import glob
import os
import subprocess
import sys
import tarfile
from pathlib import Path

from common import MODELPORT, Contender, folder_bytes, interleaved, llama_config, warm, write_hf_model

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
        dst, ref, copied = OUT / "out.gguf", OUT / "ref.gguf", OUT / "copied"
        copies = {"cp": Contender(["cp", "-r", str(model), str(copied)], copied),
                  "cp+fsync": Contender(["sh", "-c", 'cp -r "$0" "$1" && sync "$1"/* "$1"', str(model), str(copied)],
                                        copied)}
        rows, fastest = [], []
        for quant in ("f16", "q8_0", "q4_k_m"):
            ours = Contender([*MODELPORT, "convert", str(model), str(dst), "--quant", quant, "--json"], dst)
            if quant == "q4_k_m":
                two_step = {"f16": Contender([*converter, str(model), "--outfile", str(ref), "--outtype", "f16"],
                                             ref, env),
                            "quantize": Contender([sys.executable, "-c", QUANTIZE, str(ref), str(dst), str(Q4_K_M)],
                                                  dst)}
                m = interleaved(args.repeat, {"ours": ours, **two_step, **copies})
                label, their_s = "llama.cpp f16 + quantize", m["f16"].seconds + m["quantize"].seconds
                their_rss = max(m["f16"].peak_rss_mb, m["quantize"].peak_rss_mb)
            else:
                theirs = Contender([*converter, str(model), "--outfile", str(ref), "--outtype", quant], ref, env)
                m = interleaved(args.repeat, {"ours": ours, "theirs": theirs, **copies})
                label, their_s, their_rss = "convert_hf_to_gguf.py", m["theirs"].seconds, m["theirs"].peak_rss_mb
            rows.append((quant, m["ours"].seconds, m["ours"].peak_rss_mb, label, their_s, their_rss,
                         m["cp"].seconds, m["cp+fsync"].seconds))
            fastest.append((quant, m["ours"].fastest, m["cp"].fastest, m["cp+fsync"].fastest))
        print(f"\n{layers} layers: {size / 1e9:.2f} GB bf16 safetensors; median of {args.repeat} rounds, each "
              f"running every contender once")
        print(f"{'type':7} {'modelport s':>11} {'RSS MB':>7} | {'reference':26} {'s':>6} {'RSS MB':>7} | "
              f"{'time ratio':>10} {'RSS ratio':>9} | {'cp s':>5} {'x cp':>5} {'cp+fsync s':>10} {'x cp+fsync':>10}")
        for quant, s, rss, label, ts, trss, cps, syncs in rows:
            print(f"{quant:7} {s:11.2f} {rss:7.0f} | {label:26} {ts:6.2f} {trss:7.0f} | {s / ts:10.2f} "
                  f"{rss / trss:9.2f} | {cps:5.2f} {s / cps:5.1f} {syncs:10.2f} {s / syncs:10.1f}")
        print("fastest of the rounds: " + "; ".join(f"{quant} {s:.2f} s (cp {cps:.2f}, cp+fsync {syncs:.2f})"
                                                    for quant, s, cps, syncs in fastest))


if __name__ == "__main__":
    main()
