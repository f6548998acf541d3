"""The Embedder: one face detector and one or more frozen backbones, turning tracked frames into
per-frame embeddings; EmbedSpec, the picklable recipe a dask worker builds one from."""

from __future__ import annotations

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
from embed.model_stage import spans
from embed.tracking import StreamTracker, TrackedChunk
from embed.video import VideoStream

if TYPE_CHECKING:
    from embed.model_stage import ModelStage

CROP_CHUNK = 32  # face crops cut in one roi_align call (see crop_faces)
# Frames decoded, tracked, embedded and written at a time: at most CHUNK_FRAMES, and at most
# CHUNK_MB of full-resolution RGB frames, so a 4K video's chunks hold about as many bytes as a
# 640x480 one's (64 frames of 640x480 are 56 MiB; of 3840x2160, 2 frames). Several copies of a chunk
# are alive at once (the decoder runs DECODE_AHEAD chunks ahead, the tracker holds one back), so
# memory is set by this budget, not by the picture size.
CHUNK_FRAMES = 64
CHUNK_MB = 64


class Embedder:
    """Decoded frames -> one face track -> per-frame embeddings from each of its backbones.

    Its methods hold no per-video state, so one Embedder serves several videos at once from their own
    threads; with a model stage (embed.engine) their MTCNN and backbone calls are batched together."""

    def __init__(
        self,
        backbones: LoadedBackbone | list[LoadedBackbone],
        detector: DetectorConfig | None = None,
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
        self.detector = FaceDetector(detector or DetectorConfig(), self.device, stage)
        self.max_fps, self.batch_size = max_fps, batch_size
        self.chunk_frames, self.allow_truncated = chunk_frames, allow_truncated
        self.chunk_bytes = int(chunk_mb * 2**20)

    def config_of(self, b: LoadedBackbone) -> dict:
        return extraction_config(b.spec, b.weights_identity, self.detector.config, self.max_fps)

    @property
    def configs(self) -> list[dict]:
        """Each backbone's extraction config, in order: what names its store."""
        return [self.config_of(b) for b in self.backbones]

    @property
    def faces_config(self) -> dict:
        return faces_config(self.detector.config, self.max_fps)

    def stream(self, path: Path | str) -> VideoStream:
        return VideoStream(path, self.chunk_frames, self.max_fps, self.allow_truncated, chunk_bytes=self.chunk_bytes)

    def tracker(
        self, resume: dict | None = None, chunk_frames: int | None = None, detect_every: int | None = None
    ) -> StreamTracker:
        """A face tracker for one video, detecting in batches of its chunks' size."""
        return StreamTracker(
            self.detector, resume, chunk_frames or self.chunk_frames, detect_every, batch_bytes=self.chunk_bytes
        )

    def warm_up(self) -> None:
        """Run the detector and each CNN once on a blank frame (lazy set-up, first-call costs)."""
        frame = np.zeros((1, 240, 320, 3), dtype=np.uint8)
        self.detector.detect(frame)
        for b in self.backbones:
            b.embed(
                crop_faces(
                    frame,
                    np.array([[100, 60, 220, 200]], np.float32),
                    b.spec.input_size,
                    self.detector.config.margin,
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
            crops = crop_faces(
                chunk.frames, chunk.track.boxes[idx], size, self.detector.config.margin, backbone.device, rows=idx
            )
            e, p = self._run_backbone(backbone, crops, probs is not None)
            emb[idx] = e.numpy().astype(np.float16)
            if probs is not None:
                probs[idx] = p.numpy()
        if not np.isfinite(emb).all():
            raise ClipError(f"{source}: the backbone produced non-finite values (float16 overflow?)")
        return emb, probs

    def _run_backbone(
        self, backbone: LoadedBackbone, crops: torch.Tensor, expressions: bool
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.stage is None:
            return _backbone_pass(backbone, crops, expressions, self.batch_size)

        def batch(items: list[torch.Tensor]) -> list[tuple[torch.Tensor, torch.Tensor | None]]:
            e, p = _backbone_pass(backbone, torch.cat(items), expressions, self.batch_size)
            return [(e[rows], None if p is None else p[rows]) for rows in spans(items)]

        return self.stage.run(("embed", id(backbone), expressions), batch, crops)


def _backbone_pass(
    backbone: LoadedBackbone, crops: torch.Tensor, expressions: bool, batch_size: int
) -> tuple[torch.Tensor, torch.Tensor | None]:
    if expressions:
        return backbone.embed_with_expressions(crops, batch_size)
    return backbone.embed(crops, batch_size), None


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
    chunk_mb: float = CHUNK_MB

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

    def build(self, device: str | None = None, stage: ModelStage | None = None) -> Embedder:
        """The Embedder on `device` (default: the spec's); with a model stage, for several clips at once."""
        dev = resolve_device(device or self.device)
        loaded = [get_backbone(b).build(w, dev) for b, w in zip(self.backbones, self.weights, strict=True)]
        detector = DetectorConfig.from_dict(self.detector) if self.detector else None
        return Embedder(
            loaded,
            detector,
            self.max_fps,
            self.batch_size,
            self.chunk_frames,
            self.allow_truncated,
            stage=stage,
            chunk_mb=self.chunk_mb,
        )
