"""`modelport batch CONFIG.yaml`: many conversions from one file, each checkpoint on its own.

The file's shape is the one LMTK users already write (`task: convert` with a `convert:` block),
alone or as a `jobs:` list. Unknown keys are errors, so a typo never silently changes a run.
Relative paths are taken from the config file's folder.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path
from typing import Literal, Union

from pydantic import BaseModel, ConfigDict

from ..cluster import require_url
from ..core.errors import ModelportError
from ..core.settings_file import read_mapping, validated
from ..formats import CHECKPOINTS, detect_or_fail, discover
from . import executors
from ..storage import is_url, parse
from .job import join

FILE_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".gguf", ".onnx")
FINAL = {"hf": "hf", "huggingface": "hf", "dcp": "dcp", "gguf": "gguf"}


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
    imatrix: str | None = None               # GGUF: a llama.cpp importance matrix file
    imatrix_corpus: str | None = None        # GGUF: or a text (a file, or "builtin") to compute one from
    imatrix_ctx: int | None = None
    imatrix_tokens: int | None = None
    resources: dict[str, float] = {}         # Ray: custom resources each of these jobs' tasks asks for


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


def _file(base: Path, value: str | None) -> str | None:
    """A file setting taken from the config's folder ("builtin" names the bundled text)."""
    return value if value in (None, "builtin") else str(_under(base, value))


def checkpoints_of(source: Path) -> list[Path]:
    """One path per checkpoint: the source itself, or each checkpoint in a folder of them."""
    kind = detect_or_fail(source)
    return [c.path for c in discover(source)] if kind == CHECKPOINTS else [source]


def plan(path: Path, remote: bool = False) -> tuple[list[dict], list[dict]]:
    """(jobs to run, results already known): one job per checkpoint (and per profile quant), each a
    plain dict of its settings, so any executor can ship it to any worker. `remote`: the jobs run on
    other machines, so every file they name must be a URL (a path is refused before anything runs)."""
    base = path.parent
    jobs, known = [], []
    for job in load_config(path):
        spec = job.convert
        place = partial(_place, base, remote=remote)
        source, output = place(spec.checkpoint_path, "checkpoint_path"), place(spec.output_dir, "output_dir")
        name = job.experiment_name or (parse(source).name if is_url(source) else Path(source).name)
        try:
            items = [source] if is_url(source) else [str(p) for p in checkpoints_of(Path(source))]
        except ModelportError as exc:
            known.append({"job": name, "checkpoint": source, "ok": False, "output": None, "seconds": 0.0,
                          "error": str(exc)})
            continue
        settings = {"job": name, "initial_format": spec.initial_format, "dtype": spec.dtype,
                    "base_model": place(spec.base_model, "base_model"),
                    "max_shard_size": spec.max_shard_size, "overwrite": spec.overwrite,
                    "allow_unused": spec.allow_unused, "imatrix_ctx": spec.imatrix_ctx,
                    "imatrix_tokens": spec.imatrix_tokens, "imatrix": place(spec.imatrix, "imatrix"),
                    "imatrix_corpus": place(spec.imatrix_corpus, "imatrix_corpus"), "resources": spec.resources}
        for item in items:
            if spec.targets:
                from ..formats.gguf.profiles import file_name, quants_for
                folder = join(output, _stem(item)) if len(items) > 1 else output
                jobs += [{**settings, "checkpoint": item, "output": join(folder, target, file_name(quant)),
                          "to": "gguf", "quant": quant} for target in spec.targets for quant in quants_for(target)]
            else:
                to = FINAL[spec.final_format]
                jobs.append({**settings, "checkpoint": item, "output": join(output, _stem(item)), "to": to,
                             "quant": spec.quant if to == "gguf" else None})
    return jobs, known


def _place(base: Path, value: str | None, key: str, remote: bool) -> str | None:
    """A file setting: a URL as it is, "builtin" (the bundled corpus), or a path from the config's
    folder, which only this machine sees: refused when the jobs run on a cluster."""
    if value is None or value == "builtin" or is_url(value):
        return value
    path = str(_under(base, value))
    if remote:
        require_url(path, key)
    return path


def run(path: Path, executor: str = "local", workers: int = 1, address: str | None = None,
        resources: dict[str, float] | None = None) -> dict:
    jobs, results = plan(path, remote=address is not None)
    if executor == "ray":
        results += executors.run_ray(jobs, address=address, workers=workers, resources=resources or {})
    else:
        results += executors.run_local(jobs, workers=workers)
    failed = sum(not r["ok"] for r in results)
    return {"ok": failed == 0, "total": len(results), "succeeded": len(results) - failed,
            "failed": failed, "executor": executor, "results": results}


def _stem(item: str) -> str:
    """The output's name for a checkpoint: a file's stem, a folder's (or URL's) last name."""
    if is_url(item):
        name = parse(item).name
        return Path(name).stem if Path(name).suffix in FILE_SUFFIXES else name
    path = Path(item)
    return path.stem if path.is_file() else path.name


