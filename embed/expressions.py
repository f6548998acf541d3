"""An expression track for any video: one decode and face track through `stream_video` (any length,
bounded memory), the backbone's expression probabilities per frame to `expressions.csv` as they
come, and a timeline `expressions.png`. Memory holds 36 bytes a frame for the plot, never frames.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embed.errors import ClipError
from embed.pyplot import pyplot


@dataclass(frozen=True)
class ExpressionOptions:
    """What `embed expressions` is told: the video (a file, a URL, a device with `input_format`, or
    '-'), the folder for the files (None: ./expressions/<video name>), and the backbone."""

    video: str
    out: Path | None = None
    backbone: str = "fer2013"
    weights: str | None = None
    device: str | None = "auto"
    input_format: str | None = None


def expression_track(options: ExpressionOptions) -> dict:
    """Write out/expressions.{csv,png}; returns what `embed expressions --json` prints. Both files
    are written under a temporary name and renamed when whole; a video without a face is a ClipError."""
    from embed.video import is_file_source

    video, backbone, weights = options.video, options.backbone, options.weights
    is_file = is_file_source(video, options.input_format)
    if is_file and not Path(video).is_file():  # before seconds of imports
        raise ClipError(f"{video}: no such file; fix: check the path, or pass a URL or a device with --input-format")
    from embed.backbones import get_backbone, require_expressions
    from embed.embedder import EmbedSpec
    from embed.streaming import Reading, stream_video

    stem = Path(video).stem if is_file else "stream"
    out_dir = Path(options.out) if options.out else Path("expressions") / stem
    net = get_backbone(backbone)
    require_expressions(net)
    names = list(net.expressions)
    out_dir.mkdir(parents=True, exist_ok=True)
    csv_path, png_path = out_dir / "expressions.csv", out_dir / "expressions.png"
    partial = csv_path.with_name(csv_path.name + ".partial")
    times, faces, probs = [], [], []
    rotation = 0
    try:
        with open(partial, "w", newline="") as f:
            rows = csv.writer(f)
            rows.writerow(["time", "frame", "face", *names])
            frame = 0
            spec = EmbedSpec((backbone,), (weights,), options.device)
            reading = Reading(input_format=options.input_format, expressions=True)
            for chunk in stream_video(video, spec, reading):
                has_face = chunk.data.face_prob > 0
                for t, face, p in zip(chunk.data.timestamps, has_face, chunk.expressions, strict=True):
                    rows.writerow([f"{t:.3f}", frame, int(face), *([f"{v:.5f}" for v in p] if face else [""] * len(p))])
                    frame += 1
                times.append(chunk.data.timestamps)
                faces.append(has_face)
                probs.append(chunk.expressions)
                rotation = chunk.stream.rotation
        t, face, p = np.concatenate(times), np.concatenate(faces), np.concatenate(probs)
        if not face.any():
            raise ClipError(f"{video}: no face found in any of its {len(t)} frames; fix: check that the video shows a face")
        os.replace(partial, csv_path)
    finally:
        partial.unlink(missing_ok=True)
    _timeline_png(png_path, (t, face, p), names, title=f"{Path(str(video)).name}: {backbone} expressions")
    mean = p[face].mean(0)
    return {
        "video": str(video),
        "frames": int(len(t)),
        "faces": int(face.sum()),
        "mean": {n: round(float(v), 4) for n, v in zip(names, mean, strict=True)},
        "weights": net.identity(weights),
        "rotation": rotation,
        "csv": str(csv_path),
        "png": str(png_path),
    }


def _faceless_runs(face: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) index ranges of consecutive frames without a face."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], (~face).astype(np.int8), [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist(), strict=True))


def _timeline_png(path: Path, track: tuple[np.ndarray, np.ndarray, np.ndarray], names: list[str], *, title: str) -> None:
    t, face, p = track  # times, has a face, probabilities
    plt = pyplot()

    fig, ax = plt.subplots(figsize=(11, 4), dpi=110)
    step = float(np.median(np.diff(t))) if len(t) > 1 else 1.0
    for i, (a, b) in enumerate(_faceless_runs(face)):
        ax.axvspan(t[a], t[b - 1] + step, color="0.85", lw=0, label="no face" if i == 0 else None)
    for k, name in enumerate(names):
        ax.plot(t, np.where(face, p[:, k], np.nan), lw=1.2, label=name)
    ax.set(xlabel="time (s)", ylabel="probability", ylim=(0, 1), xlim=(float(t[0]), float(t[-1]) + step), title=title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.0, 1.0), frameon=False)
    fig.tight_layout()
    partial = path.with_name(path.stem + ".partial.png")
    fig.savefig(partial)
    plt.close(fig)
    os.replace(partial, path)
