"""The Embedder: one face detector and one or more frozen backbones, turning tracked frames into
per-frame embeddings; EmbedSpec, the picklable recipe a dask worker builds one from."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from embed.backbones import LoadedBackbone, get_backbone
from embed.crops import crop_faces
from embed.detector import FaceDetector
from embed.devices import resolve_device
from embed.errors import ClipError
from embed.extraction import DetectorConfig, extraction_config, faces_config
from embed.memory import CHUNK_FRAMES, CHUNK_MB
from embed.model_stage import spans
from embed.tracking import StreamTracker, TrackedChunk
from embed.video import VideoStream

if TYPE_CHECKING:
    from embed.model_stage import ModelStage

CROP_CHUNK = 32  # face crops cut in one roi_align call (see crop_faces)


class Embedder:
    """Decoded frames -> one face track -> per-frame embeddings from each of its backbones.

    Its methods hold no per-video state, so one Embedder serves several videos at once from their own
    threads; with a model stage (embed.engine, embed.clips_in_flight) their MTCNN and backbone calls
    are batched together. It owns a small thread pool for the CPU work that releases the GIL
    (Pillow's resizes, roi_align), sized to torch's threads: `close()` ends it."""

    def __init__(
        self,
        backbones: LoadedBackbone | list[LoadedBackbone],
        detector: DetectorConfig | None = None,
        *,
        max_fps: float | None = None,
        batch_size: int = 64,
        chunk_frames: int = CHUNK_FRAMES,
        allow_truncated: bool = False,
        stage: ModelStage | None = None,
        chunk_mb: float = CHUNK_MB,
    ):
        self.backbones = [backbones] if isinstance(backbones, LoadedBackbone) else list(backbones)
        self.device = self.backbones[0].device  # one device for the detector and every backbone
        self.stage = stage
        workers = torch.get_num_threads() if self.device.type == "cpu" else 1
        self.pool = ThreadPoolExecutor(workers, thread_name_prefix="cpu pool") if workers > 1 else None
        self.detector = FaceDetector(detector or DetectorConfig(), self.device, stage=stage, pool=self.pool)
        self.max_fps, self.batch_size = max_fps, batch_size
        self.chunk_frames, self.allow_truncated = chunk_frames, allow_truncated
        self.chunk_bytes = int(chunk_mb * 2**20)
        self._passes = {
            (id(b), expressions): _BackbonePass(b, expressions, batch_size)
            for b in self.backbones
            for expressions in (False, True)
        }

    def close(self) -> None:
        """End the CPU pool's threads (the model stage is its owner's to close)."""
        if self.pool is not None:
            self.pool.shutdown()

    def config_of(self, b: LoadedBackbone) -> dict:
        return extraction_config(b.spec, b.weights_identity, self.detector.config, max_fps=self.max_fps)

    @property
    def configs(self) -> list[dict]:
        """Each backbone's extraction config, in order: what names its store."""
        return [self.config_of(b) for b in self.backbones]

    @property
    def faces_config(self) -> dict:
        return faces_config(self.detector.config, self.max_fps)

    def stream(self, path: Path | str) -> VideoStream:
        return VideoStream(
            path, self.chunk_frames, max_fps=self.max_fps, allow_truncated=self.allow_truncated, chunk_bytes=self.chunk_bytes
        )

    def tracker(
        self, resume: dict | None = None, chunk_frames: int | None = None, detect_every: int | None = None
    ) -> StreamTracker:
        """A face tracker for one video, detecting in batches of its chunks' size."""
        return StreamTracker(
            self.detector,
            resume,
            batch_frames=chunk_frames or self.chunk_frames,
            detect_every=detect_every,
            batch_bytes=self.chunk_bytes,
        )

    def warm_up(self) -> None:
        """Run the detector and each CNN once on a blank frame (lazy set-up, first-call costs)."""
        frame = np.zeros((1, 240, 320, 3), dtype=np.uint8)
        self.detector.detect(frame)
        box = np.array([[100, 60, 220, 200]], np.float32)
        for b in self.backbones:
            crops = crop_faces(frame, box, b.spec.input_size, margin=self.detector.config.margin, device=b.device)
            b.embed(crops, self.batch_size)

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
        run = self._passes[(id(backbone), expressions)]
        for i in range(0, len(has_face), CROP_CHUNK):
            idx = has_face[i : i + CROP_CHUNK]
            crops = crop_faces(
                chunk.frames,
                chunk.track.boxes[idx],
                backbone.spec.input_size,
                margin=self.detector.config.margin,
                device=backbone.device,
                rows=idx,
                pool=self.pool,
            )
            e, p = run([crops])[0] if self.stage is None else self.stage.run(run, crops)
            emb[idx] = e.numpy().astype(np.float16)
            if probs is not None:
                probs[idx] = p.numpy()
        if not np.isfinite(emb).all():
            raise ClipError(f"{source}: the backbone produced non-finite values (float16 overflow?)")
        return emb, probs


@dataclass(frozen=True, eq=False)
class _BackbonePass:
    """One backbone's network over several callers' crops, split back per caller: the batch function
    of its model-stage calls (one object per backbone and output, so equal calls batch together)."""

    backbone: LoadedBackbone
    expressions: bool
    batch_size: int

    def __call__(self, items: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
        crops = items[0] if len(items) == 1 else torch.cat(items)
        if self.expressions:
            e, p = self.backbone.embed_with_expressions(crops, self.batch_size)
        else:
            e, p = self.backbone.embed(crops, self.batch_size), None
        return [(e[rows], None if p is None else p[rows]) for rows in spans(items)]


@dataclass(frozen=True)
class EmbedSpec:
    """Everything needed to build an Embedder, picklable: what a dask worker receives."""

    backbones: tuple[str, ...]
    weights: tuple[str | None, ...]
    device: str | None = "auto"
    detector: dict | None = None
    max_fps: float | None = None
    batch_size: int = 64
    chunk_frames: int | None = None  # None: CHUNK_FRAMES (a live stream's: embed.streaming)
    allow_truncated: bool = False
    chunk_mb: float = CHUNK_MB

    def configs(self) -> tuple[list[dict], dict]:
        """Each backbone's extraction config and the face-track config, without building a network
        (a dask coordinator names the stores; only the workers load the models)."""
        detector = DetectorConfig.from_dict(self.detector) if self.detector else DetectorConfig()
        specs = [get_backbone(b) for b in self.backbones]
        return (
            [
                extraction_config(sp, sp.identity(w), detector, max_fps=self.max_fps)
                for sp, w in zip(specs, self.weights, strict=True)
            ],
            faces_config(detector, self.max_fps),
        )

    def build(self, device: str | None = None, stage: ModelStage | None = None) -> Embedder:
        """The Embedder on `device` (default: the spec's); with a model stage, for several clips at once."""
        dev = resolve_device(device or self.device)
        loaded = [get_backbone(b).build(w, dev) for b, w in zip(self.backbones, self.weights, strict=True)]
        return Embedder(
            loaded,
            DetectorConfig.from_dict(self.detector) if self.detector else None,
            max_fps=self.max_fps,
            batch_size=self.batch_size,
            chunk_frames=self.chunk_frames or CHUNK_FRAMES,
            allow_truncated=self.allow_truncated,
            stage=stage,
            chunk_mb=self.chunk_mb,
        )
