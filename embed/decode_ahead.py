"""Decoding in a background thread (PyAV releases the GIL), a bounded number of chunks ahead of the
consumer and across video boundaries, so the CNN is rarely idle waiting for video."""

from __future__ import annotations

import contextlib
import queue
import threading
from collections.abc import Iterator

import numpy as np

from embed.video import FrameChunk, Truncation, VideoStream

DECODE_AHEAD = 2  # chunks the decoder may run ahead of the consumer


class _End:
    """The decode of one video ended: with what it declared (truncation) and how its frames were
    turned upright (rotation), or with an error."""

    def __init__(self, truncation: Truncation | None = None, error: Exception | None = None, rotation: int = 0):
        self.truncation, self.error, self.rotation = truncation, error, rotation


class ClipChunks:
    """One video's decoded chunks as the decode thread delivers them; `truncation` and `rotation`
    once exhausted. On a live source chunks may have been dropped in between: the rest are numbered on."""

    def __init__(self, ahead: _DecodeAhead, index: int):
        self.ahead, self.index, self.truncation, self.rotation = ahead, index, None, 0

    def __iter__(self) -> Iterator[FrameChunk]:
        next_start = 0
        while True:
            item = self.ahead.get(self.index)
            if isinstance(item, _End):
                self.truncation, self.rotation = item.truncation, item.rotation
                if item.error is not None:
                    raise item.error
                return
            if self.ahead.live:
                item = self.ahead.with_waiting(self.index, item)
                item.start, next_start = next_start, next_start + len(item)
            yield item


class _DecodeAhead:
    """A thread decoding videos one after another into a bounded queue: it stays up to `depth`
    chunks ahead of the consumer, across video boundaries, and so holds at most that many chunks.
    A consumer that leaves a video early (its clip failed) has the rest of it skipped. On a live
    source the thread never waits: when `depth` chunks are waiting, the oldest is dropped (and
    counted in its stream's `dropped`), so the consumer always gets the most recent frames."""

    def __init__(self, streams: list[VideoStream], depth: int, live: bool = False):
        self.streams, self.queue, self.live = streams, queue.Queue(maxsize=max(1, depth)), live
        self.held: tuple | None = None  # an item taken off the queue early (with_waiting), handed out next
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="decode", daemon=True)
        self.thread.start()

    def _put(self, item, stream: VideoStream) -> bool:
        while not self.stop.is_set():
            try:
                self.queue.put(item, block=not self.live, timeout=0.1)
                return True
            except queue.Full:
                if self.live:
                    with contextlib.suppress(queue.Empty):
                        _, old = self.queue.get_nowait()
                        stream.dropped += len(old) if isinstance(old, FrameChunk) else 0
        return False

    def _run(self) -> None:
        for i, stream in enumerate(self.streams):
            try:
                for chunk in stream:
                    if not self._put((i, chunk), stream):
                        return
                end = _End(stream.truncation, rotation=stream.rotation)
            except Exception as e:  # noqa: BLE001 (handed to the consumer, raised there as that clip's error)
                end = _End(error=e)
            if not self._put((i, end), stream):
                return

    def get(self, index: int):
        while True:
            if self.held is not None:
                (i, item), self.held = self.held, None
            else:
                i, item = self.queue.get()
            if i == index:
                return item
            if i > index:  # cannot happen while the consumer reads in order
                raise RuntimeError(f"decode ahead out of order: video {i} while reading {index}")

    def with_waiting(self, index: int, chunk: FrameChunk) -> FrameChunk:
        """A live chunk joined with the chunks of its video waiting behind it: a consumer that fell
        behind takes what has piled up in one batch (cheaper per frame) instead of dropping it, and
        one that keeps up gets chunks as small as they come (latency). Chunking never changes the
        result (the tracker's chunked equals whole)."""
        parts = [chunk]
        while True:
            try:
                i, item = self.queue.get_nowait()
            except queue.Empty:
                break
            if i != index or not isinstance(item, FrameChunk):
                self.held = (i, item)
                break
            parts.append(item)
        if len(parts) == 1:
            return chunk
        arrived = None if any(p.arrived is None for p in parts) else np.concatenate([p.arrived for p in parts])
        return FrameChunk(
            chunk.start,
            np.concatenate([p.frames for p in parts]),
            np.concatenate([p.timestamps for p in parts]),
            arrived,
        )

    def close(self) -> None:
        self.stop.set()
        while self.thread.is_alive():
            try:
                self.queue.get(timeout=0.1)
            except queue.Empty:
                continue


def decode_ahead(
    streams: list[VideoStream], depth: int = DECODE_AHEAD, live: bool = False
) -> Iterator[tuple[VideoStream, ClipChunks]]:
    """(stream, its chunks) for each video in order, decoded in a background thread (live: dropping
    the oldest waiting chunk rather than waiting when `depth` chunks are already waiting)."""
    ahead = _DecodeAhead(streams, depth, live)
    try:
        for i, stream in enumerate(streams):
            yield stream, ClipChunks(ahead, i)
    finally:
        ahead.close()
