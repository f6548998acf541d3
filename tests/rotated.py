"""Test helper: a video stored as phones store portrait recordings, its pixels turned and the turn
back recorded in the container's display matrix (the MP4 track header's `matrix`), which players
apply and FFmpeg reports per frame. PyAV cannot write a display matrix, so the 36 bytes of the
written file's `tkhd` box are set here (ISO/IEC 14496-12, 8.3.2)."""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from embed.sample import write_video
from tests.frames import decode_video

_ONE, _W = 0x10000, 0x40000000  # 16.16 and 2.30 fixed point
# A display matrix {a, b, u, c, d, v, x, y, w} that turns the stored pixels by `degrees` clockwise.
_MATRICES = {
    90: (0, _ONE, 0, -_ONE, 0, 0, 0, 0, _W),
    180: (-_ONE, 0, 0, 0, -_ONE, 0, 0, 0, _W),
    270: (0, -_ONE, 0, _ONE, 0, 0, 0, 0, _W),
}


def set_display_matrix(path: Path, degrees_clockwise: int) -> None:
    data = bytearray(path.read_bytes())
    at = data.find(b"tkhd")
    if at < 0:
        raise ValueError(f"{path}: no tkhd box")
    version = data[at + 4]
    # after the version/flags: times, track id, reserved, duration (32- or 64-bit), 8 reserved bytes,
    # layer, alternate group, volume, 2 reserved bytes; then the matrix
    offset = at + 4 + 4 + (28 if version == 0 else 40) + 8
    data[offset : offset + 36] = struct.pack(">9i", *_MATRICES[degrees_clockwise])
    path.write_bytes(bytes(data))


def stored_sideways(src: Path, dst: Path, degrees_clockwise: int = 90) -> np.ndarray:
    """Write src's frames turned by -degrees (as the sensor stored them) with a display matrix that
    turns them back; returns the upright frames as written (after one lossy encode, decoded)."""
    upright = decode_video(src).frames
    stored = np.ascontiguousarray(np.rot90(upright, k=degrees_clockwise // 90, axes=(1, 2)))
    write_video(dst, stored, 30, width=stored.shape[2], height=stored.shape[1])
    if degrees_clockwise % 360:
        set_display_matrix(dst, degrees_clockwise)
    return upright
