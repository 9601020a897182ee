"""Issue 26: the whole-model and the layer-major reference on one model that fits, side by side.

    .venv/bin/python bench/bench_verify_paths.py SOURCE CONVERTED [--ctx 64] [--tokens 32768]

Each path runs in a process of its own (`verify SOURCE CONVERTED --corpus builtin`, layer-major by a
--max-memory one byte under the whole-model estimate); printed: wall and CPU seconds (user + system:
what a shared machine does not inflate), peak RSS (GNU time) and the verdict's max |difference|.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from common import MODELPORT, measure

from modelport.formats import ReadOptions, load
from modelport.runtimes.layerwise import whole_model_bytes


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("source", type=Path)
    parser.add_argument("converted", type=Path)
    parser.add_argument("--ctx", default="64")
    parser.add_argument("--tokens", default="32768")
    args = parser.parse_args()
    under = whole_model_bytes(load(args.source, ReadOptions())) - 1
    base = [*MODELPORT, "verify", str(args.source), str(args.converted), "--corpus", "builtin", "--ctx", args.ctx,
            "--tokens", args.tokens, "--json"]
    print("| reference path | wall s | CPU s | peak RSS MB | max abs diff | corpus chunks |")
    print("|---|---|---|---|---|---|")
    for label, extra in (("whole-model", []), ("layer-major", ["--max-memory", str(under)])):
        m = measure(base + extra, allow_failure=True)
        report = json.loads(m.stdout)
        report = report.get("report", report)
        assert report["memory"]["source_path"] == label, report["memory"]
        print(f"| {label} | {m.seconds:.1f} | {m.cpu_seconds:.1f} | {m.peak_rss_mb:.0f} | "
              f"{report['metrics']['max_abs_diff']:.2g} | {report['quality']['chunks']} |")


if __name__ == "__main__":
    main()
