"""Loading PyTorch pickles safely and lazily.

`weights_only=True` refuses any pickle that would import and call code; `mmap=True` maps storages
instead of reading them, so opening a 10 GB checkpoint costs only its pickle metadata. Each tensor
is re-opened from the file when it is needed and the mapping dropped after, so pages a writer has
finished with do not stay resident (a long-lived mapping would grow RSS to the file's size).
"""
from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from ...core.bundle import TensorRef
from ...core.errors import CorruptInputError, UnsafeCheckpointError
from ...core.torch_arrays import dtype_name, to_numpy
from ...storage import staged

TRUST_HINT = "pass --trust-remote-code only if you trust where it came from"


class _NotMappable(Exception):
    """A pre-1.6 (non-zip) checkpoint: torch cannot mmap it, so it is read plainly instead."""


def load_pickle(path: Path, trust_code: bool = False) -> Any:
    """torch.load with every failure turned into one clear line naming the file. A pickle is read
    whole, so a file of a mounted URL is staged (copied to the local mirror) first."""
    staged(path)
    try:
        return _torch_load(path, trust_code, mmap=True)
    except _NotMappable:
        return _torch_load(path, trust_code, mmap=False)


def _torch_load(path: Path, trust_code: bool, mmap: bool) -> Any:
    try:
        return torch.load(path, map_location="cpu", weights_only=not trust_code, mmap=mmap)
    except pickle.UnpicklingError as exc:
        detail = _unsafe_detail(str(exc))
        if detail is not None:
            raise UnsafeCheckpointError(f"refusing to load: its pickle would run code ({detail}); {TRUST_HINT}", path) from exc
        raise CorruptInputError(f"not a readable PyTorch checkpoint (truncated or corrupt): {_first_line(exc)}", path) from exc
    except RuntimeError as exc:
        if mmap and "mmap" in str(exc) and "zipfile" in str(exc):
            raise _NotMappable from exc
        raise CorruptInputError(f"not a readable PyTorch checkpoint (truncated or corrupt): {_first_line(exc)}", path) from exc
    except Exception as exc:  # a damaged pickle can fail in any way (IndexError, KeyError, EOFError, ...)
        raise CorruptInputError(f"not a readable PyTorch checkpoint (truncated or corrupt): "
                                f"{type(exc).__name__}: {_first_line(exc)}", path) from exc


UNSAFE_SIGNS = ("unsupported global", "trying to call reduce", "unsupported class", "blocked")


def _unsafe_detail(text: str) -> str | None:
    """The weights-only unpickler's reason when it is an import or call; None for mere garbage."""
    for line in text.splitlines():
        line = line.strip()
        if any(sign in line.lower() for sign in UNSAFE_SIGNS):
            return line.split(" whose ")[0].rstrip(".")
    return None


def _first_line(exc: BaseException) -> str:
    """The first sentence of torch's message: its later ones are advice about weights_only, not this file."""
    text = str(exc).strip().splitlines()
    return text[0].split(". ")[0].rstrip(".") if text else type(exc).__name__


def _walk(obj: Any, keys: tuple[str, ...]) -> Any:
    for key in keys:
        obj = obj[key]
    return obj


def pickle_refs(path: Path, state_dict: dict, keys: tuple[str, ...], trust_code: bool) -> dict[str, TensorRef]:
    """TensorRefs for every tensor of `state_dict`, found again at `keys` inside the file on load."""
    refs = {}
    for name, value in state_dict.items():
        if isinstance(value, torch.Tensor):
            loader = _loader(path, keys, name, trust_code)
            refs[name] = TensorRef(name=name, shape=tuple(value.shape), dtype=dtype_name(value.dtype), loader=loader,
                                   source=str(path), rows=_rows(loader))
    return refs


def _rows(loader: Callable[[], np.ndarray]) -> Callable[[int, int], np.ndarray]:
    """Rows of a memory-mapped tensor: slicing the mapping touches only their pages."""
    def rows(start: int, stop: int) -> np.ndarray:
        return loader()[start:stop].copy()
    return rows


def _loader(path: Path, keys: tuple[str, ...], name: str, trust_code: bool) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        tensor = _walk(load_pickle(path, trust_code), keys)[name]
        if not isinstance(tensor, torch.Tensor):
            raise CorruptInputError(f"entry {name!r} is no longer a tensor (was the file rewritten?)", path)
        return to_numpy(tensor)             # a view of the mapping, unmapped when freed
    return load
