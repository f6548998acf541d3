"""Several sources embedded at once in one process: stage one's streaming entry for a class.

Each source has its own thread running embed.streaming's per-source loop (its decoder thread ahead of
it, its own face tracker, its chunks handed to a callback in order); all of them share one Embedder
whose MTCNN and backbone calls go through one model stage (embed.model_stage), so the frames due for
detection from every source make one MTCNN call and their crops one backbone call. A source's chunks
are what stream_video gives for it alone (the same code; batching changes float rounding only).
Live sources keep their most recent frames and drop the rest when the engine is behind (counted per
source in its stream's `dropped`), so latency stays bounded and memory flat however many send.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

from embed.embedder import Embedder
from embed.streaming import EmbeddedChunk, embed_stream


class EngineSource:
    """One source in the engine: its thread, and how it ended (`error`: None for the end of stream or
    a stop)."""

    def __init__(self, name: str, thread: threading.Thread):
        self.name, self.thread = name, thread
        self.stopping = threading.Event()
        self.error: Exception | None = None
        self.finished = threading.Event()

    def stop(self) -> None:
        """Stop after the chunk in hand (a decoder blocked on a silent network source stops when the
        source closes or sends again; its thread is a daemon either way)."""
        self.stopping.set()


class StreamEngine:
    """Sources added while it runs, each embedded in its own thread through one shared Embedder and
    model stage (build it with open_embedder(..., stage=engine.stage))."""

    def __init__(self, embedder: Embedder, live: bool = True):
        if embedder.stage is None:
            raise ValueError("the engine's Embedder must run through a model stage")
        self.embedder, self.live = embedder, live
        self.stage = embedder.stage

    def add(
        self,
        source: str | Path | BinaryIO,
        on_chunk: Callable[[EmbeddedChunk], None],
        on_end: Callable[[Exception | None], None],
        name: str | None = None,
        input_format: str | None = None,
        input_options: dict[str, str] | None = None,
        rate_cap: float | None = None,
        pacing: tuple[int, int] | None = None,
    ) -> EngineSource:
        """Start embedding a source: `on_chunk` gets its chunks in order and `on_end` is called once at
        the end (with the error that ended it, if one did), both from the source's own thread.
        `pacing`: embed.streaming.live_pacing's detection interval and chunk size for it."""
        label = name or str(getattr(source, "name", source))
        handle = EngineSource(label, threading.Thread())

        def run() -> None:
            chunks = embed_stream(self.embedder, source, self.live, rate_cap, input_format, input_options, pacing=pacing)
            try:
                for chunk in chunks:
                    on_chunk(chunk)
                    if handle.stopping.is_set():
                        break
            except Exception as e:  # noqa: BLE001 (this source ends alone; the others go on)
                handle.error = e
            finally:
                chunks.close()  # stops its decoder thread
                handle.finished.set()
            on_end(handle.error)

        handle.thread = threading.Thread(target=run, name=f"source {label}", daemon=True)
        handle.thread.start()
        return handle

    def close(self) -> None:
        self.stage.close()
