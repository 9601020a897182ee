"""Writing a GGUF's tensor data in place: the one mechanism behind HF -> GGUF (writer.py) and
GGUF -> GGUF (requantize.py).

gguf-py writes the header, metadata and tensor infos; from them every tensor's offset is known, so
each file is sized up front (padding between tensors reads back as zeros) and worker threads write
any chunk of any tensor at its place as soon as it is made, no chunk waiting on another. Each write's
writeback starts at once (files/writeback.py), so the publishing fsync finds little left.
"""
from __future__ import annotations

import os
from collections import Counter
from pathlib import Path
from typing import Callable, Iterable, TypeVar

import gguf
import numpy as np

from ...core.progress import progress_bar
from ...core.stream import prefetch
from ...files.writeback import WriteBehind

Work = TypeVar("Work")


def data_offsets(writer: gguf.GGUFWriter) -> tuple[dict[str, tuple[int, int]], list[int]]:
    """Where each tensor's data starts ((file index, byte offset)) and each file's final size, once
    gguf-py has written the header, metadata and tensor infos: the layout it would write sequentially."""
    align = writer.data_alignment
    offsets: dict[str, tuple[int, int]] = {}
    sizes = []
    for file_id, (fout, tensors) in enumerate(zip(writer.fout, writer.tensors)):
        fout.flush()
        offset = -(-fout.tell() // align) * align
        for name, info in tensors.items():
            offsets[name] = (file_id, offset)
            offset += -(-info.nbytes // align) * align
        sizes.append(offset)
    return offsets, sizes


class PlacedData:
    """The data section of a GGUF (or of each split shard) whose tensor infos are all added."""

    def __init__(self, writer: gguf.GGUFWriter) -> None:
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_ti_data_to_file()
        self.writer = writer
        self.offsets, self.sizes = data_offsets(writer)
        for fout, size in zip(writer.fout, self.sizes):
            os.ftruncate(fout.fileno(), size)
        self.behind = [WriteBehind(fout.fileno()) for fout in writer.fout]

    def put(self, name: str, at: int, data: np.ndarray) -> int:
        """Write `data`'s bytes `at` bytes into tensor `name`'s data; returns the bytes written."""
        file_id, start = self.offsets[name]
        view, done = memoryview(np.ascontiguousarray(data).reshape(-1).view(np.uint8)), 0
        fd = self.writer.fout[file_id].fileno()
        while done < len(view):
            done += os.pwrite(fd, view[done:], start + at + done)
        self.behind[file_id].wrote(start + at, len(view))
        return len(view)

    def fill(self, work: Iterable[Work], produce: Callable[[Work], int], threads: int, label: str) -> None:
        """Run `produce` (which puts its chunk and returns its bytes) over `work` on `threads` threads,
        a bounded window ahead, then close the files."""
        threads = max(1, threads)
        with progress_bar(sum(self.sizes), label) as bar:
            for _item, written in prefetch(list(work), produce, window=2 * threads, threads=threads):
                bar.update(written)
        self.writer.close()


def summary(folder: Path, qtypes: Iterable[gguf.GGMLQuantizationType]) -> dict:
    """What a GGUF write reports: its files (the one, or the shards), their bytes, tensors per type."""
    files = sorted(f.name for f in folder.iterdir())
    counts = Counter(qtype.name for qtype in qtypes)
    return {"files": files, "bytes_written": sum((folder / f).stat().st_size for f in files),
            "tensors": sum(counts.values()), "types": dict(counts)}
