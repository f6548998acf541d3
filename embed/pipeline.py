"""Stage one: decode -> face track -> frozen CNN -> cache, for one video or a whole dataset.

Decoding of the next clips runs in a background thread (PyAV releases the GIL) while the current
clip is detected and embedded, so the CNN is rarely idle waiting for video.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from embed.backbones import Backbone, LoadedBackbone, get_backbone
from embed.cache import PREPROCESSING_VERSION, CacheStore, ClipData, source_fingerprint, source_unchanged
from embed.devices import resolve_device
from embed.errors import ClipError, ConfigError
from embed.faces import DetectorConfig, FaceTrack, FaceTracker, crop_faces
from embed.layouts import Clip, DatasetIndex
from embed.video import DecodedVideo, decode_video

log = logging.getLogger(__name__)
CROP_CHUNK = 32  # frames cropped and embedded at a time: bounds memory for long videos


def extraction_config(spec: Backbone, weights_identity: str, detector: DetectorConfig,
                      max_fps: float | None) -> dict:
    """Everything that determines what is written; its hash is the store key (embed.cache)."""
    return {
        "backbone": spec.name, "weights": weights_identity, "dim": spec.dim,
        "input_size": spec.input_size, "detector": detector.as_dict(),
        "frames": {"max_fps": max_fps, "crop": "roi_align-bilinear-square"},
        "preprocessing_version": PREPROCESSING_VERSION,
    }


def faces_config(detector: DetectorConfig, max_fps: float | None) -> dict:
    """The config of a face-track store: what determines the boxes, and nothing about any backbone,
    so every backbone embedded with the same detector settings shares one detection pass."""
    return {
        "backbone": "faces", "weights": f"mtcnn:facenet-pytorch-{_facenet_version()}", "dim": 0, "input_size": 0,
        "detector": detector.as_dict(), "frames": {"max_fps": max_fps}, "preprocessing_version": PREPROCESSING_VERSION,
    }


def _facenet_version() -> str:
    from importlib.metadata import version

    return version("facenet-pytorch")


class Embedder:
    """Decoded frames -> one face track -> per-frame embeddings from each of its backbones."""

    def __init__(self, backbones: LoadedBackbone | list[LoadedBackbone], detector: DetectorConfig | None = None,
                 max_fps: float | None = None, batch_size: int = 64):
        self.backbones = [backbones] if isinstance(backbones, LoadedBackbone) else list(backbones)
        self.backbone = self.backbones[0]
        self.tracker = FaceTracker(detector or DetectorConfig(), self.backbone.device)
        self.max_fps, self.batch_size = max_fps, batch_size

    def config_of(self, b: LoadedBackbone) -> dict:
        return extraction_config(b.spec, b.weights_identity, self.tracker.config, self.max_fps)

    @property
    def config(self) -> dict:
        return self.config_of(self.backbone)

    @property
    def faces_config(self) -> dict:
        return faces_config(self.tracker.config, self.max_fps)

    def decode(self, path: Path) -> DecodedVideo:
        return decode_video(path, self.max_fps)

    def track(self, video: DecodedVideo) -> FaceTrack:
        return self.tracker.track(video.frames)

    def embed_track(self, video: DecodedVideo, track: FaceTrack, backbone: LoadedBackbone,
                    source: Path | str = "<frames>") -> ClipData:
        has_face = np.flatnonzero(track.probs > 0)
        if len(has_face) == 0:
            h, w = video.frames.shape[1:3]
            raise ClipError(f"{source}: no face found in any of its {len(video.frames)} frames ({w}x{h}); "
                            f"fix: check that the video shows a face, or lower --min-face-size")
        emb = np.zeros((len(video.frames), backbone.spec.dim), dtype=np.float16)
        size = backbone.spec.input_size
        for i in range(0, len(has_face), CROP_CHUNK):
            idx = has_face[i:i + CROP_CHUNK]
            crops = crop_faces(video.frames[idx], track.boxes[idx], size, self.tracker.config.margin, backbone.device)
            emb[idx] = backbone.embed(crops, self.batch_size).numpy().astype(np.float16)
        if not np.isfinite(emb).all():
            raise ClipError(f"{source}: the backbone produced non-finite values (float16 overflow?)")
        return ClipData(emb, video.timestamps, track.probs, track.boxes)

    def embed_frames(self, video: DecodedVideo, source: Path | str = "<frames>") -> ClipData:
        return self.embed_track(video, self.track(video), self.backbone, source)


@dataclass(frozen=True)
class EmbedSpec:
    """Everything needed to build an Embedder, picklable: what a dask worker receives."""

    backbones: tuple[str, ...]
    weights: tuple[str | None, ...]
    device: str | None = "auto"
    detector: dict | None = None
    max_fps: float | None = None
    batch_size: int = 64

    def build(self, device: str | None = None) -> Embedder:
        dev = resolve_device(device or self.device)
        loaded = [get_backbone(b).build(w, dev) for b, w in zip(self.backbones, self.weights, strict=True)]
        detector = DetectorConfig.from_dict(self.detector) if self.detector else None
        return Embedder(loaded, detector, self.max_fps, self.batch_size)


def embed_video(path: str | Path, backbone: str = "inception", weights: str | None = None,
                device: str | None = "cpu", detector: DetectorConfig | None = None,
                max_fps: float | None = None, config: dict | None = None) -> ClipData:
    """Embed one video in memory (used by stage two's predict); nothing is cached.

    With `config` (a store's extraction config) the backbone, detector and frame policy are taken
    from it, and the result is guaranteed to match that store: different weights (or code that
    preprocesses differently) are an error, never silently different embeddings.
    """
    if config is not None:
        backbone, max_fps = config["backbone"], config["frames"]["max_fps"]
        detector = DetectorConfig.from_dict(config["detector"])
    loaded = get_backbone(backbone).build(weights, resolve_device(device))
    embedder = Embedder(loaded, detector, max_fps)
    if config is not None and embedder.config != config:
        diff = sorted(k for k in config if embedder.config.get(k) != config.get(k))
        raise ConfigError(f"{path}: cannot embed it as the run's cache was made: {', '.join(diff)} differ "
                          f"(weights here {loaded.weights_identity}, cache {config.get('weights')}); "
                          f"fix: pass --weights with the weights the cache was embedded with")
    return embedder.embed_frames(embedder.decode(Path(path)), path)


@dataclass
class RunReport:
    stores: list[Path]
    total: int = 0
    embedded: int = 0  # clips processed now (into every store that needed them)
    skipped: int = 0  # clips complete in every store already
    detected: int = 0  # clips whose faces were detected now (the rest came from the face-track cache)
    frames: int = 0
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
            self.frames += outcome.frames
        self.detected += outcome.detected


@dataclass
class ClipOutcome:
    clip_id: str
    frames: int = 0
    detected: bool = False
    error: str | None = None


def pending(clips: list[Clip], stores: list[CacheStore]) -> tuple[list[Clip], int]:
    """Clips that some store lacks (or holds from a changed source), and how many every store has."""
    attrs = [s.clip_attrs() for s in stores]
    todo = []
    for clip in clips:
        if not all((a := at.get(clip.clip_id)) and a.get("complete") is True
                   and source_unchanged(clip.path, a.get("source")) for at in attrs):
            todo.append(clip)
    return todo, len(clips) - len(todo)


def _cached_track(faces: CacheStore | None, clip: Clip, n_frames: int) -> FaceTrack | None:
    if faces is None or not faces.is_complete(clip.clip_id, clip.path):
        return None
    arrays = faces.read_arrays([clip.clip_id], ("face_prob", "boxes"))[clip.clip_id]
    if len(arrays["face_prob"]) != n_frames:
        return None  # decoded differently than when tracked (should not happen): detect again
    return FaceTrack(arrays["boxes"], arrays["face_prob"])


def embed_clip(embedder: Embedder, clip: Clip, decoded: Callable[[], DecodedVideo], stores: list[CacheStore],
               faces: CacheStore | None) -> ClipOutcome:
    """Decode (via `decoded`), track once (or read the cached track), embed with each backbone whose
    store lacks the clip, and write. Clip errors are recorded in the stores and returned, never raised;
    a store that cannot be written is a ConfigError (the run stops, complete clips are kept)."""
    outcome, fingerprint = ClipOutcome(clip.clip_id), None
    need = [(b, s) for b, s in zip(embedder.backbones, stores, strict=True) if not s.is_complete(clip.clip_id, clip.path)]
    try:
        fingerprint = source_fingerprint(clip.path)
        video = decoded()
        track = _cached_track(faces, clip, len(video.frames))
        if track is None:
            track = embedder.track(video)
            outcome.detected = True
            if faces is not None:
                _write(faces, clip.clip_id, ClipData(None, video.timestamps, track.probs, track.boxes), fingerprint,
                       {"split": clip.split})
        for backbone, store in need:
            data = embedder.embed_track(video, track, backbone, clip.path)
            _write(store, clip.clip_id, data, fingerprint, {"split": clip.split})
        outcome.frames = len(video.frames)
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


def _write(store: CacheStore, clip_id: str, data: ClipData, fingerprint: dict, extra: dict) -> None:
    try:
        store.write_clip(clip_id, data, fingerprint, extra)
    except OSError as e:
        raise ConfigError(f"{store.path}: cannot write the cache ({e.strerror or e}); fix: free disk space or "
                          f"make the cache directory writable; complete clips are kept") from None


def _prefetch(embedder: Embedder, clips: list[Clip], depth: int = 2) -> Iterator[tuple[Clip, Future]]:
    """Yield (clip, future of its decoded video), decoding up to `depth` clips ahead."""
    with ThreadPoolExecutor(1, thread_name_prefix="decode") as pool:
        futures: list[tuple[Clip, Future]] = []
        try:
            for clip in clips:
                futures.append((clip, pool.submit(embedder.decode, clip.path)))
                if len(futures) > depth:
                    yield futures.pop(0)
            while futures:
                yield futures.pop(0)
        finally:
            for _, fut in futures:
                fut.cancel()


def progress_bar(enabled: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    columns = [TextColumn("[bold]embed"), BarColumn(), MofNCompleteColumn(), TextColumn("{task.fields[rate]}"),
               TimeElapsedColumn()]
    return Progress(*columns, disable=not enabled, transient=False)


def rate_text(report: RunReport, elapsed: float) -> str:
    done = report.embedded + len(report.failures)
    return f"{done / elapsed:.2f} clips/s {report.frames / elapsed:.0f} frames/s"


def embed_dataset(index: DatasetIndex, stores: CacheStore | list[CacheStore], embedder: Embedder,
                  limit: int | None = None, progress: bool = True, faces: CacheStore | None = None) -> RunReport:
    """Embed every clip of the index into each backbone's store (one decode and one detection per
    clip for all of them); skip clips complete and unchanged in every store."""
    stores = [stores] if isinstance(stores, CacheStore) else list(stores)
    clips = index.clips[:limit] if limit else index.clips
    report = RunReport(stores=[s.path for s in stores], total=len(clips))
    start = time.perf_counter()
    try:  # Ctrl-C at any point from here ends in the summary, never a traceback
        todo, report.skipped = pending(clips, stores)
        log.info("%s: %d clips, %d already complete, %d to embed", ", ".join(str(s.path) for s in stores),
                 len(clips), report.skipped, len(todo))
        with progress_bar(progress) as bar:
            task = bar.add_task("embed", total=len(todo), rate="")
            for clip, fut in _prefetch(embedder, todo):
                report.add(embed_clip(embedder, clip, fut.result, stores, faces))
                bar.update(task, advance=1, rate=rate_text(report, time.perf_counter() - start))
    except KeyboardInterrupt:
        report.interrupted = True
    report.seconds = time.perf_counter() - start
    return report
