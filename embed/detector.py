"""The face detector: facenet-pytorch's MTCNN on downscaled frames, optionally searching only a
region around a known face (embed.face_search)."""

from __future__ import annotations

from concurrent.futures import Executor
from functools import cached_property
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from embed.extraction import DetectorConfig
from embed.face_search import Window, search
from embed.model_stage import spans

if TYPE_CHECKING:
    from embed.model_stage import ModelStage


class FaceDetector:
    """MTCNN (facenet-pytorch's networks, run by embed.face_search) on batches of frames downscaled
    to `detect_width`: every face in each frame, with its probability. With a model stage (several
    sources at once, embed.engine), the frames of every source waiting for MTCNN go through it in one
    call; downscaling stays in the caller's thread."""

    def __init__(
        self,
        config: DetectorConfig | None = None,
        device: str | torch.device = "cpu",
        *,
        stage: ModelStage | None = None,
        pool: Executor | None = None,
    ):
        self.config = config or DetectorConfig()
        self.device = torch.device(device)
        self.stage, self.pool = stage, pool  # pool: the embedder's threads for resizing (None: this thread)

    @cached_property
    def mtcnn(self):
        from facenet_pytorch import MTCNN  # its P/R/O-net weights ship inside the wheel

        c = self.config
        mtcnn = MTCNN(
            keep_all=True,
            min_face_size=c.min_face_size,
            thresholds=list(c.thresholds),
            post_process=False,
            device=self.device,
        )
        return mtcnn.to(memory_format=torch.channels_last)  # see face_search._refine

    def downscale(self, frames: np.ndarray) -> tuple[np.ndarray, float]:
        """Frames resized to detect_width, and the scale factor: Pillow's antialiased bilinear resize on
        uint8 (the filter torch's antialias=True copies), where torch's would need the frames as float
        first, at twice the time (docs/performance.md)."""
        h, w = frames.shape[1:3]
        scale = min(1.0, self.config.detect_width / w)
        if scale == 1.0:
            return frames, 1.0
        size = (max(1, round(w * scale)), max(1, round(h * scale)))

        def resize(f: np.ndarray) -> np.ndarray:
            return np.asarray(Image.fromarray(f).resize(size, Image.Resampling.BILINEAR))

        # Pillow releases the GIL while resizing: the pool's threads resize frames at once.
        small = np.stack(list(map(resize, frames) if self.pool is None else self.pool.map(resize, frames)))
        return small, size[0] / w

    def detect(self, frames: np.ndarray, batch: int = 64, around: list | None = None) -> tuple[list, list, float]:
        """Raw MTCNN output (all faces) on the given frames, boxes in source pixels; where `around`
        gives a frame a face box (source pixels), only the region around it is searched
        (embed/face_search.py)."""
        all_boxes, all_probs, scale = [], [], 1.0
        c = self.config
        for i in range(0, len(frames), batch):
            small, scale = self.downscale(frames[i : i + batch])  # per batch: bounded memory
            windows = [
                None if b is None else Window.around(b * scale, c.search_region, c.search_sizes)
                for b in (around or [None] * len(frames))[i : i + batch]
            ]
            boxes, probs = self.find_faces(small, windows)
            all_boxes += [None if b is None else np.asarray(b, np.float32) / scale for b in boxes]
            all_probs += [None if p is None else np.asarray(p, np.float32) for p in probs]
        return all_boxes, all_probs, scale

    def find_faces(self, small: np.ndarray, windows: list[Window | None]) -> tuple[list, list]:
        """MTCNN on frames already downscaled, boxes in their pixels. A frame smaller than the
        smallest face MTCNN looks for has an empty pyramid, hence no face (where facenet-pytorch's own
        detect fails inside torch.cat)."""
        if self.stage is None:
            return search(self.mtcnn, small, windows)
        return self.stage.run(self._find_in_batch, (small, windows))

    def _find_in_batch(self, items: list[tuple[np.ndarray, list]]) -> list[tuple[list, list]]:
        """find_faces of several callers' frames in one MTCNN pass per frame size, split back."""
        out: list[tuple[list, list] | None] = [None] * len(items)
        for shape in dict.fromkeys(s.shape[1:] for s, _ in items):
            group = [k for k, (s, _) in enumerate(items) if s.shape[1:] == shape]
            frames = np.concatenate([items[k][0] for k in group])
            boxes, probs = search(self.mtcnn, frames, [w for k in group for w in items[k][1]])
            for k, rows in zip(group, spans([items[k][0] for k in group]), strict=True):
                out[k] = (boxes[rows], probs[rows])
        return out
