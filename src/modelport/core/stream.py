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


def prefetch(items: Iterable[T], fn: Callable[[T], R], window: int = 2, threads: int = 2,
             size: Callable[[T], int] = lambda _: 0, budget: int = 0) -> Iterator[tuple[T, R]]:
    """Yield (item, fn(item)) in order, computing ahead at most `window` items and, when a budget is
    given, at most `budget` bytes (by `size`) beyond the one being consumed."""
    window = max(1, window)
    with ThreadPoolExecutor(max_workers=max(1, threads), thread_name_prefix="modelport") as pool:
        pending: deque[tuple[T, Future[R], int]] = deque()
        in_flight = 0
        try:
            for item in items:
                n = size(item)
                while pending and (len(pending) >= window or (budget and in_flight + n > budget)):
                    head, fut, head_n = pending.popleft()
                    in_flight -= head_n
                    yield head, fut.result()
                pending.append((item, pool.submit(fn, item), n))
                in_flight += n
            while pending:
                head, fut, _ = pending.popleft()
                yield head, fut.result()
        finally:
            for _item, fut, _n in pending:
                fut.cancel()
