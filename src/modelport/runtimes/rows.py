"""A sequence's logits made a block of positions at a time, for a reader that walks them in order.

At a large vocabulary one position's logits are half a megabyte (128256 float32), so a 500-position
prompt's whole [positions, vocab] array is 250 MB, and verify would hold three (the source's, the
result's, a runtime's own buffer). verify's comparisons walk positions in order a few rows at a time
(verify/metrics.compare, verify/quality), so each side hands them a `LogitRows` instead: it slices
like the array, and holds one block of rows, made when a slice reaches it.
"""
from __future__ import annotations

from typing import Callable, Iterator

import numpy as np

BLOCK_BYTES = 64 << 20      # float32 logits per block a runtime makes (130 positions at vocab 128256)


def block_positions(vocab: int) -> int:
    """Positions per block of logits at this vocabulary: BLOCK_BYTES of float32, at least one."""
    return max(1, BLOCK_BYTES // (4 * max(vocab, 1)))


class LogitRows:
    """Rows [0, rows) of logits, from `blocks()`: consecutive [n, vocab] float32 blocks covering them in
    order. A slice behind the held block starts `blocks()` again (correct, and as costly as the first time)."""

    def __init__(self, blocks: Callable[[], Iterator[np.ndarray]], rows: int, vocab: int) -> None:
        self._blocks, self.shape = blocks, (rows, vocab)
        self._walk: Iterator[np.ndarray] | None = None
        self._start, self._held = 0, np.zeros((0, vocab), np.float32)

    def __len__(self) -> int:
        return self.shape[0]

    @property
    def nbytes(self) -> int:
        return 4 * self.shape[0] * self.shape[1]

    def _advance(self) -> None:
        if self._walk is None:
            self._walk, self._start, self._held = self._blocks(), 0, self._held[:0]
        else:
            self._start += len(self._held)
        self._held = next(self._walk)

    def __getitem__(self, key: slice) -> np.ndarray:
        if not isinstance(key, slice) or key.step not in (None, 1):
            raise TypeError("LogitRows takes a slice of consecutive rows")
        a, b, _ = key.indices(len(self))
        if a < self._start:
            self._walk = None
        if self._walk is None:
            self._advance()
        parts = []
        while a < b:
            while a >= self._start + len(self._held):
                self._advance()
            stop = min(b, self._start + len(self._held))
            parts.append(self._held[a - self._start:stop - self._start])
            a = stop
        if not parts:
            return self._held[:0]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def materialize(self) -> np.ndarray:
        """Every row as one array (for a cache that keeps small ones)."""
        return self[0:len(self)]
