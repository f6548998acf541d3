"""Where a live window's latency comes from (`make bench-window-latency`): the same stream through
`sequence serve` with runs whose caches differ only in the detector's interval, at two window lengths.

A tiny sample at 10 frames a second (320x240, 2-s clips) is generated and embedded with fer2013 twice,
with `--detect-every 5` (the default) and `--detect-every 1`; an `fc` head is trained on each. A video
of the sample's clips (10 fps) is then pushed at real-time pace into a server of each run, with 2-s and
10-s windows every second, and the median and worst `latency_s` of its lines printed.
    .venv/bin/python bench/live_window_latency.py [--windows 2,10] [--json]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).parents[1]))

from embed.sample import write_video  # noqa: E402
from tests.conftest import last_json, run_cli  # noqa: E402
from tests.frames import decode_video  # noqa: E402
from tests.serve_helpers import Listener, Server, push  # noqa: E402

SAMPLE = {"seed": 3, "train": 8, "validation": 3, "test": 3, "fps": 10, "seconds": 2.0, "width": 320, "height": 240}


def trained_run(manifest: Path, detect_every: int) -> str:
    """Embed the tiny sample with this detector interval and train an fc head on its store."""
    run_cli(
        "run",
        "--manifest",
        str(manifest),
        "--backbone",
        "fer2013",
        "--device",
        "cpu",
        "--quiet",
        "--detect-every",
        str(detect_every),
    )
    info = last_json(
        run_cli(
            "info", "--manifest", str(manifest), "--backbone", "fer2013", "--detect-every", str(detect_every), "--json"
        ).stdout
    )
    args = ["--manifest", str(manifest), "--backbone", "fer2013", "--key", info["key"], "--head", "fc", "--epochs", "3"]
    return last_json(run_cli("train", *args, "--device", "cpu", "--quiet", "--json", module="sequence").stdout)["run"]


def latencies(run: str, video: Path, window: str) -> list[float]:
    server = Server(run, "--hop", "1", "--window", window)
    try:
        sid = httpx.post(f"{server.url}/sources", json={"push": True}).json()["id"]
        listener = Listener(server.url, sid)
        push(server.url, sid, video=video, realtime=True)
        listener.join(timeout=120)
    finally:
        server.stop()
    return [w["latency_s"] for w in listener.windows() if w["latency_s"] is not None]


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--windows", default="2,10", help="Window lengths in seconds.")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    root = Path(tempfile.mkdtemp(prefix="affectseq-latency-"))
    manifest = root / "m.yaml"
    manifest.write_text(
        yaml.safe_dump(
            {
                "cache_dir": "cache",
                "runs_dir": "runs",
                "default_dataset": "tiny",
                "datasets": {"tiny": {"layout": "daisee", "root": "data/tiny", "sample": SAMPLE}},
            }
        )
    )
    runs = {every: trained_run(manifest, every) for every in (5, 1)}
    video = root / "lesson.mp4"
    clips = sorted((root / "data" / "tiny" / "DataSet").rglob("*.avi"))
    write_video(video, (f for c in clips for f in decode_video(c).frames), SAMPLE["fps"], width=320, height=240)
    rows = []
    for every, run in runs.items():
        for window in args.windows.split(","):
            lat = latencies(run, video, window)
            rows.append(
                {
                    "detect_every": every,
                    "window_s": float(window),
                    "windows": len(lat),
                    "median_s": round(statistics.median(lat), 3),
                    "max_s": round(max(lat), 3),
                }
            )
            print(
                f"detect_every {every}, {window}-s windows: {len(lat)} lines, median latency {rows[-1]['median_s']} s, "
                f"worst {rows[-1]['max_s']} s",
                flush=True,
            )
    if args.json:
        print(json.dumps({"fps": SAMPLE["fps"], "rows": rows}))


if __name__ == "__main__":
    main()
