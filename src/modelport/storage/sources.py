"""Byte sources: how formats read a file's bytes, whether it is on this disk or in an object store.

Readers of range-readable formats (safetensors, GGUF) ask `byte_source(path)` for a header, a
tensor's row block or a scan over the header, and never open the file themselves. A local file is
read with pread and private mappings (no copy where the kernel can avoid one); a file of a mounted
URL (mirror.py) is read from a stream that runs ahead of the readers in file order (readahead.py:
one GET per stretch of the file read in order, a bounded window of bytes held), so the network and
the conversion overlap; a read the stream cannot serve (a header scan, a jump back) goes by range,
a large one cut into parts fetched several at a time.
"""
from __future__ import annotations

import mmap
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator

from .readahead import Stream, window_mb
from .retry import ShortRead, call

PART = 8 * 2**20             # bytes per ranged request of a large read
IN_FLIGHT = 4                # ranged requests at once, over every remote file of the process
STREAMS = 2                  # streams per file (two readers apart in one file each keep theirs)
OPEN_STREAMS = 3             # streams in the process: memory <= 3 x (ahead + behind + 4 MB), 156 MB by default
SCAN_BLOCK = 2**20           # first request of a header scan; doubled as the header proves longer

_REMOTE: dict[str, "RemoteSource"] = {}
_LOCK = threading.Lock()
_POOLS: dict[str, ThreadPoolExecutor] = {}
_OPEN: list[Stream] = []     # every stream of the process, least recently opened first


def _pool() -> ThreadPoolExecutor:
    """The threads running ranged requests (IN_FLIGHT at once over the process)."""
    with _LOCK:
        if "parts" not in _POOLS:
            _POOLS["parts"] = ThreadPoolExecutor(IN_FLIGHT, thread_name_prefix="modelport-parts")
        return _POOLS["parts"]


class LocalSource:
    """A file on this machine."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.kernel_path: Path | None = path          # the kernel can copy from it (copy_file_range)

    @property
    def size(self) -> int:
        return os.path.getsize(self.path)

    def read(self, offset: int, nbytes: int) -> bytearray:
        """Up to `nbytes` from `offset` (fewer only at the end of the file)."""
        out = bytearray(nbytes)
        with open(self.path, "rb", buffering=0) as f:
            f.seek(offset)
            got = f.readinto(out)
        return out if got == nbytes else out[:got]

    def rows(self, offset: int, nbytes: int) -> Any:
        """`nbytes` from `offset` as a writable buffer: a private mapping of just those pages (no copy;
        dropped with the array built on it, so converted pages do not stay resident)."""
        aligned = offset - offset % mmap.ALLOCATIONGRANULARITY
        with open(self.path, "rb") as f:
            view = mmap.mmap(f.fileno(), offset - aligned + nbytes, offset=aligned, access=mmap.ACCESS_COPY)
        return memoryview(view)[offset - aligned:]

    @contextmanager
    def scan(self) -> Iterator[Any]:
        """The whole file as something sliceable with a length (for header parsers that read forward)."""
        with open(self.path, "rb") as f, mmap.mmap(f.fileno(), self.size, access=mmap.ACCESS_READ) as mapped:
            yield mapped


class RemoteSource:
    """An object in a store, read by range with retries (retry.py); `shown` is its URL for messages."""

    def __init__(self, fs: Any, remote: str, size: int, shown: str) -> None:
        self.fs, self.remote, self._size, self.shown = fs, remote, size, shown
        self.kernel_path: Path | None = None
        self._streams: list[Stream] = []            # least recently used first
        self._lock = threading.Lock()

    @property
    def size(self) -> int:
        return self._size

    def fetch(self, start: int, stop: int) -> bytes:
        """Bytes [start, stop) in one ranged request, retried."""
        def once() -> bytes:
            data = self.fs.cat_file(self.remote, start=start, end=stop)
            if len(data) != stop - start:
                raise ShortRead(f"asked for {stop - start} bytes at {start}, got {len(data)}")
            return data
        return call(once, self.shown)

    def read_direct(self, offset: int, nbytes: int) -> bytearray:
        """`nbytes` from `offset` (fewer only at the end), fetched now by range (in parts when large)."""
        nbytes = max(0, min(nbytes, self._size - offset))
        out = bytearray(nbytes)
        if nbytes <= PART:
            out[:] = self.fetch(offset, offset + nbytes) if nbytes else b""
            return out
        starts = range(offset, offset + nbytes, PART)
        parts = [_pool().submit(self.fetch, s, min(s + PART, offset + nbytes)) for s in starts]
        try:
            for start, part in zip(starts, parts):
                chunk = part.result()
                out[start - offset:start - offset + len(chunk)] = chunk
        finally:
            for part in parts:
                part.cancel()
        return out

    def _stream_for(self, offset: int) -> Stream | None:
        """The stream that serves a read at `offset`: one whose window holds it or soon will, else a new
        one from there (the least recently used closed past STREAMS); None for a read just behind a
        stream's window (a laggard: read by range rather than restart a stream behind the others)."""
        ahead, behind = window_mb("MODELPORT_READ_AHEAD", 32), window_mb("MODELPORT_READ_BEHIND", 16)
        if ahead == 0:
            return None
        with self._lock:
            self._streams = [s for s in self._streams if s.alive]
            for stream in self._streams:
                if stream.covers(offset):
                    self._streams.remove(stream)
                    self._streams.append(stream)
                    return stream
            if any(s.base - ahead - behind <= offset < s.base for s in self._streams):
                return None
            while len(self._streams) >= STREAMS:
                self._streams.pop(0).close()
            stream = Stream(self, offset, ahead, behind, _pool())
            self._streams.append(stream)
        with _LOCK:
            _OPEN[:] = [s for s in _OPEN if s.alive] + [stream]
            while len(_OPEN) > OPEN_STREAMS:
                _OPEN.pop(0).close()            # its source drops it at its next read
        return stream

    def read(self, offset: int, nbytes: int) -> bytearray:
        """Up to `nbytes` from `offset` (fewer only at the end of the object)."""
        nbytes = max(0, min(nbytes, self._size - offset))
        if nbytes == 0:
            return bytearray()
        stream = self._stream_for(offset)
        data = stream.read(offset, nbytes) if stream is not None else None
        return data if data is not None else self.read_direct(offset, nbytes)

    def close(self) -> None:
        """Stop every stream (their threads end, their windows are freed)."""
        with self._lock:
            streams, self._streams = self._streams, []
        for stream in streams:
            stream.close()

    def rows(self, offset: int, nbytes: int) -> Any:
        return self.read(offset, nbytes)

    @contextmanager
    def scan(self) -> Iterator[Any]:
        yield _Scan(self)


class _Scan:
    """A remote file as a sliceable sequence for a parser reading forward: blocks fetched as it goes
    (SCAN_BLOCK first, doubling), bytes behind the parser dropped."""

    def __init__(self, source: RemoteSource) -> None:
        self.source, self.start, self.buffer, self.block = source, 0, bytearray(), SCAN_BLOCK

    def __len__(self) -> int:
        return self.source.size

    def __getitem__(self, index: slice) -> bytes:
        begin, end, _ = index.indices(self.source.size)
        if begin < self.start:
            raise ValueError("a scan reads forward only")
        if end > self.start + len(self.buffer):
            if begin >= self.start + len(self.buffer):
                self.start, self.buffer = begin, bytearray()
            else:
                del self.buffer[:begin - self.start]
                self.start = begin
            fetch_from = self.start + len(self.buffer)
            self.buffer += self.source.read_direct(fetch_from, max(end - fetch_from, self.block))
            self.block = min(self.block * 2, 64 * 2**20)
        return bytes(self.buffer[begin - self.start:end - self.start])


def register(local: Path, source: RemoteSource) -> None:
    with _LOCK:
        _REMOTE[os.path.abspath(local)] = source


def unregister(local: Path) -> RemoteSource | None:
    with _LOCK:
        source = _REMOTE.pop(os.path.abspath(local), None)
    if source is not None:
        source.close()
    return source


def registered_under(local: Path) -> list[Path]:
    """Every placeholder at `local` or below it (no walk of the disk: a local folder costs nothing)."""
    prefix = os.path.abspath(local)
    with _LOCK:
        return sorted(Path(k) for k in _REMOTE if k == prefix or k.startswith(prefix + os.sep))


def remote_of(local: Path) -> RemoteSource | None:
    return _REMOTE.get(os.path.abspath(local))


def byte_source(path: Path) -> LocalSource | RemoteSource:
    """The bytes of `path`: the object behind it when it stands for one in a mounted URL, else the file."""
    return _REMOTE.get(os.path.abspath(path)) or LocalSource(Path(path))
