"""Tensors in flight: load and transform the next few while the current one is being written.

Peak memory is the window times the largest tensor, never the model; the pool overlaps reading
and casting (which release the GIL in torch) with the writer's I/O.
"""
from __future__ import annotations

from collections import deque
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

T = TypeVar("T")
R = TypeVar("R")


def prefetch(items: Iterable[T], fn: Callable[[T], R], window: int = 2, threads: int = 2) -> Iterator[tuple[T, R]]:
    """Yield (item, fn(item)) in order, computing at most `window` results ahead."""
    window = max(1, window)
    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="modelport") as pool:
        pending: deque[tuple[T, Future[R]]] = deque()
        try:
            for item in items:
                pending.append((item, pool.submit(fn, item)))
                if len(pending) > window:
                    head, fut = pending.popleft()
                    yield head, fut.result()
            while pending:
                head, fut = pending.popleft()
                yield head, fut.result()
        finally:
            for _item, fut in pending:
                fut.cancel()
