"""Memory and speed of streaming a long video through stage one and predict (`make bench`).

In one run, on this machine:
  1. peak resident memory (the process's own high-water mark, from wait4) of `embed run` and of
     `sequence predict` on a long 640x480 30 fps video (--minutes, default 10) and on a 10-s one:
     the long one must peak within 1.5x of the short one;
  2. frames/s of the streamed pipeline (chunks of CHUNK_FRAMES) against the whole-clip path (each
     clip one chunk, as stage one worked before streaming) on DAiSEE-shaped 10-s clips, alternated
     A B A B so that the shared machine's drift falls on both: the ratio must be >= 0.95.

Videos are the built-in sample's renderer (a real face photo), generated here; weights are random,
but for fer2013, whose real weights are cheap enough to make the hour-long video measurable here.
    .venv/bin/python bench/long_video.py [--minutes 10] [--backbone inception] [--clips 4] [--device cpu] [--json]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from embed_bench import bench_weights, machine  # noqa: E402

from embed.backbones import get_backbone  # noqa: E402
from embed.cache import CacheStore  # noqa: E402
from embed.clip_embedding import ClipTargets  # noqa: E402
from embed.embedder import Embedder  # noqa: E402
from embed.layouts import Clip, DatasetIndex  # noqa: E402
from embed.local_run import embed_dataset  # noqa: E402
from embed.manifest import SampleSpec  # noqa: E402
from embed.memory import CHUNK_FRAMES  # noqa: E402
from embed.sample import generate_sample, write_video  # noqa: E402
from embed.video import VideoStream  # noqa: E402

STATES = ("Boredom", "Engagement", "Confusion", "Frustration")


def measured(cmd: list[str]) -> dict:
    """Run a command; its own peak resident memory (VmHWM from /proc, sampled every 50 ms until it
    exits) and wall seconds. Not wait4's ru_maxrss: Linux copies the parent's high-water mark into
    a forked child, so every child of a large parent would report the parent's peak."""
    t0 = time.perf_counter()
    peak_kb, trace = 0, []  # trace: (seconds, resident MB) once a second, for the creep
    with open(os.devnull, "w") as null, tempfile.TemporaryFile("w+") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=null, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        status_file = Path(f"/proc/{proc.pid}/status")
        while proc.poll() is None:
            try:
                status = {
                    ln.split(":")[0]: ln.split()[1]
                    for ln in status_file.read_text().splitlines()
                    if ln.startswith(("VmHWM:", "VmRSS:"))
                }
                peak_kb = max(peak_kb, int(status["VmHWM"]))
                now = time.perf_counter() - t0
                if not trace or now - trace[-1][0] >= 1:
                    trace.append((now, int(status["VmRSS"]) / 1024))
            except (OSError, KeyError, ValueError, IndexError):
                pass
            time.sleep(0.05)
        out.seek(0)
        text = out.read()
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed (exit {proc.returncode})")
    return {
        "peak_mb": round(peak_kb / 1024, 1),
        "seconds": round(time.perf_counter() - t0, 1),
        "stdout": text,
        "creep_mb_per_min": creep(trace),
    }


def creep(trace: list[tuple[float, float]]) -> float | None:
    """The resident size's slope over the second half of a run (MB a minute): set-up and the first
    chunks are behind it by then, so what is left grows with the video's length."""
    half = [(t, mb) for t, mb in trace if t >= trace[-1][0] / 2] if trace else []
    if len(half) < 10:
        return None
    t, mb = np.array(half).T
    return round(float(np.polyfit(t / 60, mb, 1)[0]), 2)


def csv_dataset(root: Path, name: str, video: Path) -> dict:
    with open(root / f"{name}.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "split", *STATES])
        w.writerow([video.name, "Test", 0, 0, 0, 0])
    return {"layout": "csv", "root": ".", "csv": f"{name}.csv"}


def throughput(videos: list[Path], tmp: Path, device: torch.device, name: str, rounds: int = 2) -> dict:
    """frames/s of the streamed pipeline and of whole clips, alternated, fresh stores each pass."""
    backbone = get_backbone(name).build(bench_weights(name), device)
    index = DatasetIndex("bench", tmp, [Clip(v.stem, v, "Train", labels=None) for v in videos])
    rates: dict[str, list[float]] = {"streamed": [], "whole": []}
    for r in range(rounds):
        for name, chunk in (("streamed", CHUNK_FRAMES), ("whole", 1 << 30)):
            embedder = Embedder(backbone, chunk_frames=chunk)
            cache = tmp / f"cache-{name}-{r}"
            store = CacheStore.create(cache, "bench", embedder.configs[0])
            faces = CacheStore.create(cache, "bench", embedder.faces_config)
            t0 = time.perf_counter()
            report = embed_dataset(index, embedder, ClipTargets([store], faces), progress=False)
            rates[name].append(report.frames / (time.perf_counter() - t0))
    best = {k: max(v) for k, v in rates.items()}
    return {
        "streamed_fps": round(best["streamed"], 1),
        "whole_fps": round(best["whole"], 1),
        "streamed_vs_whole": round(best["streamed"] / best["whole"], 3),
        "passes": {k: [round(x, 1) for x in v] for k, v in rates.items()},
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--clips", type=int, default=4, help="10-s clips for the throughput comparison")
    ap.add_argument("--backbone", default="inception")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--no-throughput", action="store_true", help="Measure memory only.")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    device = torch.device(args.device)
    tmp = Path(tempfile.mkdtemp(prefix="affectseq-long-"))
    spec = SampleSpec(
        train=max(args.clips, 4), validation=2, test=2, subjects={"Train": 2, "Validation": 1, "Test": 1}, fps=30, seconds=10
    )
    generate_sample(tmp / "data", spec)
    clips = sorted((tmp / "data").glob("DataSet/Train/*/*/*"))

    # The long video: the sample's 10-s clips over and over (a real face, moving), 30 fps 640x480.
    frames = np.concatenate([np.concatenate([c.frames for c in VideoStream(v, 300)]) for v in clips[:4]])
    n_long = round(args.minutes * 60 * 30)
    write_video(tmp / "long.mp4", (frames[i % len(frames)] for i in range(n_long)), 30, width=640, height=480)
    del frames
    short = sorted((tmp / "data").glob("DataSet/Test/*/*/*"))[0]
    manifest = tmp / "m.yaml"
    manifest.write_text(
        yaml.safe_dump(
            {
                "cache_dir": "cache",
                "runs_dir": "runs",
                "default_dataset": "sample",
                "datasets": {
                    "sample": {"layout": "daisee", "root": "data"},
                    "long": csv_dataset(tmp, "long", tmp / "long.mp4"),
                    "short": csv_dataset(tmp, "short", short.rename(tmp / "short.avi")),
                },
            }
        )
    )
    py = [sys.executable, "-m"]
    common = [
        "--manifest",
        str(manifest),
        "--backbone",
        args.backbone,
        "--weights",
        bench_weights(args.backbone),
        "--device",
        args.device,
    ]
    # A run to predict with (its quality is beside the point here).
    measured([*py, "embed", "run", *common, "--dataset", "sample", "--quiet"])
    trained = measured([*py, "sequence", "train", *common, "--dataset", "sample", "--head", "fc", "--epochs", "2", "--json"])
    run_dir = json.loads(trained["stdout"].strip().splitlines()[-1])["run"]

    mem = {}
    for name, video in (("short", tmp / "short.avi"), ("long", tmp / "long.mp4")):
        e = measured([*py, "embed", "run", *common, "--dataset", name, "--quiet", "--json"])
        p = measured([*py, "sequence", "predict", str(video), "--run", run_dir, "--device", args.device, "--json"])
        frames_done = json.loads(e["stdout"].strip().splitlines()[-1])["frames"]
        mem[name] = {
            "frames": frames_done,
            "embed_peak_mb": e["peak_mb"],
            "embed_s": e["seconds"],
            "embed_fps": round(frames_done / e["seconds"], 1),
            "embed_creep_mb_per_min": e["creep_mb_per_min"],
            "predict_peak_mb": p["peak_mb"],
            "predict_s": p["seconds"],
            "predict_creep_mb_per_min": p["creep_mb_per_min"],
        }
    ratios = {k: round(mem["long"][f"{k}_peak_mb"] / mem["short"][f"{k}_peak_mb"], 3) for k in ("embed", "predict")}
    speed = {} if args.no_throughput else throughput(clips[: args.clips], tmp, device, name=args.backbone)
    out = {
        "device": machine(device),
        "backbone": args.backbone,
        "minutes": args.minutes,
        "chunk_frames": CHUNK_FRAMES,
        "memory": mem,
        "long_vs_short_peak": ratios,
        **speed,
    }
    print(f"machine: {out['device']}")
    for name, m in mem.items():
        print(
            f"{name:>5} ({m['frames']} frames): embed run peak {m['embed_peak_mb']} MB in {m['embed_s']} s "
            f"(creep {m['embed_creep_mb_per_min']} MB/min); predict peak {m['predict_peak_mb']} MB in "
            f"{m['predict_s']} s (creep {m['predict_creep_mb_per_min']} MB/min)"
        )
    print(f"long/short peak: embed {ratios['embed']}, predict {ratios['predict']} (must be <= 1.5)")
    if speed:
        print(
            f"streamed {speed['streamed_fps']} vs whole-clip {speed['whole_fps']} frames/s: "
            f"{speed['streamed_vs_whole']} (must be >= 0.95); passes {speed['passes']}"
        )
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
