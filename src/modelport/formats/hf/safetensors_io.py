"""safetensors headers read and written directly, and files written as a stream, one tensor at a time.

The safetensors library's `save_file` needs every tensor of a file in memory at once. Its format
is an 8-byte header length, a JSON header with each tensor's dtype, shape and byte range, then the
data; since a ModelBundle knows every shape and dtype up front, the header is written first and the
data streamed after it, and the result is read back by the library itself in the tests.
"""
from __future__ import annotations

import errno
import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator

from ...core.bundle import RawRange
from ...core.dtypes import ITEMSIZE, SAFETENSORS_CODES, SAFETENSORS_NAMES, numpy_dtype
from ...core.errors import CorruptInputError, quoted
from ...files.writeback import WriteBehind
from ...storage import byte_source

if TYPE_CHECKING:
    import numpy as np

COPY_CHUNK = 1 << 26
NO_KERNEL_COPY = (errno.EXDEV, errno.ENOSYS, errno.EINVAL, errno.EOPNOTSUPP, errno.EBADF)


MAX_HEADER_BYTES = 100_000_000      # the safetensors library's own limit
HEAD_GUESS = 1 << 16                # first read of a header: one ranged request for most files


@dataclass(frozen=True)
class HeaderEntry:
    name: str
    dtype: str                 # core/dtypes.py name: float32, bfloat16, int64, ...
    shape: tuple[int, ...]
    offset: int                # absolute byte offset in the file
    nbytes: int


def read_header(path: Path) -> tuple[list[HeaderEntry], dict[str, str]]:
    """(tensor entries in file order, `__metadata__`), checked as the safetensors library checks them:
    a bounded JSON header, known dtypes, sizes that match shapes, and byte ranges that tile the data
    section exactly, with no gap, overlap or byte outside the file."""
    def fail(message: str) -> CorruptInputError:
        return CorruptInputError(f"not a readable safetensors file (truncated or corrupt): {message}", path)

    try:
        source = byte_source(path)
        size = source.size
        if size < 8:
            raise fail(f"{size} bytes is too short for a header")
        head = source.read(0, min(size, HEAD_GUESS))      # one request holds most headers whole
        (length,) = struct.unpack("<Q", head[:8])
        if length > min(MAX_HEADER_BYTES, size - 8):
            raise fail(f"header length {length} exceeds the file ({size} bytes) or the 100 MB limit")
        raw = head[8:8 + length] if 8 + length <= len(head) else source.read(8, length)
    except OSError as exc:
        raise CorruptInputError(f"cannot read: {exc.strerror or exc}", path) from exc
    try:
        header = json.loads(raw.decode("utf-8"), object_pairs_hook=_unique_keys)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise fail(f"header is not JSON ({type(exc).__name__})") from None
    if not isinstance(header, dict):
        raise fail("header is not a JSON object")
    metadata = header.pop("__metadata__", None) or {}
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise fail("__metadata__ is not a map of strings")
    start = 8 + length
    entries = sorted((_entry(name, info, start, fail) for name, info in header.items()), key=lambda e: e.offset)
    at = start
    for entry in entries:
        if entry.offset != at:
            raise fail(f"tensor {quoted(entry.name)} starts at byte {entry.offset - start} of the data, "
                       f"expected {at - start} (overlapping or missing data)")
        at += entry.nbytes
    if at != size:
        raise fail(f"the tensors account for {at - start} bytes of data, the file holds {size - start}")
    return entries, metadata


def _unique_keys(pairs: list[tuple[str, object]]) -> dict:
    out = dict(pairs)
    if len(out) != len(pairs):
        seen: set[str] = set()
        twice = next(k for k, _ in pairs if k in seen or seen.add(k))
        raise ValueError(f"key {twice!r} appears twice")
    return out


def _entry(name: str, info: object, start: int, fail) -> HeaderEntry:
    what = f"tensor {quoted(name)}"
    if not isinstance(info, dict):
        raise fail(f"{what} is not described by an object")
    dtype, shape, offsets = info.get("dtype"), info.get("shape"), info.get("data_offsets")
    if dtype not in SAFETENSORS_NAMES:
        raise fail(f"{what} has unknown dtype {dtype!r}")
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) and d >= 0
                                              for d in shape):
        raise fail(f"{what} has shape {shape!r}, not a list of non-negative integers")
    if (not isinstance(offsets, list) or len(offsets) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offsets) or not 0 <= offsets[0] <= offsets[1]):
        raise fail(f"{what} has data_offsets {offsets!r}, not [begin, end]")
    nbytes = math.prod(shape) * ITEMSIZE[SAFETENSORS_NAMES[dtype]]
    if offsets[1] - offsets[0] != nbytes:
        raise fail(f"{what} is {dtype} {shape} ({nbytes} bytes) but spans {offsets[1] - offsets[0]} bytes")
    return HeaderEntry(name, SAFETENSORS_NAMES[dtype], tuple(shape), start + offsets[0], nbytes)


def mapped_rows(raw: RawRange, shape: tuple[int, ...], dtype: str, start: int, stop: int) -> "np.ndarray":
    """Rows [start, stop) as a tensor over their bytes alone: for a local file a private mapping of just
    them (no copy; the mapping goes with the tensor, so pages already converted do not stay resident),
    for a remote one the ranged read's buffer. Writable either way (torch wants it), never written back."""
    row_bytes = raw.nbytes // shape[0]
    import numpy as np
    np_dtype = numpy_dtype(dtype)
    count = (stop - start) * row_bytes // np_dtype.itemsize
    if count == 0:
        return np.empty((stop - start, *shape[1:]), dtype=np_dtype)
    view = byte_source(raw.path).rows(raw.offset + start * row_bytes, (stop - start) * row_bytes)
    if len(view) != (stop - start) * row_bytes:
        raise CorruptInputError("ended before its tensor data (was it cut short after it was opened?)", raw.path)
    return np.frombuffer(view, dtype=np_dtype, count=count).reshape(stop - start, *shape[1:])


@dataclass(frozen=True)
class PlannedTensor:
    name: str
    shape: tuple[int, ...]
    dtype: str

    @property
    def nbytes(self) -> int:
        n = ITEMSIZE[self.dtype]
        for d in self.shape:
            n *= d
        return n


def header_bytes(tensors: Iterable[PlannedTensor], metadata: dict[str, str] | None = None) -> bytes:
    header: dict[str, object] = {"__metadata__": metadata or {"format": "pt"}}
    offset = 0
    for t in tensors:
        header[t.name] = {"dtype": SAFETENSORS_CODES[t.dtype], "shape": list(t.shape),
                          "data_offsets": [offset, offset + t.nbytes]}
        offset += t.nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)   # the data section starts 8-byte aligned, as the library writes it
    return struct.pack("<Q", len(raw)) + raw


def tensor_bytes(array: "np.ndarray") -> memoryview:
    """The array's raw little-endian bytes, without a copy when it is already contiguous."""
    import numpy as np
    flat = np.ascontiguousarray(array).reshape(-1)
    return memoryview(flat.view(np.uint8))


@dataclass(frozen=True)
class RowBlocks:
    """A tensor given as consecutive row blocks (already cast), so the writer never holds it whole."""

    shape: tuple[int, ...]
    dtype: str
    blocks: Iterator["np.ndarray"]


class SafetensorsStreamWriter:
    """Write a planned file: header now, then `write(name, tensor)` in plan order."""

    def __init__(self, path: Path, plan: list[PlannedTensor], metadata: dict[str, str] | None = None) -> None:
        self.path = path
        self.plan = plan
        self._next = 0
        self._file = open(path, "wb", buffering=0)   # unbuffered: kernel copies share the fd's offset
        self._offset = 0
        self._behind = WriteBehind(self._file.fileno())
        self._write_all(memoryview(header_bytes(plan, metadata)))

    def write(self, name: str, data: "np.ndarray | RawRange | RowBlocks") -> int:
        """Append the next planned tensor, given as a tensor, row blocks, or a byte range of another file."""
        expected = self.plan[self._next]
        if isinstance(data, RawRange):
            ok = name == expected.name and data.nbytes == expected.nbytes
        else:
            dtype = data.dtype if isinstance(data, RowBlocks) else data.dtype.name
            ok = name == expected.name and tuple(data.shape) == expected.shape and dtype == expected.dtype
        if not ok:
            raise ValueError(f"{self.path}: got {name} {data}, planned {expected}")
        if isinstance(data, RawRange):
            written = self._copy(data)
        elif isinstance(data, RowBlocks):
            written = sum(self._write_all(tensor_bytes(block)) for block in data.blocks)
            if written != expected.nbytes:
                raise ValueError(f"{self.path}: {name} gave {written} bytes in row blocks, planned {expected.nbytes}")
        else:
            written = self._write_all(tensor_bytes(data))
        self._next += 1
        return written

    def _write_all(self, data: memoryview) -> int:
        done = 0
        while done < len(data):
            done += self._file.write(data[done:])
        self._wrote(done)
        return done

    def _wrote(self, nbytes: int) -> None:
        self._behind.wrote(self._offset, nbytes)
        self._offset += nbytes

    def _copy(self, src: RawRange) -> int:
        source = byte_source(src.path)
        if source.kernel_path is None:                  # not a local file: copied through memory
            for offset in range(src.offset, src.offset + src.nbytes, COPY_CHUNK):
                block = source.read(offset, min(COPY_CHUNK, src.offset + src.nbytes - offset))
                if not block:
                    raise OSError(errno.EIO, f"{src.path} ended before its tensor data")
                self._write_all(memoryview(block))
            return src.nbytes
        with open(src.path, "rb") as f:
            offset, left = src.offset, src.nbytes
            while left:
                try:
                    n = os.copy_file_range(f.fileno(), self._file.fileno(), min(left, COPY_CHUNK), offset)
                    self._wrote(n)
                except OSError as exc:
                    if exc.errno not in NO_KERNEL_COPY:
                        raise
                    n = self._write_all(memoryview(os.pread(f.fileno(), min(left, COPY_CHUNK), offset)))
                if n == 0:
                    raise OSError(errno.EIO, f"{src.path} ended before its tensor data")
                offset += n
                left -= n
        return src.nbytes

    def close(self) -> None:
        if not self._file.closed:
            self._file.close()
        if self._next != len(self.plan):
            raise ValueError(f"{self.path}: wrote {self._next} of {len(self.plan)} planned tensors")

    def __enter__(self) -> "SafetensorsStreamWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.close()
        else:
            self._file.close()
