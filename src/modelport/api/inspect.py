"""inspect(): what a path holds, from headers alone (format, architecture, parameters, dtypes, tensors)."""
from __future__ import annotations

from pathlib import Path

from ..formats import CHECKPOINTS, ReadOptions, detect_or_fail, discover, load


def inspect(path: str | Path, base_model: str | Path | None = None) -> dict:
    src = Path(path).expanduser()
    if detect_or_fail(src) == CHECKPOINTS:
        found = discover(src)
        return {"path": str(src), "format": CHECKPOINTS,
                "checkpoints": [{"path": str(c.path), "step": c.step} for c in found],
                "latest": str(found[-1].path)}
    bundle = load(src, ReadOptions(Path(base_model).expanduser() if base_model else None))
    return {
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
        **({"adapter": bundle.adapter.describe()} if bundle.adapter is not None else {}),
    }
