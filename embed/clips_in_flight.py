"""`embed run` with several clips in flight at once: the batched engine applied to a dataset.

Each clip in flight has its own thread running embed.clip_embedding's `embed_clip` (the one-clip code
the serial run uses: its stores, resume, truncation checks and failures unchanged) on its own
decoder thread; every clip's MTCNN and backbone calls go through one model stage (embed.model_stage),
so what the clips in flight have ready makes one batched call. One clip's start, store writes and
hand-offs overlap the others' network calls, and a GPU gets batches of many clips' faces.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Iterator

import torch

from embed.clip_embedding import ClipTargets, embed_clip
from embed.decode_ahead import decode_ahead
from embed.embedder import Embedder
from embed.layouts import Clip
from embed.run_report import ClipOutcome
from embed.video import frame_pixels

REFERENCE_PIXELS = 640 * 480  # a DAiSEE frame: the unit of the clips-in-flight memory pool


def default_clips_in_flight(device: torch.device) -> int:
    """On a GPU enough clips to keep it fed from every core's decoder and detector (two per core, at
    most 32); on the CPU two: one clip's decoding, Python steps and writes overlap the other's
    network calls (docs/performance.md, "`embed run` with clips in flight")."""
    if device.type == "cpu":
        return 2
    return max(2, min(32, 2 * (os.cpu_count() or 1)))


def embed_in_flight(
    embedder: Embedder,
    clips: list[Clip],
    targets: ClipTargets,
    in_flight: int,
) -> Iterator[ClipOutcome]:
    """Each clip's outcome as it finishes (any order), up to `in_flight` clips embedded at once. The
    embedder must run through a model stage. Leaving the iterator early (Ctrl-C) stops handing out
    clips and stops those in flight after the chunk in hand: they stay part-written, as a killed run
    leaves them, and the next run resumes them. It returns once their threads have ended (a process
    that exits while torch runs in a thread aborts)."""
    if embedder.stage is None:
        raise ValueError("clips in flight need an Embedder built with a model stage")
    todo: queue.SimpleQueue[Clip] = queue.SimpleQueue()
    for clip in clips:
        todo.put(clip)
    done: queue.SimpleQueue[ClipOutcome | BaseException] = queue.SimpleQueue()
    stop = threading.Event()
    pool = _PixelPool(in_flight * REFERENCE_PIXELS)

    def work() -> None:
        while not stop.is_set():
            try:
                clip = todo.get_nowait()
            except queue.Empty:
                return
            pixels = frame_pixels(clip.path) or REFERENCE_PIXELS
            if not pool.take(pixels):  # stopped while it waited for room
                return
            try:
                for _, chunks in decode_ahead([embedder.stream(clip.path)]):
                    outcome = embed_clip(embedder, clip, chunks, targets=targets, stop=stop)
                    if not outcome.stopped:
                        done.put(outcome)
            except BaseException as e:  # noqa: BLE001 (a store that cannot be written stops the run: raised by the consumer)
                done.put(e)
                return
            finally:
                pool.give(pixels)

    workers = max(1, min(in_flight, len(clips)))
    threads = [threading.Thread(target=work, name=f"clip {i}", daemon=True) for i in range(workers)]
    for t in threads:
        t.start()
    try:
        for _ in clips:
            item = done.get()
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        pool.close()
        for t in threads:
            t.join()


class _PixelPool:
    """The frame size the clips in flight may have between them. Some of what a clip holds grows with
    its frames' size beyond the chunk budget (the tracker's lag of a few frames, the decoder's reorder
    and reference frames): N clips in flight may hold what N clips of DAiSEE's 640x480 hold, so a 4K
    clip (27 times the pixels) waits until enough others have finished, and always one clip runs."""

    def __init__(self, capacity: int):
        self.capacity, self.used, self.closed = capacity, 0, False
        self.cond = threading.Condition()

    def take(self, pixels: int) -> bool:
        """Wait for room; False if the pool was closed meanwhile (nothing taken)."""
        with self.cond:
            self.cond.wait_for(lambda: self.closed or self.used == 0 or self.used + pixels <= self.capacity)
            if self.closed:
                return False
            self.used += pixels
            return True

    def give(self, pixels: int) -> None:
        with self.cond:
            self.used -= pixels
            self.cond.notify_all()

    def close(self) -> None:
        with self.cond:
            self.closed = True
            self.cond.notify_all()
