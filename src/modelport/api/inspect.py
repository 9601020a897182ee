"""inspect(): what a path holds, from headers alone (format, architecture, parameters, dtypes, tensors).

It never fails for what only a conversion would need (a tokenizer the metadata cannot rebuild, a
config it cannot rebuild): it says so instead. A format that holds more than the bundle shows (a
GGUF's file type, tensor types and vocabulary) adds its own header details; for such a file `dtypes`
are the types it holds and `dtypes_after_conversion` what reading it as a model would give.
"""
from __future__ import annotations

from pathlib import Path

from ..core.errors import ModelFileNotFoundError, UnknownArchitectureError
from ..formats import CHECKPOINTS, ReadOptions, by_name, detect_or_fail, discover, load


def inspect(path: str | Path, base_model: str | Path | None = None) -> dict:
    src = Path(path).expanduser()
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
        return {"path": str(src), "format": kind, **_file_dtypes(held), **held, "model": None,
                "why_no_model": exc.reason}
    info = {
        "path": str(src),
        "format": bundle.format,
        "architecture": bundle.model_type,
        "architectures": bundle.config.get("architectures"),
        "parameters": bundle.parameter_count,
        "dtypes": bundle.dtypes(),
        "tensors": sum(1 for t in bundle if t.alias_of is None),
        "bytes": bundle.nbytes,
        "tokenizer": bool(bundle.tokenizer_files),
        "tokenizer_files": sorted(bundle.tokenizer_files),
        "tied": sorted(t.name for t in bundle if t.alias_of),
        "notes": bundle.notes,
    }
    if held:
        info.update({**_file_dtypes(held), "dtypes_after_conversion": bundle.dtypes(), **held})
    return info


def _file_dtypes(held: dict) -> dict:
    """`dtypes` as the file's own types (tensor counts), when the format lists them."""
    types = held.get("tensor_types")
    return {"dtypes": {name: entry["tensors"] for name, entry in types.items()}} if types else {}

