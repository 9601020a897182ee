"""Reading torch distributed checkpoints: names, shapes and dtypes from `.metadata`, one tensor at a
time (DCP reads only that tensor's byte ranges)."""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

from ...core.bundle import ModelBundle, TensorRef
from ...core.errors import CorruptInputError, IncompleteCheckpointError
from ...core.torch_arrays import dtype_name, to_numpy
from ...storage import staged
from ..assemble import assemble_bundle
from ..base import ReadOptions

MODEL_GROUPS = ("model", "state_dict", "module", "model_state_dict")


def read_metadata(path: Path):
    """The checkpoint's .metadata. DCP's FileSystemReader opens the shard files itself, so a folder of a
    mounted URL is staged whole first."""
    staged(path)
    if not (path / ".metadata").is_file():
        raise IncompleteCheckpointError("DCP folder has no .metadata (still being written?)", path)
    try:
        return FileSystemReader(str(path)).read_metadata()
    except Exception as exc:
        raise CorruptInputError(f"unreadable DCP .metadata: {exc}", path) from exc


def read(path: Path, options: ReadOptions) -> ModelBundle:
    metadata = read_metadata(path)
    paths = metadata.planner_data or {}
    tensors = {fqn: md for fqn, md in metadata.state_dict_metadata.items() if isinstance(md, TensorStorageMetadata)}
    nested = {fqn: paths.get(fqn, (fqn,)) for fqn in tensors}
    groups = {p[0] for p in nested.values() if len(p) > 1}
    model_group = next((g for g in MODEL_GROUPS if g in groups), None)
    refs: dict[str, TensorRef] = {}
    ignored: set[str] = {fqn for fqn in metadata.state_dict_metadata if fqn not in tensors}
    for fqn, md in tensors.items():
        keys = nested[fqn]
        if model_group is not None:
            if keys[0] != model_group:
                ignored.add(keys[0])
                continue
            name = ".".join(keys[1:])
        else:
            name = fqn
        refs[name] = TensorRef(name=name, shape=tuple(md.size), dtype=dtype_name(md.properties.dtype),
                               loader=_loader(path, fqn, tuple(md.size), md.properties.dtype), source=str(path))
    notes = []
    if model_group:
        notes.append(f"model weights taken from group {model_group!r}")
    if ignored:
        notes.append(f"ignored non-model entries: {', '.join(sorted(ignored)[:8])}")
    return assemble_bundle(refs, path, "dcp", options.base_model, notes)


def _loader(path: Path, fqn: str, shape: tuple[int, ...], dtype: torch.dtype):
    def load():
        tensor = torch.empty(shape, dtype=dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                dcp.load({fqn: tensor}, storage_reader=FileSystemReader(str(path)), no_dist=True)
            except Exception as exc:
                raise CorruptInputError(f"cannot read tensor {fqn!r}: {exc}", path) from exc
        return to_numpy(tensor)
    return load
