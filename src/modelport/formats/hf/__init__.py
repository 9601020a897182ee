"""Hugging Face model folders: sharded or single safetensors (or pytorch_model*.bin), read and written."""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from ..base import Format, ReadOptions, WriteSettings

SAFE_INDEX = "model.safetensors.index.json"
BIN_INDEX = "pytorch_model.bin.index.json"


def sniff(path: Path) -> bool:
    if path.is_file():
        return path.suffix == ".safetensors"
    return path.is_dir() and ((path / SAFE_INDEX).is_file() or (path / BIN_INDEX).is_file()
                              or any(path.glob("*.safetensors")) or any(path.glob("pytorch_model*.bin")))


@dataclass(frozen=True)
class HFOptions:
    dtype: str | None                   # None: from the config, else the source tensors
    max_shard_size: int
    threads: int = 2
    window: int = 4                     # tensors loaded and cast ahead of the one being written
    window_bytes: int = 256 * 2**20

    @classmethod
    def from_settings(cls, settings: WriteSettings) -> "HFOptions":
        return cls(settings.dtype, settings.max_shard_size, settings.threads)


def _read(path: Path, options: ReadOptions):
    from .reader import read
    return read(path, options)


def _write(bundle, out: Path, options: HFOptions) -> dict:
    from .writer import write
    return write(bundle, out, options)


FORMAT = Format("hf", sniff, _read, _write, HFOptions.from_settings,
                takes=frozenset({"dtype", "max_shard_size", "threads", "pre_tokenizer"}))   # pre_tokenizer: for a GGUF source
