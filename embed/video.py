"""Decode a video with PyAV: every frame as RGB with its presentation timestamp in seconds."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np

from embed.errors import ClipError


@dataclass
class DecodedVideo:
    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    timestamps: np.ndarray  # (T,) float32 seconds from the stream start
    fps: float  # nominal rate from the container (informational; timestamps are the truth)


def decode_video(path: str | Path, max_fps: float | None = None) -> DecodedVideo:
    """Decode every frame (or, with max_fps, the first frame of each 1/max_fps interval).

    Timestamps come from each frame's pts, so variable frame rate is kept as it is; frames without a
    pts get one extrapolated from the previous frame and the nominal rate.
    """
    path = Path(path)
    if not path.is_file():
        raise ClipError(f"{path}: no such file")
    if path.stat().st_size == 0:
        raise ClipError(f"{path}: empty file (0 bytes); fix: re-copy the video")
    frames: list[np.ndarray] = []
    stamps: list[float] = []
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ClipError(f"{path}: no video stream (audio-only or not a video); fix: remove or replace it")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            rate = float(stream.average_rate or stream.guessed_rate or 30)
            size: dict[str, int] = {}
            for frame in container.decode(stream):
                t = float(frame.time) if frame.time is not None else (stamps[-1] + 1 / rate if stamps else 0.0)
                # A stream whose size changes mid-way is scaled to its first frame's size.
                size = size or {"width": frame.width, "height": frame.height}
                frames.append(frame.to_ndarray(format="rgb24", **size))
                stamps.append(t)
    except ClipError:
        raise
    except (av.error.FFmpegError, ValueError, OSError) as e:
        if not frames:
            raise ClipError(f"{path}: cannot decode ({type(e).__name__}: {e}); fix: re-encode or replace the file") from None
        # A truncated file still yields its intact frames; anything after the damage is lost.
        raise ClipError(
            f"{path}: decoding failed after {len(frames)} frames ({type(e).__name__}: {e}); "
            f"fix: re-encode or replace the file"
        ) from None
    if not frames:
        raise ClipError(f"{path}: no decodable frames; fix: re-encode or replace the file")
    # Decoders emit frames in display order, but AVI carries no presentation timestamps: with
    # B-frames the pts arrive permuted. Sorting restores them without touching the frame order.
    t = np.sort(np.asarray(stamps, dtype=np.float64))
    t -= t[0]
    keep = np.arange(len(frames))
    if max_fps is not None:
        bins = np.floor(t * max_fps + 1e-6).astype(np.int64)
        keep = np.flatnonzero(np.r_[True, bins[1:] != bins[:-1]])
    return DecodedVideo(np.stack([frames[i] for i in keep]), t[keep].astype(np.float32), rate)
