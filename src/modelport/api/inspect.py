"""inspect(): what a path holds, from headers alone (format, architecture, parameters, dtypes, tensors).

It never fails for what only a conversion would need (a tokenizer the metadata cannot rebuild, a
config it cannot rebuild): it says so instead. A format that holds more than the bundle shows (a
GGUF's file type, tensor types and vocabulary) adds its own header details; for such a file `dtypes`
and `bytes` are the types and tensor bytes it holds, and `dtypes_after_conversion` and
`bytes_after_conversion` what reading it as a model gives.
"""
from __future__ import annotations

import contextlib

from pathlib import Path

from ..architectures.expressions import config_gaps
from ..core.errors import ModelFileNotFoundError, UnknownArchitectureError
from ..formats import CHECKPOINTS, ReadOptions, by_name, detect_or_fail, discover, load
from ..formats.checkpoints import step_of
from ..formats.companions import read_json
from ..storage import mounted

CONVERTED = ("dtypes", "bytes")     # a file's own, when its format says (GGUF), else the bundle's


def inspect(path: str | Path, base_model: str | Path | None = None) -> dict:
    """What `path` (a path or a URL: only headers are read, by range) holds."""
    with mounted(path) as src, mounted(base_model) if base_model else contextlib.nullcontext() as base, \
            config_gaps(path):
        info = _inspect(src, base)
    if str(path) != str(src):
        shown = str(src)
        info = {key: (value.replace(shown, str(path).rstrip("/")) if isinstance(value, str) else value)
                for key, value in info.items()}
        for checkpoint in info.get("checkpoints", []):
            checkpoint["path"] = checkpoint["path"].replace(shown, str(path).rstrip("/"))
    return info


def _inspect(src: Path, base_model: str | Path | None) -> dict:
    kind = detect_or_fail(src)
    if kind == CHECKPOINTS:
        found = discover(src)
        return {"path": str(src), "format": CHECKPOINTS,
                "checkpoints": [{"path": str(c.path), "step": c.step} for c in found],
                "latest": str(found[-1].path)}
    fmt = by_name(kind)
    held = fmt.details(src) if fmt.details is not None else {}
    options = ReadOptions(Path(base_model).expanduser() if base_model else None, tokenizer_required=False)
    try:
        bundle = load(src, options)
    except (ModelFileNotFoundError, UnknownArchitectureError) as exc:
        if not held:
            raise
        return {"path": str(src), "format": kind, **held, "model": None, "why_no_model": exc.reason}
    found = {
        "architecture": bundle.model_type,
        "architectures": bundle.config.get("architectures"),
        "parameters": bundle.parameter_count,
        "dtypes": bundle.dtypes(),
        **({"quantization": bundle.quantization} if bundle.quantization else {}),
        "tensors": sum(1 for t in bundle if t.alias_of is None),
        "bytes": bundle.nbytes,
        "tokenizer": bool(bundle.tokenizer_files),
        "tokenizer_files": sorted(bundle.tokenizer_files),
        "tied": sorted(t.name for t in bundle if t.alias_of),
        **_counters(src, bundle.format),
        "notes": bundle.notes,
        **({"adapter": bundle.adapter.describe()} if bundle.adapter is not None else {}),
    }
    # what the file holds first; where it says otherwise than the bundle, the bundle's is what a conversion gives
    converted = {f"{key}_after_conversion": found.pop(key) for key in CONVERTED if key in held}
    return {"path": str(src), "format": bundle.format, **held, **found, **converted}


def _counters(src: Path, fmt: str) -> dict:
    """The training step (and window) of a checkpoint and where it was read: entries of a pickle
    beside its state dict (Templar's `.pt`), trainer_state.json, else the name."""
    if fmt == "torch":
        from ..formats.pytorch.reader import pickle_counters
        step, window, entry = pickle_counters(src)
        if entry is not None:
            return {"step": step, "window": window, "step_from": f"entry {entry}"}
    state = (src if src.is_dir() else src.parent) / "trainer_state.json"
    if state.is_file() and isinstance(read_json(state).get("global_step"), int):
        return {"step": read_json(state)["global_step"], "step_from": "trainer_state.json"}
    step = step_of(src.name)
    return {"step": step, "step_from": "name"} if step is not None else {}
