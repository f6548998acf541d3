"""One face box per frame from MTCNN detections on a few of them.

The detector (embed.detector) runs only every `detect_every`-th frame (and the last, and every
frame between two detections that disagree on whether there is a face); boxes in between are
interpolated from the neighbouring detections and smoothed, which keeps detection a small share of
stage one's time. StreamTracker takes a video in chunks and gives the same boxes as on the whole
video. Frames whose nearest detection found no face get face_prob 0 and a NaN box: they are
flagged, never dropped.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch
from torchvision.ops import box_iou

from embed.errors import ClipError
from embed.video import FrameList, frames_within

if TYPE_CHECKING:
    from embed.detector import FaceDetector
    from embed.video import FrameChunk


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
    frames: FrameList | np.ndarray  # n frames (H, W, 3) uint8
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

    def __init__(
        self,
        detector: FaceDetector,
        resume: dict | None = None,
        *,
        batch_frames: int = 64,
        detect_every: int | None = None,
        batch_bytes: int | None = None,
    ):
        """`detect_every` overrides the detector config's interval: a live source thinned below the
        rate its run was trained at keeps detecting about as often in seconds (embed.engine).
        `batch_bytes` caps a detection batch as the decoder's chunk_bytes caps a chunk (by the frames'
        size), so the tracker holds no more full-size frames than the chunks it is handed."""
        self.detector, self.config, self.batch_frames = detector, detector.config, batch_frames
        self.batch_bytes = batch_bytes
        self.every = max(1, int(detect_every or self.config.detect_every))
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
        finish() (one MTCNN call instead of two)."""
        skip = self.arrived - start  # frames handed out before a resume come again: drop them
        if skip < 0:
            raise ValueError(f"frames {self.arrived}..{start - 1} never arrived")
        frames, timestamps = frames[skip:], timestamps[skip:]
        if len(frames) == 0:
            return None
        self.batch_frames = frames_within(self.batch_bytes, frames[0].nbytes, self.batch_frames)
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
        k, begin = self.every, self._unresolved()
        return list(range(-(-begin // k) * k, self.arrived, k))

    def _frame(self, i: int) -> np.ndarray:
        return self.frames[i - self.emitted]

    def _period(self, i: int) -> int:
        """Frame i's search period: periods start at their anchor, the first detection frame at or
        after each multiple of full_search_every, whose whole frame is searched."""
        k = i // self.config.full_search_every
        return k if self._anchor(k) <= i else k - 1

    def _anchor(self, k: int) -> int:
        d = self.every
        return -(-k * self.config.full_search_every // d) * d

    def _search(self, indices: list[int], around: list) -> dict[int, tuple]:
        if not indices:
            return {}
        boxes, probs, _ = self.detector.detect(np.stack([self._frame(i) for i in indices]), around=around)
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
        track = _interpolate(frames, idx, smoothed, det_probs=np.asarray(self.det_prob, dtype=np.float32))
        # The frames as they are (views into the decoder's chunks): the crops read windows of them.
        out_frames, out_t = FrameList(self.frames[:n]), np.asarray(self.stamps[:n], dtype=np.float32)
        start = self.emitted
        del self.frames[:n], self.stamps[:n]
        self.emitted += n
        # Keep the detection the next frame interpolates from, and the `half` before it that its
        # smoothing reads; earlier ones are never read again.
        p = int(np.searchsorted(idx, self.emitted, side="right")) - 1
        drop = max(0, p - self.half)
        del self.det_idx[:drop], self.det_box[:drop], self.det_prob[:drop]
        return TrackedChunk(start, out_frames, out_t, track=track, state=self.state())


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
        return TrackedChunk(
            a, frames, timestamps, track=FaceTrack(self.track.boxes[a:b], self.track.probs[a:b]), state={"emitted": b}
        )

    def finish(self) -> TrackedChunk | None:
        if self.emitted != len(self.track.probs):
            raise ValueError("the video has fewer frames than its stored face track")
        return None


def tracked_chunks(
    chunks: Iterable[FrameChunk], tracker: StreamTracker | StoredTrack, finish_on_error: bool = False
) -> Iterator[TrackedChunk]:
    """Decoded chunks of a video, tracked; with finish_on_error (a live stream that breaks off), the
    frames that did arrive are tracked to the end and handed out before the error is raised."""
    try:
        for chunk in chunks:
            if (tracked := tracker.push(chunk.start, chunk.frames, chunk.timestamps)) is not None:
                yield tracked
    except ClipError:
        if finish_on_error and (tracked := tracker.finish()) is not None:
            yield tracked
        raise
    if (tracked := tracker.finish()) is not None:
        yield tracked
