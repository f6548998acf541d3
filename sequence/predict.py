"""Predict the four states of a new video with a finished run: stream it through stage one exactly as
the run's cache was embedded (chunks of frames, so only the video's embeddings are ever held, never
its decoded frames), then score windows of the run's clip length along it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from embed.cache import ClipData
from sequence.config import WindowOptions
from sequence.run import Run
from sequence.windows import score_windows, state_summary, windows, write_timeline


@dataclass(frozen=True)
class PredictOptions:
    """What `sequence predict` is told: the source (a video file, a URL, a capture device with
    `input_format`, or '-'), the run folder, the run's backbone weights if they cannot be found, the
    windows, the timeline's folder (None: RUN/predictions/<video>), FFmpeg input options, and for a
    live source the frames per second kept (None: the run's rate)."""

    video: str
    run: Path
    weights: str | None = None
    device: str | None = None
    windows: WindowOptions = field(default_factory=WindowOptions)
    out: Path | None = None
    input_format: str | None = None
    input_options: dict[str, str] = field(default_factory=dict)
    sample_fps: float | None = None


def predict_video(options: PredictOptions, run: Run | None = None) -> dict:
    """Each state's level and probabilities for a video (the mean over its windows) and, for a video
    longer than one window, its timeline files. `run`: the run already opened (else options.run)."""
    run = run or Run.open(options.run)
    win = options.windows.for_run(run.config["clip_seconds"])
    device = options.device or "auto"
    reading = run.reading(options.video, input_format=options.input_format, input_options=options.input_options)
    chunks = run.stream(options.video, weights=options.weights, device=device, reading=reading)
    clip = ClipData.concat([c.data for c in chunks])
    spans = windows(clip.timestamps, win.window, win.hop)
    kept, probs = score_windows(clip, spans, run.scorer(device), min_face_fraction=win.min_face_fraction)
    name = run.source_name(options.video, options.input_format) or "stream"
    result = {
        "video": str(options.video),
        "run": str(run.path),
        "windows": len(kept),
        "window_seconds": win.window,
        "states": {s: state_summary(p.mean(0)) for s, p in probs.items()},
        "timeline": None,
    }
    if len(spans) > 1:
        out_dir = Path(options.out) if options.out else run.path / "predictions" / Path(name).stem
        result.update(write_timeline(out_dir, kept, probs, title=f"{name} — {run.path.name}"))
    return result
