"""inspect(): what a path holds, from headers alone (format, architecture, parameters, dtypes, tensors)."""
from __future__ import annotations

from pathlib import Path

from ..formats import CHECKPOINTS, ReadOptions, detect_or_fail, discover, load
from ..storage import mounted


def inspect(path: str | Path, base_model: str | Path | None = None) -> dict:
    """What `path` (a path or a URL: only headers are read, by range) holds."""
    with mounted(path) as src:
        info = _inspect(src, base_model)
    if str(path) != str(src):
        shown = str(src)
        info = {key: (value.replace(shown, str(path).rstrip("/")) if isinstance(value, str) else value)
                for key, value in info.items()}
        for checkpoint in info.get("checkpoints", []):
            checkpoint["path"] = checkpoint["path"].replace(shown, str(path).rstrip("/"))
    return info


def _inspect(src: Path, base_model: str | Path | None) -> dict:
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
    }
