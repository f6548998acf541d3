"""One thread that runs the networks for many sources at once (embed.engine).

Callers, each in its own thread, hand it work of one kind (MTCNN on frames of one size, a backbone on
face crops, a head on windows) and wait for their part of the answer. Whatever of one kind is waiting
when the thread is free runs as one call: N sources make one batch, not N small ones, and the networks
are loaded once. Nothing waits on a timer: while one call runs, the next batch gathers (what serving
engines call dynamic or continuous batching; Triton's and DeepStream's batchers know nothing of faces
or of a tracker's state, so this is ours). Kinds take turns, oldest first. A call that fails is run
again for each caller alone, so one source's bad input fails that source, never the batch's others.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Sequence, Sized
from typing import Any

BatchFn = Callable[[list[Any]], Sequence[Any]]


def spans(items: Sequence[Sized]) -> list[slice]:
    """Each item's rows in the concatenation of all of them: how a batched call's output is split
    back among its callers."""
    out, start = [], 0
    for item in items:
        out.append(slice(start, start + len(item)))
        start += len(item)
    return out


class _Request:
    __slots__ = ("item", "result", "error", "done")

    def __init__(self, item: Any):
        self.item, self.result, self.error = item, None, None
        self.done = threading.Event()


class ModelStage:
    """The model thread(s). `run(kind, fn, item)` blocks until `fn` has been called on a batch holding
    `item` (fn maps a list of items to a list of results, in order) and returns the item's result.
    With several threads, batches run side by side (MTCNN's refinement stages are Python loops that
    hold one core; a second thread runs another batch's network meanwhile)."""

    def __init__(self, name: str = "models", threads: int = 2):
        self._cond = threading.Condition()
        self._pending: dict[Hashable, tuple[BatchFn, list[_Request]]] = {}  # insertion order: oldest kind first
        self._closed = False
        self.calls = 0  # batched calls made
        self.items = 0  # items they held: items / calls is the mean batch
        self._threads = [threading.Thread(target=self._serve, name=f"{name} {i}", daemon=True) for i in range(threads)]
        for t in self._threads:
            t.start()

    def run(self, kind: Hashable, fn: BatchFn, item: Any) -> Any:
        request = _Request(item)
        with self._cond:
            if self._closed:
                raise RuntimeError("the model stage is closed")
            self._pending.setdefault(kind, (fn, []))[1].append(request)
            self._cond.notify()
        request.done.wait()
        if request.error is not None:
            raise request.error
        return request.result

    @property
    def waiting(self) -> int:
        """Items waiting for a thread now (how far behind the networks are)."""
        with self._cond:
            return sum(len(requests) for _, requests in self._pending.values())

    def close(self) -> None:
        """Finish what is waiting, then stop the thread."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        for t in self._threads:
            t.join()

    def _serve(self) -> None:
        while True:
            with self._cond:
                while not self._pending and not self._closed:
                    self._cond.wait()
                if not self._pending:
                    return
                kind = next(iter(self._pending))
                fn, requests = self._pending.pop(kind)
                self.calls += 1
                self.items += len(requests)
            self._execute(fn, requests)

    def _execute(self, fn: BatchFn, requests: list[_Request]) -> None:
        try:
            results = fn([r.item for r in requests])
            if len(results) != len(requests):
                raise RuntimeError(f"a batched call gave {len(results)} results for {len(requests)} items")
        except Exception as e:  # noqa: BLE001 (handed to the caller whose input it was)
            if len(requests) > 1:
                for r in requests:  # whose input broke it: each alone
                    self._execute(fn, [r])
                return
            requests[0].error = e
            requests[0].done.set()
            return
        for r, out in zip(requests, results, strict=True):
            r.result = out
            r.done.set()
