"""What MTCNN costs a frame on this CPU, for this checkout or another (`--code DIR`), in one process
with stage one's allocator policy applied: `embed.face_search.search` in batches of 1 (one live
source), 8 (the serve engine's usual batch) and 64 frames (`embed run`'s), one torch thread (a
model-stage thread's share of the 2-core machine); CPU ms and page faults a frame. The frames: the
real footage (WolfgangLanger) at 640x480, 30 fps, encoded as a student's sender does (libx264
-tune zerolatency, MPEG-TS), every 6th downscaled for detection (320x240).

    .venv/bin/python bench/detector_costs.py [--code /tmp/baseline] [--json]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def usage() -> tuple[float, int]:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime, r.ru_minflt


def sender_stream(tmp: Path) -> Path:
    """20 s of the footage at 640x480, 30 fps, as the README's sender encodes a camera."""
    out = tmp / "camera.ts"
    src = ROOT / "data" / "footage" / "WolfgangLanger_Pexels.mp4"
    subprocess.run(
        ["ffmpeg", "-loglevel", "error", "-y", "-stream_loop", "3", "-i", str(src), "-t", "20"]
        + ["-vf", "scale=640:480,fps=30", "-c:v", "libx264", "-tune", "zerolatency", "-pix_fmt", "yuv420p"]
        + ["-f", "mpegts", str(out)],
        check=True,
    )
    return out


def detection(path: Path, batches: list[int]) -> dict:
    import av
    import numpy as np

    from embed.detector import FaceDetector
    from embed.extraction import DetectorConfig
    from embed.face_search import search

    with av.open(str(path)) as container:
        frames = np.stack([f.to_ndarray(format="rgb24") for f in container.decode(video=0)][::6])
    detector = FaceDetector(DetectorConfig())
    small, _ = detector.downscale(frames)
    out = {}
    for b in batches:
        search(detector.mtcnn, small[:b])  # first-call set-up
        (c0, f0), n = usage(), 0
        for _ in range(2):
            for i in range(0, len(small) - b + 1, b):
                search(detector.mtcnn, small[i : i + b])
                n += b
        c1, f1 = usage()
        out[b] = {"cpu_ms_per_frame": round((c1 - c0) / n * 1000, 2), "faults_per_frame": round((f1 - f0) / n)}
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--code", type=Path, default=ROOT, help="the checkout whose embed package is measured")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, str(args.code.resolve()))
    import torch
    from stage_two import machine  # after the checkout's path: it imports that checkout's embed

    from embed.memory import apply_allocator_policy

    torch.set_num_threads(1)  # a model-stage thread's share on the 2-core machine
    apply_allocator_policy()
    with tempfile.TemporaryDirectory() as tmp:
        stream = sender_stream(Path(tmp))
        result = {"machine": machine(), "code": str(args.code), "detection": detection(stream, [1, 8, 64])}
    print(result["machine"])
    for b, row in result["detection"].items():
        cpu, faults = row["cpu_ms_per_frame"], row["faults_per_frame"]
        print(f"MTCNN, batches of {b}: {cpu:.2f} CPU ms and {faults} page faults a frame")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
