"""Square face crops, cut and resized from full-resolution frames with torchvision's roi_align."""

from __future__ import annotations

from concurrent.futures import Executor

import numpy as np
import torch
from torchvision.ops import roi_align

from embed.memory import FRAME_MMAP_THRESHOLD
from embed.video import FrameList

# At most this many bytes of float32 face windows at a time (32 frames of a 640x480 video's face
# windows are a few MB; of a 4K video's, hundreds). On the CPU, no more than glibc's mmap threshold
# (embed.memory): a bigger block is mapped afresh and faulted in page by page (docs/performance.md,
# "Stage one's time in the kernel").
WINDOW_BYTES = 48 * 2**20


def square_boxes(boxes: np.ndarray, margin: float) -> np.ndarray:
    """Square boxes around each face box's centre, side (1 + margin) * its longer side."""
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    half = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) * (1 + margin) / 2
    return np.stack([cx - half, cy - half, cx + half, cy + half], 1)


def crop_faces(
    frames: np.ndarray | FrameList,
    boxes: np.ndarray,
    size: int,
    *,
    margin: float,
    device: str | torch.device = "cpu",
    rows: np.ndarray | None = None,
    pool: Executor | None = None,
) -> torch.Tensor:
    """(N, 3, size, size) float32 crops in 0..255 from full-resolution frames (N, H, W, 3) uint8 (an
    array, or the tracker's FrameList), or from frames[rows] (N row numbers), copying only the
    windows read, never whole frames.

    roi_align crops and resizes (bilinear, 2x2 samples per output pixel for light anti-aliasing);
    the part of a box outside the frame reads as black. It runs in one call on the frames' common
    window (the union of the boxes plus a 2-pixel border for the bilinear neighbours, clipped to the
    frame), not on whole frames: converting whole 640x480 frames to float costs more than the CNN
    they feed, and one call per frame costs more than one per chunk. A seated face moves little over
    a chunk, so the window stays near one face's size. Inside the window roi_align samples exactly
    what it would on the whole frame (crops equal within float32 rounding of the shifted boxes:
    test_faces_units), and at the frame's edges the window's edges are the frame's. With a thread
    `pool` (an Embedder's), the CPU's roi_align is split across its threads.
    """
    n = len(frames) if rows is None else len(rows)
    if n == 0:
        return torch.zeros(0, 3, size, size, device=device)
    sq = square_boxes(boxes, margin)
    h, w = frames.shape[1:3]
    x0 = int(np.clip(np.floor(sq[:, 0].min()) - 2, 0, w - 1))
    y0 = int(np.clip(np.floor(sq[:, 1].min()) - 2, 0, h - 1))
    x1 = int(np.clip(np.ceil(sq[:, 2].max()) + 3, x0 + 1, w))
    y1 = int(np.clip(np.ceil(sq[:, 3].max()) + 3, y0 + 1, h))
    budget = FRAME_MMAP_THRESHOLD if torch.device(device).type == "cpu" else WINDOW_BYTES
    if n > 1 and n * (y1 - y0) * (x1 - x0) * 3 * 4 > budget:
        # Windows over the budget (a 4K picture's faces; on the CPU, a chunk of 640x480 ones): half the
        # frames at a time until their float windows fit, so a crop's memory does not grow with the
        # resolution (each crop is the same).
        h2 = n // 2
        halves = [(frames[:h2], None), (frames[h2:], None)] if rows is None else [(frames, rows[:h2]), (frames, rows[h2:])]
        boxes_of = (boxes[:h2], boxes[h2:])
        return torch.cat(
            [
                crop_faces(f, b, size, margin=margin, device=device, rows=r, pool=pool)
                for (f, r), b in zip(halves, boxes_of, strict=True)
            ]
        )
    window = frames[:, y0:y1, x0:x1] if rows is None else frames[rows, y0:y1, x0:x1]
    window = torch.from_numpy(np.ascontiguousarray(window)).to(device, non_blocking=True)
    window = window.permute(0, 3, 1, 2).float()
    rois = np.concatenate([np.arange(n, dtype=np.float32)[:, None], sq - np.array([x0, y0, x0, y0], np.float32)], 1)
    return _roi_align(window, torch.from_numpy(rois.astype(np.float32)).to(device), size, pool=pool)


def _roi_align(window: torch.Tensor, rois: torch.Tensor, size: int, pool: Executor | None) -> torch.Tensor:
    """roi_align, on the CPU split across the pool's threads: torchvision's CPU kernel runs on one
    thread and the op releases the GIL, so threads parallelise it. Each crop is computed exactly as
    in one call."""

    def run(r: torch.Tensor) -> torch.Tensor:
        return roi_align(window, r, output_size=(size, size), spatial_scale=1.0, sampling_ratio=2, aligned=True)

    k = torch.get_num_threads() if window.device.type == "cpu" and pool is not None else 1
    if k < 2 or len(rois) < 2 * k:
        return run(rois)
    return torch.cat(list(pool.map(run, torch.tensor_split(rois, k))))
