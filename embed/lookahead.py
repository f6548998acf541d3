"""One look-ahead: the next item's result computed on a thread while the caller handles this one.

Used for reading blocks of clips from a store (embed.cache) and batches of a streamed split
(sequence.train). Decoding video ahead (embed.decode_ahead) is not this: it runs many chunks
ahead across clip boundaries and, on a live source, drops the oldest chunk instead of waiting.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

T, R = TypeVar("T"), TypeVar("R")


def read_ahead(fn: Callable[[T], R], items: list[T]) -> Iterator[R]:
    """fn over items in order, computing the next result on a thread while the caller handles
    this one: reads overlap the caller's work, and at most two results are alive at a time."""
    if not items:
        return
    with ThreadPoolExecutor(1, thread_name_prefix="read-ahead") as pool:
        pending = pool.submit(fn, items[0])
        try:
            for k in range(len(items)):
                result = pending.result()
                if k + 1 < len(items):
                    pending = pool.submit(fn, items[k + 1])
                yield result
        finally:
            pending.cancel()
