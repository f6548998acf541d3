"""Live prediction: the four states of a camera, a network stream or a pipe, while it goes on.

Frames stream through stage one's engine (Run.engine, here with one source; `sequence serve` runs it
with many: small chunks, frames skipped rather than queued when the pipeline is behind); each window
of the run's clip length, every `hop` seconds, is scored as soon as its last frame is embedded, and
one JSON line per window goes to stdout. Only the frames of windows still open are held, so memory
stays flat for hours. At the end of the stream or on Ctrl-C the timeline files are written as for a
file.
"""

from __future__ import annotations

import json
import logging
import math
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from embed.errors import ClipError, ConfigError
from sequence.config import WindowOptions
from sequence.predict import PredictOptions
from sequence.run import Run
from sequence.windows import enough_faces, face_fraction, state_summary, window_rows, write_timeline

if TYPE_CHECKING:
    from embed.streaming import EmbeddedChunk

log = logging.getLogger(__name__)
LATENCIES = 100_000


@dataclass
class LiveReport:
    windows: int = 0
    scored: int = 0
    # The last LATENCIES windows' latencies: a day of one-second windows fits, and memory stays flat after.
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCIES))
    frames: int = 0
    dropped: int = 0
    ended: str = "end of stream"  # or "interrupted", or the error that broke the stream off
    timeline: dict = field(default_factory=dict)

    def as_dict(self) -> dict:
        lat = self.latencies
        return {
            "windows": self.windows,
            "scored": self.scored,
            "frames": self.frames,
            "dropped": self.dropped,
            "ended": self.ended,
            "latency": {
                "median_s": round(float(np.median(lat)), 3) if lat else None,
                "worst_s": round(float(np.max(lat)), 3) if lat else None,
            },
            **self.timeline,
        }


class WindowBuffer:
    """Embedded frames of the windows still open: [k * hop, k * hop + window) for k = 0, 1, ...

    A window is complete once a frame at or past its last frame's time (its end less 1.5 frame steps)
    is embedded; older frames than the next open window's start are let go."""

    def __init__(self, window: float, hop: float):
        self.window, self.hop, self.k = window, hop, 0
        self.emb: list[np.ndarray] = []
        self.prob: list[np.ndarray] = []
        self.t: list[np.ndarray] = []
        self.arrived: list[np.ndarray] = []

    def add(self, emb: np.ndarray, prob: np.ndarray, t: np.ndarray, arrived: np.ndarray) -> None:
        for buf, a in ((self.emb, emb), (self.prob, prob), (self.t, t), (self.arrived, arrived)):
            buf.append(a)

    def _joined(self):
        return (np.concatenate(self.emb), np.concatenate(self.prob), np.concatenate(self.t), np.concatenate(self.arrived))

    def complete(self, final: bool = False) -> list[tuple[float, float, tuple, float | None]]:
        """(start, end, (embeddings, face_prob, timestamps), arrival of its last frame) of each window
        that is complete now; at the end of the stream (final) every window that fits in it."""
        if not self.t:
            return []
        joined = self._joined()
        emb, prob, t, arrived = joined
        if len(t) == 0:  # every frame so far belongs to windows already out
            return []
        step = float(np.median(np.diff(t[-16:]))) if len(t) > 1 else 0.0
        duration = float(t[-1]) + step
        out = []
        while True:
            start = self.k * self.hop
            end = start + self.window
            if not final and float(t[-1]) < end - 1.5 * step:
                break
            if final and end > duration + 1e-6:
                if self.k == 0:  # a stream shorter than one window is one window, as offline predict does
                    out.append(self._window(0.0, duration, joined))
                    self.k = 1
                break
            out.append(self._window(start, end, joined))
            self.k += 1
        keep = t >= self.k * self.hop - 1e-6
        self.emb, self.prob, self.t, self.arrived = [emb[keep]], [prob[keep]], [t[keep]], [arrived[keep]]
        return out

    @staticmethod
    def _window(start: float, end: float, joined: tuple[np.ndarray, ...]):
        emb, prob, t, arrived = joined
        rows = window_rows(t, start, end)
        last = float(arrived[rows][-1]) if rows.any() else None
        return start, end, (emb[rows], prob[rows], t[rows]), last


def _ema(prev: dict | None, probs: dict[str, np.ndarray], alpha: float) -> dict[str, np.ndarray]:
    if prev is None:
        return probs
    return {s: alpha * p + (1 - alpha) * prev[s] for s, p in probs.items()}


Score = Callable[[list[tuple[np.ndarray, np.ndarray, np.ndarray]]], dict[str, np.ndarray]]


class LiveWindows:
    """One live source's windows as they complete: each scored when it has enough face frames, turned
    into its JSON line (dict), smoothed for display, and kept for the timeline. Safe to feed from the
    source's thread while another closes it (Ctrl-C, a removed source): after close() it takes nothing.
    `windows`: the options resolved for the run (WindowOptions.for_run)."""

    def __init__(self, states: list[str], score: Score, windows: WindowOptions, *, keep_timeline: bool = True):
        self.keep_timeline = keep_timeline  # off: nothing grows with the session (a server's sources)
        self.states, self.score, self.smooth = states, score, windows.smooth
        self.min_face_fraction = windows.min_face_fraction
        self.buffer, self.report = WindowBuffer(windows.window, windows.hop), LiveReport()
        self.alpha = 1.0 - math.exp(-windows.hop / windows.smooth) if windows.smooth > 0 else 1.0
        self.smoothed: dict[str, np.ndarray] | None = None
        self.kept: list[tuple[float, float]] = []
        self.kept_probs: dict[str, list[np.ndarray]] = {s: [] for s in states}
        self.lock, self.closed = threading.Lock(), False

    def add(self, chunk: EmbeddedChunk) -> list[dict]:
        """The lines of the windows this chunk completes."""
        with self.lock:
            if self.closed:
                return []
            self.report.frames += len(chunk.data.timestamps)
            self.report.dropped = chunk.stream.dropped
            self.buffer.add(chunk.data.embeddings, chunk.data.face_prob, chunk.data.timestamps, arrived=chunk.arrived)
            return self._lines(self.buffer.complete())

    def close(self, ended: str | None = None) -> list[dict]:
        """The stream has ended (how, in `ended`): the lines of every window that fits in what came."""
        with self.lock:
            if self.closed:
                return []
            self.closed = True
            if ended is not None:
                self.report.ended = ended
            return self._lines(self.buffer.complete(final=True))

    def _lines(self, windows) -> list[dict]:
        lines = []
        for start, end, arrays, last in windows:
            line = {
                "t_start": round(start, 3),
                "t_end": round(end, 3),
                "frames": int(len(arrays[1])),
                "face_fraction": round(face_fraction(arrays[1]), 3),
            }
            if enough_faces(arrays[1], self.min_face_fraction):
                probs = {s: p[0] for s, p in self.score([arrays]).items()}
                line["states"] = {s: state_summary(p) for s, p in probs.items()}
                if self.keep_timeline:
                    self.kept.append((start, end))
                    for s, p in probs.items():
                        self.kept_probs[s].append(p)
                if self.smooth > 0:
                    self.smoothed = _ema(self.smoothed, probs, self.alpha)
                    line["smoothed"] = {s: [round(float(v), 4) for v in p] for s, p in self.smoothed.items()}
            else:
                line["states"] = {s: None for s in self.states}
            line["latency_s"] = round(time.monotonic() - last, 3) if last is not None else None
            line["dropped"] = self.report.dropped
            self.report.windows += 1
            self.report.scored += line["states"][self.states[0]] is not None
            if line["latency_s"] is not None:
                self.report.latencies.append(line["latency_s"])
            lines.append(line)
        return lines

    def write_timeline(self, out: Path, title: str) -> dict:
        """The timeline files of the windows scored so far (none: nothing written)."""
        if not self.kept:
            return {}
        return write_timeline(out, self.kept, {s: np.stack(p) for s, p in self.kept_probs.items()}, title=title)


def predict_live(
    options: PredictOptions,
    *,
    emit: Callable[[str], None] | None = None,
    status: Callable[[dict], None] | None = None,
) -> LiveReport:
    """Score windows of a live source as they complete; one JSON line each through `emit` (stdout by
    default) and `status` (a terminal's status line). Ends at the end of the stream, on Ctrl-C, or
    when the stream breaks off (a warning). The engine of `sequence serve` with this one source; its
    threads end before this returns."""
    run = Run.open(options.run)
    win = options.windows.for_run(run.config["clip_seconds"])
    if options.sample_fps is not None and options.sample_fps <= 0:
        raise ConfigError(f"--sample-fps {options.sample_fps}: must be positive; fix: e.g. --sample-fps 5")
    emit = emit or (lambda line: print(line, flush=True))
    device = options.device or "auto"
    engine = run.engine(options.weights, device)
    try:
        lines = LiveWindows(run.states, run.scorer(device, engine.stage).score, win)

        def publish(batch: list[dict]) -> None:
            for line in batch:
                emit(json.dumps(line))
                if status is not None:
                    status(line)

        source = options.video
        print(f"live: reading {source} (windows of {win.window:g} s every {win.hop:g} s)", file=sys.stderr, flush=True)
        reading = run.reading(
            source,
            input_format=options.input_format,
            input_options=options.input_options,
            sample_fps=options.sample_fps,
            live=True,
        )
        handle = engine.add(
            source, on_chunk=lambda chunk: publish(lines.add(chunk)), on_end=lambda error: None, reading=reading
        )
        try:
            handle.finished.wait()
            ended = None
            if isinstance(handle.error, ClipError):
                if not lines.report.frames:
                    raise handle.error
                ended = f"the stream broke off: {str(handle.error).splitlines()[0]}"
                log.warning("%s; ending with the %d windows it had", ended, lines.report.windows)
            elif handle.error is not None:
                raise handle.error
        except KeyboardInterrupt:
            handle.stop()
            ended = "interrupted"
        publish(lines.close(ended))  # the last windows are scored through the engine: close it after
    finally:
        engine.close()
    name = Path(run.source_name(source, options.input_format) or "live").stem
    out = Path(options.out) if options.out else run.path / "predictions" / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    lines.report.timeline = lines.write_timeline(out, f"{source} (live) — {run.path.name}")
    return lines.report


def status_printer(console) -> Callable[[dict], None]:
    """A compact one-line status per window on a terminal's stderr."""

    def show(line: dict) -> None:
        states = line["states"]
        if all(v is None for v in states.values()):
            text = f"no face ({line['face_fraction']:.0%} of frames)"
        else:
            shown = line.get("smoothed") or {s: v["probs"] for s, v in states.items()}
            text = "  ".join(f"{s[:5]} {int(np.argmax(p))} ({max(p):.2f})" for s, p in shown.items())
        console.print(
            f"[dim]{line['t_start']:7.1f}-{line['t_end']:7.1f} s[/]  {text}  "
            f"[dim]latency {line['latency_s']} s, dropped {line['dropped']}[/]",
            highlight=False,
        )

    return show


def is_terminal(stream=None) -> bool:
    return bool(getattr(stream or sys.stderr, "isatty", lambda: False)())
