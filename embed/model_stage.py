"""Threads that run the networks for many callers at once (clips in flight, the engine's sources).

Callers, each in its own thread, hand the stage an item and the batch function that handles it (MTCNN
on frames, a backbone on face crops, a head on windows) and wait for their part of the answer. Whatever
is waiting for one function when a thread is free runs as one call: N sources make one batch, not N
small ones, and the networks are loaded once. Nothing waits on a timer: while one call runs, the next
batch gathers (what serving engines call dynamic or continuous batching; Triton's and DeepStream's
batchers know nothing of faces or of a tracker's state, so this is ours). Functions take turns, oldest
first. A call that fails is run again for each caller alone, so one source's bad input fails that
source, never the batch's others.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence, Sized
from concurrent.futures import Future
from dataclasses import dataclass
from typing import Any

# A batch function maps a list of items to a list of results, in order. Calls batch together when
# their functions are equal: a bound method of one object, or an equal frozen dataclass.
BatchFn = Callable[[list[Any]], Sequence[Any]]


def spans(items: Sequence[Sized]) -> list[slice]:
    """Each item's rows in the concatenation of all of them: how a batched call's output is split
    back among its callers."""
    out, start = [], 0
    for item in items:
        out.append(slice(start, start + len(item)))
        start += len(item)
    return out


@dataclass
class BatchStats:
    """What one batch function's calls held: `items / calls` is its mean batch. `split`: batches
    that failed and were run again per caller."""

    calls: int = 0
    items: int = 0
    largest: int = 0
    split: int = 0


def _label(fn: BatchFn) -> str:
    return getattr(fn, "__qualname__", None) or type(fn).__qualname__


class ModelStage:
    """The model threads (`threads`, 2 by default: MTCNN's refinement stages are Python loops that
    hold one core, and a second thread runs another batch's network meanwhile). `run(fn, item)`
    blocks until `fn` has been called on a batch holding `item` and returns the item's result;
    `submit` queues it and returns a future.
    `stats()` says per function how the calls were batched (documented metrics of a run or server)."""

    def __init__(self, name: str = "models", threads: int = 2):
        self._cond = threading.Condition()
        self._pending: dict[BatchFn, list[tuple[Any, Future]]] = {}  # insertion order: oldest function first
        self._stats: dict[str, BatchStats] = {}
        self._closed = False
        self._threads = [threading.Thread(target=self._serve, name=f"{name} {i}", daemon=True) for i in range(threads)]
        for t in self._threads:
            t.start()

    def submit(self, fn: BatchFn, item: Any) -> Future:
        """Queue `item` for `fn` without waiting: its result (or the error its own input raised) comes
        through the future once a batch holding it has run."""
        future: Future = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("the model stage is closed")
            self._pending.setdefault(fn, []).append((item, future))
            self._cond.notify()
        return future

    def run(self, fn: BatchFn, item: Any) -> Any:
        """submit(fn, item) and wait for the item's result."""
        return self.submit(fn, item).result()

    @property
    def waiting(self) -> int:
        """Items waiting for a thread now (how far behind the networks are)."""
        with self._cond:
            return sum(len(waiting) for waiting in self._pending.values())

    def stats(self) -> dict[str, BatchStats]:
        """Per batch function (by its qualified name), a copy of its counts so far."""
        with self._cond:
            return {k: BatchStats(**vars(v)) for k, v in self._stats.items()}

    def close(self) -> None:
        """Finish what is waiting, then stop and join the threads."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for t in self._threads:
            t.join()

    def _serve(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._pending or self._closed)
                if not self._pending:
                    return
                fn = next(iter(self._pending))
                batch = self._pending.pop(fn)
                stats = self._stats.setdefault(_label(fn), BatchStats())
                stats.calls += 1
                stats.items += len(batch)
                stats.largest = max(stats.largest, len(batch))
            self._execute(fn, batch, stats)

    def _execute(self, fn: BatchFn, batch: list[tuple[Any, Future]], stats: BatchStats) -> None:
        try:
            results = fn([item for item, _ in batch])
            if len(results) != len(batch):
                raise RuntimeError(f"a batched call gave {len(results)} results for {len(batch)} items")
        except Exception as e:  # noqa: BLE001 (handed to the caller whose input it was)
            if len(batch) > 1:
                with self._cond:
                    stats.split += 1
                for one in batch:  # whose input broke it: each alone
                    self._execute(fn, [one], stats)
                return
            batch[0][1].set_exception(e)
            return
        for (_, future), out in zip(batch, results, strict=True):
            future.set_result(out)
