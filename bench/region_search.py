"""Does running MTCNN on a crop around the face keep its boxes? (it does not)

For each detection frame (every 4th) of the real footage and DAiSEE-shaped bench clips, MTCNN is run
on the whole frame (as the tracker does: downscaled to detect_width) and on a square region of
`factor` face sizes around the previous detection's box, cut from the same downscaled frame (the very
same pixels). Prints, per factor, the mean IoU between the two boxes, their mean offset and spread,
and MTCNN's time on regions against whole frames. Then the tracker's region search, windows on the
whole frame (embed/face_search.py): per pyramid-level window (faces within 2x or 2.5x of the tracked
one) the mean and lowest IoU of its boxes against the whole-frame search, and how many candidates the
R- and O-nets refined in the windows (`candidates`) against the whole same frames
(`candidates_full_frame`). docs/performance.md, "Region search".
    .venv/bin/python bench/region_search.py [--factors 2,3,4] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: tests.frames

import numpy as np  # noqa: E402
import torch  # noqa: E402

from embed import face_search  # noqa: E402
from embed.detector import FaceDetector  # noqa: E402
from embed.extraction import DetectorConfig  # noqa: E402
from embed.face_search import Window, search  # noqa: E402
from embed.manifest import SampleSpec  # noqa: E402
from embed.sample import generate_sample  # noqa: E402
from tests.frames import decode_video  # noqa: E402

FOOTAGE = Path(__file__).resolve().parents[1] / "data" / "footage"
WINDOW_SIZES = (2.0, 2.5)  # region search's pyramid levels: faces within this factor of the tracked one


def iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return float(inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter))


def region(box: np.ndarray, factor: float, width: int, height: int) -> tuple[int, int, int, int]:
    """A square of `factor` times the box's longer side around its centre, moved inside the frame."""
    side = int(round(factor * max(box[2] - box[0], box[3] - box[1])))
    w, h = min(side, width), min(side, height)
    cx, cy = (box[0] + box[2]) / 2, (box[1] + box[3]) / 2
    x0 = int(np.clip(round(cx - w / 2), 0, width - w))
    y0 = int(np.clip(round(cy - h / 2), 0, height - h))
    return x0, y0, x0 + w, y0 + h


def count_candidates(run):
    """run()'s result and how many candidates MTCNN's R- and O-nets refined during it."""
    n, refine = 0, face_search._refine

    def counting(*args, **kwargs):
        nonlocal n
        keep, out = refine(*args, **kwargs)
        n += len(keep)
        return keep, out

    face_search._refine = counting
    try:
        return run(), n
    finally:
        face_search._refine = refine


def probe(tracker: FaceDetector, frames: np.ndarray, factors: list[float]) -> dict:
    small, scale = tracker.downscale(frames)
    t0 = time.perf_counter()
    boxes, probs = tracker.mtcnn.detect(small)
    full_s = time.perf_counter() - t0
    best = [None if b is None else np.asarray(b[np.argmax(p)], dtype=np.float64) for b, p in zip(boxes, probs, strict=True)]
    out = {}
    h, w = small.shape[1:3]
    for f in factors:
        ious, offsets, seconds = [], [], 0.0
        for i in range(1, len(small)):
            if best[i - 1] is None or best[i] is None:
                continue
            x0, y0, x1, y1 = region(best[i - 1], f, w, height=h)
            crop = np.ascontiguousarray(small[i : i + 1, y0:y1, x0:x1])
            t0 = time.perf_counter()
            rb, rp = tracker.mtcnn.detect(crop)
            seconds += time.perf_counter() - t0
            if rb[0] is None:
                continue
            b = np.asarray(rb[0][np.argmax(rp[0])], dtype=np.float64) + [x0, y0, x0, y0]
            ious.append(iou(b, best[i]))
            offsets.append(np.asarray((b - best[i]) / scale, dtype=np.float64))
        out[str(f)] = {
            "iou_region_vs_full": round(float(np.mean(ious)), 4),
            "mean_offset_px": np.round(np.mean(offsets, 0), 2).tolist(),
            "sd_offset_px": np.round(np.std(offsets, 0), 2).tolist(),
            "mtcnn_s_region_per_frame": round(seconds / max(len(ious), 1), 4),
        }
    # Region search as the tracker does it: windows of 2.5 face sizes on the whole frame, around the
    # previous detection's face, against the whole-frame search of the same code.
    fb, fp = search(tracker.mtcnn, small)
    ref = [None if b is None else np.asarray(b[np.argmax(p)], dtype=np.float64) for b, p in zip(fb, fp, strict=True)]
    frames = [i for i in range(1, len(small)) if ref[i - 1] is not None and ref[i] is not None]
    whole_candidates = count_candidates(lambda: search(tracker.mtcnn, small[frames]))[1]
    for sizes in WINDOW_SIZES:
        windows = [Window.around(ref[i - 1], 2.5, sizes) for i in frames]
        (wb, wp), candidates = count_candidates(lambda: search(tracker.mtcnn, small[frames], windows))  # noqa: B023
        found = [
            iou(np.asarray(b[np.argmax(p)], np.float64), ref[i]) if b is not None else 0.0
            for i, b, p in zip(frames, wb, wp, strict=True)
        ]
        out[f"window_sizes_{sizes}"] = {
            "iou_window_vs_full": round(float(np.mean(found)), 4),
            "min_iou": round(float(np.min(found)), 4),
            "candidates": candidates,
        }
    out["candidates_full_frame"] = whole_candidates
    out["frames"] = len(frames)
    out["mtcnn_s_full_per_frame_batched"] = round(full_s / len(small), 4)
    out["face_px"] = round(float(np.mean([b[2] - b[0] for b in best if b is not None]) / scale), 1)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--factors", default="2,3,4")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    factors = [float(x) for x in args.factors.split(",")]
    tracker = FaceDetector(DetectorConfig())
    tmp = Path(tempfile.mkdtemp(prefix="affectseq-region-"))
    generate_sample(
        tmp / "data",
        SampleSpec(train=2, validation=1, test=1, subjects={"Train": 1, "Validation": 1, "Test": 1}, fps=30, seconds=10),
    )
    videos = [
        FOOTAGE / "single_face.mp4",
        FOOTAGE / "WolfgangLanger_Pexels.mp4",
        *sorted((tmp / "data").glob("DataSet/Train/*/*/*"))[:2],
    ]
    results = {}
    for v in videos:
        if not v.is_file():
            print(f"{v}: missing (run `make footage`)")
            continue
        results[v.name] = probe(tracker, decode_video(v).frames[::4], factors)
        print(v.name, json.dumps(results[v.name]))
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    if args.json:
        print(json.dumps(results))


if __name__ == "__main__":
    main()
