"""Hugging Face model folders: sharded or single safetensors, or pytorch_model*.bin.

Reading maps each safetensors file only for the tensor being read (see torch_pickle for why);
writing streams tensors into HF-named shards with an index, the way `save_pretrained` lays them
out, so transformers and the hub treat the result as their own.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from safetensors import safe_open

from ..bundle import ModelBundle, RawRange, TensorRef
from ..dtypes import SAFETENSORS_NAMES, dtype_name, target_dtype
from ..errors import CorruptInputError, IncompleteCheckpointError, ModelFileNotFoundError
from ..progress import progress_bar
from ..stream import prefetch
from .assemble import assemble_bundle
from .safetensors_io import PlannedTensor, RowBlocks, SafetensorsStreamWriter, data_ranges, mapped_rows
from .torch_pickle import load_pickle, pickle_refs

SAFE_INDEX = "model.safetensors.index.json"
BIN_INDEX = "pytorch_model.bin.index.json"
DEFAULT_SHARD_SIZE = "5GB"


def is_hf_dir(path: Path) -> bool:
    return path.is_dir() and bool(weight_files(path, must_exist=False))


def weight_files(folder: Path, must_exist: bool = True) -> list[Path]:
    for index in (SAFE_INDEX, BIN_INDEX):
        if (folder / index).is_file():
            return _indexed_files(folder / index)
    found = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("pytorch_model*.bin"))
    if not found and must_exist:
        raise ModelFileNotFoundError("no *.safetensors or pytorch_model*.bin weights in this folder", folder)
    return found


def _indexed_files(index: Path) -> list[Path]:
    from ..companions import read_json

    weight_map = read_json(index).get("weight_map")
    if not isinstance(weight_map, dict) or not weight_map:
        raise CorruptInputError("index has no weight_map", index)
    files = [index.parent / name for name in dict.fromkeys(weight_map.values())]
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise IncompleteCheckpointError(f"index lists shards that are missing: {', '.join(missing[:5])}", index)
    return files


def safetensors_refs(path: Path) -> dict[str, TensorRef]:
    try:
        with safe_open(path, framework="pt") as f:
            entries = [(k, f.get_slice(k)) for k in f.keys()]
            shapes = {k: (tuple(s.get_shape()), SAFETENSORS_NAMES[s.get_dtype()]) for k, s in entries}
    except Exception as exc:  # the library raises its own error types for every kind of damage
        raise CorruptInputError(f"not a readable safetensors file (truncated or corrupt): {exc}", path) from exc
    ranges = data_ranges(path)
    refs = {}
    for k, (shape, dtype) in shapes.items():
        raw = RawRange(path, *ranges[k])
        rows = partial(mapped_rows, raw, shape, dtype) if shape and shape[0] else None
        refs[k] = TensorRef(name=k, shape=shape, dtype=dtype, loader=_safetensors_loader(path, k), source=str(path),
                            raw=raw, rows=rows)
    return refs


def _safetensors_loader(path: Path, name: str):
    def load() -> torch.Tensor:
        with safe_open(path, framework="pt") as f:
            return f.get_tensor(name)
    return load


def read(path: Path, base_model: Path | None = None, trust_remote_code: bool = False) -> ModelBundle:
    folder = path if path.is_dir() else path.parent
    files = [path] if path.is_file() else weight_files(folder)
    refs: dict[str, TensorRef] = {}
    for file in files:
        if file.suffix == ".safetensors":
            refs.update(safetensors_refs(file))
        else:
            obj = load_pickle(file, trust_remote_code)
            if not isinstance(obj, dict):
                raise CorruptInputError("expected a state dict", file)
            refs.update(pickle_refs(file, obj, (), trust_remote_code))
    return assemble_bundle(refs, path, "hf", base_model)


@dataclass
class HFWriteOptions:
    dtype: torch.dtype
    max_shard_size: int
    threads: int = 2
    window: int = 4
    window_bytes: int = 256 * 2**20


def plan_shards(refs: list[TensorRef], dtype: torch.dtype, max_bytes: int) -> list[list[PlannedTensor]]:
    shards: list[list[PlannedTensor]] = [[]]
    size = 0
    for ref in refs:
        planned = PlannedTensor(ref.name, ref.shape, target_dtype(ref.dtype, dtype))
        if shards[-1] and size + planned.nbytes > max_bytes:
            shards.append([])
            size = 0
        shards[-1].append(planned)
        size += planned.nbytes
    return shards


def _payload(ref: TensorRef, dtype: torch.dtype) -> torch.Tensor | RawRange | RowBlocks:
    """The bytes to write: a kernel-side copy when nothing changes; row blocks cast one at a time when
    the source reads rows alone; else the loaded, cast tensor."""
    if ref.raw is not None and ref.dtype == dtype:
        return ref.raw
    if ref.rows is not None:
        return RowBlocks(ref.shape, dtype, ref.row_chunks(dtype))
    return ref.load().to(dtype)


def written_config(config: dict, dtype: torch.dtype) -> dict:
    """The source config with the dtype recorded in whichever key(s) it used (both if neither)."""
    out = dict(config)
    keys = [k for k in ("dtype", "torch_dtype") if k in config] or ["dtype", "torch_dtype"]
    for key in keys:
        out[key] = dtype_name(dtype)
    return out


def write_companions(bundle: ModelBundle, out: Path, config: dict) -> None:
    (out / "config.json").write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")
    if bundle.generation_config is not None:
        (out / "generation_config.json").write_text(json.dumps(bundle.generation_config, indent=2) + "\n")
    for name, src in bundle.tokenizer_files.items():
        shutil.copyfile(src, out / name)


def write(bundle: ModelBundle, out: Path, options: HFWriteOptions) -> dict:
    """Write `bundle` as an HF folder at `out` (a fresh path). Tied aliases are left out, as HF does."""
    out.mkdir()
    refs = [r for r in bundle if r.alias_of is None]
    shards = plan_shards(refs, options.dtype, options.max_shard_size)
    names = (["model.safetensors"] if len(shards) == 1 else
             [f"model-{i:05d}-of-{len(shards):05d}.safetensors" for i in range(1, len(shards) + 1)])
    total = sum(p.nbytes for shard in shards for p in shard)
    by_name = {r.name: r for r in refs}
    written = 0
    with progress_bar(total, f"writing {out.name}") as bar:
        for file_name, shard in zip(names, shards):
            with SafetensorsStreamWriter(out / file_name, shard) as writer:
                for planned, data in prefetch(shard, lambda p: _payload(by_name[p.name], p.dtype), options.window,
                                              options.threads, lambda p: p.nbytes, options.window_bytes):
                    n = writer.write(planned.name, data)
                    written += n
                    bar.update(n)
    if len(shards) > 1:
        index = {"metadata": {"total_size": total},
                 "weight_map": {p.name: f for f, shard in zip(names, shards) for p in shard}}
        (out / SAFE_INDEX).write_text(json.dumps(index, indent=2) + "\n")
    write_companions(bundle, out, written_config(bundle.config, options.dtype))
    return {"files": names, "bytes_written": written, "tensors": len(refs)}
