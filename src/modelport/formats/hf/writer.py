"""Writing HF model folders: tensors streamed into safetensors shards with an index, the way
`save_pretrained` lays them out, so transformers and the hub treat the result as their own."""
from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from ...core.bundle import ModelBundle, RawRange, TensorRef
from ...core.dtypes import cast, resolve_dtype, target_dtype
from ...core.progress import progress_bar
from ...core.stream import prefetch
from ..companions import write_companions, written_config
from . import SAFE_INDEX, HFOptions
from .safetensors_io import PlannedTensor, RowBlocks, SafetensorsStreamWriter

if TYPE_CHECKING:
    import numpy as np


def plan_shards(refs: list[TensorRef], dtype: str, max_bytes: int) -> list[list[PlannedTensor]]:
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


def _payload(ref: TensorRef, dtype: str) -> "np.ndarray | RawRange | RowBlocks":
    """The bytes to write: a kernel-side copy when nothing changes; row blocks cast one at a time when
    the source reads rows alone; else the loaded, cast tensor."""
    if ref.raw is not None and ref.dtype == dtype:
        return ref.raw
    if ref.rows is not None:
        return RowBlocks(ref.shape, dtype, ref.row_chunks(dtype))
    return cast(ref.load(), dtype)


def write(bundle: ModelBundle, out: Path, options: HFOptions) -> dict:
    """Write `bundle` as an HF folder at `out` (a fresh path). Tied aliases are left out, as HF does."""
    out.mkdir()
    dtype = resolve_dtype(options.dtype, bundle.config, (t.dtype for t in bundle))
    refs = [r for r in bundle if r.alias_of is None]
    shards = plan_shards(refs, dtype, options.max_shard_size)
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
    write_companions(bundle, out, written_config(bundle.config, dtype))
    return {"files": names, "bytes_written": written, "tensors": len(refs), "dtype": dtype}
