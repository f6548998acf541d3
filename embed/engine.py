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

import torch

from embed.embedder import Embedder, EmbedSpec
from embed.memory import apply_allocator_policy
from embed.model_stage import ModelStage
from embed.streaming import EmbeddedChunk, Reading, embed_stream, open_embedder

# The process's torch threads before any engine shared them out (the share is taken of this, so a
# second engine in the same process gets the same share, not half of the first's).
_TORCH_THREADS = torch.get_num_threads()


def open_engine(spec: EmbedSpec, *, label: str, match: list[dict] | None = None, live: bool = True) -> StreamEngine:
    """An engine on the networks `spec` builds (checked against the store configs in `match`, as
    open_embedder does), with its own model stage. The process's torch threads are shared out among
    the stage's threads first, before any of them starts: each network call runs on its share of the
    cores. Left at torch's default, each of the two stage threads ran its calls on every core, the
    calls fought for them, and one server held fewer students (bench/serve_load.py, docs/performance.md).
    The share holds for the rest of the process, and opening another engine gives the same share."""
    stage_threads = 2
    torch.set_num_threads(max(1, _TORCH_THREADS // stage_threads))
    embedder = open_embedder(spec, label=label, match=match, live=live, stage=ModelStage(threads=stage_threads))
    return StreamEngine(embedder, live=live)


class EngineSource:
    """One source in the engine: its thread, and how it ended (`error`: None for the end of stream or
    a stop). `finished` is set once its last chunk and its end have been handed on."""

    def __init__(self, name: str):
        self.name = name
        self.stopping = threading.Event()
        self.finished = threading.Event()
        self.error: Exception | None = None
        self.thread: threading.Thread | None = None

    def stop(self) -> None:
        """Stop after the chunk in hand. A thread waiting for its decoder's next chunk stops when that
        chunk comes or the source ends (a closed push pipe at once, a silent network source after
        embed.video.NETWORK_TIMEOUT_S)."""
        self.stopping.set()


class StreamEngine:
    """Sources added while it runs, each embedded in its own thread through one shared Embedder and
    model stage (open_engine builds both; or open_embedder(..., stage=ModelStage())). The engine owns
    the embedder, its stage and the sources' threads: `close()` stops and joins them all."""

    def __init__(self, embedder: Embedder, live: bool = True):
        if embedder.stage is None:
            raise ValueError("the engine's Embedder must run through a model stage")
        apply_allocator_policy()
        self.embedder, self.live = embedder, live
        self.stage = embedder.stage
        self.sources: list[EngineSource] = []
        self.lock = threading.Lock()
        self.closed = False

    def add(
        self,
        source: str | Path | BinaryIO,
        *,
        on_chunk: Callable[[EmbeddedChunk], None],
        on_end: Callable[[Exception | None], None],
        reading: Reading | None = None,
        name: str | None = None,
    ) -> EngineSource:
        """Start embedding a source: `on_chunk` gets its chunks in order and `on_end` is called once at
        the end (with the error that ended it, if one did), both from the source's own thread."""
        reading = reading or Reading(live=self.live)
        handle = EngineSource(name or str(getattr(source, "name", source)))

        def run() -> None:
            chunks = embed_stream(self.embedder, source, reading)
            try:
                for chunk in chunks:
                    on_chunk(chunk)
                    if handle.stopping.is_set():
                        break
            except Exception as e:  # noqa: BLE001 (this source ends alone; the others go on)
                handle.error = e
            finally:
                chunks.close()  # stops and joins its decoder thread
            try:
                on_end(handle.error)
            finally:
                handle.finished.set()

        handle.thread = threading.Thread(target=run, name=f"source {handle.name}", daemon=True)
        with self.lock:
            if self.closed:
                raise RuntimeError("the engine is closed")
            self.sources = [s for s in self.sources if not s.finished.is_set()] + [handle]
        handle.thread.start()
        return handle

    def close(self) -> None:
        """Stop every source, join their threads, then the model stage's, and let the networks go.
        Safe to call twice."""
        with self.lock:
            if self.closed:
                return
            self.closed = True
            sources = list(self.sources)
        for s in sources:
            s.stop()
        for s in sources:
            s.thread.join()
        self.stage.close()
        self.embedder.close()
