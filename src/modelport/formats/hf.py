"""Hugging Face model folders: sharded or single safetensors, or pytorch_model*.bin.

Reading maps each safetensors file only for the tensor being read (see torch_pickle for why);
writing streams tensors into HF-named shards with an index, the way `save_pretrained` lays them
out, so transformers and the hub treat the result as their own.
"""
from __future__ import annotations

import json
import os
import shutil
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import torch
from ..bundle import ModelBundle, RawRange, TensorRef
from ..dtypes import SAFETENSORS_NAMES, dtype_name, target_dtype
from ..errors import CorruptInputError, IncompleteCheckpointError, ModelFileNotFoundError, quoted
from ..progress import progress_bar
from ..stream import prefetch
from .assemble import assemble_bundle
from .safetensors_io import PlannedTensor, RowBlocks, SafetensorsStreamWriter, mapped_rows, read_header
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
    folder = index.parent.resolve()
    files = []
    for name in dict.fromkeys(weight_map.values()):
        if not isinstance(name, str) or not name:
            raise CorruptInputError(f"weight_map names {name!r} as a shard; expected a file name", index)
        shard = (index.parent / name).resolve()
        if shard.parent != folder:
            raise CorruptInputError(f"weight_map names {quoted(name)}, which is not a file in this folder", index)
        files.append(index.parent / name)
    missing = [f.name for f in files if not f.is_file()]
    if missing:
        raise IncompleteCheckpointError(f"index lists shards that are missing: {', '.join(missing[:5])}", index)
    return files


def safetensors_refs(path: Path) -> dict[str, TensorRef]:
    entries, _metadata = read_header(path)
    refs = {}
    for entry in entries:
        dtype = SAFETENSORS_NAMES.get(entry.dtype)
        if dtype is None:
            raise CorruptInputError(f"tensor {quoted(entry.name)} has dtype {entry.dtype}, which modelport cannot "
                                    "convert", path)
        raw = RawRange(path, entry.offset, entry.nbytes)
        shape = entry.shape
        rows = partial(mapped_rows, raw, shape, dtype) if shape and shape[0] else None
        refs[entry.name] = TensorRef(name=entry.name, shape=shape, dtype=dtype, loader=partial(_load_range, raw, shape, dtype),
                                     source=str(path), raw=raw, rows=rows)
    return refs


def _load_range(raw: RawRange, shape: tuple[int, ...], dtype: torch.dtype) -> torch.Tensor:
    with open(raw.path, "rb") as f:
        data = bytearray(os.pread(f.fileno(), raw.nbytes, raw.offset))
    if len(data) != raw.nbytes:
        raise CorruptInputError("ended before its tensor data (was it cut short after it was opened?)", raw.path)
    return torch.frombuffer(data, dtype=dtype).reshape(shape) if raw.nbytes else torch.empty(shape, dtype=dtype)


def _merged(per_file: list[tuple[Path, dict[str, TensorRef]]]) -> dict[str, TensorRef]:
    """Every file's tensors in one map; a name in two files is refused, since either could be meant."""
    refs: dict[str, TensorRef] = {}
    owner: dict[str, Path] = {}
    for file, found in per_file:
        for name, ref in found.items():
            if name in refs:
                raise CorruptInputError(f"tensor {quoted(name)} is in both {owner[name].name} and {file.name}; "
                                        "which one is meant is not clear", file.parent)
            refs[name], owner[name] = ref, file
    return refs


def read(path: Path, base_model: Path | None = None, trust_remote_code: bool = False) -> ModelBundle:
    folder = path if path.is_dir() else path.parent
    files = [path] if path.is_file() else weight_files(folder)
    per_file = []
    for file in files:
        if file.suffix == ".safetensors":
            per_file.append((file, safetensors_refs(file)))
        else:
            obj = load_pickle(file, trust_remote_code)
            if not isinstance(obj, dict):
                raise CorruptInputError("expected a state dict", file)
            per_file.append((file, pickle_refs(file, obj, (), trust_remote_code)))
    return assemble_bundle(_merged(per_file), path, "hf", base_model)


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
