"""A GGUF model as one header, whether it is one file or the shards llama.cpp's gguf-split (or our
writer's --split-max-size) cut it into: `NAME-00001-of-0000N.gguf`, metadata in the first shard,
`split.no` / `split.count` / `split.tensors.count` in each. Any shard's path stands for the model."""
from __future__ import annotations

import re
from dataclasses import replace
from pathlib import Path

from ...core.errors import CorruptInputError, ModelFileNotFoundError, quoted
from .header import GGUFHeader, read_header

SHARD = re.compile(r"(?P<stem>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf")


def shard_paths(path: Path) -> list[Path]:
    """Every file of the model `path` belongs to, in order; a missing shard is named."""
    found = SHARD.fullmatch(path.name)
    if found is None:
        return [path]
    count = int(found["count"])
    if not 1 <= int(found["no"]) <= count:
        raise CorruptInputError(f"shard number {int(found['no'])} is not between 1 and {count}", path)
    paths = [path.with_name(f"{found['stem']}-{i:05d}-of-{count:05d}.gguf") for i in range(1, count + 1)]
    missing = [p.name for p in paths if not p.is_file()]
    if missing:
        raise ModelFileNotFoundError(f"{len(missing)} of the {count} shards of this split GGUF are missing: "
                                     f"{', '.join(missing[:3])}", path)
    return paths


def read_model(path: Path) -> GGUFHeader:
    """The model's header: the first shard's metadata, every shard's tensors (each knowing its file)."""
    paths = shard_paths(path)
    headers = [read_header(p) for p in paths]
    if len(headers) == 1:
        return headers[0]
    for i, header in enumerate(headers):
        no, count = header.get("split.no"), header.get("split.count")
        if (no, count) != (i, len(headers)):
            raise CorruptInputError(f"split.no/split.count say shard {no!r} of {count!r}, but the file name says "
                                    f"{i + 1} of {len(headers)} (0-based: {i})", header.path)
    tensors = [t for header in headers for t in header.tensors]
    names: set[str] = set()
    for t in tensors:
        if t.name in names:
            raise CorruptInputError(f"tensor {quoted(t.name)} is in more than one shard", t.file)
        names.add(t.name)
    stated = headers[0].get("split.tensors.count")
    if stated is not None and stated != len(tensors):
        raise CorruptInputError(f"split.tensors.count is {stated}, but the {len(headers)} shards hold "
                                f"{len(tensors)} tensors", headers[0].path)
    return replace(headers[0], tensors=tensors, shards=tuple(paths))
