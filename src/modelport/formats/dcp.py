"""torch distributed-checkpoint folders (`.metadata` + `*.distcp`), read and written in one process.

Reading uses the checkpoint's metadata for names, shapes and dtypes and loads one tensor at a time
(DCP reads only that tensor's byte ranges). Writing plans the checkpoint from shapes alone and
hands DCP each tensor only when its writer asks for it, so memory stays one tensor deep.
"""
from __future__ import annotations

import warnings
from pathlib import Path

import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint import FileSystemReader, FileSystemWriter
from torch.distributed.checkpoint.default_planner import DefaultSavePlanner
from torch.distributed.checkpoint.metadata import TensorStorageMetadata

from ..bundle import ModelBundle, TensorRef
from ..dtypes import target_dtype
from ..errors import CorruptInputError, IncompleteCheckpointError
from .assemble import assemble_bundle

MODEL_GROUPS = ("model", "state_dict", "module", "model_state_dict")


def read_metadata(path: Path):
    if not (path / ".metadata").is_file():
        raise IncompleteCheckpointError("DCP folder has no .metadata (still being written?)", path)
    try:
        return FileSystemReader(str(path)).read_metadata()
    except Exception as exc:
        raise CorruptInputError(f"unreadable DCP .metadata: {exc}", path) from exc


def read(path: Path, base_model: Path | None = None, trust_remote_code: bool = False) -> ModelBundle:
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
        refs[name] = TensorRef(name=name, shape=tuple(md.size), dtype=md.properties.dtype,
                               loader=_loader(path, fqn, tuple(md.size), md.properties.dtype), source=str(path))
    notes = []
    if model_group:
        notes.append(f"model weights taken from group {model_group!r}")
    if ignored:
        notes.append(f"ignored non-model entries: {', '.join(sorted(ignored)[:8])}")
    return assemble_bundle(refs, path, "dcp", base_model, notes)


def _loader(path: Path, fqn: str, shape: tuple[int, ...], dtype: torch.dtype):
    def load() -> torch.Tensor:
        tensor = torch.empty(shape, dtype=dtype)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            try:
                dcp.load({fqn: tensor}, storage_reader=FileSystemReader(str(path)), no_dist=True)
            except Exception as exc:
                raise CorruptInputError(f"cannot read tensor {fqn!r}: {exc}", path) from exc
        return tensor
    return load


class _LazySavePlanner(DefaultSavePlanner):
    """Plans from meta tensors; the real data is produced only when DCP's writer resolves an item.

    torch's FileSystemWriter keeps every tensor it wrote in a dict until the file is closed (for its
    safetensors format, even when writing torch.save format), which would hold the whole model. Its
    serial loader asks for item k+1 only after writing item k, so the storage of item k is released
    then: memory stays one tensor deep (70B-shaped HF -> DCP: 10.9 GB peak before, see performance.md).
    """

    def __init__(self, refs: dict[str, TensorRef], dtype: torch.dtype) -> None:
        super().__init__(flatten_state_dict=False, flatten_sharded_tensors=False)
        self._refs = refs
        self._dtype = dtype
        self._last: torch.Tensor | None = None

    def resolve_data(self, write_item):
        self.release()
        ref = self._refs[write_item.index.fqn]
        dtype = target_dtype(ref.dtype, self._dtype)
        if ref.rows is not None and ref.shape:
            # filled a row block at a time, in our own memory: a source tensor may be a view of a file
            # mapping, whose pages would stay resident for as long as torch's writer keeps the tensor
            self._last = torch.empty(ref.shape, dtype=dtype)
            at = 0
            for block in ref.row_chunks(dtype):
                self._last[at:at + block.shape[0]] = block
                at += block.shape[0]
        else:
            self._last = ref.load().to(dtype).contiguous()
        return self._last

    def release(self) -> None:
        if self._last is not None:
            self._last.untyped_storage().resize_(0)
            self._last = None


def write(bundle: ModelBundle, out: Path, dtype: torch.dtype) -> dict:
    """Write every tensor, tied ones included, as `model.state_dict()` would hold them for FSDP2."""
    out.mkdir()
    refs = {r.name: r for r in bundle}
    meta = {name: torch.empty(r.shape, dtype=target_dtype(r.dtype, dtype), device="meta") for name, r in refs.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        planner = _LazySavePlanner(refs, dtype)
        dcp.save(meta, storage_writer=FileSystemWriter(str(out), thread_count=1, single_file_per_rank=True),
                 planner=planner, no_dist=True)
        planner.release()
    from .hf import write_companions, written_config
    write_companions(bundle, out, written_config(bundle.config, dtype))
    written = sum(p.stat().st_size for p in out.glob("*.distcp"))
    return {"files": sorted(p.name for p in out.iterdir()), "bytes_written": written, "tensors": len(refs)}
