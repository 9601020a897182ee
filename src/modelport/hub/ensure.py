"""`modelport ensure`: make sure a model file (usually model.onnx) exists before a benchmark starts.

Where it looks, in order: the artifact cache, the model's own folder, the local hub cache, the Hub.
Only when none has it is the file made: the model is fetched (with retries), exported, validated in
onnxruntime, and cached. Every answer is recorded in the registry.
"""
from __future__ import annotations

import json
import time
from pathlib import Path

from ..core.errors import ModelFileNotFoundError, ModelportError, UsageError
from ..files.fingerprint import files_under, fingerprint
from ..history import FAILED, History
from . import cache
from . import client as hub

FOUND, CONVERTED = "found", "converted"


def _local(model: str) -> Path | None:
    path = Path(model).expanduser()
    return path if path.exists() else None


def ensure(model: str, file: str = "model.onnx", *, cache_dir: str | Path | None = None,
           policy: hub.RetryPolicy = hub.RetryPolicy(), token: str | None = None, check_exists: bool = False,
           model_type: str | None = None, registry: History | None = None) -> dict:
    """{"path": ..., "source": cache|model folder|hub cache|hub|converted, ...}; raises if it cannot be had."""
    started = time.perf_counter()
    registry = registry or History.open()
    try:
        result = _ensure(model, file, cache_dir, policy, token, check_exists, model_type)
    except ModelportError as exc:
        registry.record("ensure", model, FAILED, error=str(exc), details={"file": file})
        raise
    result["seconds"] = round(time.perf_counter() - started, 3)
    if result.get("path"):
        registry.record("ensure", model, CONVERTED if result["converted"] else FOUND, destination=result["path"],
                        details={"file": file, "how": result["source"], "seconds": result["seconds"]})
    return result


def _cache_name(model: str, local: Path | None) -> str:
    """What a cache entry is keyed by: a Hub id, or a local folder's real path and its weights' sizes and
    mtimes (a retrained model in the same folder is a new entry, never a stale hit)."""
    if local is None:
        return model
    return f"{local.resolve()}@{fingerprint(files_under(local), local.parent)}"


def _found(model: str, file: str, path: Path, how: str) -> dict:
    return {"ok": True, "model": model, "file": file, "exists": True, "path": str(path), "source": how,
            "converted": False}


def _ensure(model: str, file: str, cache_dir, policy: hub.RetryPolicy, token: str | None, check_exists: bool,
            model_type: str | None) -> dict:
    if Path(file).is_absolute() or ".." in Path(file).parts:
        raise UsageError("--file is a path inside the model (e.g. model.onnx or onnx/model.onnx)", file)
    local = _local(model)
    entry = cache.artifacts(cache_dir) / cache.entry_key(_cache_name(model, local))
    if (entry / file).is_file():
        cache.touch(entry)
        return _found(model, file, entry / file, "cache")
    if local is not None and local.is_dir() and (local / file).is_file():
        return _found(model, file, local / file, "model folder")
    if local is None:
        if not hub.is_hub_id(model):
            raise UsageError("no such file or folder, and not a Hub model id", model)
        cached = hub.cached_file(model, file)
        if cached is not None:
            return _found(model, file, cached, "hub cache")
        if hub.has_file(model, file, policy, token):
            if check_exists:
                return {**_found(model, file, Path(""), "hub"), "path": None}
            return _found(model, file, hub.download(model, file, policy, token), "hub")
    if check_exists:
        return {"ok": True, "model": model, "file": file, "exists": False, "path": None, "source": None,
                "converted": False}
    if not file.endswith(".onnx"):
        raise ModelFileNotFoundError(f"{file} is not there, and only .onnx files can be made from the model", model)
    return _convert(model, file, entry, local, policy, token, model_type, cache_dir)


def _convert(model: str, file: str, entry: Path, local: Path | None, policy: hub.RetryPolicy, token: str | None,
             model_type: str | None, cache_dir) -> dict:
    from ..api import convert
    source = local if local is not None else hub.snapshot(model, policy, token)
    result = convert(source, entry / file, to="onnx", overwrite=True)
    cache.touch(entry)
    cleaned = cache.clean(cache_dir, keep={entry})
    notes = []
    if model_type and model_type.lower() not in (result["architecture"] or "").lower():
        notes.append(f"--model-type {model_type} given; the model's config says {result['architecture']}")
    return {"ok": True, "model": model, "file": file, "exists": True, "path": str(entry / file), "source": "converted",
            "converted": True, "architecture": result["architecture"], "files": result["files"],
            "validation": result["validation"], "cache_cleanup": cleaned["removed"], "notes": notes}


def metadata(model: str, policy: hub.RetryPolicy = hub.RetryPolicy(), token: str | None = None) -> dict:
    """Architecture, parameter count, dtype, files and sizes, from the config and the weight files."""
    local = _local(model)
    if local is not None:
        folder = local if local.is_dir() else local.parent
        config = json.loads((folder / "config.json").read_text()) if (folder / "config.json").is_file() else {}
        files = {str(p.relative_to(folder)): p.stat().st_size for p in sorted(folder.rglob("*")) if p.is_file()}
        params = _safetensors_parameters(sorted(folder.glob("*.safetensors")))
    else:
        if not hub.is_hub_id(model):
            raise UsageError("no such file or folder, and not a Hub model id", model)
        from huggingface_hub import HfApi, get_safetensors_metadata
        config = json.loads(hub.download(model, "config.json", policy, token).read_text())
        info = hub.call("the file list", model, lambda: HfApi().model_info(model, files_metadata=True, token=token),
                        policy)
        files = {s.rfilename: s.size for s in info.siblings or []}
        params = None
        if any(name.endswith(".safetensors") for name in files):
            meta = hub.call("safetensors headers", model, lambda: get_safetensors_metadata(model, token=token), policy)
            params = dict(meta.parameter_count)
    return {"ok": True, "model": model, "architecture": (config.get("architectures") or [None])[0],
            "model_type": config.get("model_type"), "dtype": config.get("dtype") or config.get("torch_dtype"),
            "parameters": sum(params.values()) if params else None, "parameters_by_dtype": params,
            "files": files, "total_size": sum(v or 0 for v in files.values())}


def _safetensors_parameters(paths: list[Path]) -> dict[str, int] | None:
    """Parameters per safetensors dtype code (as the Hub reports them), from the files' headers."""
    if not paths:
        return None
    from ..core.dtypes import SAFETENSORS_CODES
    from ..formats.hf.reader import safetensors_refs
    counts: dict[str, int] = {}
    for ref in (r for path in paths for r in safetensors_refs(path).values()):
        counts[SAFETENSORS_CODES[ref.dtype]] = counts.get(SAFETENSORS_CODES[ref.dtype], 0) + ref.numel
    return counts


def read_batch(path: Path) -> list[dict]:
    """A JSON list of {model_id, file_path, model_type}, or a text file of model ids (one per line)."""
    if not path.is_file():
        raise UsageError("no such batch file", path)
    text = path.read_text(encoding="utf-8")
    if path.suffix == ".json" or text.lstrip().startswith("["):
        try:
            items = json.loads(text)
        except ValueError as exc:
            raise UsageError(f"not valid JSON: {exc}", path) from exc
        if not isinstance(items, list) or not all(isinstance(i, dict) and "model_id" in i for i in items):
            raise UsageError("expected a list of {\"model_id\": ..., \"file_path\": ..., \"model_type\": ...}", path)
        return items
    return [{"model_id": line.strip()} for line in text.splitlines() if line.strip() and not line.startswith("#")]


def ensure_batch(items: list[dict], default_file: str, **options) -> dict:
    results = []
    for item in items:
        try:
            results.append(ensure(item["model_id"], item.get("file_path") or default_file,
                                  model_type=item.get("model_type"), **options))
        except ModelportError as exc:
            results.append({"ok": False, "model": item["model_id"], "file": item.get("file_path") or default_file,
                            "error": str(exc), "exit_code": exc.exit_code})
    failed = sum(not r["ok"] for r in results)
    return {"ok": failed == 0, "total": len(results), "failed": failed, "results": results}
