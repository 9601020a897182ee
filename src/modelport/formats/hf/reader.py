"""Reading HF model folders: safetensors (sharded or not, index checked) or pytorch_model*.bin.

safetensors headers are parsed and checked here (safetensors_io.read_header), and each tensor is a
lazy numpy view over a private mapping of just its rows (see safetensors_io.mapped_rows), so neither
torch nor the whole file is needed to convert one.
"""
from __future__ import annotations

from functools import partial
from pathlib import Path

from ...core.bundle import ModelBundle, RawRange, TensorRef
from ...core.dtypes import numpy_dtype
from ...core.errors import (
    CorruptInputError,
    IncompleteCheckpointError,
    ModelFileNotFoundError,
    quoted,
)
from ...storage import byte_source
from ..assemble import assemble_bundle
from ..base import ReadOptions
from . import BIN_INDEX, SAFE_INDEX
from .safetensors_io import mapped_rows, read_header


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
        raw, shape = RawRange(path, entry.offset, entry.nbytes), entry.shape
        rows = partial(mapped_rows, raw, shape, entry.dtype) if shape and shape[0] else None
        refs[entry.name] = TensorRef(name=entry.name, shape=shape, dtype=entry.dtype, source=str(path), raw=raw,
                                     loader=partial(_load_range, raw, shape, entry.dtype), rows=rows)
    return refs


def _load_range(raw: RawRange, shape: tuple[int, ...], dtype: str):
    import numpy as np
    data = byte_source(raw.path).read(raw.offset, raw.nbytes)
    if len(data) != raw.nbytes:
        raise CorruptInputError("ended before its tensor data (was it cut short after it was opened?)", raw.path)
    return np.frombuffer(data, dtype=numpy_dtype(dtype)).reshape(shape)


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


def read(path: Path, options: ReadOptions) -> ModelBundle:
    folder = path if path.is_dir() else path.parent
    files = [path] if path.is_file() else weight_files(folder)
    per_file = []
    for file in files:
        if file.suffix == ".safetensors":
            per_file.append((file, safetensors_refs(file)))
        else:
            from ..pytorch.pickle_io import load_pickle, pickle_refs
            obj = load_pickle(file, options.trust_remote_code)
            if not isinstance(obj, dict):
                raise CorruptInputError("expected a state dict", file)
            per_file.append((file, pickle_refs(file, obj, (), options.trust_remote_code)))
    return assemble_bundle(_merged(per_file), path, "hf", options.base_model)


