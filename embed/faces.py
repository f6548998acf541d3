"""Face tracking with facenet-pytorch's MTCNN, and square face crops from full-resolution frames.

MTCNN runs batched on frames downscaled to `detect_width`, only every `detect_every`-th frame (and
the last, and every frame between two detections that disagree on whether there is a face); boxes
in between are interpolated from the neighbouring detections, which is what makes detection a small
share of stage one's time. Frames whose nearest detection found no face get
face_prob 0 and a NaN box: they are flagged, never dropped.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from functools import cache, cached_property

import numpy as np
import torch
from PIL import Image
from torchvision.ops import box_iou, roi_align


@dataclass(frozen=True)
class DetectorConfig:
    # MTCNN on every k-th frame: at 5, 0.95 mean IoU with detection on every frame (3: 0.953,
    # 10: 0.941) for 1/5 of the detection time (`bench/embed_bench.py --sweep`).
    detect_every: int = 5
    detect_width: int = 320  # frames are downscaled to this width for detection
    min_face_size: int = 40  # smallest face MTCNN looks for, in detection pixels
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    min_prob: float = 0.9  # weaker detections count as "no face"
    smooth: int = 3  # moving-average window over consecutive detections (1 = off)
    margin: float = 0.2  # crop side = (1 + margin) * max(box w, box h)

    def as_dict(self) -> dict:
        d = asdict(self)
        d["thresholds"] = list(self.thresholds)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> DetectorConfig:
        return cls(**{**d, "thresholds": tuple(d["thresholds"])})


@dataclass
class FaceTrack:
    boxes: np.ndarray  # (T, 4) float32 x0, y0, x1, y1 in source pixels; NaN where no face
    probs: np.ndarray  # (T,) float32 detection probability; 0 where no face


def _pick(boxes: np.ndarray | None, probs: np.ndarray | None, prev: np.ndarray | None, min_prob: float):
    """One face per frame: the one continuing the track, else the largest and most probable."""
    if boxes is None:
        return None, 0.0
    ok = probs >= min_prob
    if not ok.any():
        return None, 0.0
    boxes, probs = boxes[ok], probs[ok]
    if prev is not None:
        iou = box_iou(torch.as_tensor(prev[None]), torch.as_tensor(boxes))[0].numpy()
        if iou.max() > 0.2:
            i = int(iou.argmax())
            return boxes[i], float(probs[i])
    area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
    i = int(np.argmax(area * probs))
    return boxes[i], float(probs[i])


def _smooth_runs(boxes: np.ndarray, window: int) -> np.ndarray:
    """Moving average over each run of consecutive detections that found a face."""
    if window <= 1:
        return boxes
    out = boxes.copy()
    has = ~np.isnan(boxes[:, 0])
    edges = np.flatnonzero(np.diff(np.r_[0, has.astype(np.int8), 0]))
    half = window // 2
    for start, stop in zip(edges[::2], edges[1::2], strict=True):
        run = boxes[start:stop]
        padded = np.pad(run, ((half, half), (0, 0)), mode="edge")
        kernel = np.ones(window) / window
        out[start:stop] = np.stack([np.convolve(padded[:, c], kernel, mode="valid") for c in range(4)], 1)
    return out


def _interpolate(n: int, det_idx: np.ndarray, det_boxes: np.ndarray, det_probs: np.ndarray) -> FaceTrack:
    """Boxes for all n frames from the detection frames: linear between two detections that both
    found a face; the nearest detection decides whether a frame has a face at all."""
    frames = np.arange(n)
    nxt = np.clip(np.searchsorted(det_idx, frames), 0, len(det_idx) - 1)
    prv = np.clip(nxt - (det_idx[nxt] > frames), 0, len(det_idx) - 1)
    nearest = np.where(frames - det_idx[prv] <= det_idx[nxt] - frames, prv, nxt)
    face = det_probs[nearest] > 0
    both = face & (det_probs[prv] > 0) & (det_probs[nxt] > 0)
    span = np.maximum(det_idx[nxt] - det_idx[prv], 1)
    w = ((frames - det_idx[prv]) / span)[:, None]
    boxes = np.full((n, 4), np.nan, dtype=np.float32)
    boxes[face] = det_boxes[nearest[face]]
    boxes[both] = ((1 - w) * det_boxes[prv] + w * det_boxes[nxt])[both]
    probs = np.where(face, det_probs[nearest], 0.0)
    probs[both] = np.minimum(det_probs[prv], det_probs[nxt])[both]
    return FaceTrack(boxes, probs.astype(np.float32))


class FaceTracker:
    """MTCNN over a clip's frames -> one smoothed face box per frame."""

    def __init__(self, config: DetectorConfig | None = None, device: str | torch.device = "cpu"):
        self.config = config or DetectorConfig()
        self.device = torch.device(device)

    @cached_property
    def mtcnn(self):
        from facenet_pytorch import MTCNN  # its P/R/O-net weights ship inside the wheel

        c = self.config
        return MTCNN(keep_all=True, min_face_size=c.min_face_size, thresholds=list(c.thresholds),
                     post_process=False, device=self.device)

    def detection_indices(self, n: int) -> np.ndarray:
        return np.unique(np.r_[np.arange(0, n, self.config.detect_every), n - 1])

    def downscale(self, frames: np.ndarray) -> tuple[np.ndarray, float]:
        """Frames resized to detect_width, and the scale factor. Pillow's antialiased bilinear resize
        on uint8 (the filter torch's antialias=True copies) takes 1.4 ms a 640x480 frame; torch's
        needs the frames as float first and took 3.3 ms (measured on the 2-core CPU)."""
        h, w = frames.shape[1:3]
        scale = min(1.0, self.config.detect_width / w)
        if scale == 1.0:
            return frames, 1.0
        size = (max(1, round(w * scale)), max(1, round(h * scale)))
        small = np.stack([np.asarray(Image.fromarray(f).resize(size, Image.Resampling.BILINEAR)) for f in frames])
        return small, size[0] / w

    def detect(self, frames: np.ndarray, batch: int = 64) -> tuple[list, list, float]:
        """Raw MTCNN output (all faces) on the given frames, boxes in source pixels."""
        all_boxes, all_probs, scale = [], [], 1.0
        for i in range(0, len(frames), batch):
            small, scale = self.downscale(frames[i:i + batch])  # per batch: bounded memory
            if min(small.shape[1:3]) < self.config.min_face_size:
                # Smaller than the smallest face MTCNN looks for: its image pyramid would be empty
                # (facenet-pytorch then fails inside torch.cat). No face can be found here.
                all_boxes += [None] * len(small)
                all_probs += [None] * len(small)
                continue
            boxes, probs = self.mtcnn.detect(small)
            all_boxes += [None if b is None else np.asarray(b, np.float32) / scale for b in boxes]
            all_probs += [None if p is None else np.asarray(p, np.float32) for p in probs]
        return all_boxes, all_probs, scale

    def track(self, frames: np.ndarray) -> FaceTrack:
        n = len(frames)
        idx = self.detection_indices(n)
        raw = dict(zip(idx.tolist(), zip(*self.detect(frames[idx])[:2], strict=True), strict=True))
        present = [_pick(*raw[i], None, self.config.min_prob)[0] is not None for i in idx]
        # Where a face appears or vanishes between two detections, detect every frame in between:
        # the boundary is then exact, as with detection on every frame, at the cost of a few frames.
        gaps = [np.arange(a + 1, b) for a, b, pa, pb in zip(idx[:-1], idx[1:], present[:-1], present[1:], strict=True)
                if pa != pb and b - a > 1]
        if gaps:
            extra = np.concatenate(gaps)
            raw.update(zip(extra.tolist(), zip(*self.detect(frames[extra])[:2], strict=True), strict=True))
            idx = np.array(sorted(raw))
        det_boxes = np.full((len(idx), 4), np.nan, dtype=np.float32)
        det_probs = np.zeros(len(idx), dtype=np.float32)
        prev = None
        for j, i in enumerate(idx):
            box, prob = _pick(*raw[i], prev, self.config.min_prob)
            if box is not None:
                det_boxes[j], det_probs[j], prev = box, prob, box
        det_boxes = _smooth_runs(det_boxes, self.config.smooth)
        return _interpolate(n, idx, det_boxes, det_probs)


def square_boxes(boxes: np.ndarray, margin: float) -> np.ndarray:
    """Square boxes around each face box's centre, side (1 + margin) * its longer side."""
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    half = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) * (1 + margin) / 2
    return np.stack([cx - half, cy - half, cx + half, cy + half], 1)


def crop_faces(frames: np.ndarray, boxes: np.ndarray, size: int, margin: float,
               device: str | torch.device = "cpu") -> torch.Tensor:
    """(N, 3, size, size) float32 crops in 0..255 from full-resolution frames (N, H, W, 3) uint8.

    roi_align crops and resizes (bilinear, 2x2 samples per output pixel for light anti-aliasing);
    the part of a box outside the frame reads as black. It runs in one call on the frames' common
    window (the union of the boxes plus a 2-pixel border for the bilinear neighbours, clipped to the
    frame) rather than on whole frames: converting 300 full 640x480 frames to float cost more than
    the CNN's convolutions it fed (1.3 s of a 3.7 s clip, measured), and one call per frame on its
    own window took 0.85-0.92 s per 300 frames against 0.31-0.36 s for one call per 32-frame chunk
    (side by side, same clip, machine under load; crops equal within 0.001); what remains is
    roi_align's own sampling, spread over torch's threads by _roi_align.
    A seated face moves little over a chunk, so the window stays near one face's size (at worst a
    chunk of whole frames). Inside the window roi_align samples exactly what it would on the whole
    frame, and at the frame's edges the window's edges are the frame's.
    """
    n = len(frames)
    if n == 0:
        return torch.zeros(0, 3, size, size, device=device)
    sq = square_boxes(boxes, margin)
    h, w = frames.shape[1:3]
    x0 = int(np.clip(np.floor(sq[:, 0].min()) - 2, 0, w - 1))
    y0 = int(np.clip(np.floor(sq[:, 1].min()) - 2, 0, h - 1))
    x1 = int(np.clip(np.ceil(sq[:, 2].max()) + 3, x0 + 1, w))
    y1 = int(np.clip(np.ceil(sq[:, 3].max()) + 3, y0 + 1, h))
    window = torch.from_numpy(np.ascontiguousarray(frames[:, y0:y1, x0:x1])).to(device, non_blocking=True)
    window = window.permute(0, 3, 1, 2).float()
    rois = np.concatenate([np.arange(n, dtype=np.float32)[:, None], sq - np.array([x0, y0, x0, y0], np.float32)], 1)
    return _roi_align(window, torch.from_numpy(rois.astype(np.float32)).to(device), size)


def _roi_align(window: torch.Tensor, rois: torch.Tensor, size: int) -> torch.Tensor:
    """roi_align, on the CPU split across torch's threads: torchvision's CPU kernel runs on one
    thread, and the op releases the GIL, so threads parallelise it (32 crops: 28.6 -> 16.5 ms on
    2 cores). Each crop is computed exactly as in one call."""
    def run(r: torch.Tensor) -> torch.Tensor:
        return roi_align(window, r, output_size=(size, size), spatial_scale=1.0, sampling_ratio=2, aligned=True)

    k = torch.get_num_threads() if window.device.type == "cpu" else 1
    if k < 2 or len(rois) < 2 * k:
        return run(rois)
    return torch.cat(list(_crop_pool(k).map(run, torch.tensor_split(rois, k))))


@cache
def _crop_pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(workers, thread_name_prefix="crop")
