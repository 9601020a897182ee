"""Issue 2 benchmark: a ~1 GB bf16 sharded HF model and an FSDP .pth of it, converted to HF.

Prints wall time and peak RSS of `modelport convert` next to `cp` of the same bytes, all from a
warm page cache (each input is read once first), run side by side in rounds (common.interleaved).
Run: `.venv/bin/python bench/bench_hf.py`.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import torch
from safetensors import safe_open

from common import MODELPORT, Contender, folder_bytes, interleaved, llama_config, warm, write_hf_model

OUT = Path(__file__).resolve().parent / "out" / "hf"


def fsdp_pth(model_dir: Path, path: Path) -> None:
    state = {}
    for shard in sorted(model_dir.glob("*.safetensors")):
        with safe_open(shard, "pt") as f:
            for k in f.keys():
                state["_fsdp_wrapped_module." + k] = f.get_tensor(k).clone()
    torch.save({"model": state, "optimizer": {"state": {}}, "step": 1000}, path)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=9, help="9 layers of TinyLlama's shape is ~1.05 GB bf16")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    OUT.mkdir(parents=True, exist_ok=True)
    src = OUT / "src-hf"
    pth = OUT / "fsdp" / "checkpoint-1000.pth"
    if not src.exists():
        write_hf_model(src, llama_config(2048, 5632, args.layers, 32, 4, 32000), shard_bytes=400_000_000)
    if not pth.exists():
        pth.parent.mkdir(parents=True, exist_ok=True)
        fsdp_pth(src, pth)
    size = folder_bytes(src)
    print(f"model: {args.layers} layers, {size / 1e9:.2f} GB bf16 in {len(list(src.glob('*.safetensors')))} shards; "
          f"fsdp .pth {pth.stat().st_size / 1e9:.2f} GB; median of {args.repeat} rounds (each contender once per "
          f"round, 3 s pause before each run), warm page cache")
    rows = []
    for label, source, extra in (("sharded safetensors -> HF", src, []),
                                 ("FSDP .pth -> HF", pth, ["--base-model", str(src)])):
        warm(source)
        dst = OUT / "dst"
        m = interleaved(args.repeat, {
            "ours": Contender([*MODELPORT, "convert", str(source), str(dst), *extra, "--json"], dst),
            "cp": Contender(["cp", "-r", str(source), str(dst)], dst),
            "cp+fsync": Contender(["sh", "-c", 'cp -r "$0" "$1" && find "$1" -type f -exec sync {} +',
                                   str(source), str(dst)], dst)})
        inner = json.loads(m["ours"].stdout)["seconds"]
        rows.append((label, m["ours"].seconds, inner, m["ours"].peak_rss_mb, m["cp"].seconds, m["cp+fsync"].seconds))
    print(f"{'path':26} {'modelport s':>11} {'in-run s':>8} {'peak RSS MB':>11} {'cp s':>5} {'cp+fsync s':>10} "
          f"{'x cp':>5} {'x cp+fsync':>10}")
    for label, s, inner, rss, cps, syncs in rows:
        print(f"{label:26} {s:11.2f} {inner:8.2f} {rss:11.0f} {cps:5.2f} {syncs:10.2f} {s / cps:5.1f} {s / syncs:10.1f}")


if __name__ == "__main__":
    main()
