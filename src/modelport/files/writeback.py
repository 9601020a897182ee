"""Written bytes pushed to disk as they are written, and out of the page cache once they are there.

A converter writes each output byte once and never reads it back. Left to the kernel, those bytes
stay cached until memory runs short: the publishing fsync then has gigabytes left to write, and every
chunk lands in page-cache pages the kernel has not used lately, which on a VM whose host reclaims
idle guest memory cost a host fault each (touching 2.2 GB of fresh memory took 0.16 s or 5.1 s here,
from one minute to the next). Starting writeback at once and dropping what has reached the disk a
window behind keeps the output's cache to that window, the same pages reused chunk after chunk:
writing and fsyncing 2.2 GB went from 2.8-4.5 s to 0.9-1.1 s (bench figures in docs/performance.md),
and a conversion no longer evicts its source, or anything else, from the page cache.

Both calls are hints: where they are missing (not Linux) or fail, the publishing fsync still makes
the output durable.
"""
from __future__ import annotations

import ctypes
import os
import threading
from collections import deque

from .libc import libc

WINDOW_BYTES = 64 * 2**20
_WAIT_BEFORE, _WRITE, _WAIT_AFTER = 1, 2, 4


_sync_file_range = getattr(libc(), "sync_file_range", None)
if _sync_file_range is not None:
    _sync_file_range.argtypes = [ctypes.c_int, ctypes.c_int64, ctypes.c_int64, ctypes.c_uint]


class WriteBehind:
    """The written ranges of one open file, from any number of writer threads."""

    def __init__(self, fd: int, window: int = WINDOW_BYTES) -> None:
        self.fd = fd
        self.window = window
        self._pending: deque[tuple[int, int]] = deque()
        self._pending_bytes = 0
        self._lock = threading.Lock()

    def wrote(self, offset: int, nbytes: int) -> None:
        """[offset, offset + nbytes) has just been written: start its writeback, and wait for and drop
        the oldest ranges beyond the window."""
        if _sync_file_range is None or nbytes <= 0:
            return
        _sync_file_range(self.fd, offset, nbytes, _WRITE)
        with self._lock:
            self._pending.append((offset, nbytes))
            self._pending_bytes += nbytes
            settled = []
            while self._pending_bytes > self.window:
                settled.append(self._pending.popleft())
                self._pending_bytes -= settled[-1][1]
        for start, length in settled:
            _sync_file_range(self.fd, start, length, _WAIT_BEFORE | _WRITE | _WAIT_AFTER)
            try:
                os.posix_fadvise(self.fd, start, length, os.POSIX_FADV_DONTNEED)
            except OSError:
                pass
