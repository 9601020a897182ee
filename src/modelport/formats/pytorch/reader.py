"""PyTorch training checkpoints (.pth/.pt/.bin/.ckpt): FSDP full state, DDP, torch.compile, Lightning.

The model's state dict is found whether it is the whole file or sits under `model`, `state_dict`
(Lightning), `module` (DeepSpeed) or `model_state_dict`; everything beside it (optimizer, scheduler,
step counters) is ignored and named in a note. Wrapper prefixes are removed by architectures/alignment.py.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ...core.bundle import ModelBundle
from ...core.errors import CorruptInputError
from ..assemble import assemble_bundle
from ..base import ReadOptions
from .pickle_io import load_pickle, pickle_refs

STATE_DICT_KEYS = ("model", "state_dict", "module", "model_state_dict", "model_state")


def _tensor_count(obj: dict) -> int:
    return sum(isinstance(v, torch.Tensor) for v in obj.values())


def find_state_dict(obj: Any, path: Path) -> tuple[tuple[str, ...], dict, list[str]]:
    """Return (keys leading to the state dict, the state dict, names of entries ignored)."""
    if not isinstance(obj, dict):
        raise CorruptInputError(f"holds a {type(obj).__name__}, not a model state dict", path)
    if _tensor_count(obj) and _tensor_count(obj) >= len(obj) / 2:
        return (), obj, [k for k, v in obj.items() if not isinstance(v, torch.Tensor)]
    for key in STATE_DICT_KEYS:
        inner = obj.get(key)
        if isinstance(inner, dict):
            try:
                keys, sd, ignored = find_state_dict(inner, path)
            except CorruptInputError:
                continue
            return (key, *keys), sd, [k for k in obj if k != key] + ignored
    shown = ", ".join(map(str, list(obj)[:8]))
    raise CorruptInputError(f"holds no model state dict (top-level keys: {shown})", path)


def read(path: Path, options: ReadOptions) -> ModelBundle:
    obj = load_pickle(path, options.trust_remote_code)
    keys, state_dict, ignored = find_state_dict(obj, path)
    refs = pickle_refs(path, state_dict, keys, options.trust_remote_code)
    notes = []
    if keys:
        notes.append(f"model weights taken from entry {'/'.join(keys)!r}")
    if ignored:
        notes.append(f"ignored non-model entries: {', '.join(map(str, ignored[:8]))}"
                     + (f" and {len(ignored) - 8} more" if len(ignored) > 8 else ""))
    del obj, state_dict
    return assemble_bundle(refs, path, "torch", options.base_model, notes)


STEP_ENTRIES = ("global_step", "step")
WINDOW_ENTRIES = ("current_window", "window", "start_window")


def pickle_counters(path: Path) -> tuple[int | None, int | None, str | None]:
    """(step, window, the entry the step came from) stored as top-level entries of a checkpoint beside
    its state dict, as Templar's and many training loops' `.pt` files carry them. Read with
    `mmap=True, weights_only=True`: the tensors are mapped, never loaded."""
    obj = load_pickle(path)
    if not isinstance(obj, dict):
        return None, None, None
    step_key = next((k for k in STEP_ENTRIES if _counter(obj.get(k)) is not None), None)
    window_key = next((k for k in WINDOW_ENTRIES if _counter(obj.get(k)) is not None), None)
    return (_counter(obj.get(step_key)) if step_key else None, _counter(obj.get(window_key)) if window_key else None,
            step_key or window_key)


def _counter(value: Any) -> int | None:
    if isinstance(value, torch.Tensor) and value.numel() == 1 and not value.is_floating_point():
        value = int(value.item())
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else None
