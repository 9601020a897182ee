"""Issue 27 benchmark: importance-matrix quantization in one command against llama.cpp's three tools.

Agreement: `modelport convert SRC out.gguf --quant iq4_xs --imatrix-corpus TEXT --save-imatrix F` against
`llama-imatrix -m f16.gguf -f TEXT -c CTX` on an F16 GGUF of the same model: the tensors each has, and
per tensor the cosine between the two importance vectors (per expert, flattened), for the trained tiny
Llama (ctx 64) and the 0.5B benchmark model (ctx 512).

Time, on the 0.5B benchmark model of bench_gguf.py (bf16 Llama-shaped, 9 layers, TinyLlama widths,
random weights, 1.05 GB): the one command against convert_hf_to_gguf.py --outtype f16, then
llama-imatrix, then llama-quantize --imatrix, side by side with the same text and ctx (interleaved
rounds, a synced disk and a pause before each run: bench/common.py). llama.cpp's tools are built
once by tests/llama_tools.py. Run: `.venv/bin/python bench/bench_imatrix.py [--repeat 3]`.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from importlib import resources
from pathlib import Path

import numpy as np
from bench_gguf import llama_cpp_source, make_model
from common import MODELPORT, Contender, interleaved, warm

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from llama_tools import llama_tool  # noqa: E402

from modelport.formats.gguf import imatrix as imatrix_mod  # noqa: E402

OUT = Path(__file__).resolve().parent / "out" / "imatrix"


def corpus() -> Path:
    """The builtin calibration text (modelport's data/quality.txt), as a file both sides read."""
    OUT.mkdir(parents=True, exist_ok=True)
    path = OUT / "calibration.txt"
    path.write_text(resources.files("modelport").joinpath("data", "quality.txt").read_text(encoding="utf-8"))
    return path


def agreement(model: Path, text: Path, ctx: int) -> dict:
    with tempfile.TemporaryDirectory(dir=OUT) as work:
        work = Path(work)
        ours = work / "ours.imatrix.gguf"
        subprocess.run([*MODELPORT, "convert", str(model), str(work / "out.gguf"), "--quant", "iq4_xs",
                        "--imatrix-corpus", str(text), "--imatrix-ctx", str(ctx), "--save-imatrix", str(ours)],
                       check=True, capture_output=True)
        subprocess.run([*MODELPORT, "convert", str(model), str(work / "f16.gguf"), "--quant", "f16"], check=True,
                       capture_output=True)
        subprocess.run([llama_tool("llama-imatrix"), "-m", str(work / "f16.gguf"), "-f", str(text), "-o",
                        str(work / "theirs.gguf"), "-c", str(ctx), "-t", "2", "--no-ppl"], check=True,
                       capture_output=True)
        a, b = imatrix_mod.read(ours), imatrix_mod.read(work / "theirs.gguf")
    cos = {}
    for name in sorted(set(a.entries) & set(b.entries)):
        x, y = a.importance(name).reshape(-1), b.importance(name).reshape(-1)
        cos[name] = float(np.dot(x, y) / np.linalg.norm(x) / np.linalg.norm(y))
    return {"ours_only": sorted(set(a.entries) - set(b.entries)), "theirs_only": sorted(set(b.entries) - set(a.entries)),
            "tensors": len(cos), "min_cos": min(cos.values()), "median_cos": float(np.median(list(cos.values()))),
            "worst": min(cos, key=cos.get), "chunks": (a.chunk_count, b.chunk_count),
            "counts_equal": all(np.array_equal(a.entries[n].counts, b.entries[n].counts) for n in cos)}


def timing(model: Path, text: Path, ctx: int, quant: str, repeat: int) -> dict:
    src = llama_cpp_source()
    env = {**os.environ, "PYTHONPATH": str(src / "gguf-py")}
    f16, imat, ours_out, theirs_out = OUT / "f16.gguf", OUT / "imatrix.gguf", OUT / "ours.gguf", OUT / "theirs.gguf"
    contenders = {
        "one command": Contender([*MODELPORT, "convert", str(model), str(ours_out), "--quant", quant,
                                  "--imatrix-corpus", str(text), "--imatrix-ctx", str(ctx)], ours_out),
        "convert_hf_to_gguf f16": Contender([sys.executable, str(src / "convert_hf_to_gguf.py"), str(model),
                                             "--outfile", str(f16), "--outtype", "f16"], f16, env),
        "llama-imatrix": Contender([str(llama_tool("llama-imatrix")), "-m", str(f16), "-f", str(text), "-o",
                                    str(imat), "-c", str(ctx), "-t", "2", "--no-ppl"], imat),
        "llama-quantize": Contender([str(llama_tool("llama-quantize")), "--imatrix", str(imat), str(f16),
                                     str(theirs_out), quant.upper(), "2"], theirs_out),
    }
    m = interleaved(repeat, contenders)
    tools = ("convert_hf_to_gguf f16", "llama-imatrix", "llama-quantize")
    three, three_cpu = sum(m[k].seconds for k in tools), sum(m[k].cpu_seconds for k in tools)
    for path in (f16, imat):
        path.unlink(missing_ok=True)
    return {"seconds": {k: round(v.seconds, 2) for k, v in m.items()},
            "rss_mb": {k: round(v.peak_rss_mb) for k, v in m.items()},
            "cpu_seconds": {k: round(v.cpu_seconds, 2) for k, v in m.items()},
            "three_tools": round(three, 2), "ratio": round(m["one command"].seconds / three, 3),
            "cpu_ratio": round(m["one command"].cpu_seconds / three_cpu, 3)}


def bits_per_weight(model: Path, quants: list[str]) -> dict[str, float]:
    """Tensor bytes x 8 / parameters of each type's file for `model` (with an imatrix: the types whose
    mix depends on one take those choices), from the writer's plan: the sizes the file will have."""
    from modelport import load
    from modelport.architectures import spec_for
    from modelport.architectures.hparams import hparams
    from modelport.formats.gguf.writer import mapping_for, plan
    bundle = load(model)
    hp = hparams(bundle.config, spec_for(bundle.config).tie_default)
    out = {}
    for quant in quants:
        planned = plan(bundle, mapping_for(bundle), hp, quant, has_imatrix=True)
        out[quant] = sum(p.nbytes for p in planned) * 8 / sum(int(np.prod(p.shape)) for p in planned)
    return out


def quality(quants: list[str]) -> list[tuple]:
    """Mean KLD (verify --corpus, ctx 64) of the trained tiny Llama's files without and with an imatrix
    computed over the first half of the builtin text, scored on the second half."""
    import json

    from modelport.samples import trained_model
    src = trained_model()
    text = resources.files("modelport").joinpath("data", "quality.txt").read_text(encoding="utf-8")
    rows = []
    with tempfile.TemporaryDirectory(dir=OUT) as work:
        work = Path(work)
        (work / "calibrate.txt").write_text(text[: len(text) // 2])
        (work / "score.txt").write_text(text[len(text) // 2:])

        def kld(out: Path) -> dict:
            subprocess.run([*MODELPORT, "verify", str(src), str(out), "--corpus", str(work / "score.txt"),
                            "--ctx", "64", "--json"], capture_output=True)     # exit 1 past its class's bounds
            q = json.loads(Path(f"{out}.verify.json").read_text())["quality"]
            return {k: q[k] for k in ("kld_mean", "kld_p99", "same_top1")}

        for quant in quants:
            blind = {}
            if quant not in ("iq2_xxs", "iq2_xs", "iq1_s", "iq1_m", "iq2_s", "iq2_m", "iq3_xxs", "iq3_xs", "q2_k_s"):
                subprocess.run([*MODELPORT, "convert", str(src), str(work / "blind.gguf"), "--quant", quant,
                                "--overwrite"], check=True, capture_output=True)
                blind = kld(work / "blind.gguf")
            subprocess.run([*MODELPORT, "convert", str(src), str(work / "informed.gguf"), "--quant", quant,
                            "--imatrix-corpus", str(work / "calibrate.txt"), "--imatrix-ctx", "64", "--overwrite"],
                           check=True, capture_output=True)
            rows.append((quant, blind, kld(work / "informed.gguf")))
    return rows


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--quant", default="iq4_xs")
    parser.add_argument("--ctx", type=int, default=512)
    parser.add_argument("--skip-time", action="store_true")
    parser.add_argument("--bpw", action="store_true", help="only print bits per weight of every type")
    parser.add_argument("--quality", nargs="*", help="only print mean KLD without/with an imatrix for these types")
    args = parser.parse_args()
    from modelport.formats.gguf.quant_types import FILE_TYPES
    from modelport.samples import trained_model
    text = corpus()
    model = make_model(9)
    if args.quality is not None:
        for quant, blind, informed in quality(args.quality or ["q4_k_m", "q3_k_m", "iq4_xs", "iq2_xxs"]):
            print(f"{quant:8} without: {blind or 'refused (needs an imatrix)'}  with: {informed}")
        return
    if args.bpw:
        for quant, bpw in bits_per_weight(model, list(FILE_TYPES)).items():
            print(f"{quant:8} {bpw:6.2f}")
        return
    warm(model)
    for label, path, ctx in (("trained tiny Llama", trained_model(), 64), ("0.5B benchmark model", model, args.ctx)):
        a = agreement(path, text, ctx)
        print(f"agreement, {label} (ctx {ctx}): {a['tensors']} tensors on both sides (only ours: {a['ours_only']}, "
              f"only llama-imatrix: {a['theirs_only']}); cosine min {a['min_cos']:.6f} ({a['worst']}), median "
              f"{a['median_cos']:.6f}; chunks {a['chunks']}; counts equal: {a['counts_equal']}")
    if not args.skip_time:
        t = timing(model, text, args.ctx, args.quant, args.repeat)
        print(f"time, 0.5B, {args.quant}, ctx {args.ctx}, median of {args.repeat} rounds: {t['seconds']} s; "
              f"peak RSS MB {t['rss_mb']}; three tools {t['three_tools']} s; one command / three tools = {t['ratio']}; "
              f"CPU s (user + system) {t['cpu_seconds']}, ratio {t['cpu_ratio']}")


if __name__ == "__main__":
    main()
