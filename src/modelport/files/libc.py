"""The C library, for the two calls Python's os module does not offer (glibc's `mallopt`, Linux's
`sync_file_range`); None where no C library can be loaded."""
from __future__ import annotations

import ctypes
import ctypes.util
from functools import lru_cache


@lru_cache(maxsize=1)
def libc() -> ctypes.CDLL | None:
    try:
        return ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    except OSError:
        return None
