"""Stage one: decode -> face track -> frozen CNN -> cache, for one video or a whole dataset.

Decoding of the next clips runs in a background thread (PyAV releases the GIL) while the current
clip is detected and embedded, so the CNN is rarely idle waiting for video.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from embed.backbones import Backbone, LoadedBackbone, get_backbone
from embed.cache import PREPROCESSING_VERSION, CacheStore, ClipData, source_fingerprint, source_unchanged
from embed.errors import ClipError, ConfigError
from embed.faces import DetectorConfig, FaceTracker, crop_faces
from embed.layouts import Clip, DatasetIndex
from embed.video import DecodedVideo, decode_video

log = logging.getLogger(__name__)
CROP_CHUNK = 32  # frames cropped and embedded at a time: bounds memory for long videos


def resolve_device(device: str | None) -> torch.device:
    if device in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError(f"--device {device}: CUDA is not available on this machine; fix: use --device cpu")
    try:
        return torch.device(device)
    except RuntimeError:
        raise ConfigError(f"--device {device!r} is not a torch device; fix: cpu, cuda or cuda:N") from None


def extraction_config(spec: Backbone, weights_identity: str, detector: DetectorConfig,
                      max_fps: float | None) -> dict:
    """Everything that determines what is written; its hash is the store key (embed.cache)."""
    return {
        "backbone": spec.name, "weights": weights_identity, "dim": spec.dim,
        "input_size": spec.input_size, "detector": detector.as_dict(),
        "frames": {"max_fps": max_fps, "crop": "roi_align-bilinear-square"},
        "preprocessing_version": PREPROCESSING_VERSION,
    }


class Embedder:
    """Decoded frames -> per-frame embeddings, face probabilities and boxes."""

    def __init__(self, backbone: LoadedBackbone, detector: DetectorConfig | None = None,
                 max_fps: float | None = None, batch_size: int = 64):
        self.backbone = backbone
        self.tracker = FaceTracker(detector or DetectorConfig(), backbone.device)
        self.max_fps, self.batch_size = max_fps, batch_size

    @property
    def config(self) -> dict:
        b = self.backbone
        return extraction_config(b.spec, b.weights_identity, self.tracker.config, self.max_fps)

    def decode(self, path: Path) -> DecodedVideo:
        return decode_video(path, self.max_fps)

    def embed_frames(self, video: DecodedVideo, source: Path | str = "<frames>") -> ClipData:
        track = self.tracker.track(video.frames)
        has_face = np.flatnonzero(track.probs > 0)
        if len(has_face) == 0:
            raise ClipError(f"{source}: no face found in any of its {len(video.frames)} frames; "
                            f"fix: check that the video shows a face, or lower min_face_size")
        emb = np.zeros((len(video.frames), self.backbone.spec.dim), dtype=np.float16)
        size = self.backbone.spec.input_size
        for i in range(0, len(has_face), CROP_CHUNK):
            idx = has_face[i:i + CROP_CHUNK]
            crops = crop_faces(video.frames[idx], track.boxes[idx], size, self.tracker.config.margin,
                               self.backbone.device)
            emb[idx] = self.backbone.embed(crops, self.batch_size).numpy().astype(np.float16)
        if not np.isfinite(emb).all():
            raise ClipError(f"{source}: the backbone produced non-finite values (float16 overflow?)")
        return ClipData(emb, video.timestamps, track.probs, track.boxes)


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
    store: Path
    total: int = 0
    embedded: int = 0
    skipped: int = 0
    frames: int = 0
    seconds: float = 0.0
    failures: list[dict] = field(default_factory=list)
    interrupted: bool = False

    @property
    def exit_code(self) -> int:
        return 130 if self.interrupted else (1 if self.failures else 0)


def _prefetch(embedder: Embedder, clips: list[Clip], depth: int = 2) -> Iterator[tuple[Clip, Future]]:
    """Yield (clip, future of its decoded video), decoding up to `depth` clips ahead."""
    with ThreadPoolExecutor(1, thread_name_prefix="decode") as pool:
        futures: list[tuple[Clip, Future]] = []
        it = iter(clips)
        try:
            for clip in it:
                futures.append((clip, pool.submit(embedder.decode, clip.path)))
                if len(futures) > depth:
                    yield futures.pop(0)
            while futures:
                yield futures.pop(0)
        finally:
            for _, fut in futures:
                fut.cancel()


def embed_dataset(index: DatasetIndex, store: CacheStore, embedder: Embedder,
                  limit: int | None = None, progress: bool = True) -> RunReport:
    """Embed every clip of the index into the store; skip complete, unchanged clips."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    clips = index.clips[:limit] if limit else index.clips
    report = RunReport(store=store.path, total=len(clips))
    attrs = store.clip_attrs()
    todo = []
    for clip in clips:
        a = attrs.get(clip.clip_id)
        if a and a.get("complete") is True and source_unchanged(clip.path, a.get("source")):
            report.skipped += 1
        else:
            todo.append(clip)
    log.info("%s: %d clips, %d already complete, %d to embed", store.path, len(clips), report.skipped, len(todo))
    start = time.perf_counter()
    columns = [TextColumn("[bold]embed"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn()]
    with Progress(*columns, disable=not progress, transient=False) as bar:
        task = bar.add_task("embed", total=len(todo), rate="")
        try:
            for clip, fut in _prefetch(embedder, todo):
                fingerprint = None
                try:
                    fingerprint = source_fingerprint(clip.path)
                    data = embedder.embed_frames(fut.result(), clip.path)
                except ClipError as e:
                    _fail(store, report, clip, str(e), fingerprint)
                except (RuntimeError, ValueError, OSError) as e:
                    _fail(store, report, clip, f"{clip.path}: {type(e).__name__}: {e}", fingerprint)
                else:
                    try:
                        store.write_clip(clip.clip_id, data, fingerprint, {"split": clip.split})
                    except OSError as e:
                        raise ConfigError(f"{store.path}: cannot write the cache ({e.strerror or e}); "
                                          f"fix: free disk space or make the cache directory writable; "
                                          f"complete clips are kept") from None
                    report.embedded += 1
                    report.frames += len(data.timestamps)
                el = time.perf_counter() - start
                bar.update(task, advance=1, rate=f"{(report.embedded + len(report.failures)) / el:.2f} clips/s "
                                                 f"{report.frames / el:.0f} frames/s")
        except KeyboardInterrupt:
            report.interrupted = True
    report.seconds = time.perf_counter() - start
    return report


def _fail(store: CacheStore, report: RunReport, clip: Clip, error: str, fingerprint: dict | None) -> None:
    error = error.splitlines()[0] if error else "unknown error"
    log.error("%s", error)
    report.failures.append({"clip": clip.clip_id, "error": error})
    store.record_failure(clip.clip_id, error, fingerprint)
