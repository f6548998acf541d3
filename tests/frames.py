"""Whole short videos in memory, and their face track in one go: what tests and benches compare the
streaming pipeline with (stage one itself only ever streams)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embed.detector import FaceDetector
from embed.tracking import FaceTrack, StreamTracker
from embed.video import VideoStream


@dataclass
class DecodedVideo:
    frames: np.ndarray  # (T, H, W, 3) uint8 RGB
    timestamps: np.ndarray  # (T,) float32 seconds from the stream start
    fps: float  # nominal rate from the container (informational; timestamps are the truth)


def decode_video(path: str | Path, max_fps: float | None = None, allow_truncated: bool = False) -> DecodedVideo:
    """Every frame of a (short) video: VideoStream's chunks joined."""
    stream = VideoStream(path, max_fps=max_fps, allow_truncated=allow_truncated)
    chunks = list(stream)
    return DecodedVideo(
        np.concatenate([c.frames for c in chunks]), np.concatenate([c.timestamps for c in chunks]), stream.fps
    )


def track_frames(detector: FaceDetector, frames: np.ndarray) -> FaceTrack:
    """The face track of frames held in memory: the streamed tracker fed them as one chunk."""
    stream = StreamTracker(detector, batch_frames=len(frames) + 1)
    parts = [c for c in (stream.push(0, frames, np.zeros(len(frames), np.float32)), stream.finish()) if c]
    return FaceTrack(np.concatenate([c.track.boxes for c in parts]), np.concatenate([c.track.probs for c in parts]))
