"""Decoding in a background thread (PyAV releases the GIL), a bounded number of chunks ahead of the
consumer and across video boundaries, so the networks are rarely idle waiting for video."""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterator

import numpy as np

from embed.video import FrameChunk, Truncation, VideoStream

DECODE_AHEAD = 2  # chunks the decoder may run ahead of the consumer


class _End:
    """The decode of one video ended: with what it declared (truncation) and how its frames were
    turned upright (rotation), or with an error."""

    def __init__(self, truncation: Truncation | None = None, error: Exception | None = None, rotation: int = 0):
        self.truncation, self.error, self.rotation = truncation, error, rotation


class _HandOff:
    """A bounded FIFO of (video index, chunk or _End) between the decoder thread and its consumer.
    `put` waits for room, or on a live source drops the oldest waiting chunk instead; `get` waits for
    an item; `close` wakes both for good. Every wait is on one condition: nothing polls."""

    def __init__(self, depth: int, live: bool):
        self.items: deque[tuple[int, FrameChunk | _End]] = deque()
        self.depth, self.live = max(1, depth), live
        self.cond = threading.Condition()
        self.closed = False

    def put(self, item: tuple[int, FrameChunk | _End], stream: VideoStream) -> bool:
        """False once closed: the decoder stops. A live source's end never displaces its last chunk:
        only chunks are dropped, for a newer chunk."""
        with self.cond:
            if self.live:
                while isinstance(item[1], FrameChunk) and len(self.items) >= self.depth:
                    _, old = self.items.popleft()
                    stream.dropped += len(old) if isinstance(old, FrameChunk) else 0
            else:
                self.cond.wait_for(lambda: self.closed or len(self.items) < self.depth)
            if self.closed:
                return False
            self.items.append(item)
            self.cond.notify_all()
            return True

    def get(self) -> tuple[int, FrameChunk | _End]:
        with self.cond:
            self.cond.wait_for(lambda: self.closed or self.items)
            if not self.items:
                raise RuntimeError("decode ahead: read after it was closed")
            item = self.items.popleft()
            self.cond.notify_all()
            return item

    def take_waiting(self, index: int) -> list[FrameChunk]:
        """The chunks of video `index` waiting at the head, without waiting for more."""
        out = []
        with self.cond:
            while self.items and self.items[0][0] == index and isinstance(self.items[0][1], FrameChunk):
                out.append(self.items.popleft()[1])
            self.cond.notify_all()
        return out

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.items.clear()
            self.cond.notify_all()


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
    """A thread decoding videos one after another into a bounded hand-off: it stays up to `depth`
    chunks ahead of the consumer, across video boundaries, and so holds at most that many chunks.
    A consumer that leaves a video early (its clip failed) has the rest of it skipped. On a live
    source the thread never waits: when `depth` chunks are waiting, the oldest is dropped (and
    counted in its stream's `dropped`), so the consumer always gets the most recent frames."""

    def __init__(self, streams: list[VideoStream], depth: int, live: bool = False):
        self.streams, self.live = streams, live
        self.handoff = _HandOff(depth, live)
        self.thread = threading.Thread(target=self._run, name="decode", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        for i, stream in enumerate(self.streams):
            try:
                for chunk in stream:
                    if not self.handoff.put((i, chunk), stream):
                        return
                end = _End(stream.truncation, rotation=stream.rotation)
            except Exception as e:  # noqa: BLE001 (handed to the consumer, raised there as that clip's error)
                end = _End(error=e)
            if not self.handoff.put((i, end), stream):
                return

    def get(self, index: int) -> FrameChunk | _End:
        while True:
            i, item = self.handoff.get()
            if i == index:
                return item
            if i > index:  # cannot happen while the consumer reads in order
                raise RuntimeError(f"decode ahead out of order: video {i} while reading {index}")

    def with_waiting(self, index: int, chunk: FrameChunk) -> FrameChunk:
        """A live chunk joined with the chunks of its video waiting behind it: a consumer that fell
        behind takes what has piled up in one batch (cheaper per frame) instead of dropping it, and
        one that keeps up gets chunks as small as they come (latency). Chunking never changes the
        result (the tracker's chunked equals whole)."""
        parts = [chunk, *self.handoff.take_waiting(index)]
        if len(parts) == 1:
            return chunk
        arrived = None if any(p.arrived is None for p in parts) else np.concatenate([p.arrived for p in parts])
        return FrameChunk(
            chunk.start,
            np.concatenate([p.frames for p in parts]),
            np.concatenate([p.timestamps for p in parts]),
            arrived=arrived,
        )

    def close(self) -> None:
        """Stop the decoder and wait for it: at once if it waits for room, after the read in hand if
        it is inside one (a network source's read gives up after embed.video.NETWORK_TIMEOUT_S)."""
        self.handoff.close()
        self.thread.join()


def decode_ahead(
    streams: list[VideoStream], depth: int = DECODE_AHEAD, live: bool = False
) -> Iterator[tuple[VideoStream, ClipChunks]]:
    """(stream, its chunks) for each video in order, decoded in a background thread (live: dropping
    the oldest waiting chunk rather than waiting when `depth` chunks are already waiting). Leaving
    the iteration (or closing the generator) stops and joins the thread."""
    ahead = _DecodeAhead(streams, depth, live)
    try:
        for i, stream in enumerate(streams):
            yield stream, ClipChunks(ahead, i)
    finally:
        ahead.close()
