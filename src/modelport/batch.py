"""`modelport batch CONFIG.yaml`: many conversions from one file, each checkpoint on its own.

The file's shape is the one LMTK users already write (`task: convert` with a `convert:` block),
alone or as a `jobs:` list. Unknown keys are errors, so a typo never silently changes a run.
Relative paths are taken from the config file's folder.
"""
from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Literal, Union

from pydantic import BaseModel, ConfigDict

from . import detect as fmt
from .api import convert
from .checkpoints import discover
from .errors import ModelportError, UsageError
from .settings_file import read_mapping, validated

log = logging.getLogger("modelport")

INITIAL = {"auto": None, "fsdp": fmt.TORCH, "torch": fmt.TORCH, "pth": fmt.TORCH, "ddp": fmt.TORCH,
           "lightning": fmt.TORCH, "hf": fmt.HF, "huggingface": fmt.HF, "dcp": fmt.DCP}
FINAL = {"hf": fmt.HF, "huggingface": fmt.HF, "dcp": fmt.DCP, "gguf": fmt.GGUF}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ConvertSpec(_Strict):
    checkpoint_path: str
    output_dir: str
    base_model: str | None = None
    initial_format: Literal["auto", "fsdp", "torch", "pth", "ddp", "lightning", "hf", "huggingface", "dcp"] = "auto"
    final_format: Literal["huggingface", "hf", "dcp", "gguf"] = "huggingface"
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = "auto"
    quant: str | None = None                 # GGUF type when final_format is gguf
    targets: list[Literal["cpu", "gpu", "arm", "edge"]] = []   # GGUF per profile: OUTPUT/{TARGET}/model-{quant}.gguf
    max_shard_size: str = "5GB"
    overwrite: bool = False
    allow_unused: bool = False               # drop source tensors no target takes (else the job fails)


class Job(_Strict):
    task: Literal["convert"] = "convert"
    experiment_name: str | None = None
    verbose_level: int | None = None
    convert: ConvertSpec


class JobList(_Strict):
    jobs: list[Job]


def load_config(path: Path) -> list[Job]:
    data = read_mapping(path, "with `task: convert` or `jobs:`")
    parsed: Union[Job, JobList] = validated(JobList if "jobs" in data else Job, data, path)
    return parsed.jobs if isinstance(parsed, JobList) else [parsed]


def _under(base: Path, value: str | None) -> Path | None:
    if value is None:
        return None
    p = Path(value).expanduser()
    return p if p.is_absolute() else base / p


def checkpoints_of(source: Path) -> list[Path]:
    """One path per checkpoint: the source itself, or each checkpoint in a folder of them."""
    kind = fmt.detect_or_fail(source)
    return [c.path for c in discover(source)] if kind == fmt.CHECKPOINTS else [source]


def plan(path: Path) -> tuple[list[dict], list[dict]]:
    """(jobs to run, results already known): one job per checkpoint (and per profile quant), each a
    plain dict of its settings, so any executor can ship it to any worker."""
    base = path.parent
    jobs, known = [], []
    for job in load_config(path):
        spec = job.convert
        source = _under(base, spec.checkpoint_path)
        output = spec.output_dir if is_url(spec.output_dir) else str(_under(base, spec.output_dir))
        name = job.experiment_name or source.name
        try:
            items = checkpoints_of(source)
        except ModelportError as exc:
            known.append({"job": name, "checkpoint": str(source), "ok": False, "output": None, "seconds": 0.0,
                          "error": str(exc)})
            continue
        settings = {"job": name, "initial_format": spec.initial_format, "dtype": spec.dtype,
                    "base_model": str(_under(base, spec.base_model)) if spec.base_model else None,
                    "max_shard_size": spec.max_shard_size, "overwrite": spec.overwrite,
                    "allow_unused": spec.allow_unused}
        for item in items:
            if spec.targets:
                from .profiles import file_name, quants_for
                folder = join(output, _stem(item)) if len(items) > 1 else output
                jobs += [{**settings, "checkpoint": str(item), "output": join(folder, target, file_name(quant)),
                          "to": fmt.GGUF, "quant": quant} for target in spec.targets for quant in quants_for(target)]
            else:
                to = FINAL[spec.final_format]
                jobs.append({**settings, "checkpoint": str(item), "output": join(output, _stem(item)), "to": to,
                             "quant": spec.quant if to == fmt.GGUF else None})
    return jobs, known


def run(path: Path, executor: str = "local", workers: int = 1, address: str | None = None) -> dict:
    from . import executors

    jobs, results = plan(path)
    if executor == "ray":
        results += executors.run_ray(jobs, address=address, workers=workers)
    else:
        results += executors.run_local(jobs, workers=workers)
    failed = sum(not r["ok"] for r in results)
    return {"ok": failed == 0, "total": len(results), "succeeded": len(results) - failed,
            "failed": failed, "executor": executor, "results": results}


def is_url(value: str) -> bool:
    """An fsspec URL (s3://, gs://, file://, ...): outputs there are staged locally, then uploaded."""
    return "://" in value


def join(base: str, *parts: str) -> str:
    return "/".join([base.rstrip("/"), *parts]) if is_url(base) else str(Path(base, *parts))


def _stem(item: Path) -> str:
    return item.stem if item.is_file() else item.name


def run_job(job: dict) -> dict:
    """One conversion, a plain function of its settings: the local pool and Ray workers both call it.

    A previous attempt killed mid-write (a lost Ray worker) left only a hidden temporary beside the
    output; it is removed first, and that attempt's registry row is marked killed.
    """
    from .atomic import remove_dead_temporaries
    from .registry import FAILED, PUBLISHED, Registry

    item, dst = Path(job["checkpoint"]), job["output"]
    log.info("[%s] converting %s -> %s", job["job"], item, dst)
    started = time.perf_counter()
    registry = Registry.open()
    registry.mark_killed("batch")
    row = registry.start("batch", item, destination=dst)
    try:
        expected = INITIAL[job["initial_format"]]
        found = fmt.detect_or_fail(item)
        if expected is not None and found != expected:
            raise UsageError(f"initial_format {job['initial_format']!r} does not match what this is ({found})", item)
        options = dict(to=job["to"], dtype=job["dtype"], quant=job["quant"], base_model=job["base_model"],
                       max_shard_size=job["max_shard_size"], overwrite=job["overwrite"], allow_unused=job["allow_unused"])
        if is_url(dst):
            result = _convert_to_url(item, dst, options)
        else:
            remove_dead_temporaries(Path(dst).parent, Path(dst).name)
            result = convert(item, dst, **options)
        entry = {"ok": True, "output": dst, "error": None, "notes": result["notes"]}
        registry.finish(row, PUBLISHED, bytes_written=result["bytes_written"],
                        details={"job": job["job"], "quant": job["quant"]})
    except ModelportError as exc:
        entry = {"ok": False, "output": None, "error": str(exc)}
        registry.finish(row, FAILED, error=str(exc), details={"job": job["job"]})
    seconds = round(time.perf_counter() - started, 3)
    log.info("[%s] %s %s (%.1f s)", job["job"], "ok" if entry["ok"] else "FAILED", dst, seconds)
    return {"job": job["job"], "checkpoint": str(item), "seconds": seconds, **entry}


def _convert_to_url(item: Path, url: str, options: dict) -> dict:
    """Convert into a local staging folder, upload under a hidden temporary name, then move it into
    place: readers of the URL see the output whole or not at all (on object stores the move is a copy,
    so the final name appears only once the upload has completed)."""
    import tempfile

    import fsspec

    from .atomic import temp_name

    fs, path = fsspec.core.url_to_fs(url)
    if fs.exists(path) and not options["overwrite"]:
        raise UsageError("already exists (set overwrite: true to replace it)", url)
    parent, _, name = path.rstrip("/").rpartition("/")
    with tempfile.TemporaryDirectory(prefix="modelport-stage-") as stage:
        local = Path(stage) / name
        result = convert(item, local, **options)
        hidden = f"{parent}/{temp_name(name)}"
        try:
            fs.makedirs(parent, exist_ok=True)
            fs.put(str(local), hidden, recursive=local.is_dir())
            if fs.exists(path):
                fs.rm(path, recursive=True)
            fs.mv(hidden, path, recursive=True)
        except BaseException:
            if fs.exists(hidden):
                fs.rm(hidden, recursive=True)
            raise
    return result
