"""Peak memory of `embed run` against the picture size, in one run (`make bench-memory`).

Real footage (data/footage/single_face.mp4, a face in every frame) scaled to 640x480, 1920x1080 and
3840x2160, 4 s at 30 fps, as DAiSEE-shaped csv datasets of one clip and of --in-flight clips. Each is
embedded by `embed run` in its own process; its peak resident memory (VmHWM) is read from /proc.
Reported for the default chunk budget (--chunk-mb 64) and for chunks of a fixed 64 frames whatever
their size (--chunk-mb 100000, the frame-count rule), so the budget's effect is measured, not assumed.
The 4K clip must peak within 1.5x of the 640x480 one, with clips in flight as with one.
    .venv/bin/python bench/frame_memory.py [--seconds 4] [--in-flight 3] [--backbone fer2013] [--device cpu] [--json]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from embed_bench import machine  # noqa: E402
from long_video import STATES, measured  # noqa: E402

from embed.sample import write_video  # noqa: E402
from tests.frames import decode_video  # noqa: E402

FOOTAGE = Path(__file__).resolve().parents[1] / "data" / "footage" / "single_face.mp4"
SIZES = {"640x480": (640, 480), "1920x1080": (1920, 1080), "3840x2160": (3840, 2160)}


def scaled_video(path: Path, size: tuple[int, int], seconds: float) -> Path:
    """The footage letterboxed into `size` (its 16:9 picture scaled to the width), looped to `seconds`."""
    frames = decode_video(FOOTAGE).frames
    w, h = size
    out_h = round(frames.shape[1] * w / frames.shape[2])

    def frame(i: int) -> np.ndarray:
        canvas = np.zeros((h, w, 3), np.uint8)
        picture = np.asarray(Image.fromarray(frames[i % len(frames)]).resize((w, min(h, out_h)), Image.BILINEAR))
        top = (h - picture.shape[0]) // 2
        canvas[top : top + picture.shape[0]] = picture
        return canvas

    write_video(path, (frame(i) for i in range(round(seconds * 30))), 30, width=w, height=h)
    return path


def dataset(root: Path, video: Path, copies: int) -> Path:
    (root / "v").mkdir(parents=True)
    rows = ["path,split," + ",".join(STATES)]
    for i in range(copies):
        (root / "v" / f"c{i}.mp4").symlink_to(video)
        rows.append(f"v/c{i}.mp4,Train,0,0,0,0")
    (root / "labels.csv").write_text("\n".join(rows) + "\n")
    manifest = {
        "cache_dir": str(root / "cache"),
        "runs_dir": str(root / "runs"),
        "datasets": {"d": {"layout": "csv", "root": str(root), "csv": "labels.csv"}},
    }
    (root / "m.yaml").write_text(yaml.safe_dump(manifest))
    return root / "m.yaml"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=4.0)
    ap.add_argument("--in-flight", type=int, default=3)
    ap.add_argument("--backbone", default="fer2013")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--budgets", default="64,100000", help="--chunk-mb values; the first is the one judged.")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    budgets = [int(b) for b in args.budgets.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="affectseq-memory-"))
    videos = {name: scaled_video(tmp / f"{name}.mp4", size, args.seconds) for name, size in SIZES.items()}
    weights = [] if args.backbone == "fer2013" else ["--weights", "random"]
    rows = []
    for budget in budgets:
        for in_flight in (1, args.in_flight):
            for name, video in videos.items():
                manifest = dataset(tmp / f"{name}-{budget}-{in_flight}", video, in_flight)
                cmd = [sys.executable, "-m", "embed", "run", "--manifest", str(manifest), "--backbone", args.backbone]
                cmd += [*weights, "--device", args.device, "--quiet", "--chunk-mb", str(budget)]
                cmd += ["--clips-in-flight", str(in_flight)]
                m = measured(cmd)
                rows.append({"size": name, "chunk_mb": budget, "clips_in_flight": in_flight, "peak_mb": m["peak_mb"]})
                print(f"{name:>10}  --chunk-mb {budget:<6}  {in_flight} in flight  peak {m['peak_mb']:7.1f} MB", flush=True)
    peak = {(r["size"], r["chunk_mb"], r["clips_in_flight"]): r["peak_mb"] for r in rows}
    ratios = {
        f"4k_vs_640x480_chunk_mb_{b}_in_flight_{k}": round(peak[("3840x2160", b, k)] / peak[("640x480", b, k)], 2)
        for b in budgets
        for k in (1, args.in_flight)
    }
    out = {"device": machine(torch.device(args.device)), "backbone": args.backbone, "rows": rows, **ratios}
    for k, v in ratios.items():
        print(f"{k}: {v}")
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
