"""Issue 16 benchmark: how fast the commands that do no conversion answer, whole process.

Each command runs --repeat times after one unmeasured run (so the page cache holds Python and the
package); wall time is the median, peak RSS the largest (GNU time %M). `inspect` reads the 0.5B
benchmark model of bench_gguf.py (1.05 GB bf16 in shards), made first when it is missing. The
registry and cache are fresh folders, so `history` and `cache ls` answer for an empty service.
Run: `.venv/bin/python bench/bench_startup.py`.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
from pathlib import Path

from bench_gguf import make_model
from common import measure

MODELPORT = [str(Path(sys.executable).parent / "modelport")]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    model = make_model(9)
    with tempfile.TemporaryDirectory() as home:
        env = {**os.environ, "MODELPORT_CACHE_DIR": f"{home}/cache", "MODELPORT_REGISTRY": f"{home}/registry.sqlite", "HOME": home}
        commands = {
            "python -c 'import modelport'": [sys.executable, "-c", "import modelport"],
            "python -c 'pass' (the interpreter alone)": [sys.executable, "-c", "pass"],
            "modelport --help": [*MODELPORT, "--help"],
            "modelport history": [*MODELPORT, "history"],
            "modelport cache ls": [*MODELPORT, "cache", "ls"],
            f"modelport inspect <0.5B model, {sum(p.stat().st_size for p in model.iterdir()) / 1e9:.2f} GB>":
                [*MODELPORT, "inspect", str(model)],
            "python -c 'import torch' (for scale)": [sys.executable, "-c", "import torch"],
        }
        print(f"whole process, median of {args.repeat} runs after one unmeasured run; peak RSS the largest")
        print(f"{'command':58} {'median s':>8} {'fastest s':>9} {'peak RSS MB':>11}")
        for label, cmd in commands.items():
            measure(cmd, env)
            runs = [measure(cmd, env) for _ in range(args.repeat)]
            print(f"{label:58} {statistics.median(r.seconds for r in runs):8.3f} "
                  f"{min(r.seconds for r in runs):9.3f} {max(r.peak_rss_mb for r in runs):11.0f}")


if __name__ == "__main__":
    main()
