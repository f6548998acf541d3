"""Stage-one figures on this machine: pipeline throughput against the CNN-only ceiling measured in
the same run, store size per clip, and the detect-every trade-off behind DetectorConfig's default.

Uses DAiSEE-shaped clips from the sample generator: 640x480, 30 fps, 10 s (300 frames).
    .venv/bin/python bench/stage_one.py [--clips 6] [--backbone inception] [--json]
"""

from __future__ import annotations

import argparse
import json
import platform
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from embed.backbones import get_backbone
from embed.cache import CacheStore, source_fingerprint
from embed.faces import DetectorConfig, FaceTracker, crop_faces
from embed.manifest import SampleSpec
from embed.pipeline import Embedder
from embed.sample import generate_sample
from embed.video import decode_video


def machine() -> str:
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return f"{cpu}, {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def mean_iou(a: np.ndarray, b: np.ndarray) -> float:
    ok = ~np.isnan(a[:, 0]) & ~np.isnan(b[:, 0])
    a, b = a[ok], b[ok]
    ix = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = ix * iy
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return float(np.mean(inter / (area(a) + area(b) - inter)))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=6)
    ap.add_argument("--backbone", default="inception")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="affectseq-bench-"))
    spec = SampleSpec(train=args.clips, validation=1, test=1, subjects={"Train": 2, "Validation": 1, "Test": 1},
                      fps=30, seconds=10)
    generate_sample(tmp / "data", spec)
    videos = sorted((tmp / "data").glob("DataSet/Train/*/*/*"))[: args.clips]

    backbone = get_backbone(args.backbone).build("random", "cpu")
    embedder = Embedder(backbone)
    store = CacheStore.create(tmp / "cache", "bench", embedder.config)

    # Pipeline end to end (decode prefetched in a thread, as in `embed run`), including the store write.
    from embed.layouts import Clip, DatasetIndex
    from embed.pipeline import embed_dataset

    index = DatasetIndex("bench", tmp, [Clip(v.stem, v, "Train", None) for v in videos])
    t0 = time.perf_counter()
    report = embed_dataset(index, store, embedder, progress=False)
    pipe_s = time.perf_counter() - t0
    frames = report.frames
    bytes_per_clip = sum(f.stat().st_size for f in store.path.glob("clips/**/*") if f.is_file()) / len(videos)

    # Ceiling: the CNN alone on pre-cropped faces, best of a few batch sizes.
    video = decode_video(videos[0])
    track = FaceTracker(embedder.tracker.config).track(video.frames)
    crops = crop_faces(video.frames, track.boxes, backbone.spec.input_size, 0.2)
    ceiling = 0.0
    for bs in (16, 32, 64):
        backbone.embed(crops[:bs], bs)
        t0 = time.perf_counter()
        backbone.embed(crops, bs)
        ceiling = max(ceiling, len(crops) / (time.perf_counter() - t0))

    # Decode alone.
    t0 = time.perf_counter()
    n_dec = sum(len(decode_video(v).frames) for v in videos[:2])
    decode_fps = n_dec / (time.perf_counter() - t0)

    # detect_every: time and box agreement with detection on every frame.
    sweep = []
    ref = FaceTracker(DetectorConfig(detect_every=1, smooth=1)).track(video.frames).boxes
    for k in (1, 2, 3, 5, 10):
        tracker = FaceTracker(DetectorConfig(detect_every=k))
        t0 = time.perf_counter()
        boxes = tracker.track(video.frames).boxes
        sweep.append({"detect_every": k, "detect_s_per_clip": round(time.perf_counter() - t0, 3),
                      "iou_vs_every_frame": round(mean_iou(boxes, ref), 4)})

    out = {
        "machine": machine(), "backbone": args.backbone, "clips": len(videos), "frames": frames,
        "pipeline_clips_per_s": round(len(videos) / pipe_s, 3), "pipeline_fps": round(frames / pipe_s, 1),
        "seconds_per_300_frame_clip": round(pipe_s / frames * 300, 2), "ceiling_fps": round(ceiling, 1),
        "pipeline_vs_ceiling": round(frames / pipe_s / ceiling, 3), "decode_fps": round(decode_fps, 1),
        "store_bytes_per_clip": int(bytes_per_clip), "source_bytes_per_clip": int(
            np.mean([source_fingerprint(v)["size"] for v in videos])), "detect_every_sweep": sweep,
    }
    if args.json:
        print(json.dumps(out))
        return
    print(f"machine: {out['machine']}")
    for k, v in out.items():
        if k not in ("machine", "detect_every_sweep"):
            print(f"{k:>28}: {v}")
    print("detect_every  s/clip  IoU vs every frame")
    for row in sweep:
        print(f"{row['detect_every']:>12}  {row['detect_s_per_clip']:6.2f}  {row['iou_vs_every_frame']:.4f}")


if __name__ == "__main__":
    main()
