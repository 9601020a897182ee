"""Issue 26: the whole-model and the layer-major reference on one model that fits, side by side.

    .venv/bin/python bench/bench_verify_paths.py SOURCE CONVERTED [--ctx 64] [--tokens 32768] [--rounds 1]
        [--max-memory SIZE]

Each path runs in a process of its own (`verify SOURCE CONVERTED --corpus builtin`, layer-major by a
--max-memory one byte under the whole-model estimate, or SIZE), the two paths one after the other in each round
(this machine's speed drifts over minutes: each round lets both meet the same drift). Printed per run:
wall and CPU seconds (user + system: what a shared machine does not inflate), peak RSS (GNU time,
mapped files' pages included), the sampled peak of anonymous memory and the verdict's max |difference|;
then the median of each path and the layer-major / whole-model ratio.
"""
from __future__ import annotations

import argparse
import json
import statistics
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
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--max-memory", help="the layer-major run's budget (default: one byte under the whole model)")
    args = parser.parse_args()
    under = args.max_memory or str(whole_model_bytes(load(args.source, ReadOptions())) - 1)
    base = [*MODELPORT, "verify", str(args.source), str(args.converted), "--corpus", "builtin", "--ctx", args.ctx,
            "--tokens", args.tokens, "--json"]
    paths = (("whole-model", []), ("layer-major", ["--max-memory", under]))
    runs: dict[str, list] = {label: [] for label, _ in paths}
    print("| round | reference path | wall s | CPU s | peak RSS MB | peak anonymous MB | max abs diff | corpus chunks |")
    print("|---|---|---|---|---|---|---|---|")
    for n in range(1, args.rounds + 1):
        for label, extra in paths:
            m = measure(base + extra, allow_failure=True)
            report = json.loads(m.stdout)
            report = report.get("report") or report      # a failed check nests its report
            assert report["memory"]["source_path"] == label, report["memory"]
            runs[label].append(m)
            print(f"| {n} | {label} | {m.seconds:.1f} | {m.cpu_seconds:.1f} | {m.peak_rss_mb:.0f} | "
                  f"{m.peak_anon_mb:.0f} | {report['metrics']['max_abs_diff']:.2g} | {report['quality']['chunks']} |",
                  flush=True)
    median = {label: (statistics.median(m.seconds for m in ms), statistics.median(m.cpu_seconds for m in ms))
              for label, ms in runs.items()}
    (w_wall, w_cpu), (l_wall, l_cpu) = median["whole-model"], median["layer-major"]
    print(f"\nmedian of {args.rounds}: whole-model {w_wall:.1f} s wall / {w_cpu:.1f} s CPU, layer-major "
          f"{l_wall:.1f} s / {l_cpu:.1f} s CPU: layer-major costs {l_wall / w_wall:.2f}x wall, {l_cpu / w_cpu:.2f}x CPU")


if __name__ == "__main__":
    main()
