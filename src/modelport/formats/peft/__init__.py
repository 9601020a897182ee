"""PEFT LoRA adapters (adapter_config.json + adapter_model.safetensors|.bin): read as an adapter bundle.

An adapter is not a model: its bundle carries the base model's config (from --base-model, or the
local folder its config names) and a core.adapter.LoraAdapter. GGUF writes it as a llama.cpp LoRA
adapter; merged into its base (`convert BASE OUT --merge-adapter ADAPTER`) it goes anywhere a model does.
"""
from __future__ import annotations

from pathlib import Path

from ..base import Format, ReadOptions

CONFIG = "adapter_config.json"
WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")


def sniff(path: Path) -> bool:
    return path.is_dir() and (path / CONFIG).is_file() and any((path / w).is_file() for w in WEIGHTS)


def _read(path: Path, options: ReadOptions):
    from .reader import read
    return read(path, options)


FORMAT = Format("peft", sniff, _read, takes=frozenset(), adapter=True)
