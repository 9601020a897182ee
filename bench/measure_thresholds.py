"""Measure what each GGUF type costs on a model with learned weights, to set verify's thresholds.

Uses the cached tiny Llama trained for a few hundred steps on the bundled text (modelport.samples.
trained_model): random weights make quantization look far worse than it is. For every type, the
conversion runs in llama.cpp against transformers on verify's built-in prompts.
Run: `.venv/bin/python bench/measure_thresholds.py`.
"""
from __future__ import annotations

import tempfile
from pathlib import Path

import modelport
from modelport.formats.gguf.quant_types import FILE_TYPES
from modelport.samples import trained_model
from modelport.verify import Reference, check
from modelport.verify.thresholds import gguf_class

LOOSE = {"min_cosine": -1.0, "mean_kl": 1e9, "max_rel_diff": 1e9, "tokenization_agreement": 0.0}


def main() -> None:
    model = trained_model()
    print(f"model: {model.name} (hidden 256, 4 layers, trained 300 steps)")
    print(f"{'type':8} {'class':9} {'min cos':>9} {'mean cos':>9} {'mean KL':>10} {'max rel':>8} {'top1':>6}")
    reference = Reference(model, None, None)      # transformers runs the source once for every type
    with tempfile.TemporaryDirectory() as tmp:
        for quant in FILE_TYPES:
            out = Path(tmp) / f"{quant}.gguf"
            modelport.convert(model, out, quant=quant)
            m = check(reference, out, thresholds=LOOSE, write_sidecar=False)["metrics"]
            print(f"{quant:8} {gguf_class(out):9} {m['min_cosine']:9.5f} {m['mean_cosine']:9.6f} {m['mean_kl']:10.2e} "
                  f"{m['max_rel_diff']:8.2e} {m['top1_agreement']:6.3f}")


if __name__ == "__main__":
    main()
