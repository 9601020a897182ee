"""Issue 18 peer run: `modelport verify --corpus` against llama.cpp's own `llama-perplexity --kl-divergence`.

Both score the same GGUF files on the same text with the same context size, in llama.cpp, f32 KV
cache: the base is an f16 GGUF of the trained tiny Llama (the threshold fixture), the results its
q8_0, q4_k_m and q2_k. Both tokenize the text with that GGUF's vocabulary, so they see the same ids.
llama-perplexity is built here with cmake from the llama-cpp-python sdist's llama.cpp (tools/perplexity),
once, into ~/.cache/modelport-bench/llama-build (a few minutes on 2 cores).
Run: `.venv/bin/python bench/bench_perplexity.py [--ctx 128] [--corpus FILE]`.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import modelport
from modelport.samples import corpus_text, trained_model

ROOT = Path(__file__).resolve().parents[1]
BUILD = Path.home() / ".cache" / "modelport-bench" / "llama-build"
CMAKE_ARGS = ["-DCMAKE_BUILD_TYPE=Release", "-DGGML_NATIVE=OFF", "-DGGML_AVX2=ON", "-DGGML_FMA=ON", "-DGGML_F16C=ON",
              "-DGGML_BMI2=ON", "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF",
              "-DLLAMA_BUILD_SERVER=OFF"]
QUANTS = ("q8_0", "q4_k_m", "q2_k")
# llama-perplexity's closing lines -> our --json keys
# (printed with 6 decimals: tiny values carry few digits)
LINES = {"Mean PPL(Q)": "ppl_converted", "Mean PPL(base)": "ppl_source", "Mean ln(PPL(Q)/PPL(base))": "ln_ppl_ratio",
         "Mean    KLD": "kld_mean", "Median  KLD": "kld_median", "99.0%   KLD": "kld_p99", "Maximum KLD": "kld_max",
         "RMS Δp": "dp_rms", "Same top p": "same_top1"}
PERCENT = {"dp_rms", "same_top1"}


def llama_cpp_source() -> Path:
    found = sorted((ROOT / ".venv" / "src").glob("llama_cpp_python-*/vendor/llama.cpp"))
    if not found:
        sys.exit("no llama.cpp source in .venv/src (make install puts the llama-cpp-python sdist there)")
    return found[-1]


def perplexity_tool() -> Path:
    tool = BUILD / "bin" / "llama-perplexity"
    if not tool.exists():
        subprocess.run(["cmake", "-S", str(llama_cpp_source()), "-B", str(BUILD), *CMAKE_ARGS], check=True)
        subprocess.run(["cmake", "--build", str(BUILD), "--target", "llama-perplexity", "-j", "2"], check=True)
    return tool


def parse(output: str) -> dict[str, float]:
    out = {}
    for line in output.splitlines():
        label, _, rest = line.partition(":")
        key = LINES.get(label.strip())
        if key is not None and rest.strip():
            value = float(re.match(r"\s*(-?[\d.]+)", rest).group(1))
            out[key] = value / 100 if key in PERCENT else value
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--ctx", type=int, default=128)
    parser.add_argument("--corpus", default="training",
                        help="text file, 'builtin', or 'training' (the fixture's own training text, 4 times: default)")
    parser.add_argument("--flash-attention", action="store_true", help="run llama-perplexity with -fa on")
    args = parser.parse_args()
    tool = perplexity_tool()
    source = trained_model()
    with tempfile.TemporaryDirectory() as work:
        work = Path(work)
        corpus = work / "corpus.txt"
        if args.corpus == "builtin":
            from importlib import resources
            corpus.write_text(resources.files("modelport").joinpath("data", "quality.txt").read_text())
        elif args.corpus == "training":
            corpus.write_text(corpus_text() * 4)
        else:
            corpus.write_text(Path(args.corpus).read_text())
        base = work / "f16.gguf"
        modelport.convert(source, base, quant="f16")
        # flash attention off: llama-perplexity turns it on by default, llama-cpp-python (modelport's runtime)
        # does not, and its different summation order alone moves q8_0's mean KLD by ~3 % on this model
        fa = ["-fa", "on" if args.flash_attention else "off"]
        common = ["-c", str(args.ctx), "-b", str(args.ctx), "-t", "2", "-ctk", "f32", "-ctv", "f32", *fa]
        subprocess.run([str(tool), "-m", str(base), "-f", str(corpus), "--kl-divergence-base", str(work / "base.kld"),
                        *common], check=True, capture_output=True)
        print(f"base {base.name} of {source.name}; corpus {args.corpus}; ctx {args.ctx}; llama-perplexity {' '.join(fa)}")
        print(f"{'type':8} {'statistic':14} {'modelport':>12} {'llama.cpp':>12} {'rel diff':>9}")
        for quant in QUANTS:
            result = work / f"{quant}.gguf"
            modelport.convert(source, result, quant=quant)
            peer = subprocess.run([str(tool), "-m", str(result), "--kl-divergence-base", str(work / "base.kld"),
                                   "--kl-divergence", *common], check=True, capture_output=True, text=True)
            theirs = parse(peer.stdout + peer.stderr)
            run = subprocess.run([sys.executable, "-m", "modelport.cli", "verify", str(base), str(result), "--corpus",
                                  str(corpus), "--ctx", str(args.ctx), "--tokens", str(10 ** 9), "--json",
                                  "--threshold", "min_cosine=0", "--threshold", "mean_kl=100"],
                                 capture_output=True, text=True)
            ours = json.loads(run.stdout)["quality"]
            for key in LINES.values():
                a, b = ours[key], theirs.get(key)
                rel = abs(a - b) / abs(b) if b else float("nan")
                print(f"{quant:8} {key:14} {a:12.6g} {b if b is not None else float('nan'):12.6g} {rel:9.2%}")
            print(f"{quant:8} {'positions':14} {ours['positions']:12d}")


if __name__ == "__main__":
    main()
