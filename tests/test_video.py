"""PyAV decoding on real encoded files: variable frame rate, odd sizes, the fps cap, bad files."""

from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest

from embed.errors import ClipError
from embed.sample import write_video
from embed.video import VideoStream
from tests.frames import decode_video


def _write(path, pts_ms, width=64, height=48, pix_fmt="yuv420p"):
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = width, height, pix_fmt
        s.codec_context.time_base = Fraction(1, 1000)
        rng = np.random.default_rng(0)
        for t in pts_ms:
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (height, width, 3), dtype=np.uint8), format="rgb24")
            frame.pts, frame.time_base = t, Fraction(1, 1000)
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def test_variable_frame_rate_keeps_real_timestamps(tmp_path):
    pts = [0, 33, 100, 133, 300, 333, 700]
    _write(tmp_path / "vfr.mp4", pts)
    v = decode_video(tmp_path / "vfr.mp4")
    np.testing.assert_allclose(v.timestamps, np.asarray(pts) / 1000, atol=2e-3)


def test_odd_frame_size(tmp_path):
    _write(tmp_path / "odd.mp4", range(0, 200, 33), width=97, height=73, pix_fmt="yuv444p")
    v = decode_video(tmp_path / "odd.mp4")
    assert v.frames.shape == (7, 73, 97, 3) and v.frames.dtype == np.uint8


def test_max_fps_cap(tmp_path):
    rng = np.random.default_rng(1)
    write_video(
        tmp_path / "v.avi", (rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(30)), 30, width=64, height=48
    )
    full, capped = decode_video(tmp_path / "v.avi"), decode_video(tmp_path / "v.avi", max_fps=10)
    assert len(full.frames) == 30 and len(capped.frames) == 10
    np.testing.assert_allclose(np.diff(capped.timestamps), 0.1, atol=2e-3)
    np.testing.assert_array_equal(capped.frames[1], full.frames[3])


@pytest.mark.parametrize("content, message", [(b"", "empty file"), (b"not a video at all\n" * 20, "cannot decode")])
def test_bad_files_raise_clip_errors_naming_the_file(tmp_path, content, message):
    path = tmp_path / "bad clip é.avi"
    path.write_bytes(content)
    with pytest.raises(ClipError, match=message) as e:
        decode_video(path)
    assert str(path) in str(e.value) and "\n" not in str(e.value)


def test_chunks_hold_a_memory_budget_not_a_frame_count():
    """A chunk holds at most chunk_bytes of frames: larger pictures come in fewer frames a chunk, and
    the frames and their timestamps are those of the frame-count chunks, in order."""
    footage = Path(__file__).parents[1] / "data" / "footage" / "single_face.mp4"  # 72 frames of 640x360
    frame_bytes = 640 * 360 * 3
    by_count = list(VideoStream(footage, chunk_frames=64))
    by_budget = list(VideoStream(footage, chunk_frames=64, chunk_bytes=10 * frame_bytes + 1))
    assert [len(c) for c in by_count] == [64, 8]
    assert [len(c) for c in by_budget] == [10] * 7 + [2]
    assert [c.start for c in by_budget] == list(range(0, 72, 10))
    for field in ("frames", "timestamps"):
        joined = [np.concatenate([getattr(c, field) for c in chunks]) for chunks in (by_budget, by_count)]
        np.testing.assert_array_equal(*joined)
    tiny = list(VideoStream(footage, chunk_frames=64, chunk_bytes=1))  # never less than a frame
    assert len(tiny) == 72 and all(len(c) == 1 for c in tiny)


def test_a_live_source_far_behind_keeps_its_newest_chunk_and_its_end(tmp_path):
    """A live consumer that reads only once its decoder has finished gets the newest chunk, up to the
    video's last frame, then the end; every other frame is counted dropped (the end displaces no chunk)."""
    from embed.decode_ahead import decode_ahead

    rng = np.random.default_rng(2)
    frames = (rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(30))
    write_video(tmp_path / "v.avi", frames, 10, width=64, height=48)
    stream = VideoStream(tmp_path / "v.avi", 4)
    for _, chunks in decode_ahead([stream], depth=1, live=True):
        chunks.ahead.thread.join()  # the decoder has handed over every chunk and the end
        got = list(chunks)
    assert [len(c) for c in got] == [2] and stream.dropped == 28
    np.testing.assert_allclose(got[0].timestamps, [2.8, 2.9], atol=2e-3)
