"""Latency of `sequence predict --live` on a 30 fps 640x480 stream arriving at real-time pace (`make bench`).

A run is trained on a generated DAiSEE-shaped sample (30 fps, 640x480, random weights); a video of
--seconds of its faces is then fed through a pipe as MPEG-TS at its own pace (tests/live_feed.py,
as `ffmpeg -re ... -f mpegts -` would), and `predict - --live` prints one line per window. Reported:
median and worst latency of the lines (from the window's last frame arriving to its line being
printed), frames embedded and frames dropped to keep up, and the command.
    .venv/bin/python bench/live_latency.py [--seconds 60] [--hop 1] [--device cpu] [--json]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from embed_bench import machine  # noqa: E402

from embed.manifest import SampleSpec  # noqa: E402
from embed.sample import generate_sample, write_video  # noqa: E402
from tests.frames import decode_video  # noqa: E402

FEED = Path(__file__).resolve().parent.parent / "tests" / "live_feed.py"


def small_sample(tmp: Path) -> None:
    """A small DAiSEE-shaped sample at 30 fps (8 clips of 10 s, 640x480) under tmp/data."""
    generate_sample(
        tmp / "data",
        SampleSpec(train=4, validation=2, test=2, subjects={"Train": 2, "Validation": 1, "Test": 1}, fps=30, seconds=10),
    )


def train_run(tmp: Path, device: str, backbone: str = "inception") -> str:
    """Embed the generated sample and train an fc head on it (its quality is beside the point): with
    random weights for a backbone whose weights download at run time, with its own for fer2013."""
    manifest = tmp / "m.yaml"
    manifest.write_text(
        yaml.safe_dump(
            {
                "cache_dir": "cache",
                "runs_dir": "runs",
                "default_dataset": "sample",
                "datasets": {"sample": {"layout": "daisee", "root": "data"}},
            }
        )
    )
    weights = [] if backbone == "fer2013" else ["--weights", "random"]
    common = ["--manifest", str(manifest), "--backbone", backbone, *weights, "--device", device]
    subprocess.run([sys.executable, "-m", "embed", "run", *common, "--quiet"], check=True, capture_output=True)
    out = subprocess.run(
        [sys.executable, "-m", "sequence", "train", *common, "--head", "fc", "--epochs", "2", "--quiet", "--json"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])["run"]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seconds", type=float, default=60.0)
    ap.add_argument("--hop", type=float, default=1.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--run", help="A finished run on 30-fps random-weight inception embeddings (skips training one).")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="affectseq-live-"))
    small_sample(tmp)
    run = args.run or train_run(tmp, args.device)

    clips = sorted((tmp / "data").glob("DataSet/*/*/*/*"))
    frames = np.concatenate([decode_video(c).frames for c in clips])
    n = round(args.seconds * 30)
    video = tmp / "stream.mp4"
    write_video(video, (frames[i % len(frames)] for i in range(n)), 30, width=640, height=480)

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    feeder = subprocess.Popen([sys.executable, str(FEED), str(video)], stdout=subprocess.PIPE, env=env)
    command = ["predict", "-", "--run", run, "--live", "--hop", str(args.hop), "--device", args.device, "--json"]
    proc = subprocess.run(
        [sys.executable, "-m", "sequence", *command], stdin=feeder.stdout, capture_output=True, text=True, env=env
    )
    feeder.stdout.close()
    feeder.wait()
    if proc.returncode != 0:
        raise SystemExit(f"predict --live failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    lines = [json.loads(x) for x in proc.stdout.splitlines()]
    windows = [x for x in lines if "t_start" in x]
    summary = lines[-1]["summary"]
    lat = [w["latency_s"] for w in windows if w["latency_s"] is not None]
    result = {
        "device": machine(torch.device(args.device)),
        "stream": f"{args.seconds:g} s, 30 fps, 640x480, MPEG-TS on stdin at real-time pace",
        "windows": len(windows),
        "scored": summary["scored"],
        "latency_median_s": round(float(np.median(lat)), 3),
        "latency_worst_s": round(float(np.max(lat)), 3),
        "frames_in": n,
        "frames_embedded": summary["frames"],
        "frames_dropped": summary["dropped"],
        "command": "python tests/live_feed.py stream.mp4 | python -m sequence "
        + " ".join([*command[:2], "--run", "RUN", *command[4:]]),
    }
    print(f"machine: {result['device']}")
    print(
        f"{result['stream']}: {len(windows)} windows ({summary['scored']} scored); latency median "
        f"{result['latency_median_s']} s, worst {result['latency_worst_s']} s; frames embedded "
        f"{summary['frames']} of {n}, dropped {summary['dropped']}"
    )
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
