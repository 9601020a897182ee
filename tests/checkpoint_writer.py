"""A stand-in for a training run's checkpoint saver, run as its own process by the watch tests.

    python checkpoint_writer.py MODE DST MODEL_DIR [SEED]

MODE: normal (torch.save in one go), slow (the same bytes written in pieces over ~3 s),
corrupt (random bytes under a checkpoint's name), halfway (half the bytes, then it waits to be
killed). The weights are MODEL_DIR's, nudged by SEED so every step differs.
"""
from __future__ import annotations

import io
import os
import sys
import time
from pathlib import Path

import torch
from safetensors.torch import load_file


def payload(model_dir: Path, seed: int) -> bytes:
    state = load_file(str(model_dir / "model.safetensors"))
    gen = torch.Generator().manual_seed(seed)
    state = {k: v + 1e-3 * torch.randn(v.shape, generator=gen) for k, v in state.items()}
    buf = io.BytesIO()
    torch.save({"model": state, "step": seed}, buf)
    return buf.getvalue()


def main(mode: str, dst: Path, model_dir: Path, seed: int) -> None:
    if mode == "corrupt":
        dst.write_bytes(os.urandom(200_000))
        return
    data = payload(model_dir, seed)
    if mode == "normal":
        dst.write_bytes(data)
        return
    with open(dst, "wb") as f:
        if mode == "halfway":
            f.write(data[: len(data) // 2])
            f.flush()
            print("half", flush=True)
            time.sleep(3600)
        pieces = 10
        step = len(data) // pieces + 1
        for i in range(pieces):
            f.write(data[i * step:(i + 1) * step])
            f.flush()
            time.sleep(0.3)


if __name__ == "__main__":
    main(sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3]), int(sys.argv[4]) if len(sys.argv) > 4 else 0)
