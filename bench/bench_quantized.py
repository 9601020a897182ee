"""Issue 25 benchmark: an FP8 checkpoint (DeepSeek-V3's layout: float8_e4m3fn weights, float32
`weight_scale_inv` per 128x128 block) with Llama-3-70B's shapes, converted on this small machine.

    cd bench && ../.venv/bin/python bench_quantized.py [--layers 1]

hidden 8192, ffn 28672, 64 heads, 8 kv heads, vocab 128256: one layer is 0.86 GB of fp8 weights, the
embedding and head 2.1 GB of bf16 each. Each path is one `modelport convert` (peak RSS by GNU time):
the dequantized weights stream a row block at a time, so peak RSS must stay under 1 GB.
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bench_scale import SHAPE
from common import MODELPORT, folder_bytes, llama_config, llama_shapes, measure, remove, random_tensor

from modelport.core.bundle import rows_per_block
from modelport.core.torch_arrays import to_numpy
from modelport.formats.hf.safetensors_io import PlannedTensor, RowBlocks, SafetensorsStreamWriter

OUT = Path(__file__).resolve().parent / "out" / "quantized"
BLOCK = 128


def random_blocks(shape: tuple[int, ...], dtype: str, seed: int):
    """Row blocks (whole 128-row scale blocks) of a random weight, made without holding it: float8_e4m3fn
    values spread over its range, or bf16 around 0.02; 1-D tensors are ones."""
    import torch
    if len(shape) == 1:
        yield to_numpy(torch.ones(shape, dtype=getattr(torch, dtype)))
        return
    g = torch.Generator().manual_seed(seed)
    step = max(BLOCK, rows_per_block(shape[1]) // BLOCK * BLOCK)
    scale = 64.0 if dtype == "float8_e4m3fn" else 0.02
    for start in range(0, shape[0], step):
        rows = min(step, shape[0] - start)
        yield to_numpy((torch.randn(rows, shape[1], generator=g) * scale).to(getattr(torch, dtype)))


def make_model(layers: int) -> Path:
    path = OUT / f"llama70b-fp8-{layers}l"
    if (path / "config.json").exists():
        return path
    from modelport.samples import train_tokenizer
    train_tokenizer("spm", workdir=path)
    config = llama_config(SHAPE["hidden"], SHAPE["ffn"], layers, SHAPE["heads"], SHAPE["kv_heads"], SHAPE["vocab"])
    config["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                     "weight_block_size": [BLOCK, BLOCK]}
    shapes = llama_shapes(config)
    plan, data = [], {}
    for seed, (name, shape) in enumerate(shapes.items()):
        dtype = "float8_e4m3fn" if name.endswith("_proj.weight") else "bfloat16"
        plan.append(PlannedTensor(name, shape, dtype))
        data[name] = RowBlocks(shape, dtype, random_blocks(shape, dtype, seed))
        if dtype == "float8_e4m3fn":
            scale = (-(-shape[0] // BLOCK), -(-shape[1] // BLOCK))
            plan.append(PlannedTensor(name + "_scale_inv", scale, "float32"))
            data[name + "_scale_inv"] = np.abs(random_tensor(scale, "float32", seed)) / 64
    with SafetensorsStreamWriter(path / "model.safetensors", plan) as w:
        for p in plan:
            w.write(p.name, data.pop(p.name))
    (path / "config.json").write_text(json.dumps(config))
    return path


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=1)
    parser.add_argument("--paths", nargs="+", default=["f16", "q8_0", "hf"])
    args = parser.parse_args()
    model = make_model(args.layers)
    print(f"model: {args.layers} layer(s) of Llama-3-70B's shapes in fp8 (128x128 blocks), "
          f"{folder_bytes(model) / 1e9:.2f} GB")
    print("| path | wall s | peak RSS MB | written GB |")
    print("|---|---|---|---|")
    for path in args.paths:
        dst = OUT / ("out-hf" if path == "hf" else f"out-{path}.gguf")
        cmd = [str(model), str(dst), *([] if path == "hf" else ["--quant", path]), "--json"]
        remove(dst)
        m = measure([*MODELPORT, "convert", *cmd])
        written = json.loads(m.stdout)["bytes_written"]
        remove(dst)
        print(f"| {path} | {m.seconds:.1f} | {m.peak_rss_mb:.0f} | {written / 1e9:.2f} |")


if __name__ == "__main__":
    main()
