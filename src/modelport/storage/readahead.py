"""Read-ahead of one remote object in file order: one long GET streamed into a bounded window.

A conversion reads a shard's tensors nearly in file order (the writer's threads take consecutive
row blocks), so a request per row block pays a round trip, and a server's per-request cost (moto
reads the whole object for every ranged GET), for every 8 MB. A `Stream` instead opens one GET
from an offset to the end of the object and reads it on a thread of its own, ahead of the readers
and across tensor boundaries, into a window of chunks:

- at most `ahead` bytes past the furthest byte a reader has taken (or is waiting for) are fetched;
- `behind` bytes before it are kept for a reader slightly behind the others (two writer threads
  take blocks in turn); anything older is dropped, and a read that falls there goes by range;
- so one stream holds at most ahead + behind + one chunk (defaults 32 + 16 + 4 MB: `MODELPORT_READ_AHEAD`
  and `MODELPORT_READ_BEHIND`, in MB), whatever the model's size.

A body cut off or failing mid-stream is reopened at the next byte needed, through retry.call's
budget. Filesystems with no streaming GET (anything but s3fs here) feed the window with
consecutive RANGE_CHUNK-sized ranged reads, RANGES_IN_FLIGHT at once (those come on top of the
window's bound).
"""
from __future__ import annotations

import os
import threading
from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable, Iterator

from ..core.errors import UsageError
from .retry import ShortRead, call
from .urls import speaks_s3

MB = 2**20
STREAM_CHUNK = 4 * MB            # bytes per read of a streamed body (one hop to the filesystem's event loop)
RANGE_CHUNK = 8 * MB             # bytes per ranged request where no stream can be opened
RANGES_IN_FLIGHT = 4


def window_mb(name: str, default: int) -> int:
    """Bytes of a window setting given in MB by the environment variable `name` (0 allowed)."""
    raw = os.environ.get(name)
    try:
        value = int(raw) if raw else default
    except ValueError:
        raise UsageError(f"{name}={raw!r} is not a whole number of MB") from None
    if value < 0:
        raise UsageError(f"{name}={raw!r} is negative")
    return value * MB


def _s3_stream(fs: Any, remote: str, start: int) -> tuple[Callable[[int], list[bytes]], Callable[[], None]]:
    """(read up to n bytes, close) of a GET of `remote` from `start` to its end, on s3fs's loop."""
    from fsspec.asyn import sync

    bucket, key, version = fs.split_path(remote)
    extra = {"VersionId": version} if version else {}
    response = sync(fs.loop, fs._call_s3, "get_object", Bucket=bucket, Key=key, Range=f"bytes={start}-",
                    **extra, **fs.req_kw)
    body = response["Body"]

    async def read_upto(n: int) -> list[bytes]:
        """Up to n bytes as they came off the socket (fewer only at the end): no copy to join them."""
        parts, got = [], 0
        while got < n:
            part = await body.read(n - got)
            if not part:
                break
            parts.append(part)
            got += len(part)
        return parts

    return (lambda n: sync(fs.loop, read_upto, n)), body.close


class Stream:
    """Bytes [base, end) of one object, fetched in order by a thread of its own from `start` on."""

    def __init__(self, source: Any, start: int, ahead: int, behind: int, pool: ThreadPoolExecutor) -> None:
        self.source, self.ahead, self.behind, self.pool = source, ahead, behind, pool
        self.base = self.end = self.taken = self.wanted = start
        self.chunks: deque[bytes] = deque()
        self.error: BaseException | None = None
        self.closed = False
        self.cond = threading.Condition()
        threading.Thread(target=self._run, daemon=True, name="modelport-stream").start()

    # -- the fetching thread ------------------------------------------------------------------
    def _room(self) -> bool:
        return self.closed or self.end < max(self.taken, self.wanted) + self.ahead

    def _run(self) -> None:
        try:
            for parts in self._chunks():
                with self.cond:
                    self.chunks.extend(parts)
                    self.end += sum(len(part) for part in parts)
                    self.cond.notify_all()
                    while not self._room():
                        self.cond.wait()
                    if self.closed:
                        return
        except BaseException as exc:        # handed to the readers waiting on it
            with self.cond:
                self.error = exc
                self.cond.notify_all()

    def _chunks(self) -> Iterator[list[bytes]]:
        """The object from self.end on, in order, as lists of consecutive pieces."""
        size, shown = self.source.size, self.source.shown
        if speaks_s3(self.source.fs):
            state: dict[str, Any] = {}

            def next_chunk() -> list[bytes]:
                if "read" not in state:
                    state["read"], state["close"] = _s3_stream(self.source.fs, self.source.remote, self.end)
                want = min(STREAM_CHUNK, size - self.end)
                try:
                    parts = state["read"](want)
                    got = sum(len(part) for part in parts)
                    if got != want:
                        raise ShortRead(f"the stream from {self.end} ended after {got} of {want} bytes")
                    return parts
                except BaseException:
                    closer = state.pop("close")
                    state.pop("read")
                    try:
                        closer()
                    except Exception:
                        pass
                    raise
            try:
                while self.end < size and not self.closed:
                    yield call(next_chunk, shown)
            finally:
                if "close" in state:
                    state["close"]()
            return
        pending: deque[Future] = deque()
        queued = self.end
        try:
            while self.end < size and not self.closed:
                while queued < size and len(pending) < RANGES_IN_FLIGHT:
                    stop = min(queued + RANGE_CHUNK, size)
                    pending.append(self.pool.submit(self.source.fetch, queued, stop))
                    queued = stop
                yield [pending.popleft().result()]
        finally:
            for future in pending:
                future.cancel()

    # -- the readers ----------------------------------------------------------------------------
    @property
    def alive(self) -> bool:
        with self.cond:
            return self.error is None and not self.closed

    def covers(self, offset: int) -> bool:
        """Whether a read at `offset` is worth waiting for here (kept, or at most `ahead` past what is fetched)."""
        with self.cond:
            return self.error is None and not self.closed and self.base <= offset <= self.end + self.ahead

    def read(self, offset: int, nbytes: int) -> bytearray | None:
        """The bytes, or None when they have been dropped (the caller reads them by range)."""
        stop = offset + nbytes
        with self.cond:
            self.wanted = max(self.wanted, stop)
            self.cond.notify_all()
            while self.end < stop and self.error is None and not self.closed and offset >= self.base:
                self.cond.wait()
            if self.error is not None:
                raise self.error
            if self.closed or offset < self.base:
                return None
            out = bytearray(nbytes)
            position = self.base
            for chunk in self.chunks:
                chunk_end = position + len(chunk)
                if chunk_end > offset and position < stop:
                    lo, hi = max(offset, position), min(stop, chunk_end)
                    out[lo - offset:hi - offset] = chunk[lo - position:hi - position]
                if chunk_end >= stop:
                    break
                position = chunk_end
            self.taken = max(self.taken, stop)
            while self.chunks and self.base + len(self.chunks[0]) <= self.taken - self.behind:
                self.base += len(self.chunks.popleft())
            self.cond.notify_all()
            return out

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.chunks.clear()
            self.cond.notify_all()
