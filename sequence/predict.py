"""Predict the four states of a new video with a finished run: stream it through stage one exactly as
the run's cache was embedded (chunks of frames, so only the video's embeddings are ever held, never
its decoded frames), then score windows of the run's clip length along it."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from embed.cache import ClipData, span_seconds
from embed.devices import resolve_device
from embed.errors import ClipError, ConfigError
from embed.identity import WeightsIdentity
from embed.stores import per_store
from sequence import plots
from sequence.data import FramePolicy, to_tensors
from sequence.runs import load_model, load_run, write_csv, write_json
from sequence.train import predict_probs

log = logging.getLogger(__name__)


def weights_for(identity: str, recorded: str | None, given: str | None) -> str:
    """The --weights value that rebuilds the backbone behind a store's weights identity."""
    return given or WeightsIdentity.parse(identity).weights_arg(recorded)


def stream_inputs(run: dict, weights: str | None) -> tuple[list[dict], list[str]]:
    """The extraction configs a run's input is computed with from a video, and each backbone's
    --weights (comma-separated in `weights` for a fused run, as on `sequence train`). Features
    imported from another tool cannot be computed here: a ConfigError says which."""
    store = run["store"]
    configs = [p["config"] for p in store["parts"]] if "parts" in store else [store["config"]]
    for c in configs:
        if c.get("importer"):
            raise ConfigError(
                f"{run['path']}: its input '{c['backbone']}' was imported from {c['importer']} "
                f"files, which affectseq cannot compute from a video; fix: extract them for this "
                f"video with the same tool and import them, or predict with a run trained on "
                f"`embed run` stores only"
            )
    given = per_store(weights, len(configs), "weights")
    recorded = per_store(run["config"].get("weights"), len(configs), "weights")
    return configs, [weights_for(c["weights"], r, g) for c, r, g in zip(configs, recorded, given, strict=True)]


def windows(timestamps: np.ndarray, window: float, hop: float) -> list[tuple[float, float]]:
    """[start, end) windows of `window` seconds every `hop` seconds; one window over the whole video
    when it is not clearly longer than one window."""
    duration = float(timestamps[0]) + span_seconds(timestamps)  # windows count from 0 s
    if duration <= window + hop / 2:
        return [(0.0, duration)]
    starts = np.arange(0.0, duration - window + 1e-6, hop)
    return [(float(s), float(s) + window) for s in starts]


MIN_FACE_FRACTION = 0.5  # a window with fewer face frames is not scored (the model never saw such clips)


class WindowScorer:
    """A finished run's model, loaded once, scoring windows of embeddings."""

    def __init__(self, run_dir: Path, cfg: dict, device: str = "auto"):
        self.cfg, self.policy = cfg, FramePolicy.from_config(cfg)
        self.device = resolve_device(device)
        self.model = load_model(run_dir, self.device)

    def score(self, arrays: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
        """{state: (W, levels)} for windows given as (embeddings, face_prob, timestamps)."""
        labels = np.zeros((len(arrays), len(self.cfg["states"])), dtype=np.int64)
        data = to_tensors(arrays, self.policy, labels, [f"w{i}" for i in range(len(arrays))])
        return predict_probs(self.model, data, self.cfg["batch"], self.device)


def window_rows(timestamps: np.ndarray, start: float, end: float) -> np.ndarray:
    return (timestamps >= start - 1e-6) & (timestamps < end - 1e-6)


# Windows scored per model call. Windows overlap (10-s windows every 1 s hold each frame ten times),
# so packing all of a long video's windows at once would grow with its length: an hour of 30-fps
# video is 3,591 such windows, 2.2 GB as one padded float16 tensor. In groups, memory is set by this.
SCORE_WINDOWS = 64


def score_windows(
    clip: ClipData, spans: list[tuple[float, float]], scorer: WindowScorer, min_face_fraction: float = MIN_FACE_FRACTION
) -> tuple[list[tuple[float, float]], dict[str, np.ndarray]]:
    """Per-window probabilities {state: (W, levels)} for the windows with enough face frames."""
    kept: list[tuple[float, float]] = []
    rows_of: list[np.ndarray] = []
    for start, end in spans:
        rows = np.flatnonzero(window_rows(clip.timestamps, start, end))
        faces = clip.face_prob[rows] > 0
        if faces.any() and faces.mean() >= min_face_fraction:
            kept.append((start, end))
            rows_of.append(rows)
    if not kept:
        raise ClipError(
            f"no window of the video has a face in at least {min_face_fraction:.0%} of its frames; "
            f"fix: check that the video shows a face, or lower --min-face-fraction"
        )
    parts: dict[str, list[np.ndarray]] = {}
    for g in range(0, len(rows_of), SCORE_WINDOWS):
        arrays = [(clip.embeddings[r], clip.face_prob[r], clip.timestamps[r]) for r in rows_of[g : g + SCORE_WINDOWS]]
        for s, p in scorer.score(arrays).items():
            parts.setdefault(s, []).append(p)
    return kept, {s: np.concatenate(v) for s, v in parts.items()}


def rate_cap(cfg: dict) -> float | None:
    """At most this many frames per second reach the model: the rate its cache holds (10 % slack
    for jitter), so a faster camera is thinned to what the model was trained on."""
    rate = cfg.get("frame_rate")
    return rate * 1.1 if rate else None


def predict_video(
    video: str | Path,
    run_dir: Path,
    weights: str | None = None,
    device: str = "auto",
    window: float | None = None,
    hop: float = 1.0,
    out_dir: Path | None = None,
    min_face_fraction: float = MIN_FACE_FRACTION,
    input_format: str | None = None,
    input_options: dict[str, str] | None = None,
) -> dict:
    from embed.pipeline import stream_video  # the one stage-one entry stage two may use
    from embed.video import is_file_source

    run = load_run(run_dir)
    cfg = run["config"]
    configs, w = stream_inputs(run, weights)
    if is_file_source(video, input_format) and not Path(video).is_file():
        raise ConfigError(f"{video}: no such video; fix: pass the path of a video file")
    window = window or cfg["clip_seconds"]
    if window <= 0 or hop <= 0:
        raise ConfigError(f"--window {window} / --hop {hop}: both must be positive seconds; fix: e.g. --window 10 --hop 1")
    clip = ClipData.concat(
        [
            c.data
            for c in stream_video(
                video,
                weights=w,
                device=device,
                config=configs,
                input_format=input_format,
                input_options=input_options,
                rate_cap=None if is_file_source(video, input_format) else rate_cap(cfg),
            )
        ]
    )
    spans = windows(clip.timestamps, window, hop)
    kept, probs = score_windows(clip, spans, WindowScorer(Path(run_dir), cfg, device), min_face_fraction)
    overall = {s: p.mean(0) for s, p in probs.items()}
    name = Path(str(video)).name if is_file_source(video, input_format) else "stream"
    result = {
        "video": str(video),
        "run": str(run_dir),
        "windows": len(kept),
        "window_seconds": window,
        "states": {s: {"level": int(p.argmax()), "probs": [round(float(v), 4) for v in p]} for s, p in overall.items()},
        "timeline": None,
    }
    if len(spans) > 1:
        out_dir = Path(out_dir) if out_dir else Path(run_dir) / "predictions" / Path(name).stem
        result.update(write_timeline(out_dir, kept, probs, f"{name} — {Path(run_dir).name}"))
    return result


def write_timeline(out_dir: Path, spans: list[tuple[float, float]], probs: dict[str, np.ndarray], title: str) -> dict:
    """timeline.{csv,json,png} in out_dir; their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_timeline(out_dir, spans, probs, title)
    return {
        "timeline": str(out_dir / "timeline.json"),
        "timeline_csv": str(out_dir / "timeline.csv"),
        "timeline_png": str(out_dir / "timeline.png"),
    }


def _write_timeline(out_dir: Path, spans: list[tuple[float, float]], probs: dict[str, np.ndarray], title: str) -> Path:
    centers = np.array([(a + b) / 2 for a, b in spans])
    rows = []
    for i, (a, b) in enumerate(spans):
        row = {"start": round(a, 3), "end": round(b, 3), "center": round(float(centers[i]), 3)}
        for s, p in probs.items():
            row[f"{s}_level"] = int(p[i].argmax())
            row.update({f"{s}_p{k}": round(float(v), 4) for k, v in enumerate(p[i])})
        rows.append(row)
    write_csv(out_dir / "timeline.csv", rows)
    write_json(out_dir / "timeline.json", rows)
    plots.timeline_png(out_dir / "timeline.png", centers, probs, title)
    return out_dir / "timeline.json"
