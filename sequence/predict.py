"""Predict the four states of a new video with a finished run: stream it through stage one exactly as
the run's cache was embedded (chunks of frames, so only the video's embeddings are ever held, never
its decoded frames), then score windows of the run's clip length along it."""

from __future__ import annotations

from pathlib import Path

from embed.cache import ClipData
from embed.errors import ConfigError
from sequence.run import Run
from sequence.windows import MIN_FACE_FRACTION, score_windows, state_summary, windows, write_timeline


def predict_video(
    video: str | Path,
    run: Run,
    weights: str | None = None,
    device: str = "auto",
    window: float | None = None,
    hop: float = 1.0,
    out_dir: Path | None = None,
    min_face_fraction: float | None = None,
    input_format: str | None = None,
    input_options: dict[str, str] | None = None,
) -> dict:
    min_face_fraction = MIN_FACE_FRACTION if min_face_fraction is None else min_face_fraction
    window = window or run.config["clip_seconds"]
    if window <= 0 or hop <= 0:
        raise ConfigError(f"--window {window} / --hop {hop}: both must be positive seconds; fix: e.g. --window 10 --hop 1")
    chunks = run.stream(video, weights, device, input_format, input_options)
    clip = ClipData.concat([c.data for c in chunks])
    spans = windows(clip.timestamps, window, hop)
    kept, probs = score_windows(clip, spans, run.scorer(device), min_face_fraction)
    name = run.source_name(video, input_format) or "stream"
    result = {
        "video": str(video),
        "run": str(run.path),
        "windows": len(kept),
        "window_seconds": window,
        "states": {s: state_summary(p.mean(0)) for s, p in probs.items()},
        "timeline": None,
    }
    if len(spans) > 1:
        out_dir = Path(out_dir) if out_dir else run.path / "predictions" / Path(name).stem
        result.update(write_timeline(out_dir, kept, probs, f"{name} — {run.path.name}"))
    return result
