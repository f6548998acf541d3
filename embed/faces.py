"""Face tracking with facenet-pytorch's MTCNN, and square face crops from full-resolution frames.

MTCNN (its three networks run by embed/face_search.py) runs batched on frames downscaled to
`detect_width`, only every `detect_every`-th frame (and the last, and every frame between two
detections that disagree on whether there is a face); boxes
in between are interpolated from the neighbouring detections, which is what makes detection a small
share of stage one's time. The tracker takes a video in chunks (StreamTracker) and gives the same
boxes as on the whole video. Frames whose nearest detection found no face get
face_prob 0 and a NaN box: they are flagged, never dropped.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import cache, cached_property

import numpy as np
import torch
from PIL import Image
from torchvision.ops import box_iou, roi_align

from embed.extraction import DetectorConfig
from embed.face_search import Window, search


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


def _interpolate(frames: np.ndarray, det_idx: np.ndarray, det_boxes: np.ndarray, det_probs: np.ndarray) -> FaceTrack:
    """Boxes for the given frame numbers from the detection frames around them: linear between two
    detections that both found a face; the nearest detection decides whether a frame has a face at all.
    Every frame needs a detection at or before it and one at or after it."""
    nxt = np.clip(np.searchsorted(det_idx, frames), 0, len(det_idx) - 1)
    prv = np.clip(nxt - (det_idx[nxt] > frames), 0, len(det_idx) - 1)
    nearest = np.where(frames - det_idx[prv] <= det_idx[nxt] - frames, prv, nxt)
    face = det_probs[nearest] > 0
    both = face & (det_probs[prv] > 0) & (det_probs[nxt] > 0)
    span = np.maximum(det_idx[nxt] - det_idx[prv], 1)
    w = ((frames - det_idx[prv]) / span)[:, None]
    boxes = np.full((len(frames), 4), np.nan, dtype=np.float32)
    boxes[face] = det_boxes[nearest[face]]
    boxes[both] = ((1 - w) * det_boxes[prv] + w * det_boxes[nxt])[both]
    probs = np.where(face, det_probs[nearest], 0.0)
    probs[both] = np.minimum(det_probs[prv], det_probs[nxt])[both]
    return FaceTrack(boxes, probs.astype(np.float32))


@dataclass
class TrackedChunk:
    """Frames whose face boxes are final, with the tracker's state right after them (for resuming)."""

    start: int  # absolute index of the first frame
    frames: np.ndarray  # (n, H, W, 3) uint8
    timestamps: np.ndarray  # (n,) float32 seconds
    track: FaceTrack
    state: dict  # JSON-able; StreamTracker(resume=state) continues exactly from here

    def __len__(self) -> int:
        return len(self.frames)


class StreamTracker:
    """The tracker over a video that arrives in chunks, equal to tracking the whole video at once.

    Detections are scheduled on absolute frame numbers (every detect_every-th frame, and the last
    frame of the video); where two neighbouring detections disagree on a face, every frame between
    them is detected; picks continue the track across chunks; a frame's box is final, and handed out,
    once the detections that its interpolation and the smoothing around them read are known. So the
    tracker holds at most about (smooth // 2 + 1) * detect_every frames beyond one chunk, whatever the
    video's length.

    With region search on (DetectorConfig.search_region > 0), each period of `full_search_every`
    frames starts at an anchor detection that searches the whole frame; the rest of the period is
    searched in a window around the face the anchor picked, and on the whole frame where the anchor
    found no face or the window finds none (the face moved out or left), so whether a frame has a
    face is always the whole frame's answer. A frame's search depends on its period's anchor alone,
    never on how the video was chunked.
    """

    def __init__(self, tracker: FaceTracker, resume: dict | None = None, batch_frames: int = 64):
        self.tracker, self.config, self.batch_frames = tracker, tracker.config, batch_frames
        self.half = max(self.config.smooth, 1) // 2
        r = resume or {}
        self.emitted = int(r.get("emitted", 0))  # frames before this are handed out (the buffer starts here)
        dets = r.get("dets", [])  # [frame, box or None, prob]
        self.det_idx: list[int] = [int(d[0]) for d in dets]
        self.det_box: list[np.ndarray] = [
            np.asarray(d[1] if d[1] is not None else [np.nan] * 4, dtype=np.float32) for d in dets
        ]
        self.det_prob: list[float] = [float(d[2]) for d in dets]
        self.prev = None if r.get("prev") is None else np.asarray(r["prev"], dtype=np.float32)
        self.last_sched: int | None = r.get("last_sched")
        # Each recent search period's window: the face box its anchor picked (None: no face there).
        self.windows: dict[int, np.ndarray | None] = {
            int(k): None if b is None else np.asarray(b, dtype=np.float32) for k, b in r.get("windows", {}).items()
        }
        self.frames: list[np.ndarray] = []
        self.stamps: list[float] = []

    @property
    def arrived(self) -> int:
        return self.emitted + len(self.frames)

    def state(self) -> dict:
        """Everything needed to continue after the frames handed out so far (frames are decoded again)."""
        # No-face boxes as null, not NaN: the state lives in zarr attributes, which are JSON.
        dets = [
            [i, None if np.isnan(b[0]) else [float(v) for v in b], p]
            for i, b, p in zip(self.det_idx, self.det_box, self.det_prob, strict=True)
        ]
        as_list = lambda b: None if b is None else [float(v) for v in b]  # noqa: E731
        return {
            "emitted": self.emitted,
            "dets": dets,
            "last_sched": self.last_sched,
            "prev": as_list(self.prev),
            "windows": {str(k): as_list(b) for k, b in self.windows.items()},
        }

    def push(self, start: int, frames: np.ndarray, timestamps: np.ndarray) -> TrackedChunk | None:
        """Add the frames [start, start + n) of the video; returns the frames that became final.

        Detection waits until `batch_frames` frames are waiting for it, so that MTCNN and the CNN
        after it see batches of a chunk's size: a clip shorter than that is detected in one batch at
        finish(), as a whole clip always was (one MTCNN call instead of two costs ~0.1 s a clip)."""
        skip = self.arrived - start  # frames handed out before a resume come again: drop them
        if skip < 0:
            raise ValueError(f"frames {self.arrived}..{start - 1} never arrived")
        frames, timestamps = frames[skip:], timestamps[skip:]
        if len(frames) == 0:
            return None
        self.frames.extend(frames)
        self.stamps.extend(timestamps.tolist())
        if self.arrived - self._unresolved() < self.batch_frames:
            return None
        self._resolve(self._scheduled())
        return self._emit(self.det_idx[-1 - self.half] if len(self.det_idx) > self.half else -1)

    def finish(self) -> TrackedChunk | None:
        """The video has ended: detect what is left and its last frame, and hand out everything."""
        if not self.frames:
            return None
        last = self.arrived - 1
        sched = self._scheduled()
        if (sched[-1] if sched else self.last_sched) != last:
            sched.append(last)
        self._resolve(sched)
        return self._emit(last)

    def _unresolved(self) -> int:
        """The first frame no detection has been scheduled up to."""
        return self.emitted if self.last_sched is None else max(self.emitted, self.last_sched + 1)

    def _scheduled(self) -> list[int]:
        k, begin = self.config.detect_every, self._unresolved()
        return list(range(-(-begin // k) * k, self.arrived, k))

    def _frame(self, i: int) -> np.ndarray:
        return self.frames[i - self.emitted]

    def _period(self, i: int) -> int:
        """Frame i's search period: periods start at their anchor, the first detection frame at or
        after each multiple of full_search_every, whose whole frame is searched."""
        k = i // self.config.full_search_every
        return k if self._anchor(k) <= i else k - 1

    def _anchor(self, k: int) -> int:
        d = self.config.detect_every
        return -(-k * self.config.full_search_every // d) * d

    def _search(self, indices: list[int], around: list) -> dict[int, tuple]:
        if not indices:
            return {}
        boxes, probs, _ = self.tracker.detect(np.stack([self._frame(i) for i in indices]), around=around)
        return dict(zip(indices, zip(boxes, probs, strict=True), strict=True))

    def _has_face(self, raw: tuple) -> bool:
        return _pick(*raw, None, self.config.min_prob)[0] is not None

    def _searched(self, indices: list[int]) -> dict[int, tuple]:
        """Raw detections of these frames: each period's anchor on the whole frame, which places the
        period's window around the face that continues the track; the period's other frames in its
        window, or on the whole frame where the anchor found no face or the window finds none (so
        whether a frame has a face is decided on the whole frame). A frame's search depends only on
        its period's anchor, never on how the video was chunked, and the frames of a chunk take three
        MTCNN calls at most."""
        if self.config.search_region <= 0:
            return self._search(indices, [None] * len(indices))
        anchors = [i for i in indices if self._anchor(self._period(i)) == i]
        raws = self._search(anchors, [None] * len(anchors))
        for i in anchors:
            k = self._period(i)
            box = _pick(*raws[i], self.windows.get(k - 1), self.config.min_prob)[0]
            self.windows[k] = None if box is None else np.asarray(box, dtype=np.float32)
        window = {i: self.windows.get(self._period(i)) for i in indices if i not in raws}
        raws |= self._search(list(window), list(window.values()))
        misses = [i for i, w in window.items() if w is not None and not self._has_face(raws[i])]
        return raws | self._search(misses, [None] * len(misses))

    def _resolve(self, sched: list[int]) -> None:
        """Detect the scheduled frames, refine the face/no-face boundaries before each, and pick in order."""
        raws = self._searched(sched)
        for s in sched:
            raw = raws[s]
            if self.last_sched is not None:
                before = self.det_prob[-1] > 0  # the last pick is the last scheduled detection's
                if before != self._has_face(raw) and s - self.last_sched > 1:
                    # A face appears or vanishes in between: detect every frame there, so the
                    # boundary is exact, as with detection on every frame, at the cost of a few frames.
                    gap = list(range(self.last_sched + 1, s))
                    graws = self._searched(gap)
                    for g in gap:
                        self._add(g, graws[g])
            self._add(s, raw)
            self.last_sched = s
        if self.last_sched is not None:  # later frames read their own period's window, anchors the one before
            for k in [k for k in self.windows if k < self._period(self.last_sched)]:
                del self.windows[k]

    def _add(self, i: int, raw: tuple) -> None:
        box, prob = _pick(*raw, self.prev, self.config.min_prob)
        self.det_idx.append(i)
        if box is None:
            self.det_box.append(np.full(4, np.nan, dtype=np.float32))
            self.det_prob.append(0.0)
        else:
            self.det_box.append(np.asarray(box, dtype=np.float32))
            self.det_prob.append(float(prob))
            self.prev = self.det_box[-1]

    def _emit(self, upto: int) -> TrackedChunk | None:
        """Hand out the buffered frames up to `upto` (inclusive)."""
        n = min(upto, self.arrived - 1) - self.emitted + 1
        if n <= 0:
            return None
        idx = np.asarray(self.det_idx)
        smoothed = _smooth_runs(np.stack(self.det_box), self.config.smooth)
        frames = np.arange(self.emitted, self.emitted + n)
        track = _interpolate(frames, idx, smoothed, np.asarray(self.det_prob, dtype=np.float32))
        out_frames, out_t = np.stack(self.frames[:n]), np.asarray(self.stamps[:n], dtype=np.float32)
        start = self.emitted
        del self.frames[:n], self.stamps[:n]
        self.emitted += n
        # Keep the detection the next frame interpolates from, and the `half` before it that its
        # smoothing reads; earlier ones are never read again.
        p = int(np.searchsorted(idx, self.emitted, side="right")) - 1
        drop = max(0, p - self.half)
        del self.det_idx[:drop], self.det_box[:drop], self.det_prob[:drop]
        return TrackedChunk(start, out_frames, out_t, track, self.state())


class StoredTrack:
    """The same interface over boxes already in a face-track store: nothing is detected."""

    def __init__(self, track: FaceTrack, resume_from: int = 0):
        self.track, self.emitted = track, resume_from

    def push(self, start: int, frames: np.ndarray, timestamps: np.ndarray) -> TrackedChunk | None:
        skip = self.emitted - start
        frames, timestamps = frames[max(skip, 0) :], timestamps[max(skip, 0) :]
        if len(frames) == 0:
            return None
        a, b = self.emitted, self.emitted + len(frames)
        if b > len(self.track.probs):
            raise ValueError("the video has more frames than its stored face track")
        self.emitted = b
        return TrackedChunk(a, frames, timestamps, FaceTrack(self.track.boxes[a:b], self.track.probs[a:b]), {"emitted": b})

    def finish(self) -> TrackedChunk | None:
        if self.emitted != len(self.track.probs):
            raise ValueError("the video has fewer frames than its stored face track")
        return None


class FaceTracker:
    """MTCNN over a clip's frames -> one smoothed face box per frame."""

    def __init__(self, config: DetectorConfig | None = None, device: str | torch.device = "cpu"):
        self.config = config or DetectorConfig()
        self.device = torch.device(device)

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
        """Frames resized to detect_width, and the scale factor. Pillow's antialiased bilinear resize
        on uint8 (the filter torch's antialias=True copies) takes 1.4 ms a 640x480 frame; torch's
        needs the frames as float first and took 3.3 ms (measured on the 2-core CPU)."""
        h, w = frames.shape[1:3]
        scale = min(1.0, self.config.detect_width / w)
        if scale == 1.0:
            return frames, 1.0
        size = (max(1, round(w * scale)), max(1, round(h * scale)))

        def resize(f: np.ndarray) -> np.ndarray:
            return np.asarray(Image.fromarray(f).resize(size, Image.Resampling.BILINEAR))

        # Pillow releases the GIL while resizing: torch's threads' worth of them run at once.
        small = np.stack(list(_thread_pool(max(1, torch.get_num_threads())).map(resize, frames)))
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
        return search(self.mtcnn, small, windows)

    def track(self, frames: np.ndarray) -> FaceTrack:
        """The track of a whole clip held in memory (the streamed tracker fed one chunk)."""
        stream = StreamTracker(self, batch_frames=len(frames) + 1)  # one batch, as before streaming
        parts = [c for c in (stream.push(0, frames, np.zeros(len(frames), np.float32)), stream.finish()) if c]
        return FaceTrack(np.concatenate([c.track.boxes for c in parts]), np.concatenate([c.track.probs for c in parts]))


def square_boxes(boxes: np.ndarray, margin: float) -> np.ndarray:
    """Square boxes around each face box's centre, side (1 + margin) * its longer side."""
    cx, cy = (boxes[:, 0] + boxes[:, 2]) / 2, (boxes[:, 1] + boxes[:, 3]) / 2
    half = np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]) * (1 + margin) / 2
    return np.stack([cx - half, cy - half, cx + half, cy + half], 1)


def crop_faces(
    frames: np.ndarray, boxes: np.ndarray, size: int, margin: float, device: str | torch.device = "cpu"
) -> torch.Tensor:
    """(N, 3, size, size) float32 crops in 0..255 from full-resolution frames (N, H, W, 3) uint8.

    roi_align crops and resizes (bilinear, 2x2 samples per output pixel for light anti-aliasing);
    the part of a box outside the frame reads as black. It runs in one call on the frames' common
    window (the union of the boxes plus a 2-pixel border for the bilinear neighbours, clipped to the
    frame) rather than on whole frames: converting 300 full 640x480 frames to float cost more than
    the CNN's convolutions it fed (1.3 s of a 3.7 s clip, measured), and one call per frame on its
    own window took 0.85-0.92 s per 300 frames against 0.31-0.36 s for one call per 32-frame chunk
    (side by side, same clip, machine under load; crops equal within 0.001 there, and within 0.01
    of 0..255 on pure-noise frames, from float32 rounding of the shifted boxes: test_faces_units);
    what remains is roi_align's own sampling, spread over torch's threads by _roi_align.
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
    return torch.cat(list(_thread_pool(k).map(run, torch.tensor_split(rois, k))))


@cache
def _thread_pool(workers: int) -> ThreadPoolExecutor:
    return ThreadPoolExecutor(workers, thread_name_prefix="faces")
