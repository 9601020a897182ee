"""`make demo`: a training checkpoint becomes verified HF, DCP and GGUF models, with nothing from a hub.

Each step runs the real `modelport` command, so what it prints is what a user would type.
"""
from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch
import transformers

from modelport.samples import save_model

transformers.logging.disable_progress_bar()

OUT = Path(__file__).resolve().parent.parent / "demo-output"


def fsdp_checkpoint(model: torch.nn.Module, path: Path, step: int) -> None:
    """What an FSDP1 + activation-checkpointing run saves: wrapped names, optimizer state, step."""
    state = {}
    for name, tensor in model.state_dict().items():
        if ".layers." in name:
            name = name.replace("layers.", "layers._fsdp_wrapped_module._checkpoint_wrapped_module.", 1)
        state["_fsdp_wrapped_module." + name] = tensor.clone()
    optimizer = {"state": {i: {"exp_avg": torch.zeros(4)} for i in range(3)}, "param_groups": [{"lr": 1e-4}]}
    torch.save({"model": state, "optimizer": optimizer, "step": step}, path)


def modelport(*args: object) -> float:
    shown = " ".join(str(a).replace(str(OUT.parent) + "/", "") for a in args)
    print(f"\n$ modelport {shown}", flush=True)
    started = time.perf_counter()
    code = subprocess.call([sys.executable, "-m", "modelport.cli", *map(str, args)])
    if code != 0:
        sys.exit(f"demo: `modelport {shown}` exited with {code}")
    return time.perf_counter() - started


def main() -> None:
    shutil.rmtree(OUT, ignore_errors=True)
    run_dir = OUT / "run"
    run_dir.mkdir(parents=True)
    steps: list[tuple[str, float]] = []

    started = time.perf_counter()
    model, _ = save_model(OUT / "base", "llama")
    steps.append(("generate a tiny Llama + trained BPE tokenizer (demo-output/base)", time.perf_counter() - started))

    started = time.perf_counter()
    for step in (500, 1000):
        fsdp_checkpoint(model, run_dir / f"checkpoint-{step}.pth", step)
    steps.append(("write FSDP-style checkpoints (demo-output/run)", time.perf_counter() - started))

    steps.append(("inspect the run folder", modelport("inspect", run_dir)))
    steps.append(("convert the newest checkpoint to HF and verify it",
                  modelport("convert", run_dir, OUT / "hf", "--base-model", OUT / "base", "--verify")))
    steps.append(("convert HF -> DCP (to start FSDP2 training from it)",
                  modelport("convert", OUT / "hf", OUT / "dcp", "--to", "dcp")))
    steps.append(("convert DCP -> HF bfloat16, sharded, and verify",
                  modelport("convert", OUT / "dcp", OUT / "hf-bf16", "--dtype", "bfloat16",
                            "--max-shard-size", "200KB", "--verify")))
    steps.append(("convert the checkpoint straight to GGUF f16 and verify in llama.cpp",
                  modelport("convert", run_dir / "checkpoint-1000.pth", OUT / "model-f16.gguf",
                            "--base-model", OUT / "base", "--quant", "f16", "--verify")))
    steps.append(("write the cpu profile (q4_k_m, q8_0) in one command",
                  modelport("convert", OUT / "hf", OUT / "cpu", "--profile", "cpu")))

    print("\nSummary")
    for what, seconds in steps:
        print(f"  {seconds:6.2f} s  {what}")
    print(f"  outputs in {OUT}")


if __name__ == "__main__":
    main()
