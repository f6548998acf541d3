"""MTCNN's three stages, able to search only where the tracked face is (region search).

facenet-pytorch's `detect_face` runs the P-net on an image pyramid, then the R-net and O-net on
every P-net candidate, each cut from the frame and resampled one by one, and has no hook to skip
candidates. `search` runs the same three stages with facenet-pytorch's own networks and helpers
(box generation, NMS, calibration, padding, resampling) in the same order, with two differences:

- the networks run channels-last (faster R- and O-nets on the CPU, see _refine; the same faces as
  MTCNN.detect, boxes within 1e-3 px on the real footage: tested), a part of the batch at a time
  on the CPU (_parts), and
- a frame may be given a `Window`: pyramid levels whose 12-pixel P-net window is far from the
  tracked face's size are skipped for it, and its candidates centred outside a square around the
  face are dropped before the R-net.

Why not run MTCNN on a crop around the face (the obvious idea): its pyramid sizes are rounded
per image, so the same face in the same pixels comes out of a crop with other boxes (0.92-0.95 IoU
against the whole frame; `bench/region_search.py`). In a window every level that is computed is the
whole frame's own level and every candidate is cut from the whole frame, so a kept candidate is
scored and calibrated exactly as in a whole-frame search; a dropped one can still change the result
through NMS after the R-net's regression has grown or moved it. Measured (`bench/region_search.py`):
with levels within 2.5x of the face every box equalled the whole-frame search's on the real footage
and the bench clips; within 2x single boxes moved (lowest IoU 0.905), so 2.5 is the default.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from facenet_pytorch.models.utils.detect_face import (
    batched_nms_numpy,
    bbreg,
    generateBoundingBox,
    imresample,
    pad,
    rerec,
)
from torchvision.ops.boxes import batched_nms

from embed.memory import FRAME_MMAP_THRESHOLD

PNET_CELL = 12  # the P-net's window, in pixels of its pyramid level


@dataclass(frozen=True)
class Window:
    """Where to look, in detection pixels: candidates centred in [x0, x1) x [y0, y1), from the
    pyramid levels whose P-net window covers faces of `min_side`..`max_side` pixels."""

    x0: float
    y0: float
    x1: float
    y1: float
    min_side: float
    max_side: float

    @classmethod
    def around(cls, box: np.ndarray, extent: float, size_ratio: float) -> Window:
        """A square of `extent` times the box's longer side around its centre, for faces within a
        factor `size_ratio` of its size."""
        side = float(max(box[2] - box[0], box[3] - box[1]))
        cx, cy, half = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2, extent * side / 2
        return cls(cx - half, cy - half, cx + half, cy + half, side / size_ratio, side * size_ratio)


def pyramid(height: int, width: int, min_face: float, factor: float) -> list[float]:
    """facenet-pytorch's scale pyramid for an image of this size (the same arithmetic, so the same floats)."""
    m = 12.0 / min_face
    minl, scale, scales = min(height, width) * m, m, []
    while minl >= 12:
        scales.append(scale)
        scale, minl = scale * factor, minl * factor
    return scales


def level_side(height: int, width: int, scale: float) -> tuple[int, int]:
    """A pyramid level's size in pixels, as facenet-pytorch rounds it."""
    return int(height * scale + 1), int(width * scale + 1)


def _parts(n: int, net, side: tuple[int, int], *, device: torch.device) -> list[slice]:
    """The batch of n inputs of `side` pixels in parts whose largest activation (the first
    convolution's, MTCNN's widest) stays under the fixed mmap threshold on the CPU (embed.memory):
    above it glibc maps each block afresh and faults it in page by page, which cost `embed run`'s
    64-frame batches up to a quarter more time (docs/performance.md)."""
    if device.type != "cpu":
        return [slice(0, n)]
    per_input = net.conv1.out_channels * side[0] * side[1] * 4  # float32
    k = max(1, FRAME_MMAP_THRESHOLD // per_input)
    return [slice(i, min(n, i + k)) for i in range(0, n, k)]


def _outputs(parts: list[tuple[torch.Tensor, ...]]) -> tuple[torch.Tensor, ...]:
    """A net's outputs over the parts of a batch, joined as if it had run on the whole batch."""
    return parts[0] if len(parts) == 1 else tuple(torch.cat(o) for o in zip(*parts, strict=True))


def _refine(imgs: list[torch.Tensor], boxes: torch.Tensor, image_inds: torch.Tensor, net, size: int):
    """One refinement stage: each candidate cut from its frame (clipped to it by facenet-pytorch's
    `pad`), resampled to size x size as facenet-pytorch does, through the net. The batch goes in
    channels-last: with the nets' weights channels-last too (FaceDetector.mtcnn), oneDNN's kernels
    for that layout ran the R- and O-nets 2.2x faster on the 2-core CPU, outputs within 3e-6
    (resampling all candidates at once from a summed-area table was measured too: bit-equal, no faster)."""
    h, w = imgs[0].shape[2:4]
    y, ey, x, ex = pad(boxes, w, h)
    y, ey, x, ex, frame = y.tolist(), ey.tolist(), x.tolist(), ex.tolist(), image_inds.tolist()
    keep = [k for k in range(len(y)) if ey[k] > y[k] - 1 and ex[k] > x[k] - 1]
    if not keep:
        return keep, None
    outs = []
    for part in _parts(len(keep), net, (size, size), device=imgs[0].device):
        # Plain-int slices: indexing with 0-d tensors took the slow advanced-indexing path.
        crops = [imresample(imgs[frame[k]][:, :, y[k] - 1 : ey[k], x[k] - 1 : ex[k]], (size, size)) for k in keep[part]]
        batch = ((torch.cat(crops) - 127.5) * 0.0078125).contiguous(memory_format=torch.channels_last)
        outs.append(net(batch))
    return keep, _outputs(outs)


def _stage(imgs: list[torch.Tensor], boxes: torch.Tensor, image_inds: torch.Tensor, net, size: int, threshold: float):
    """The R- or O-net on the candidates: those it scores above `threshold`, with their scores and
    box regressions (a candidate wholly outside its frame is dropped; facenet-pytorch would
    misalign the rest there)."""
    keep, out = _refine(imgs, boxes, image_inds, net=net, size=size)
    if not keep:
        return boxes[:0, :5], image_inds[:0], boxes[:0, :4]
    boxes, image_inds, score = boxes[keep], image_inds[keep], out[-1][:, 1]
    ok = score > threshold
    return torch.cat((boxes[ok, :4], score[ok, None]), dim=1), image_inds[ok], out[0][ok]


def search(mtcnn, frames: np.ndarray, windows: list[Window | None] | None = None) -> tuple[list, list]:
    """Faces in (N, H, W, 3) uint8 frames as MTCNN.detect(frames) gives them (boxes largest first,
    None where there is none), searching each frame only in its window (the whole frame where it, or
    `windows`, is None)."""
    device = mtcnn.device
    thresholds, factor = mtcnn.thresholds, mtcnn.factor
    with torch.no_grad():
        # Contiguous: area resampling of the pyramid levels ran 2x faster than on the channels-last view
        # of the frames (bit-equal), and the candidates' crops as fast. A tensor per frame: a frame
        # (downscaled for detection) stays under the mmap threshold where the batch would not.
        dtype = next(mtcnn.pnet.parameters()).dtype
        pixels = torch.as_tensor(frames, device=device).permute(0, 3, 1, 2)
        imgs = [f[None].to(dtype, memory_format=torch.contiguous_format) for f in pixels]
        n, h, w = len(frames), *frames.shape[1:3]
        windows = windows or [None] * n
        boxes, image_inds = [], []
        for scale in pyramid(h, w, mtcnn.min_face_size, factor=factor):
            wanted = torch.tensor([win is None or win.min_side <= PNET_CELL / scale <= win.max_side for win in windows])
            if not wanted.any():
                continue
            side, outs = level_side(h, w, scale), []
            for part in _parts(n, mtcnn.pnet, side, device=device):
                level = (torch.cat([imresample(img, side) for img in imgs[part]]) - 127.5) * 0.0078125
                outs.append(mtcnn.pnet(level.contiguous(memory_format=torch.channels_last)))
            reg, probs = _outputs(outs)
            b, i = generateBoundingBox(reg, probs[:, 1], scale, thresholds[0])
            pick = batched_nms(b[:, :4], b[:, 4], i, 0.5)
            pick = pick[wanted.to(device)[i[pick]]]
            boxes.append(b[pick])
            image_inds.append(i[pick])
        if not boxes:
            return [None] * n, [None] * n
        boxes, image_inds = torch.cat(boxes), torch.cat(image_inds)
        if any(win is not None for win in windows):
            inf = float("inf")
            bounds = torch.tensor(
                [[-inf, -inf, inf, inf] if win is None else [win.x0, win.y0, win.x1, win.y1] for win in windows],
                device=device,
            )[image_inds]
            cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
            inside = (cx >= bounds[:, 0]) & (cy >= bounds[:, 1]) & (cx < bounds[:, 2]) & (cy < bounds[:, 3])
            boxes, image_inds = boxes[inside], image_inds[inside]
        pick = batched_nms(boxes[:, :4], boxes[:, 4], image_inds, 0.7)
        boxes, image_inds = boxes[pick], image_inds[pick]
        regw, regh = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
        boxes = rerec(
            torch.stack(
                [
                    boxes[:, 0] + boxes[:, 5] * regw,
                    boxes[:, 1] + boxes[:, 6] * regh,
                    boxes[:, 2] + boxes[:, 7] * regw,
                    boxes[:, 3] + boxes[:, 8] * regh,
                    boxes[:, 4],
                ]
            ).permute(1, 0)
        )
        if len(boxes):
            boxes, image_inds, mv = _stage(imgs, boxes, image_inds, net=mtcnn.rnet, size=24, threshold=thresholds[1])
            pick = batched_nms(boxes[:, :4], boxes[:, 4], image_inds, 0.7)
            boxes, image_inds = rerec(bbreg(boxes[pick], mv[pick])), image_inds[pick]
        if len(boxes):
            boxes, image_inds, mv = _stage(imgs, boxes, image_inds, net=mtcnn.onet, size=48, threshold=thresholds[2])
            boxes = bbreg(boxes, mv)
            pick = batched_nms_numpy(boxes[:, :4], boxes[:, 4], image_inds, 0.7, "Min")
            boxes, image_inds = boxes[pick], image_inds[pick]
        boxes, image_inds = boxes.cpu().numpy(), image_inds.cpu().numpy()
    out_boxes, out_probs = [], []
    for k in range(n):
        b = boxes[image_inds == k]
        if len(b) == 0:
            out_boxes.append(None)
            out_probs.append(None)
            continue
        b = b[np.argsort((b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1]))[::-1]]  # largest first, as MTCNN.detect
        out_boxes.append(b[:, :4])
        out_probs.append(b[:, 4])
    return out_boxes, out_probs
