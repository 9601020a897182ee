"""The Python API behind every command: convert() and inspect(); the CLI only parses and prints."""
from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from pathlib import Path

from . import detect as fmt
from .atomic import atomic_files, atomic_output, check_apart, check_destination
from .bundle import ModelBundle
from .checkpoints import pick
from .dtypes import dtype_name, resolve_dtype
from .edits import Edits
from .errors import KeyMismatchError, ModelConversionError, UsageError
from .sizes import parse_size

log = logging.getLogger("modelport")

WRITABLE = (fmt.HF, fmt.DCP, fmt.GGUF, fmt.ONNX)
DTYPE_QUANT = {"float32": "f32", "float16": "f16", "bfloat16": "bf16"}
TARGET_ALIASES = {"huggingface": fmt.HF, "hf": fmt.HF, "dcp": fmt.DCP, "gguf": fmt.GGUF, "onnx": fmt.ONNX}


def _path(value: str | Path | None) -> Path | None:
    return Path(value).expanduser() if value is not None else None


def _sources(src: str | Path, base_model: str | Path | None) -> list[Path]:
    """Everything a conversion reads from, none of which it may write into."""
    return [Path(p).expanduser() for p in (src, base_model) if p is not None]


def resolve_source(src: Path, checkpoint: str | None) -> tuple[Path, str]:
    """The concrete checkpoint to read: `src` itself, or the one picked from a folder of them."""
    kind = fmt.detect_or_fail(src)
    if kind == fmt.CHECKPOINTS:
        chosen = pick(src, checkpoint).path
        return chosen, fmt.detect_or_fail(chosen)
    if checkpoint is not None:
        raise UsageError("--checkpoint needs a folder holding several checkpoints", src)
    return src, kind


def load(src: str | Path, base_model: str | Path | None = None, checkpoint: str | None = None,
         trust_remote_code: bool = False) -> ModelBundle:
    """Read any supported source into a ModelBundle (lazy: only headers are read)."""
    path, kind = resolve_source(Path(src).expanduser(), checkpoint)
    base = _path(base_model)
    if base is not None and not base.exists():
        raise UsageError("no such folder", base)
    if kind == fmt.HF:
        from .formats import hf
        return hf.read(path, base, trust_remote_code)
    if kind == fmt.TORCH:
        from .formats import torch_ckpt
        return torch_ckpt.read(path, base, trust_remote_code)
    if kind == fmt.DCP:
        from .formats import dcp
        return dcp.read(path, base, trust_remote_code)
    if kind == fmt.GGUF:
        from .formats.gguf import reader
        return reader.read(path, base, trust_remote_code)
    raise UsageError(f"reading {kind} files is not supported yet", path)


def convert(src: str | Path, dst: str | Path, *, to: str | None = None, dtype: str | None = "auto",
            base_model: str | Path | None = None, max_shard_size: str | int = "5GB",
            checkpoint: str | None = None, overwrite: bool = False, trust_remote_code: bool = False,
            threads: int | None = None, quant: str | None = None, split_max_size: str | int | None = None,
            pre_tokenizer: str | None = None, with_past: bool = False, opset: int = 18,
            allow_unused: bool = False, debug_params: bool = False, edits: Edits | None = None) -> dict:
    """Convert `src` (any supported format) to `dst`; returns a summary of what was done.

    The destination appears only once it is complete; on any failure nothing is left there.
    """
    started = time.perf_counter()
    dst_path = Path(dst).expanduser()
    target = TARGET_ALIASES.get((to or fmt.target_from_destination(dst_path)).lower())
    if target not in WRITABLE:
        raise UsageError(f"--to {to or target}: writing this format is not supported yet "
                         f"(supported: {', '.join(WRITABLE)})")
    check_apart(_sources(src, base_model), dst_path)
    shard_bytes = parse_size(max_shard_size)
    if target == fmt.ONNX and edits:
        return _edited_onnx(src, dst_path, edits, quant=quant, base_model=base_model, checkpoint=checkpoint,
                            overwrite=overwrite, trust_remote_code=trust_remote_code, with_past=with_past, opset=opset,
                            allow_unused=allow_unused)
    if target == fmt.ONNX:
        return _convert_onnx(Path(src).expanduser(), dst_path, quant=quant, base_model=_path(base_model),
                             overwrite=overwrite, trust_remote_code=trust_remote_code, with_past=with_past, opset=opset)
    if with_past:
        raise UsageError("--with-past applies to ONNX output only")
    if target != fmt.GGUF and (quant or split_max_size or pre_tokenizer):
        raise UsageError("--quant, --split-max-size and --pre-tokenizer apply to GGUF output only "
                         "(--quant also to ONNX: fp32, fp16, int8)")
    if quant is not None:
        from .formats.gguf.quant_types import file_type
        file_type(quant)
    check_destination(dst_path, overwrite)
    # edited tokenizer files live in a work folder until the writer has copied them
    with (tempfile.TemporaryDirectory(prefix="modelport-edits-") if edits else contextlib.nullcontext()) as workdir:
        bundle = load(src, base_model, checkpoint, trust_remote_code)
        if edits:
            from .edits import apply
            bundle = apply(bundle, edits, Path(workdir))
        return _write(bundle, target, dst_path, started, dtype=dtype, quant=quant, shard_bytes=shard_bytes,
                      overwrite=overwrite, threads=threads, split_max_size=split_max_size,
                      pre_tokenizer=pre_tokenizer, allow_unused=allow_unused, debug_params=debug_params)


def _write(bundle: ModelBundle, target: str, dst_path: Path, started: float, *, dtype: str | None, quant: str | None,
           shard_bytes: int, overwrite: bool, threads: int | None, split_max_size: str | int | None,
           pre_tokenizer: str | None, allow_unused: bool, debug_params: bool) -> dict:
    out_dtype = resolve_dtype(dtype, bundle.config, (t.dtype for t in bundle))
    if target == fmt.GGUF:
        quant = quant or DTYPE_QUANT.get(dtype or "") or ("bf16" if dtype_name(out_dtype) == "bfloat16" else "f16")
    params = None
    if debug_params:
        from .debug_params import param_table, render
        params = param_table(bundle, target, out_dtype, quant)
        log.info("tensors (source -> target, shape, dtype -> target type):\n%s", render(params, bundle.unused))
    if bundle.unused and not allow_unused:
        from .checkpoint_keys import summarize
        raise KeyMismatchError(f"{summarize(bundle.unused)} source tensor(s) that nothing uses; pass --allow-unused "
                               "to drop them (--debug-params shows where every tensor goes)", bundle.source)
    read_done = time.perf_counter()
    try:
        if target == fmt.GGUF:
            from .formats.gguf import writer as gguf_writer
            options = gguf_writer.GGUFWriteOptions(quant.lower(), parse_size(split_max_size) if split_max_size else 0,
                                                   threads or 2, pre_tokenizer=pre_tokenizer)
            with atomic_files(dst_path, overwrite) as tmp:
                written = gguf_writer.write(bundle, tmp, dst_path.name, options)
        else:
            with atomic_output(dst_path, overwrite) as tmp:
                if target == fmt.HF:
                    from .formats import hf
                    written = hf.write(bundle, tmp, hf.HFWriteOptions(out_dtype, shard_bytes, threads=threads or 2))
                else:
                    from .formats import dcp
                    written = dcp.write(bundle, tmp, out_dtype)
    except (MemoryError, RuntimeError) as exc:
        raise ModelConversionError(f"conversion failed: {exc}", dst_path) from exc
    seconds = time.perf_counter() - started
    return {
        "ok": True,
        "source": str(bundle.source),
        "source_format": bundle.format,
        "destination": str(dst_path),
        "format": target,
        "architecture": bundle.model_type,
        "dtype": quant if target == fmt.GGUF else dtype_name(out_dtype),
        "tensors": written["tensors"],
        "parameters": bundle.parameter_count,
        "files": written["files"],
        "bytes_written": written["bytes_written"],
        "seconds": round(seconds, 3),
        "read_seconds": round(read_done - started, 3),
        "notes": bundle.notes,
        **({"tensor_types": written["types"]} if "types" in written else {}),
        **({"params": params, "unused": bundle.unused} if params is not None else {}),
    }


def _edited_onnx(src: str | Path, dst: Path, edits: Edits, *, quant: str | None, base_model, checkpoint: str | None,
                 overwrite: bool, trust_remote_code: bool, with_past: bool, opset: int, allow_unused: bool) -> dict:
    """ONNX export traces a transformers model, so edits go through an HF folder beside DST first."""
    check_destination(dst, overwrite)
    dst.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".modelport-edited-", dir=dst.parent) as work:
        edited = convert(src, Path(work) / "hf", to=fmt.HF, dtype="float32", base_model=base_model,
                         checkpoint=checkpoint, trust_remote_code=trust_remote_code, edits=edits,
                         allow_unused=allow_unused)
        result = _convert_onnx(Path(work) / "hf", dst, quant=quant, base_model=None, overwrite=overwrite,
                               trust_remote_code=trust_remote_code, with_past=with_past, opset=opset)
    return {**result, "source": str(src), "notes": edited["notes"]}


def _convert_onnx(src: Path, dst: Path, *, quant: str | None, base_model: Path | None, overwrite: bool,
                  trust_remote_code: bool, with_past: bool, opset: int) -> dict:
    """Export with torch.onnx and validate every graph in onnxruntime before anything is published."""
    from .formats.onnx.export import ONNXOptions, onnx_quant, write

    started = time.perf_counter()
    options = ONNXOptions(onnx_quant(quant), opset, with_past)
    if opset < 18:
        raise UsageError("--opset: the exporter needs opset 18 or newer")
    fmt.detect_or_fail(src)
    check_apart(_sources(src, base_model), dst)
    with atomic_files(dst, overwrite) as tmp:
        written = write(src, tmp, dst.name, options, base_model, trust_remote_code)
    return {"ok": True, "source": str(src), "source_format": fmt.detect(src), "destination": str(dst),
            "format": fmt.ONNX, "architecture": written["architecture"], "dtype": options.quant,
            "tensors": written["tensors"], "parameters": written["parameters"],
            "files": [str(dst.parent / name) for name in written["files"]], "bytes_written": written["bytes_written"],
            "seconds": round(time.perf_counter() - started, 3), "validation": written["validation"],
            "export_seconds": written["export_seconds"], "notes": []}


def convert_profile(src: str | Path, dst: str | Path, profile: str, **options) -> dict:
    """One GGUF per type of a deployment profile: DST/model-{quant}.gguf for each (see profiles.py)."""
    from .profiles import file_name, quants_for

    started = time.perf_counter()
    quants = quants_for(profile)
    folder = Path(dst).expanduser()
    if folder.exists() and not folder.is_dir():
        raise UsageError("--profile writes a folder of GGUF files; this is a file", folder)
    results = [convert(src, folder / file_name(q), quant=q, **options) for q in quants]
    return {"ok": True, "profile": profile, "destination": str(folder), "outputs": results,
            "seconds": round(time.perf_counter() - started, 3), "notes": results[0]["notes"] if results else []}


def inspect(path: str | Path, base_model: str | Path | None = None) -> dict:
    """What a path holds: format, architecture, parameters, dtypes, tensors, bytes, tokenizer."""
    src = Path(path).expanduser()
    kind = fmt.detect_or_fail(src)
    if kind == fmt.CHECKPOINTS:
        from .checkpoints import discover
        found = discover(src)
        return {"path": str(src), "format": kind,
                "checkpoints": [{"path": str(c.path), "step": c.step} for c in found],
                "latest": str(found[-1].path)}
    bundle = load(src, base_model)
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
