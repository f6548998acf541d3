"""Stage-one figures on this machine (`make bench`), all measured in one run on the same clips:

  (a) naive: the original work's way, full-resolution MTCNN on every frame and the CNN one frame at
      a time (on the first --naive-frames frames of one clip: it is slow);
  (b) ceiling: the CNN alone on pre-cropped faces at its best batch size;
  (c) pipeline: `embed run` end to end (decode, detect, crop, embed, write the store).

Prints frames/s of each and the ratios c/a and c/b, the machine, decode speed, store size per clip
and, with --sweep, the detect-every trade-off behind DetectorConfig's default. With --json the
last line on stdout is {"naive_fps", "ceiling_fps", "pipeline_fps", "vs_naive", "vs_ceiling",
"device", "backbone", ...}. Clips are DAiSEE-shaped, from the sample generator: 640x480, 30 fps, 10 s.
    .venv/bin/python bench/embed_bench.py [--clips 6] [--backbone inception] [--device cpu] [--sweep] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
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


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    cpu = next((ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return f"{cpu} ({os.cpu_count()} cores), {torch.get_num_threads()} torch threads, torch {torch.__version__}"


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
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--naive-frames", type=int, default=60)
    ap.add_argument("--sweep", action="store_true", help="Also time detect_every 1..10 against every frame.")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="affectseq-bench-"))
    spec = SampleSpec(train=args.clips, validation=1, test=1, subjects={"Train": 2, "Validation": 1, "Test": 1},
                      fps=30, seconds=10)
    generate_sample(tmp / "data", spec)
    videos = sorted((tmp / "data").glob("DataSet/Train/*/*/*"))[: args.clips]

    device = torch.device(args.device)
    backbone = get_backbone(args.backbone).build("random", device)
    embedder = Embedder(backbone)
    store = CacheStore.create(tmp / "cache", "bench", embedder.config)

    # Pipeline end to end (decode prefetched in a thread, as in `embed run`), including the store write.
    from embed.layouts import Clip, DatasetIndex
    from embed.pipeline import embed_dataset

    index = DatasetIndex("bench", tmp, [Clip(v.stem, v, "Train", None) for v in videos])
    t0 = time.perf_counter()
    faces = CacheStore.create(tmp / "cache", "bench", embedder.faces_config)  # as `embed run` does
    report = embed_dataset(index, store, embedder, progress=False, faces=faces)
    pipe_s = time.perf_counter() - t0
    n_frames = report.frames
    bytes_per_clip = sum(f.stat().st_size for f in store.path.glob("clips/**/*") if f.is_file()) / len(videos)

    # Ceiling: the CNN alone on pre-cropped faces, best of a few batch sizes.
    video = decode_video(videos[0])
    track = FaceTracker(embedder.tracker.config, device).track(video.frames)
    crops = crop_faces(video.frames, track.boxes, backbone.spec.input_size, 0.2)
    ceiling = 0.0
    for bs in (16, 32, 64, 128):
        backbone.embed(crops[:bs], bs)
        t0 = time.perf_counter()
        backbone.embed(crops, bs)
        ceiling = max(ceiling, len(crops) / (time.perf_counter() - t0))

    # Naive: full-resolution MTCNN on each frame, then the CNN on that one face.
    naive = FaceTracker(DetectorConfig(detect_every=1, detect_width=video.frames.shape[2], min_face_size=20,
                                       smooth=1), device)
    frames = video.frames[: args.naive_frames]
    naive.detect(frames[:1], batch=1)  # warm-up
    t0 = time.perf_counter()
    for frame in frames:
        boxes, _, _ = naive.detect(frame[None], batch=1)
        box = boxes[0][:1] if boxes[0] is not None else track.boxes[:1]
        backbone.embed(crop_faces(frame[None], box, backbone.spec.input_size, 0.2, device), 1)
    naive_fps = len(frames) / (time.perf_counter() - t0)

    # Decode alone.
    t0 = time.perf_counter()
    n_dec = sum(len(decode_video(v).frames) for v in videos[:2])
    decode_fps = n_dec / (time.perf_counter() - t0)

    # Where a clip's time goes, each step alone (seconds per 300 frames): what is left of c/b.
    steps = {}
    for name, step in (("decode", lambda: decode_video(videos[1])),
                       ("detect", lambda: embedder.tracker.track(video.frames)),
                       ("crop", lambda: [crop_faces(video.frames[i:i + 32], track.boxes[i:i + 32],
                                                    backbone.spec.input_size, 0.2, device)
                                         for i in range(0, len(crops), 32)]),
                       ("cnn", lambda: [backbone.embed(crops[i:i + 32], 32) for i in range(0, len(crops), 32)])):
        t0 = time.perf_counter()
        step()
        steps[name] = round((time.perf_counter() - t0) / len(video.frames) * 300, 3)

    # detect_every: time and box agreement with detection on every frame.
    sweep = []
    ref = FaceTracker(DetectorConfig(detect_every=1, smooth=1), device).track(video.frames).boxes if args.sweep else None
    for k in (1, 2, 3, 5, 10) if args.sweep else ():
        tracker = FaceTracker(DetectorConfig(detect_every=k), device)
        t0 = time.perf_counter()
        boxes = tracker.track(video.frames).boxes
        sweep.append({"detect_every": k, "detect_s_per_clip": round(time.perf_counter() - t0, 3),
                      "iou_vs_every_frame": round(mean_iou(boxes, ref), 4)})

    pipeline_fps = n_frames / pipe_s
    out = {
        "naive_fps": round(naive_fps, 1), "ceiling_fps": round(ceiling, 1), "pipeline_fps": round(pipeline_fps, 1),
        "vs_naive": round(pipeline_fps / naive_fps, 2), "vs_ceiling": round(pipeline_fps / ceiling, 3),
        "device": machine(device), "backbone": args.backbone, "clips": len(videos), "frames": n_frames,
        "pipeline_clips_per_s": round(len(videos) / pipe_s, 3),
        "seconds_per_300_frame_clip": round(pipe_s / n_frames * 300, 2), "decode_fps": round(decode_fps, 1),
        "store_bytes_per_clip": int(bytes_per_clip), "step_seconds_per_300_frames": steps, "source_bytes_per_clip": int(
            np.mean([source_fingerprint(v)["size"] for v in videos])), "detect_every_sweep": sweep,
    }
    print(f"machine: {out['device']}")
    print(f"(a) naive, full-res MTCNN + CNN per frame: {out['naive_fps']:8.1f} frames/s")
    print(f"(b) ceiling, CNN alone at best batch:      {out['ceiling_fps']:8.1f} frames/s")
    print(f"(c) pipeline end to end:                   {out['pipeline_fps']:8.1f} frames/s")
    print(f"c/a = {out['vs_naive']}   c/b = {out['vs_ceiling']}")
    for k, v in out.items():
        if k not in ("device", "detect_every_sweep", "naive_fps", "ceiling_fps", "pipeline_fps", "vs_naive",
                     "vs_ceiling"):
            print(f"{k:>28}: {v}")
    if sweep:
        print("detect_every  s/clip  IoU vs every frame")
    for row in sweep:
        print(f"{row['detect_every']:>12}  {row['detect_s_per_clip']:6.2f}  {row['iou_vs_every_frame']:.4f}")
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
