"""Stage one's public streaming entry: one video (a file, a URL, a capture device or a pipe)
decoded, tracked and embedded chunk by chunk, nothing cached. Stage two (predict, live) reaches
stage one through `stream_video` alone."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

import numpy as np

from embed.backbones import get_backbone, require_expressions
from embed.cache import ClipData
from embed.decode_ahead import DECODE_AHEAD, decode_ahead
from embed.devices import resolve_device
from embed.embedder import CHUNK_FRAMES, Embedder
from embed.errors import ConfigError
from embed.extraction import DetectorConfig
from embed.tracking import tracked_chunks
from embed.video import FrameChunk, VideoStream

if TYPE_CHECKING:
    from embed.model_stage import ModelStage

# A live source is processed a few frames at a time: a window's line waits for its last frame's chunk.
LIVE_CHUNK_FRAMES = 5
LIVE_WAITING = 2


@dataclass
class EmbeddedChunk:
    """Consecutive frames of a streamed video, embedded: what stream_video hands out."""

    data: ClipData
    arrived: np.ndarray  # (n,) time.monotonic() when each frame was decoded
    stream: VideoStream  # its counters so far: fps, decoded, dropped, rotation
    expressions: np.ndarray | None = None  # (n, E) the first backbone's expression probabilities, if asked


def stream_video(
    source: str | Path,
    backbone: str = "inception",
    weights: str | None | list[str | None] = None,
    device: str | None = "cpu",
    detector: DetectorConfig | None = None,
    max_fps: float | None = None,
    config: dict | list[dict] | None = None,
    chunk_frames: int | None = None,
    input_format: str | None = None,
    input_options: dict[str, str] | None = None,
    live: bool = False,
    rate_cap: float | None = None,
    ready: Callable[[], None] | None = None,
    expressions: bool = False,
) -> Iterator[EmbeddedChunk]:
    """Embed one video as it decodes, nothing cached: each chunk of frames whose face boxes are final,
    in order. Memory is set by the chunk size, not the video's length. The one stage-one entry stage
    two uses (predict, live; several sources at once: embed.engine). The source is a file, a URL, a
    capture device (input_format) or '-'.

    With `config` (a store's extraction config) the backbone, detector and frame policy are taken
    from it, and the result is guaranteed to match that store: different weights (or code that
    preprocesses differently) are an error, never silently different embeddings. A list of configs
    (a run fused from several backbones' stores) embeds every frame with each backbone, joined per
    frame in that order, from one decode and detection; `weights` is then a list too. With `live`,
    chunks are small (latency), and frames that arrive while the pipeline is behind are skipped,
    never queued without bound (the stream's `dropped` counts them). `rate_cap` keeps at most that
    many frames per second (a 60-fps camera for a model whose cache was embedded at 30). `ready` is
    called once the models are set up, just before the source is opened. With `expressions`, each
    chunk also carries the first backbone's expression probabilities (a backbone that has a classifier).
    """
    embedder = open_embedder(source, backbone, weights, device, detector, max_fps, config, chunk_frames, live, expressions)
    return embed_stream(embedder, source, live, rate_cap, input_format, input_options, ready, expressions)


def open_embedder(
    source: str | Path,
    backbone: str = "inception",
    weights: str | None | list[str | None] = None,
    device: str | None = "cpu",
    detector: DetectorConfig | None = None,
    max_fps: float | None = None,
    config: dict | list[dict] | None = None,
    chunk_frames: int | None = None,
    live: bool = False,
    expressions: bool = False,
    stage: ModelStage | None = None,
) -> Embedder:
    """The networks stream_video embeds with (its arguments), checked against `config`; `source`
    only names what the errors are about. With a model stage, for several sources at once."""
    configs = config if isinstance(config, list) else [config] if config is not None else []
    if configs:
        first = configs[0]
        if any(c.get("detector") != first.get("detector") or c.get("frames") != first.get("frames") for c in configs):
            raise ConfigError(
                f"{source}: the run's stores were embedded with different face detection or frame "
                f"settings, so one pass cannot reproduce them all; fix: fuse stores embedded with the "
                f"same --detect-* and --max-fps options"
            )
        max_fps, detector = first["frames"]["max_fps"], DetectorConfig.from_dict(first["detector"])
    names = [c["backbone"] for c in configs] or [backbone]
    ws = weights if isinstance(weights, list) else [weights] * len(names)
    loaded = [get_backbone(n).build(w, resolve_device(device)) for n, w in zip(names, ws, strict=True)]
    if expressions:
        require_expressions(loaded[0].spec)
    chunk_frames = chunk_frames or (LIVE_CHUNK_FRAMES if live else CHUNK_FRAMES)
    # A file cut short still yields what it has: predicting on it is better than refusing.
    embedder = Embedder(loaded, detector, max_fps, chunk_frames=chunk_frames, allow_truncated=True, stage=stage)
    for b, c in zip(loaded, configs, strict=False):
        if embedder.config_of(b) != c:
            diff = sorted(k for k in c if embedder.config_of(b).get(k) != c.get(k))
            raise ConfigError(
                f"{source}: cannot embed it as the run's cache was made: {', '.join(diff)} differ "
                f"(weights here {b.weights_identity}, cache {c.get('weights')}); "
                f"fix: pass --weights with the weights the cache was embedded with"
            )
    if live:
        embedder.warm_up()  # the first MTCNN and CNN calls are slow: not while frames arrive
    return embedder


def embed_stream(
    embedder: Embedder,
    source: str | Path | BinaryIO,
    live: bool = False,
    rate_cap: float | None = None,
    input_format: str | None = None,
    input_options: dict[str, str] | None = None,
    ready: Callable[[], None] | None = None,
    expressions: bool = False,
    pacing: tuple[int, int] | None = None,
) -> Iterator[EmbeddedChunk]:
    """One source through an Embedder, chunk by chunk (stream_video's loop); several of these run at
    once on one Embedder, each in its own thread (embed.engine). `pacing` (detect_every, chunk_frames)
    overrides the tracker's detection interval and the chunk size for this source (live_pacing)."""
    cap = min((f for f in (embedder.max_fps, rate_cap) if f), default=None)
    every, chunk_frames = pacing or (None, embedder.chunk_frames)
    stream = VideoStream(source, chunk_frames, cap, True, input_format, input_options, embedder.chunk_bytes)
    tracker = embedder.tracker(chunk_frames=chunk_frames, detect_every=every)
    arrivals: list[float] = []  # arrival times of frames decoded but not yet handed out
    # On a live source at most LIVE_WAITING chunks wait for the pipeline; older ones are dropped, so a
    # line's latency is bounded by a few chunks' processing time (the waiting chunk, the one in hand,
    # and the tracker's lag of about one detection interval) however far the input runs ahead.
    depth = LIVE_WAITING if live else DECODE_AHEAD
    if ready is not None:
        ready()
    for _, chunks in decode_ahead([stream], depth, live=live):
        for tracked in tracked_chunks(_noting_arrivals(chunks, arrivals), tracker, finish_on_error=live):
            arrived = np.asarray(arrivals[: len(tracked)])
            del arrivals[: len(tracked)]
            parts = [
                embedder.embed_faces(tracked, b, stream.source, expressions and i == 0)
                for i, b in enumerate(embedder.backbones)
            ]
            emb = parts[0][0] if len(parts) == 1 else np.concatenate([e for e, _ in parts], axis=1)
            yield EmbeddedChunk(
                ClipData(emb, tracked.timestamps, tracked.track.probs, tracked.track.boxes), arrived, stream, parts[0][1]
            )


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
