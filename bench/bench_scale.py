"""Issue 8 benchmark: Llama-3-70B's tensor shapes with only a few layers, on this small machine.

    cd bench && ../.venv/bin/python bench_scale.py [--layers 4]

hidden 8192, ffn 28672, 64 heads, 8 kv heads, vocab 128256; 4 layers is ~11 GB of bf16, whose
largest tensors (the 128256x8192 embedding and head) are 4.2 GB each as float32. Each path is one
`modelport convert` (peak RSS by GNU time), then the full 80-layer model is extrapolated from the
per-layer and fixed parts.

`--paths verify` (with `--layers 1`: 6.1 GB of bf16) proves the model against its q8_0 GGUF with
`modelport verify SRC q8_0.gguf --corpus builtin --ctx 256 --json` (the prompts and the corpus), and
prints the path the reference took, peak RSS and time; `--verify-source DIR` runs the same case on
another HF folder (e.g. bench_gguf.py's 0.5B model, bench/out/gguf/llama-9l) and `--max-memory SIZE`
passes the budget on.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

from bench_hf import fsdp_pth
from common import MODELPORT, folder_bytes, llama_config, measure, remove, write_hf_model

OUT = Path(__file__).resolve().parent / "out" / "scale"
SHAPE = dict(hidden=8192, ffn=28672, heads=64, kv_heads=8, vocab=128256)
FULL_LAYERS = 80


def make_model(layers: int) -> Path:
    path = OUT / f"llama70b-shape-{layers}l"
    if not (path / "config.json").exists():
        from modelport.samples import train_tokenizer
        train_tokenizer("spm", workdir=path)
        config = llama_config(SHAPE["hidden"], SHAPE["ffn"], layers, SHAPE["heads"], SHAPE["kv_heads"], SHAPE["vocab"])
        write_hf_model(path, {**config, "max_position_embeddings": 8192, "rope_theta": 500000.0},
                       shard_bytes=5_000_000_000)
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--paths", nargs="+",
                        default=["f16", "q8_0", "q4_k_m", "hf", "gguf-to-hf", "dcp", "dcp-to-gguf", "pth-to-gguf"])
    parser.add_argument("--verify-source", type=Path, help="run the verify case on this HF folder instead")
    parser.add_argument("--max-memory", help="verify's --max-memory (default: its own, half the machine's memory)")
    args = parser.parse_args()
    if args.verify_source or args.paths == ["verify"]:
        verify_case(args.verify_source or make_model(args.layers), args.max_memory)
        return
    model = make_model(args.layers)
    size = folder_bytes(model)
    print(f"model: {args.layers} layers of Llama-3-70B's shapes, {size / 1e9:.2f} GB bf16")
    rows = []
    for path in args.paths:
        if path == "hf":
            dst, cmd = OUT / "out-hf", [str(model), str(OUT / "out-hf"), "--max-shard-size", "2GB"]
        elif path == "dcp":
            dst, cmd = OUT / "out-dcp", [str(model), str(OUT / "out-dcp"), "--to", "dcp"]
        elif path == "dcp-to-gguf":
            if not (OUT / "out-dcp").exists():
                continue
            dst = OUT / "out-dcp.gguf"
            cmd = [str(OUT / "out-dcp"), str(dst), "--base-model", str(model), "--quant", "f16"]
        elif path == "pth-to-gguf":
            pth = OUT / "fsdp" / "checkpoint-1.pth"
            if not pth.exists():
                pth.parent.mkdir(parents=True, exist_ok=True)
                fsdp_pth(model, pth)
            dst = OUT / "out-pth.gguf"
            cmd = [str(pth), str(dst), "--base-model", str(model), "--quant", "f16"]
        elif path == "gguf-to-hf":
            src = OUT / "out-f16.gguf"
            if not src.exists():
                continue
            dst, cmd = OUT / "out-from-gguf", [str(src), str(OUT / "out-from-gguf"), "--base-model", str(model)]
        else:
            dst = OUT / f"out-{path}.gguf"
            cmd = [str(model), str(dst), "--quant", path]
        remove(dst)
        m = measure([*MODELPORT, "convert", *cmd, "--json"])
        written = json.loads(m.stdout)["bytes_written"]
        rows.append((path, m.seconds, m.peak_rss_mb, written))
        if path not in ("f16", "dcp"):
            remove(dst)
    print("| path | wall s | peak RSS MB | written GB | GB/s |")
    print("|---|---|---|---|---|")
    for path, seconds, rss, written in rows:
        print(f"| {path} | {seconds:.1f} | {rss:.0f} | {written / 1e9:.2f} | {written / 1e9 / seconds:.2f} |")
    remove(OUT / "out-f16.gguf")
    remove(OUT / "out-dcp")
    per_layer = (size - 2 * SHAPE["vocab"] * SHAPE["hidden"] * 2) / args.layers
    full = 2 * SHAPE["vocab"] * SHAPE["hidden"] * 2 + FULL_LAYERS * per_layer
    print(f"\nfull {FULL_LAYERS}-layer model: {full / 1e9:.0f} GB bf16 ({per_layer / 1e9:.2f} GB per layer); "
          f"time scales with bytes: x{full / size:.1f} of the figures above")


def verify_case(model: Path, max_memory: str | None) -> None:
    """The model against its q8_0 GGUF (made once, kept beside the model) on the prompts and the builtin
    corpus at --ctx 256: verdict, the reference's path, peak RSS and wall time of the verify alone."""
    gguf = model.parent / f"{model.name}-q8_0.gguf"
    if not gguf.exists():
        measure([*MODELPORT, "convert", str(model), str(gguf), "--quant", "q8_0", "--json"])
    cmd = [*MODELPORT, "verify", str(model), str(gguf), "--corpus", "builtin", "--ctx", "256", "--json"]
    proc = measure(cmd + (["--max-memory", max_memory] if max_memory else []), allow_failure=True)
    report = json.loads(proc.stdout)
    report = report.get("report") or report      # a failed check nests its report
    memory, quality = report["memory"], report.get("quality", {})
    print(f"verify {model.name} vs q8_0 ({folder_bytes(model) / 1e9:.2f} GB source): "
          f"{'PASS' if report['ok'] else 'FAIL'}, reference {memory['source_path']}, "
          f"{proc.seconds:.1f} s wall, {proc.cpu_seconds:.1f} s CPU, peak RSS {proc.peak_rss_mb:.0f} MB (GNU time, "
          f"mapped files' pages included; sampled peaks: anonymous {proc.peak_anon_mb:.0f} MB, "
          f"file-backed {proc.peak_file_mb:.0f} MB), "
          f"{report['metrics']['positions']} prompt positions, {quality.get('positions', 0)} scored corpus positions, "
          f"KLD mean {quality.get('kld_mean', float('nan')):.3g}, same top-1 {quality.get('same_top1', float('nan')):.3f}")


if __name__ == "__main__":
    main()
