"""Stage one: decode -> face track -> frozen CNN -> cache, for one video or a whole dataset.

Every video streams through in chunks of `chunk_frames` frames (decode -> track -> crop -> embed ->
write), so memory is set by the chunk size, never by the video's length. Decoding runs ahead in a
background thread (PyAV releases the GIL), across clip boundaries, while the current chunk is
detected and embedded, so the CNN is rarely idle waiting for video. `stream_video` is the one entry
stage two uses (predict, live).
"""

from __future__ import annotations

import contextlib
import logging
import os
import queue
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

# At import, not inside the run: a Ctrl-C that lands in an import is not a clean KeyboardInterrupt (3.11).
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from embed.backbones import LoadedBackbone, get_backbone, require_expressions
from embed.cache import CacheStore, ClipData, ClipWriter, source_fingerprint, source_unchanged
from embed.devices import resolve_device
from embed.errors import ClipError, ConfigError
from embed.extraction import DetectorConfig, extraction_config, faces_config
from embed.faces import FaceTrack, FaceTracker, StoredTrack, StreamTracker, TrackedChunk, crop_faces
from embed.layouts import Clip, DatasetIndex
from embed.memory import release_free_heap
from embed.video import FrameChunk, Truncation, VideoStream

log = logging.getLogger(__name__)
CROP_CHUNK = 32  # face crops cut in one roi_align call (see crop_faces)
# Frames decoded, tracked, embedded and written at a time. 64 frames of 640x480 are 59 MB; the
# decoder runs up to DECODE_AHEAD chunks ahead. Measured against whole clips in bench/long_video.py.
CHUNK_FRAMES = 64
DECODE_AHEAD = 2
# A live source is processed a few frames at a time: a window's line waits for its last frame's chunk.
LIVE_CHUNK_FRAMES = 5
LIVE_WAITING = 2


class Embedder:
    """Decoded frames -> one face track -> per-frame embeddings from each of its backbones."""

    def __init__(
        self,
        backbones: LoadedBackbone | list[LoadedBackbone],
        detector: DetectorConfig | None = None,
        max_fps: float | None = None,
        batch_size: int = 64,
        chunk_frames: int = CHUNK_FRAMES,
        allow_truncated: bool = False,
    ):
        self.backbones = [backbones] if isinstance(backbones, LoadedBackbone) else list(backbones)
        self.backbone = self.backbones[0]
        self.tracker = FaceTracker(detector or DetectorConfig(), self.backbone.device)
        self.max_fps, self.batch_size = max_fps, batch_size
        self.chunk_frames, self.allow_truncated = chunk_frames, allow_truncated

    def config_of(self, b: LoadedBackbone) -> dict:
        return extraction_config(b.spec, b.weights_identity, self.tracker.config, self.max_fps)

    @property
    def config(self) -> dict:
        return self.config_of(self.backbone)

    @property
    def faces_config(self) -> dict:
        return faces_config(self.tracker.config, self.max_fps)

    def stream(self, path: Path | str) -> VideoStream:
        return VideoStream(path, self.chunk_frames, self.max_fps, self.allow_truncated)

    def warm_up(self) -> None:
        """Run the detector and each CNN once on a blank frame (lazy set-up, first-call costs)."""
        frame = np.zeros((1, 240, 320, 3), dtype=np.uint8)
        self.tracker.detect(frame)
        for b in self.backbones:
            b.embed(
                crop_faces(
                    frame,
                    np.array([[100, 60, 220, 200]], np.float32),
                    b.spec.input_size,
                    self.tracker.config.margin,
                    b.device,
                ),
                self.batch_size,
            )

    def embed_chunk(self, chunk: TrackedChunk, backbone: LoadedBackbone, source: Path | str = "<frames>") -> np.ndarray:
        """(n, dim) float16 embeddings of a tracked chunk's frames; zeros where there is no face."""
        return self.embed_faces(chunk, backbone, source)[0]

    def embed_faces(
        self, chunk: TrackedChunk, backbone: LoadedBackbone, source: Path | str = "<frames>", expressions: bool = False
    ) -> tuple[np.ndarray, np.ndarray | None]:
        """embed_chunk's embeddings and, with `expressions`, the backbone's (n, E) float32 expression
        probabilities from the same pass (NaN where there is no face)."""
        has_face = np.flatnonzero(chunk.track.probs > 0)
        emb = np.zeros((len(chunk), backbone.spec.dim), dtype=np.float16)
        probs = np.full((len(chunk), len(backbone.spec.expressions)), np.nan, np.float32) if expressions else None
        size = backbone.spec.input_size
        for i in range(0, len(has_face), CROP_CHUNK):
            idx = has_face[i : i + CROP_CHUNK]
            crops = crop_faces(chunk.frames[idx], chunk.track.boxes[idx], size, self.tracker.config.margin, backbone.device)
            if probs is None:
                emb[idx] = backbone.embed(crops, self.batch_size).numpy().astype(np.float16)
            else:
                e, p = backbone.embed_with_expressions(crops, self.batch_size)
                emb[idx], probs[idx] = e.numpy().astype(np.float16), p.numpy()
        if not np.isfinite(emb).all():
            raise ClipError(f"{source}: the backbone produced non-finite values (float16 overflow?)")
        return emb, probs


@dataclass(frozen=True)
class EmbedSpec:
    """Everything needed to build an Embedder, picklable: what a dask worker receives."""

    backbones: tuple[str, ...]
    weights: tuple[str | None, ...]
    device: str | None = "auto"
    detector: dict | None = None
    max_fps: float | None = None
    batch_size: int = 64
    chunk_frames: int = CHUNK_FRAMES
    allow_truncated: bool = False

    def configs(self) -> tuple[list[dict], dict]:
        """Each backbone's extraction config and the face-track config, without building a network
        (a dask coordinator names the stores; only the workers load the models)."""
        detector = DetectorConfig.from_dict(self.detector) if self.detector else DetectorConfig()
        specs = [get_backbone(b) for b in self.backbones]
        return (
            [
                extraction_config(sp, sp.identity(w), detector, self.max_fps)
                for sp, w in zip(specs, self.weights, strict=True)
            ],
            faces_config(detector, self.max_fps),
        )

    def build(self, device: str | None = None) -> Embedder:
        dev = resolve_device(device or self.device)
        loaded = [get_backbone(b).build(w, dev) for b, w in zip(self.backbones, self.weights, strict=True)]
        detector = DetectorConfig.from_dict(self.detector) if self.detector else None
        return Embedder(loaded, detector, self.max_fps, self.batch_size, self.chunk_frames, self.allow_truncated)


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
    two uses (predict, live). The source is a file, a URL, a capture device (input_format) or '-'.

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
    embedder = Embedder(loaded, detector, max_fps, chunk_frames=chunk_frames, allow_truncated=True)
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
    cap = min((f for f in (max_fps, rate_cap) if f), default=None)
    stream = VideoStream(source, chunk_frames, cap, True, input_format, input_options)
    tracker = StreamTracker(embedder.tracker, batch_frames=chunk_frames)
    arrivals: list[float] = []  # arrival times of frames decoded but not yet handed out
    # On a live source at most LIVE_WAITING chunks wait for the pipeline; older ones are dropped, so a
    # line's latency is bounded by a few chunks' processing time (the waiting chunk, the one in hand,
    # and the tracker's lag of about one detection interval) however far the input runs ahead.
    depth = LIVE_WAITING if live else DECODE_AHEAD
    if ready is not None:
        ready()
    for _, chunks in decode_ahead([stream], depth, live=live):
        for tracked in _tracked(_noting_arrivals(chunks, arrivals), tracker, finish_on_error=live):
            arrived = np.asarray(arrivals[: len(tracked)])
            del arrivals[: len(tracked)]
            parts = [embedder.embed_faces(tracked, b, source, expressions and i == 0) for i, b in enumerate(loaded)]
            emb = parts[0][0] if len(parts) == 1 else np.concatenate([e for e, _ in parts], axis=1)
            yield EmbeddedChunk(
                ClipData(emb, tracked.timestamps, tracked.track.probs, tracked.track.boxes), arrived, stream, parts[0][1]
            )


def _noting_arrivals(chunks: Iterable[FrameChunk], arrivals: list[float]) -> Iterator[FrameChunk]:
    for chunk in chunks:
        arrivals.extend(chunk.arrived.tolist() if chunk.arrived is not None else [np.nan] * len(chunk))
        yield chunk


def embed_video(
    path: str | Path,
    backbone: str = "inception",
    weights: str | None = None,
    device: str | None = "cpu",
    detector: DetectorConfig | None = None,
    max_fps: float | None = None,
    config: dict | None = None,
) -> ClipData:
    """stream_video's chunks of one video joined (holds the embeddings, never the frames)."""
    return ClipData.concat([c.data for c in stream_video(path, backbone, weights, device, detector, max_fps, config)])


def _tracked(
    chunks: Iterable[FrameChunk], tracker: StreamTracker | StoredTrack, finish_on_error: bool = False
) -> Iterator[TrackedChunk]:
    """Tracked chunks of a video; with finish_on_error (a live stream that breaks off), the frames
    that did arrive are tracked to the end and handed out before the error is raised."""
    try:
        for chunk in chunks:
            if (tracked := tracker.push(chunk.start, chunk.frames, chunk.timestamps)) is not None:
                yield tracked
            release_free_heap()  # else the resident size creeps up with the video's length (embed.memory)
    except ClipError:
        if finish_on_error and (tracked := tracker.finish()) is not None:
            yield tracked
        raise
    if (tracked := tracker.finish()) is not None:
        yield tracked


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
            i, item = self.queue.get()
            if i == index:
                return item
            if i > index:  # cannot happen while the consumer reads in order
                raise RuntimeError(f"decode ahead out of order: video {i} while reading {index}")

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


@dataclass
class RunReport:
    stores: list[Path]
    total: int = 0
    embedded: int = 0  # clips processed now (into every store that needed them)
    skipped: int = 0  # clips complete in every store already
    detected: int = 0  # clips whose faces were detected now (the rest came from the face-track cache)
    frames: int = 0  # frames embedded now
    resumed_frames: int = 0  # frames of part-written clips kept from a killed run (not redone)
    truncated: list[str] = field(default_factory=list)  # clips kept though cut short (--allow-truncated)
    seconds: float = 0.0
    failures: list[dict] = field(default_factory=list)
    interrupted: bool = False
    dashboard: str | None = None

    @property
    def store(self) -> Path:
        return self.stores[0]

    @property
    def exit_code(self) -> int:
        return 130 if self.interrupted else (1 if self.failures else 0)

    def add(self, outcome: ClipOutcome) -> None:
        if outcome.error:
            log.error("%s", outcome.error)
            self.failures.append({"clip": outcome.clip_id, "error": outcome.error})
        else:
            self.embedded += 1
            if outcome.truncated:
                self.truncated.append(outcome.clip_id)
        self.frames += outcome.frames
        self.resumed_frames += outcome.resumed_frames
        self.detected += outcome.detected

    def as_dict(self) -> dict:
        return {
            "stores": [str(p) for p in self.stores],
            "total": self.total,
            "embedded": self.embedded,
            "skipped": self.skipped,
            "detected": self.detected,
            "frames": self.frames,
            "resumed_frames": self.resumed_frames,
            "seconds": round(self.seconds, 3),
            "failed": len(self.failures),
            "failures": self.failures,
            "truncated": self.truncated,
            "interrupted": self.interrupted,
        }


@dataclass
class ClipOutcome:
    clip_id: str
    frames: int = 0  # frames embedded now
    resumed_frames: int = 0  # frames kept from a killed run
    detected: bool = False
    truncated: bool = False
    error: str | None = None


def pending(clips: list[Clip], stores: list[CacheStore]) -> tuple[list[Clip], int]:
    """Clips that some store lacks (or holds from a changed source), and how many every store has."""
    attrs = [s.clip_attrs() for s in stores]
    todo = []
    for clip in clips:
        if not all(
            (a := at.get(clip.clip_id)) and a.get("complete") is True and source_unchanged(clip.path, a.get("source"))
            for at in attrs
        ):
            todo.append(clip)
    return todo, len(clips) - len(todo)


def _resume_point(
    targets: list[tuple[LoadedBackbone | None, CacheStore]], writers: list[ClipWriter], resumable_track: bool
) -> tuple[int, dict | None]:
    """The frame a clip continues from (0: from the start) and the tracker's state there; every
    writer is brought to that frame. It is where the backbone store that wrote least stopped. The
    face-track store is written after them, so a kill between the writes leaves it behind: it is
    refilled from a backbone store's track (the same one) rather than sending every store back."""
    embedding = [w for (b, _), w in zip(targets, writers, strict=True) if b is not None]
    face_writer = next((w for (b, _), w in zip(targets, writers, strict=True) if b is None), None)
    start = min(w.frames_written for w in embedding)
    state = next((w.track_state for w in embedding if w.frames_written == start), None)
    if start and state is None and resumable_track:
        start = 0  # nothing says how the track went on: start the clip afresh
    for w in embedding:
        with _writing(w.store):
            w.rewind(start, state)
    if face_writer is not None:
        with _writing(face_writer.store):
            if face_writer.frames_written < start:
                face_writer.copy_track(embedding[0], start, state)
            face_writer.rewind(start, state)
    return start, state


def _stored_track(faces: CacheStore | None, clip: Clip) -> FaceTrack | None:
    if faces is None or not faces.is_complete(clip.clip_id, clip.path):
        return None
    arrays = faces.read_arrays([clip.clip_id], ("face_prob", "boxes"))[clip.clip_id]
    return FaceTrack(arrays["boxes"], arrays["face_prob"])


def embed_clip(
    embedder: Embedder,
    clip: Clip,
    chunks: Iterable[FrameChunk],
    stores: list[CacheStore],
    faces: CacheStore | None,
    on_frames: Callable[[int], None] | None = None,
) -> ClipOutcome:
    """Stream one clip's decoded chunks through the face track (detected now, or read from the
    face-track store) and each backbone whose store lacks the clip, writing chunk by chunk; a clip
    left part-written by a killed run continues where it stopped. Clip errors are recorded in the
    stores and returned, never raised; a store that cannot be written is a ConfigError (the run
    stops, complete clips are kept). `chunks` must be fully consumed or abandoned (decode_ahead)."""
    outcome, fingerprint = ClipOutcome(clip.clip_id), None
    need = [(b, s) for b, s in zip(embedder.backbones, stores, strict=True) if not s.is_complete(clip.clip_id, clip.path)]
    if not need:
        # Complete in every backbone store already: a task retried after its worker died between
        # committing the clip and its face track. The face-track store only saves later backbones
        # a detection pass, so a missing track is not worth decoding the video again.
        return outcome
    writers: list[ClipWriter] = []
    try:
        fingerprint = source_fingerprint(clip.path)
        stored = _stored_track(faces, clip)
        extra = {"split": clip.split}
        # (writer, backbone): None for the face-track store, written when the faces are detected now
        targets = [(b, s) for b, s in need] + ([(None, faces)] if stored is None and faces is not None else [])
        for _, store in targets:
            with _writing(store):
                writers.append(store.clip_writer(clip.clip_id, fingerprint, extra))
        start, state = _resume_point(targets, writers, resumable_track=stored is None)
        outcome.resumed_frames = start
        if stored is not None:
            tracker: StreamTracker | StoredTrack = StoredTrack(stored, start)
        else:
            tracker = StreamTracker(embedder.tracker, resume=state if start else None, batch_frames=embedder.chunk_frames)
            outcome.detected = True
        # Faces in the frames a killed run already wrote (every writer holds the same track).
        faces_seen = int((writers[0].group["face_prob"][:start] > 0).sum()) if start else 0
        size = None
        for tracked in _tracked(chunks, tracker):
            for (backbone, _), writer in zip(targets, writers, strict=True):
                emb = None if backbone is None else embedder.embed_chunk(tracked, backbone, clip.path)
                with _writing(writer.store):
                    writer.append(ClipData(emb, tracked.timestamps, tracked.track.probs, tracked.track.boxes), tracked.state)
            faces_seen += int((tracked.track.probs > 0).sum())
            outcome.frames += len(tracked)
            size = tracked.frames.shape[1:3]
            if on_frames is not None:
                on_frames(len(tracked))
        truncation = getattr(chunks, "truncation", None)
        marks = {"truncated": truncation.as_attrs()} if truncation else {}
        marks["rotation"] = getattr(chunks, "rotation", 0)  # degrees turned upright (embed.video)
        outcome.truncated = truncation is not None
        # The face track is right even without a face in it: a later backbone reads it from there.
        for (backbone, _), w in zip(targets, writers, strict=True):
            if backbone is None:
                with _writing(w.store):
                    w.finish(marks)
        if faces_seen == 0:
            shape = f" ({size[1]}x{size[0]})" if size else ""
            raise ClipError(
                f"{clip.path}: no face found in any of its {outcome.frames + start} frames{shape}; "
                f"fix: check that the video shows a face, or lower --min-face-size"
            )
        for (backbone, _), w in zip(targets, writers, strict=True):
            if backbone is not None:
                with _writing(w.store):
                    w.finish(marks)
    except ClipError as e:
        outcome.error = str(e)
    except (RuntimeError, ValueError, OSError) as e:
        outcome.error = f"{clip.path}: {type(e).__name__}: {e}"
    if outcome.error:
        outcome.error = outcome.error.splitlines()[0]
        for _, store in need:
            if not store.is_complete(clip.clip_id):
                store.record_failure(clip.clip_id, outcome.error, fingerprint)
    return outcome


@contextlib.contextmanager
def _writing(store: CacheStore):
    try:
        yield
    except OSError as e:
        raise ConfigError(
            f"{store.path}: cannot write the cache ({e.strerror or e}); fix: free disk space or "
            f"make the cache directory writable; complete clips are kept"
        ) from None


def progress_bar(enabled: bool) -> Progress:
    columns = [
        TextColumn("[bold]embed"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
    ]
    return Progress(*columns, disable=not enabled, transient=False)


def rate_text(report: RunReport, elapsed: float, in_progress: int = 0) -> str:
    done = report.embedded + len(report.failures)
    frames = report.frames + in_progress
    return f"{done / elapsed:.2f} clips/s {frames / elapsed:.0f} frames/s" + (
        f" ({in_progress} frames into this clip)" if in_progress else ""
    )


PAUSE_ENV = "AFFECTSEQ_PAUSE_AFTER_CLIPS"


def _pause_point(done: int) -> None:
    """For tests that interrupt a run: with AFFECTSEQ_PAUSE_AFTER_CLIPS=N the run says so on stderr
    after its N-th clip and waits (a minute at most) to be signalled, so that the signal lands at a
    known point on a fast machine and a slow one alike, instead of after a guessed sleep."""
    pause = os.environ.get(PAUSE_ENV)
    if pause and done == int(pause):
        log.warning("paused after %d clips (%s)", done, PAUSE_ENV)
        time.sleep(60)


def embed_dataset(
    index: DatasetIndex,
    stores: CacheStore | list[CacheStore],
    embedder: Embedder,
    limit: int | None = None,
    progress: bool = True,
    faces: CacheStore | None = None,
) -> RunReport:
    """Embed every clip of the index into each backbone's store (one decode and one detection per
    clip for all of them); skip clips complete and unchanged in every store."""
    stores = [stores] if isinstance(stores, CacheStore) else list(stores)
    clips = index.clips[:limit] if limit else index.clips
    report = RunReport(stores=[s.path for s in stores], total=len(clips))
    start = time.perf_counter()
    try:  # Ctrl-C at any point from here ends in the summary, never a traceback
        todo, report.skipped = pending(clips, stores)
        log.info(
            "%s: %d clips, %d already complete, %d to embed",
            ", ".join(str(s.path) for s in stores),
            len(clips),
            report.skipped,
            len(todo),
        )
        with progress_bar(progress) as bar:
            task = bar.add_task("embed", total=len(todo), rate="")
            streams = [embedder.stream(clip.path) for clip in todo]
            live = {"frames": 0}  # frames of the clip in progress, for the rate shown while a long video runs

            def on_frames(n: int) -> None:
                live["frames"] += n
                bar.update(task, rate=rate_text(report, time.perf_counter() - start, live["frames"]))

            for clip, (_, chunks) in zip(todo, decode_ahead(streams), strict=True):
                live["frames"] = 0
                report.add(embed_clip(embedder, clip, chunks, stores, faces, on_frames))
                bar.update(task, advance=1, rate=rate_text(report, time.perf_counter() - start))
                _pause_point(report.embedded + len(report.failures))
    except KeyboardInterrupt:
        report.interrupted = True
    report.seconds = time.perf_counter() - start
    return report
