"""Stage-one figures on this machine (`make bench`), all measured in one run on the same clips:

  (a) naive: the original work's way, full-resolution MTCNN on every frame and the CNN one frame at
      a time (on the first --naive-frames frames of one clip: it is slow);
  (b) ceiling: the CNN alone on pre-cropped faces at its best batch size;
  (c) pipeline: `embed run` end to end (decode, detect, crop, embed, write the store).

Prints frames/s of each and the ratios c/a and c/b, the machine, decode speed, store size per clip,
where a clip's time goes, and how the face tracker agrees with MTCNN on every frame: `iou_vs_full`
is the mean IoU of the default tracker's boxes against a whole-frame MTCNN search on every frame,
over every frame of the real footage (data/footage, `make footage`) and the bench clips;
`region_search` the same for region search (DetectorConfig.search_region) with both trackers' time;
`detect_fps_footage` and `pipeline_fps_footage` the tracker's and `embed run`'s frames/s on the
footage with facenet-pytorch's own MTCNN.detect (the shipped detector) and with embed/face_search.py.
With --sweep, the detect-every trade-off behind DetectorConfig's default. With --json the last
line on stdout is {"naive_fps", "ceiling_fps", "pipeline_fps", "vs_naive", "vs_ceiling", "iou_vs_full",
"device", "backbone", ...}.
`beside` compares the backbone with --beside (inception) in the same run, alternating rounds, best
of each: `embed run` frames/s on the bench clips and on the footage, and each step alone in seconds
per 300 frames (decode, detect, crop, cnn, write) with its share of their sum: with a light network
such as fer2013 detection and decoding become the cost. fer2013 runs with its real weights (`make
weights`), the others with random ones (speed does not depend on the values).
Clips are DAiSEE-shaped, from the sample generator: 640x480, 30 fps, 10 s.
    .venv/bin/python bench/embed_bench.py [--clips 6] [--rounds 2] [--backbone inception] [--beside inception]
                                          [--device cpu] [--sweep] [--json]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import sys
import tempfile
import time
from functools import cached_property
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the checkout: tests.frames

import numpy as np  # noqa: E402
import torch  # noqa: E402

from embed.backbones import get_backbone  # noqa: E402
from embed.cache import CacheStore, ClipData, source_fingerprint  # noqa: E402
from embed.clip_embedding import ClipTargets  # noqa: E402
from embed.clip_writer import ClipWriter  # noqa: E402
from embed.crops import crop_faces  # noqa: E402
from embed.detector import FaceDetector  # noqa: E402
from embed.embedder import Embedder  # noqa: E402
from embed.extraction import DetectorConfig  # noqa: E402
from embed.layouts import Clip, DatasetIndex  # noqa: E402
from embed.local_run import embed_dataset  # noqa: E402
from embed.manifest import SampleSpec  # noqa: E402
from embed.sample import generate_sample  # noqa: E402
from embed.tracking import StreamTracker  # noqa: E402
from tests.frames import decode_video, track_frames  # noqa: E402

FOOTAGE = Path(__file__).resolve().parents[1] / "data" / "footage"


def machine(device: torch.device) -> str:
    if device.type == "cuda":
        return f"{torch.cuda.get_device_name(device)}, torch {torch.__version__}"
    cpu = (
        next(
            (
                ln.split(":", 1)[1].strip()
                for ln in Path("/proc/cpuinfo").read_text().splitlines()
                if ln.startswith("model name")
            ),
            platform.processor(),
        )
        if Path("/proc/cpuinfo").exists()
        else ""
    )
    return f"{cpu} ({os.cpu_count()} cores), {torch.get_num_threads()} torch threads, torch {torch.__version__}"


def ious(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """IoU of each frame's two boxes, over the frames where both have one."""
    ok = ~np.isnan(a[:, 0]) & ~np.isnan(b[:, 0])
    a, b = a[ok], b[ok]
    ix = np.clip(np.minimum(a[:, 2], b[:, 2]) - np.maximum(a[:, 0], b[:, 0]), 0, None)
    iy = np.clip(np.minimum(a[:, 3], b[:, 3]) - np.maximum(a[:, 1], b[:, 1]), 0, None)
    inter = ix * iy
    area = lambda x: (x[:, 2] - x[:, 0]) * (x[:, 3] - x[:, 1])  # noqa: E731
    return inter / (area(a) + area(b) - inter)


def mean_iou(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.mean(ious(a, b)))


class ShippedMTCNN(FaceDetector):
    """The shipped detector: facenet-pytorch's own MTCNN.detect, contiguous weights, for every search."""

    def find_faces(self, small: np.ndarray, windows: list) -> tuple[list, list]:
        return self.shipped.detect(small)

    @cached_property
    def shipped(self):
        return copy.deepcopy(self.mtcnn).to(memory_format=torch.contiguous_format)


def track_in_chunks(tracker: FaceDetector, frames: np.ndarray) -> tuple[np.ndarray, float]:
    """Boxes of the clip tracked as the pipeline does (64-frame chunks), and the seconds it took."""
    stream, parts = StreamTracker(tracker, batch_frames=64), []
    t0 = time.perf_counter()
    for a in range(0, len(frames), 64):
        parts.append(stream.push(a, frames[a : a + 64], np.zeros(len(frames[a : a + 64]), np.float32)))
    parts.append(stream.finish())
    seconds = time.perf_counter() - t0
    return np.concatenate([p.track.boxes for p in parts if p is not None]), seconds


def tracker_agreement(videos: list[Path], footage: list[Path], device: torch.device) -> dict:
    """The default tracker and region search against MTCNN's whole-frame search on every frame."""
    every = FaceDetector(DetectorConfig(detect_every=1, smooth=1), device)
    trackers = {
        "default": FaceDetector(DetectorConfig(), device),
        "region": FaceDetector(DetectorConfig(search_region=2.5), device),
        "shipped": ShippedMTCNN(DetectorConfig(), device),
    }
    per_frame = {k: [] for k in trackers}
    seconds = {k: {"bench": 0.0, "footage": 0.0} for k in trackers}
    frames_of = {"bench": 0, "footage": 0}
    by_clip = {}
    for v in [*videos, *footage]:
        kind = "footage" if v in footage else "bench"
        frames = decode_video(v).frames
        frames_of[kind] += len(frames)
        ref = track_frames(every, frames).boxes
        for name, tracker in trackers.items():
            tracker.detect(frames[:2])  # first-call set-up outside the timing
            boxes, s = track_in_chunks(tracker, frames)
            seconds[name][kind] += s
            per_frame[name].append(ious(boxes, ref))
            if name == "default":
                by_clip[v.name] = round(float(per_frame[name][-1].mean()), 4) if len(per_frame[name][-1]) else None
    mean = {k: round(float(np.concatenate(v).mean()), 4) for k, v in per_frame.items()}
    per300 = {k: {kind: round(s / max(frames_of[kind], 1) * 300, 3) for kind, s in v.items()} for k, v in seconds.items()}
    return {
        "iou_vs_full": mean["default"],
        "iou_vs_full_by_clip": by_clip,
        "region_search": {
            "iou_vs_full": mean["region"],
            "detect_s_per_300_frames": per300["region"],
            "default_detect_s_per_300_frames": per300["default"],
        },
        "detect_fps_footage": {
            "facenet_pytorch": round(frames_of["footage"] / max(seconds["shipped"]["footage"], 1e-9), 1),
            "ours": round(frames_of["footage"] / max(seconds["default"]["footage"], 1e-9), 1),
            "facenet_pytorch_iou_vs_full": mean["shipped"],
        },
    }


def bench_weights(name: str) -> str:
    """The weights a backbone is timed with: fer2013's real release, random for the others."""
    return "fer2013" if name == "fer2013" else "random"


def network_ceiling(backbone, crops: torch.Tensor, sizes: tuple[int, ...] = (16, 32, 64, 128)) -> float:
    """The network alone on ready crops at its best batch size (frames/s): for each size a whole
    warm-up pass first, so that every batch shape (the short last batch too) has its kernels chosen
    and its memory allocated before the timed pass, as a long run has them. Without it the ceiling
    times oneDNN's first calls at a shape and reads low, inflating c/b."""
    best = 0.0
    for bs in sizes:
        backbone.embed(crops, bs)
        if backbone.device.type == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        backbone.embed(crops, bs)  # returns on the CPU: synchronised
        best = max(best, len(crops) / (time.perf_counter() - t0))
    return best


def end_to_end_fps(embedder: Embedder, index: DatasetIndex, root: Path) -> float:
    """`embed run` on a dataset, store and face-track writes included: frames/s."""
    t0 = time.perf_counter()
    store = CacheStore.create(root, index.name, embedder.configs[0])
    faces = CacheStore.create(root, index.name, embedder.faces_config)
    done = embed_dataset(index, embedder, ClipTargets([store], faces), progress=False)
    return done.frames / (time.perf_counter() - t0)


def step_seconds(embedder: Embedder, path: Path, root: Path) -> dict:
    """Each step of one clip alone, in seconds per 300 frames: decode, detect, crop, cnn, write."""
    backbone, device = embedder.backbones[0], embedder.device
    size = backbone.spec.input_size
    t0 = time.perf_counter()
    video = decode_video(path)
    times = {"decode": time.perf_counter() - t0}
    t0 = time.perf_counter()
    track = track_frames(embedder.detector, video.frames)
    times["detect"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    crops = [
        crop_faces(video.frames[i : i + 32], track.boxes[i : i + 32], size, margin=0.2, device=device)
        for i in range(0, len(video.frames), 32)
    ]
    times["crop"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    emb = np.concatenate([backbone.embed(c, 32).numpy() for c in crops]).astype(np.float16)
    times["cnn"] = time.perf_counter() - t0
    store = CacheStore.create(root, "steps", embedder.configs[0])
    t0 = time.perf_counter()
    writer = ClipWriter.open(store, path.stem, source_fingerprint(path))
    for i in range(0, len(emb), 64):
        writer.append(
            ClipData(emb[i : i + 64], video.timestamps[i : i + 64], track.probs[i : i + 64], boxes=track.boxes[i : i + 64])
        )
    writer.finish()
    times["write"] = time.perf_counter() - t0
    return {k: v / len(video.frames) * 300 for k, v in times.items()}


def beside(names: list[str], videos: list[Path], footage: list[Path], device: torch.device, rounds: int, tmp: Path) -> dict:
    """Each backbone end to end on the bench clips and the footage, and step by step, in alternating
    rounds (best of each): the backbones compared on the same machine minutes."""
    embedders = {n: Embedder(get_backbone(n).build(bench_weights(n), device)) for n in names}
    bench_index = DatasetIndex("bench", tmp, [Clip(v.stem, v, "Train", labels=None) for v in videos])
    footage_index = DatasetIndex("footage", FOOTAGE, [Clip(f.stem, f, "Train", labels=None) for f in footage])
    best: dict[str, dict] = {n: {"pipeline_fps": 0.0, "pipeline_fps_footage": 0.0, "steps": {}} for n in names}
    for r in range(rounds):
        for n, embedder in embedders.items():
            embedder.warm_up()
            b = best[n]
            b["pipeline_fps"] = max(b["pipeline_fps"], end_to_end_fps(embedder, bench_index, tmp / f"b-{n}-{r}"))
            b["pipeline_fps_footage"] = max(
                b["pipeline_fps_footage"], end_to_end_fps(embedder, footage_index, tmp / f"f-{n}-{r}")
            )
            steps = step_seconds(embedder, videos[0], tmp / f"s-{n}-{r}")
            b["steps"] = {k: min(v, b["steps"].get(k, v)) for k, v in steps.items()}
    out = {}
    for n, b in best.items():
        total = sum(b["steps"].values())
        out[n] = {
            "weights": embedders[n].backbones[0].weights_identity,
            "pipeline_fps": round(b["pipeline_fps"], 1),
            "pipeline_fps_footage": round(b["pipeline_fps_footage"], 1),
            "step_seconds_per_300_frames": {k: round(v, 3) for k, v in b["steps"].items()},
            "step_share": {k: round(v / total, 3) for k, v in b["steps"].items()},
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--clips", type=int, default=6)
    ap.add_argument("--backbone", default="inception")
    ap.add_argument("--beside", default="inception", help="Compared with --backbone in the same run ('' for none).")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--naive-frames", type=int, default=60)
    ap.add_argument("--rounds", type=int, default=2, help="Alternating pipeline/ceiling rounds; each keeps its best.")
    ap.add_argument("--sweep", action="store_true", help="Also time detect_every 1..10 against every frame.")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    footage = [FOOTAGE / n for n in ("single_face.mp4", "WolfgangLanger_Pexels.mp4", "face_noface.mov", "noface_face.mov")]
    if not all(f.is_file() for f in footage):
        raise SystemExit(f"real footage missing from {FOOTAGE}; fix: `make footage`")
    tmp = Path(tempfile.mkdtemp(prefix="affectseq-bench-"))
    spec = SampleSpec(
        train=args.clips, validation=1, test=1, subjects={"Train": 2, "Validation": 1, "Test": 1}, fps=30, seconds=10
    )
    generate_sample(tmp / "data", spec)
    videos = sorted((tmp / "data").glob("DataSet/Train/*/*/*"))[: args.clips]

    device = torch.device(args.device)
    backbone = get_backbone(args.backbone).build(bench_weights(args.backbone), device)
    embedder = Embedder(backbone)
    # Pipeline end to end (decode prefetched in a thread, as in `embed run`), including the store
    # writes, and the ceiling: the CNN alone on pre-cropped faces at its best batch size. This
    # machine's speed drifts by 10-30 % within minutes (shared cores), so after a warm-up the two are
    # measured in alternating rounds and each keeps its best round: c/b compares like with like.
    index = DatasetIndex("bench", tmp, [Clip(v.stem, v, "Train", labels=None) for v in videos])
    video = decode_video(videos[0])
    track = track_frames(FaceDetector(embedder.detector.config, device), video.frames)
    crops = crop_faces(video.frames, track.boxes, backbone.spec.input_size, margin=0.2)
    embedder.warm_up()
    pipe_s, ceiling, rounds = float("inf"), 0.0, []
    for r in range(args.rounds):
        store = CacheStore.create(tmp / f"cache{r}", "bench", embedder.configs[0])
        faces = CacheStore.create(tmp / f"cache{r}", "bench", embedder.faces_config)  # as `embed run` does
        t0 = time.perf_counter()
        report = embed_dataset(index, embedder, ClipTargets([store], faces), progress=False)
        seconds = time.perf_counter() - t0
        best = network_ceiling(backbone, crops)
        rounds.append({"pipeline_fps": round(report.frames / seconds, 1), "ceiling_fps": round(best, 1)})
        pipe_s, ceiling = min(pipe_s, seconds), max(ceiling, best)
    n_frames = report.frames
    bytes_per_clip = sum(f.stat().st_size for f in store.path.glob("clips/**/*") if f.is_file()) / len(videos)

    # Naive: full-resolution MTCNN on each frame, then the CNN on that one face.
    naive = FaceDetector(
        DetectorConfig(detect_every=1, detect_width=video.frames.shape[2], min_face_size=20, smooth=1), device
    )
    frames = video.frames[: args.naive_frames]
    naive.detect(frames[:1], batch=1)  # warm-up
    t0 = time.perf_counter()
    for frame in frames:
        boxes, _, _ = naive.detect(frame[None], batch=1)
        box = boxes[0][:1] if boxes[0] is not None else track.boxes[:1]
        backbone.embed(crop_faces(frame[None], box, backbone.spec.input_size, margin=0.2, device=device), 1)
    naive_fps = len(frames) / (time.perf_counter() - t0)

    # Decode alone.
    t0 = time.perf_counter()
    n_dec = sum(len(decode_video(v).frames) for v in videos[:2])
    decode_fps = n_dec / (time.perf_counter() - t0)

    # Where a clip's time goes, each step alone (seconds per 300 frames): what is left of c/b.
    steps = {k: round(v, 3) for k, v in step_seconds(embedder, videos[-1], tmp / "steps").items()}

    # detect_every: time and box agreement with detection on every frame.
    sweep = []
    ref = (
        track_frames(FaceDetector(DetectorConfig(detect_every=1, smooth=1), device), video.frames).boxes
        if args.sweep
        else None
    )
    for k in (1, 2, 3, 5, 10) if args.sweep else ():
        tracker = FaceDetector(DetectorConfig(detect_every=k), device)
        t0 = time.perf_counter()
        boxes = track_frames(tracker, video.frames).boxes
        sweep.append(
            {
                "detect_every": k,
                "detect_s_per_clip": round(time.perf_counter() - t0, 3),
                "iou_vs_every_frame": round(mean_iou(boxes, ref), 4),
            }
        )

    agreement = tracker_agreement(videos, footage, device)
    # End to end on the real footage, with the shipped detector (facenet-pytorch's own
    # MTCNN.detect) and with ours, alternating, best of each.
    footage_index = DatasetIndex("footage", FOOTAGE, [Clip(f.stem, f, "Train", labels=None) for f in footage])
    ours, footage_fps = embedder.detector, {"facenet_pytorch": 0.0, "ours": 0.0}
    for r in range(args.rounds):
        for name, tracker in (("facenet_pytorch", ShippedMTCNN(DetectorConfig(), device)), ("ours", ours)):
            embedder.detector = tracker
            fps = end_to_end_fps(embedder, footage_index, tmp / f"footage-{name}-{r}")
            footage_fps[name] = max(footage_fps[name], round(fps, 1))
    embedder.detector = ours

    names = list(dict.fromkeys([args.backbone, *([args.beside] if args.beside else [])]))
    side_by_side = beside(names, videos, footage, device=device, rounds=args.rounds, tmp=tmp)

    pipeline_fps = n_frames / pipe_s
    out = {
        "naive_fps": round(naive_fps, 1),
        "ceiling_fps": round(ceiling, 1),
        "pipeline_fps": round(pipeline_fps, 1),
        "vs_naive": round(pipeline_fps / naive_fps, 2),
        "vs_ceiling": round(pipeline_fps / ceiling, 3),
        "device": machine(device),
        "backbone": args.backbone,
        "clips": len(videos),
        "frames": n_frames,
        "rounds": rounds,
        "pipeline_clips_per_s": round(len(videos) / pipe_s, 3),
        "seconds_per_300_frame_clip": round(pipe_s / n_frames * 300, 2),
        "decode_fps": round(decode_fps, 1),
        "store_bytes_per_clip": int(bytes_per_clip),
        "step_seconds_per_300_frames": steps,
        "source_bytes_per_clip": int(np.mean([source_fingerprint(v)["size"] for v in videos])),
        **agreement,
        "pipeline_fps_footage": footage_fps,
        "detect_every_sweep": sweep,
        "beside": side_by_side,
    }
    print(f"machine: {out['device']}")
    print(f"(a) naive, full-res MTCNN + CNN per frame: {out['naive_fps']:8.1f} frames/s")
    print(f"(b) ceiling, CNN alone at best batch:      {out['ceiling_fps']:8.1f} frames/s")
    print(f"(c) pipeline end to end:                   {out['pipeline_fps']:8.1f} frames/s")
    print(f"c/a = {out['vs_naive']}   c/b = {out['vs_ceiling']}")
    for k, v in out.items():
        if k not in (
            "device",
            "detect_every_sweep",
            "naive_fps",
            "ceiling_fps",
            "pipeline_fps",
            "vs_naive",
            "vs_ceiling",
            "beside",
        ):
            print(f"{k:>28}: {v}")
    if sweep:
        print("detect_every  s/clip  IoU vs every frame")
    for row in sweep:
        print(f"{row['detect_every']:>12}  {row['detect_s_per_clip']:6.2f}  {row['iou_vs_every_frame']:.4f}")
    print("backbone     weights                           bench f/s  footage f/s  decode  detect  crop  cnn  write (share)")
    for n, b in side_by_side.items():
        share = "  ".join(f"{b['step_share'][k]:.2f}" for k in ("decode", "detect", "crop", "cnn", "write"))
        print(f"{n:<12} {b['weights']:<33} {b['pipeline_fps']:9.1f}  {b['pipeline_fps_footage']:11.1f}  {share}")
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
