"""Stage one's public streaming entry: one video (a file, a URL, a capture device or a pipe)
decoded, tracked and embedded chunk by chunk, nothing cached. `stream_video` embeds one source;
`open_embedder` and `embed_stream` are the same two steps apart, which the engine (embed.engine:
many sources on one set of networks) runs per source. Stage two's predict, live and serve reach
stage one through this module and embed.engine alone (docs/architecture.md, "Dependency rules")."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from embed.backbones import require_expressions
from embed.cache import ClipData
from embed.decode_ahead import DECODE_AHEAD, decode_ahead
from embed.embedder import Embedder, EmbedSpec
from embed.errors import ConfigError
from embed.memory import CHUNK_FRAMES, apply_allocator_policy, release_free_heap
from embed.tracking import tracked_chunks
from embed.video import FrameChunk, VideoStream

if TYPE_CHECKING:
    from embed.model_stage import ModelStage

# A live source is processed a few frames at a time: a window's line waits for its last frame's chunk.
LIVE_CHUNK_FRAMES = 5
LIVE_WAITING = 1


@dataclass
class EmbeddedChunk:
    """Consecutive frames of a streamed video, embedded: what stream_video hands out."""

    data: ClipData
    arrived: np.ndarray  # (n,) time.monotonic() when each frame was decoded
    stream: VideoStream  # its counters so far: fps, decoded, dropped, rotation
    expressions: np.ndarray | None = None  # (n, E) the first backbone's expression probabilities, if asked


@dataclass(frozen=True)
class Reading:
    """How one source is read. `live`: small chunks (latency), and frames that arrive while the
    pipeline is behind are skipped, never queued without bound (the stream's `dropped` counts them).
    `rate_cap` keeps at most that many frames per second (a 60-fps camera for a model whose cache
    was embedded at 30). `pacing` (detect_every, chunk_frames) overrides the tracker's detection
    interval and the chunk size (live_pacing). With `expressions`, each chunk also carries the first
    backbone's expression probabilities (a backbone that has a classifier). `idle_timeout`: seconds a
    network address may send nothing before the source fails (None: embed.video.NETWORK_TIMEOUT_S)."""

    input_format: str | None = None
    input_options: dict[str, str] | None = None
    live: bool = False
    rate_cap: float | None = None
    pacing: tuple[int, int] | None = None
    expressions: bool = False
    idle_timeout: float | None = None


def spec_for_stores(configs: list[dict], weights: list[str | None], *, device: str | None, label: str) -> EmbedSpec:
    """The spec that embeds a video as these stores' clips were (a run's input: one store, or several
    fused, from one decode and detection; stream_video's `match`); `label` names the run in errors."""
    first = configs[0]
    if any(c.get("detector") != first.get("detector") or c.get("frames") != first.get("frames") for c in configs):
        raise ConfigError(
            f"{label}: the run's stores were embedded with different face detection or frame "
            f"settings, so one pass cannot reproduce them all; fix: fuse stores embedded with the "
            f"same --detect-* and --max-fps options"
        )
    backbones = tuple(c["backbone"] for c in configs)
    return EmbedSpec(backbones, tuple(weights), device, detector=first["detector"], max_fps=first["frames"]["max_fps"])


def stream_video(
    source: str | Path,
    spec: EmbedSpec,
    reading: Reading | None = None,
    *,
    match: list[dict] | None = None,
    ready: Callable[[], None] | None = None,
) -> Iterator[EmbeddedChunk]:
    """Embed one video as it decodes, nothing cached: each chunk of frames whose face boxes are final,
    in order. Memory is set by the chunk size, not the video's length. The source is a file, a URL, a
    capture device (reading.input_format) or '-'. With `match` (the extraction configs of the stores
    a run was trained on; the spec from spec_for_stores) the result is guaranteed to match those
    stores: different weights (or code that preprocesses differently) are an error, raised here,
    never silently different embeddings. `ready` is called once the models are set up, just before
    the source is opened. The networks are let go when the iteration ends or is closed."""
    reading = reading or Reading()
    apply_allocator_policy()
    embedder = open_embedder(spec, label=str(source), match=match, live=reading.live, expressions=reading.expressions)
    return _closing(embedder, embed_stream(embedder, source, reading, ready=ready))


def _closing(embedder: Embedder, chunks: Iterator[EmbeddedChunk]) -> Iterator[EmbeddedChunk]:
    try:
        yield from chunks
    finally:
        chunks.close()
        embedder.close()


def open_embedder(
    spec: EmbedSpec,
    *,
    label: str,
    match: list[dict] | None = None,
    live: bool = False,
    expressions: bool = False,
    stage: ModelStage | None = None,
) -> Embedder:
    """The networks a stream is embedded with, checked against the store configs in `match`; `label`
    names the source (or run) the errors are about. Chunks are small on a live source, and its first
    (slow) network calls are made here rather than while frames arrive. With a model stage, for
    several sources at once. A file cut short still yields what it has: predicting on it is better
    than refusing."""
    chunk_frames = spec.chunk_frames or (LIVE_CHUNK_FRAMES if live else CHUNK_FRAMES)
    embedder = dataclasses.replace(spec, allow_truncated=True, chunk_frames=chunk_frames).build(stage=stage)
    try:
        if expressions:
            require_expressions(embedder.backbones[0].spec)
        for b, c in zip(embedder.backbones, match or [], strict=False):
            if embedder.config_of(b) != c:
                diff = sorted(k for k in c if embedder.config_of(b).get(k) != c.get(k))
                raise ConfigError(
                    f"{label}: cannot embed it as the run's cache was made: {', '.join(diff)} differ "
                    f"(weights here {b.weights_identity}, cache {c.get('weights')}); "
                    f"fix: pass --weights with the weights the cache was embedded with"
                )
        if live:
            embedder.warm_up()
    except BaseException:
        embedder.close()
        raise
    return embedder


def embed_stream(
    embedder: Embedder,
    source: str | Path | BinaryIO,
    reading: Reading,
    *,
    ready: Callable[[], None] | None = None,
) -> Iterator[EmbeddedChunk]:
    """One source through an Embedder, chunk by chunk (stream_video's loop); several of these run at
    once on one Embedder, each in its own thread (embed.engine). Closing it stops its decoder thread."""
    cap = min((f for f in (embedder.max_fps, reading.rate_cap) if f), default=None)
    every, chunk_frames = reading.pacing or (None, embedder.chunk_frames)
    stream = VideoStream(
        source,
        chunk_frames,
        max_fps=cap,
        allow_truncated=True,
        input_format=reading.input_format,
        options=reading.input_options,
        chunk_bytes=embedder.chunk_bytes,
        **({"network_timeout": reading.idle_timeout} if reading.idle_timeout else {}),
    )
    tracker = embedder.tracker(chunk_frames=chunk_frames, detect_every=every)
    arrivals: list[float] = []  # arrival times of frames decoded but not yet handed out
    # On a live source one chunk waits for the pipeline, the newest: an older one is dropped. So a
    # line's latency is bounded by a few chunks' processing time (the waiting chunk, the one in hand,
    # and the tracker's lag of about one detection interval) however far the input runs ahead, and a
    # longer queue would only add to it: when the cores are full, as many frames are embedded either
    # way (docs/performance.md, "A class at once").
    depth = LIVE_WAITING if reading.live else DECODE_AHEAD
    if ready is not None:
        ready()
    for _, chunks in decode_ahead([stream], depth, live=reading.live):
        for tracked in tracked_chunks(_noting_arrivals(chunks, arrivals), tracker, finish_on_error=reading.live):
            arrived = np.asarray(arrivals[: len(tracked)])
            del arrivals[: len(tracked)]
            parts = [
                embedder.embed_faces(tracked, b, stream.source, expressions=reading.expressions and i == 0)
                for i, b in enumerate(embedder.backbones)
            ]
            emb = parts[0][0] if len(parts) == 1 else np.concatenate([e for e, _ in parts], axis=1)
            data = ClipData(emb, tracked.timestamps, tracked.track.probs, boxes=tracked.track.boxes)
            yield EmbeddedChunk(data, arrived, stream, expressions=parts[0][1])
            release_free_heap()  # else the resident size creeps up with the video's length (embed.memory)


def live_pacing(detect_every: int, trained_fps: float | None, kept_fps: float | None) -> tuple[int, int] | None:
    """(detect_every, chunk_frames) for a live source kept at `kept_fps` frames a second when its run
    was trained on `trained_fps` (None: as configured). A line waits for its window's last frame's
    chunk and for the tracker's lag of about (smooth // 2 + 1) detection intervals, both counted in
    frames: at 5 frames a second, a 30-fps policy's 5-frame chunk and detection interval would each
    last a second, so both are scaled to last as long in seconds as at the trained rate (detecting
    every kept frame there costs what the trained rate would have cost)."""
    if not trained_fps or not kept_fps or kept_fps >= trained_fps:
        return None
    scale = kept_fps / trained_fps
    return max(1, round(detect_every * scale)), max(1, round(LIVE_CHUNK_FRAMES * scale))


def _noting_arrivals(chunks: Iterable[FrameChunk], arrivals: list[float]) -> Iterator[FrameChunk]:
    for chunk in chunks:
        arrivals.extend(chunk.arrived.tolist() if chunk.arrived is not None else [np.nan] * len(chunk))
        yield chunk
