"""Windows along a video: where they fall, which have enough face frames to be scored, how a run's
model scores them (a bounded group at a time), how a window's states are written, and the timeline
files. Shared by predict (a file) and live (a stream)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from embed.cache import ClipData, span_seconds
from embed.errors import ClipError
from embed.model_stage import spans
from sequence import plots
from sequence.config import MIN_FACE_FRACTION
from sequence.data import FramePolicy, to_tensors
from sequence.runs import write_csv, write_json
from sequence.train import predict_probs

if TYPE_CHECKING:
    from embed.model_stage import ModelStage


def windows(timestamps: np.ndarray, window: float, hop: float) -> list[tuple[float, float]]:
    """[start, end) windows of `window` seconds every `hop` seconds; one window over the whole video
    when it is not clearly longer than one window."""
    duration = float(timestamps[0]) + span_seconds(timestamps)  # windows count from 0 s
    if duration <= window + hop / 2:
        return [(0.0, duration)]
    starts = np.arange(0.0, duration - window + 1e-6, hop)
    return [(float(s), float(s) + window) for s in starts]


def window_rows(timestamps: np.ndarray, start: float, end: float) -> np.ndarray:
    return (timestamps >= start - 1e-6) & (timestamps < end - 1e-6)


def face_fraction(face_prob: np.ndarray) -> float:
    return float((face_prob > 0).mean()) if len(face_prob) else 0.0


def enough_faces(face_prob: np.ndarray, min_face_fraction: float = MIN_FACE_FRACTION) -> bool:
    """Whether a window is scored: some face, in at least min_face_fraction of its frames."""
    return bool((face_prob > 0).any()) and face_fraction(face_prob) >= min_face_fraction


def state_summary(probs: np.ndarray) -> dict:
    """One state's figure as predict and live print it: the level and the rounded probabilities."""
    return {"level": int(np.argmax(probs)), "probs": [round(float(v), 4) for v in probs]}


class WindowScorer:
    """A finished run's model scoring windows of embeddings (built by Run.scorer). With a model stage,
    the windows of every source that are due at once are scored in one call."""

    def __init__(self, model, cfg: dict, device, stage: ModelStage | None = None):
        self.model, self.cfg, self.policy, self.device = model, cfg, FramePolicy.from_config(cfg), device
        self.stage = stage

    def score(self, arrays: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
        """{state: (W, levels)} for windows given as (embeddings, face_prob, timestamps)."""
        if self.stage is None:
            return self._score(arrays)
        return self.stage.run(self._score_batch, arrays)

    def _score_batch(self, items: list[list]) -> list[dict[str, np.ndarray]]:
        probs = self._score([a for arrays in items for a in arrays])
        return [{s: p[rows] for s, p in probs.items()} for rows in spans(items)]

    def _score(self, arrays: list[tuple[np.ndarray, np.ndarray, np.ndarray]]) -> dict[str, np.ndarray]:
        labels = np.zeros((len(arrays), len(self.cfg["states"])), dtype=np.int64)
        data = to_tensors(arrays, self.policy, labels, clip_ids=[f"w{i}" for i in range(len(arrays))])
        return predict_probs(self.model, data, self.cfg["batch"], device=self.device)


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
        if enough_faces(clip.face_prob[rows], min_face_fraction):
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


def write_timeline(out_dir: Path, spans: list[tuple[float, float]], probs: dict[str, np.ndarray], *, title: str) -> dict:
    """timeline.{csv,json,png} in out_dir; their paths."""
    out_dir.mkdir(parents=True, exist_ok=True)
    _write_timeline(out_dir, spans, probs, title=title)
    return {
        "timeline": str(out_dir / "timeline.json"),
        "timeline_csv": str(out_dir / "timeline.csv"),
        "timeline_png": str(out_dir / "timeline.png"),
    }


def _write_timeline(out_dir: Path, spans: list[tuple[float, float]], probs: dict[str, np.ndarray], *, title: str) -> Path:
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
    plots.timeline_png(out_dir / "timeline.png", centers, probs, title=title)
    return out_dir / "timeline.json"
