"""Issue 3 benchmark: HF -> GGUF against llama.cpp's convert_hf_to_gguf.py (+ llama-quantize).

Generates bf16 Llama-shaped models with TinyLlama's widths (hidden 2048, ffn 5632, 32 heads, 4 kv
heads, vocab 32000): 22 layers (1.1B parameters) and 9 layers (0.5B), with a small SentencePiece
tokenizer. llama.cpp's converter comes from llama-cpp-python's source distribution, fetched with pip
into bench/out (never committed) and run with its own gguf-py. Everything starts from a warm page
cache and a synced disk (no run pays for the previous one's writeback); each round runs every
contender once (ours, the reference, `cp` of the model folder and `cp` followed by fsync of the copies,
the durability our atomic publishing gives), each after a synced disk and a 3 s pause; wall time is
the median over --repeat rounds (the fastest is printed too), peak RSS the largest (GNU time %M).
Run: `.venv/bin/python bench/bench_gguf.py` (about 15 minutes on 2 cores); `--moe` adds a 16-expert
Mixtral-shaped model (1.1 GB), `--layers` with no number leaves the dense ones out.
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
    return _made(OUT / f"llama-{layers}l", llama_config(2048, 5632, layers, 32, 4, 32000))


def make_moe_model() -> Path:
    """Mixtral-shaped, 16 experts of which 2 are used, 12 layers: 0.55B parameters, 1.1 GB bf16, every
    expert's three weights saved apart as checkpoints hold them (stacked into ffn_*_exps on the way)."""
    config = {**llama_config(1024, 768, 12, 16, 4, 32000), "architectures": ["MixtralForCausalLM"],
              "model_type": "mixtral", "num_local_experts": 16, "num_experts_per_tok": 2}
    return _made(OUT / "mixtral-16e", config)


def _made(path: Path, config: dict) -> Path:
    if (path / "config.json").exists():
        return path
    from modelport.samples import train_tokenizer
    train_tokenizer("spm", workdir=path)            # tokenizer.model + tokenizer_config.json
    write_hf_model(path, config, shard_bytes=2_000_000_000)
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--layers", type=int, nargs="*", default=[22, 9])
    parser.add_argument("--moe", action="store_true", help="also the 16-expert Mixtral-shaped model")
    parser.add_argument("--quants", nargs="+", default=["f16", "q8_0", "q4_k_m"])
    args = parser.parse_args()
    src = llama_cpp_source()
    env = {**os.environ, "PYTHONPATH": str(src / "gguf-py")}
    converter = [sys.executable, str(src / "convert_hf_to_gguf.py")]
    models = [make_model(layers) for layers in args.layers] + ([make_moe_model()] if args.moe else [])
    for model in models:
        size = folder_bytes(model)
        warm(model)
        dst, ref, copied = OUT / "out.gguf", OUT / "ref.gguf", OUT / "copied"
        copies = {"cp": Contender(["cp", "-r", str(model), str(copied)], copied),
                  "cp+fsync": Contender(["sh", "-c", 'cp -r "$0" "$1" && sync "$1"/* "$1"', str(model), str(copied)],
                                        copied)}
        rows, fastest = [], []
        for quant in args.quants:
            ours = Contender([*MODELPORT, "convert", str(model), str(dst), "--quant", quant, "--json"], dst)
            # the same command with modelport's caches empty: a new MODELPORT_CACHE_DIR for every run
            cold = Contender(["sh", "-c", 'MODELPORT_CACHE_DIR="$(mktemp -d)" exec "$@"', "sh", *ours.cmd], dst)
            if quant == "q4_k_m":
                two_step = {"f16": Contender([*converter, str(model), "--outfile", str(ref), "--outtype", "f16"],
                                             ref, env),
                            "quantize": Contender([sys.executable, "-c", QUANTIZE, str(ref), str(dst), str(Q4_K_M)],
                                                  dst)}
                m = interleaved(args.repeat, {"ours": ours, "cold": cold, **two_step, **copies})
                label, their_s = "llama.cpp f16 + quantize", m["f16"].seconds + m["quantize"].seconds
                their_rss = max(m["f16"].peak_rss_mb, m["quantize"].peak_rss_mb)
            else:
                theirs = Contender([*converter, str(model), "--outfile", str(ref), "--outtype", quant], ref, env)
                m = interleaved(args.repeat, {"ours": ours, "cold": cold, "theirs": theirs, **copies})
                label, their_s, their_rss = "convert_hf_to_gguf.py", m["theirs"].seconds, m["theirs"].peak_rss_mb
            rows.append((quant, m["ours"].seconds, m["ours"].peak_rss_mb, label, their_s, their_rss,
                         m["cp"].seconds, m["cp+fsync"].seconds))
            rows.append((f"{quant} empty cache", m["cold"].seconds, m["cold"].peak_rss_mb, label, their_s, their_rss,
                         m["cp"].seconds, m["cp+fsync"].seconds))
            fastest.append((quant, m["ours"].fastest, m["cp"].fastest, m["cp+fsync"].fastest))
        print(f"\n{model.name}: {size / 1e9:.2f} GB bf16 safetensors; median of {args.repeat} rounds, each "
              f"running every contender once")
        print(f"{'type':19} {'modelport s':>11} {'RSS MB':>7} | {'reference':26} {'s':>6} {'RSS MB':>7} | "
              f"{'time ratio':>10} {'RSS ratio':>9} | {'cp s':>5} {'x cp':>5} {'cp+fsync s':>10} {'x cp+fsync':>10}")
        for quant, s, rss, label, ts, trss, cps, syncs in rows:
            print(f"{quant:19} {s:11.2f} {rss:7.0f} | {label:26} {ts:6.2f} {trss:7.0f} | {s / ts:10.2f} "
                  f"{rss / trss:9.2f} | {cps:5.2f} {s / cps:5.1f} {syncs:10.2f} {s / syncs:10.1f}")
        print("fastest of the rounds: " + "; ".join(f"{quant} {s:.2f} s (cp {cps:.2f}, cp+fsync {syncs:.2f})"
                                                    for quant, s, cps, syncs in fastest))


if __name__ == "__main__":
    main()
