"""convert(): any source to any target through the format table; the destination appears whole or not at all.

A source or destination may be a URL (storage/): a source is mounted and its weights read by range; a
destination URL gets the output staged in the cache, then uploaded file by file, each checked.
"""
from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

from ..architectures.expressions import config_gaps
from ..core.bundle import ModelBundle
from ..core.errors import KeyMismatchError, ModelConversionError, UsageError
from ..edits import apply as apply_edits
from ..files.atomic import atomic_files, atomic_output, check_apart, check_destination
from ..formats import FORMATS, Format, load, resolve_source, target
from ..files.atomic import remove_dead_temporaries, remove_path, temp_name
from ..files.locations import cache_root
from ..formats.gguf.profiles import file_name, quants_for
from ..storage import Location, is_url, mounted, parse
from ..storage.upload import check_writable, put_tree
from .options import ConvertOptions

log = logging.getLogger("modelport")


def convert(src: str | Path, dst: str | Path, options: ConvertOptions | None = None, **settings) -> dict:
    """Convert `src` (any supported format) to `dst`; returns a summary of what was done.

    `options`, or the keywords of ConvertOptions.of (to=, quant=, dtype=, base_model=, ...), are
    checked before any file is read. The destination appears only once it is complete; on any
    failure nothing is left there, and no source is ever written.
    """
    started = time.perf_counter()
    if options is None and is_url(settings.get("base_model")):       # its config and tokenizer, mirrored
        with mounted(settings["base_model"]) as base:
            return convert(src, dst, **{**settings, "base_model": base})
    options = options or ConvertOptions.of(**settings)
    destination = parse(str(dst)) if is_url(dst) else None
    if destination is not None and destination.local is not None:
        dst, destination = destination.local, None
    if destination is not None:
        if not destination.objects:
            raise UsageError(f"convert writes to a path, s3:// or gs://, not {destination.scheme}:// "
                             "(watch --output publishes to hf://)", destination.url)
        fmt = target(Path(destination.name), options.to)
        check_writable(destination, [""], options.overwrite)
    with mounted(src) as source, config_gaps(src):
        if destination is not None:
            summary = _uploaded(source, destination, fmt, options, started)
        else:
            summary = _convert(source, Path(dst).expanduser(), options, started)
    if is_url(src):
        summary["source"] = str(src)
    return summary


def _uploaded(src: Path, destination: Location, fmt: Format, options: ConvertOptions, started: float) -> dict:
    """The conversion staged in the cache, then uploaded: a folder's files under the URL, the files a GGUF
    or ONNX output is made of beside it, the one readers open (the first shard) last."""
    parent = cache_root() / "uploads"
    parent.mkdir(parents=True, exist_ok=True)
    remove_dead_temporaries(parent)
    stage = parent / temp_name("upload")
    stage.mkdir()
    try:
        summary = _convert(src, stage / destination.name, options, started)
        if fmt.output == "folder":
            uploaded = put_tree(stage / destination.name, destination, last=["config.json"])
        else:
            uploaded = put_tree(stage, destination.parent, last=summary["files"][:1])
    finally:
        remove_path(stage)
    summary["destination"] = destination.url
    summary["uploaded"] = [{"url": u.url, "size": u.size, "sha256": u.sha256} for u in uploaded]
    summary["seconds"] = round(time.perf_counter() - started, 3)
    return summary


def _convert(src: Path, dst_path: Path, options: ConvertOptions, started: float) -> dict:
    fmt = target(dst_path, options.to)
    merging = [options.edits.merge_adapter] if options.edits and options.edits.merge_adapter else []
    check_apart([Path(src).expanduser(), *([options.read.base_model] if options.read.base_model else []), *merging],
                dst_path)
    writer_options = options.writer_options(fmt)
    check_destination(dst_path, options.overwrite)
    source, source_fmt = resolve_source(Path(src).expanduser(), options.checkpoint)
    if source_fmt.adapter and not fmt.writes_adapters:
        writers = ", ".join(f.name for f in FORMATS if f.writes_adapters)
        raise UsageError(f"a LoRA adapter converts to {writers} only (an adapter file llama.cpp loads beside its "
                         f"base); for a {fmt.name} model, merge it: convert BASE {dst_path} --merge-adapter {source}")
    if source_fmt.name == fmt.name and fmt.transcode is not None and not options.edits and not options.debug_params:
        return _transcoded(source, fmt, dst_path, writer_options, options.overwrite, started)
    # edited tokenizer files live in a work folder until the writer has copied them
    with (tempfile.TemporaryDirectory(prefix="modelport-edits-") if options.edits else contextlib.nullcontext()) as work:
        bundle = load(src, options.read, options.checkpoint)
        if options.edits:
            bundle = apply_edits(bundle, options.edits, Path(work))
        params = _params(bundle, fmt, writer_options) if options.debug_params else None
        if bundle.unused and not options.allow_unused:
            from ..architectures.alignment import summarize
            raise KeyMismatchError(f"{summarize(bundle.unused)} source tensor(s) that nothing uses; pass "
                                   "--allow-unused to drop them (--debug-params shows where every tensor goes)",
                                   bundle.source)
        read_done = time.perf_counter()
        written = _write(bundle, fmt, dst_path, writer_options, options.overwrite)
    return {
        "ok": True,
        "source": str(bundle.source),
        "source_format": bundle.format,
        "destination": str(dst_path),
        "format": fmt.name,
        "architecture": bundle.model_type,
        "dtype": written["dtype"],
        "tensors": written["tensors"],
        "parameters": bundle.parameter_count,
        "files": written["files"],          # names: inside DST for a folder, beside it for files
        "bytes_written": written["bytes_written"],
        "seconds": round(time.perf_counter() - started, 3),
        "read_seconds": round(read_done - started, 3),
        "notes": bundle.notes,
        **{key: written[key] for key in ("validation", "export_seconds") if key in written},
        **({"tensor_types": written["types"]} if "types" in written else {}),
        **({"params": params, "unused": bundle.unused} if params is not None else {}),
    }


def _transcoded(src: Path, fmt: Format, dst: Path, options, overwrite: bool, started: float) -> dict:
    """Same format in and out, without the interchange (GGUF -> GGUF: llama-quantize's way)."""
    written = _publish(lambda out: fmt.transcode(src, out, options), fmt, dst, overwrite)
    return {"ok": True, "source": str(src), "source_format": fmt.name, "destination": str(dst), "format": fmt.name,
            "architecture": written["architecture"], "dtype": written["dtype"], "tensors": written["tensors"],
            "parameters": written["parameters"], "files": written["files"], "bytes_written": written["bytes_written"],
            "seconds": round(time.perf_counter() - started, 3), "read_seconds": 0.0, "notes": written["notes"],
            "tensor_types": written["types"]}


def _write(bundle: ModelBundle, fmt: Format, dst: Path, options, overwrite: bool) -> dict:
    return _publish(lambda out: fmt.write(bundle, out, options), fmt, dst, overwrite)


def _publish(write, fmt: Format, dst: Path, overwrite: bool) -> dict:
    """Write through `fmt` into a temporary beside `dst`, published whole: a folder renamed into place, or
    the files named after `dst` (split shards, ONNX graphs) moved beside it, the first one last."""
    try:
        if fmt.output == "files":
            with atomic_files(dst, overwrite) as tmp:
                return write(tmp / dst.name)
        with atomic_output(dst, overwrite) as tmp:
            return write(tmp)
    except (MemoryError, RuntimeError) as exc:
        raise ModelConversionError(f"conversion failed: {exc}", dst) from exc


def _params(bundle: ModelBundle, fmt: Format, writer_options) -> list[dict]:
    from .param_table import param_table, render
    rows = param_table(bundle, fmt, writer_options)
    log.info("tensors (source -> target, shape, dtype -> target type):\n%s", render(rows, bundle.unused))
    return rows


def calibrated_once(settings: dict, work: Path) -> Iterator[dict]:
    """The settings of each of several GGUF conversions of one source: with an imatrix corpus, the first
    computes the importance matrix (kept at save_imatrix, else in `work`) and the others read it."""
    while True:
        if not settings.get("imatrix_corpus"):
            yield settings
            continue
        kept = settings.get("save_imatrix") or work / "imatrix.gguf"
        yield {**settings, "save_imatrix": kept}
        settings = {**settings, "imatrix": kept, "imatrix_corpus": None, "imatrix_ctx": None, "imatrix_tokens": None,
                    "save_imatrix": None}


def convert_profile(src: str | Path, dst: str | Path, profile: str, **settings) -> dict:
    """One GGUF per type of a deployment profile: DST/model-{quant}.gguf for each (see formats/gguf/profiles.py)."""
    started = time.perf_counter()
    quants = quants_for(profile)
    if is_url(dst):
        folder: str | Path = str(dst).rstrip("/")
        outputs = [f"{folder}/{file_name(q)}" for q in quants]
    else:
        folder = Path(dst).expanduser()
        if folder.exists() and not folder.is_dir():
            raise UsageError("--profile writes a folder of GGUF files; this is a file", folder)
        outputs = [folder / file_name(q) for q in quants]
    results = []
    with tempfile.TemporaryDirectory(prefix="modelport-imatrix-") as work:
        for (q, out), each in zip(zip(quants, outputs), calibrated_once(settings, Path(work))):
            results.append(convert(src, out, quant=q, **each))
    return {"ok": True, "profile": profile, "destination": str(folder), "outputs": results,
            "seconds": round(time.perf_counter() - started, 3), "notes": results[0]["notes"] if results else []}
