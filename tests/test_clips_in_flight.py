"""`embed run --clips-in-flight N`: several clips embedded at once through one model stage leave the
stores the one-clip-at-a-time run leaves (real footage of different sizes and lengths, faces leaving
and entering, a video without a face, a truncated file), and a run killed with clips in flight
resumes to the same stores."""

from __future__ import annotations

import shutil
import signal
from pathlib import Path

import numpy as np
import pytest

from embed.sample import write_video
from tests.closeness import assert_same_frames
from tests.conftest import last_json, run_cli, write_manifest
from tests.embed_runs import RUN, clip_states, read_clips, start_run, wait_for
from tests.frames import decode_video

FOOTAGE = Path(__file__).parents[1] / "data" / "footage"
VIDEOS = ["single_face.mp4", "face_noface.mov", "noface_face.mov", "WolfgangLanger_Pexels.mp4", "no_face.mp4"]
# --max-fps 5 keeps a sixth of the frames: the same code paths at a sixth of the CPU.
OPTS = [*RUN, "--max-fps", "5", "--json"]


def _dataset(root: Path) -> Path:
    """The footage, a truncated copy of one video, and a manifest whose cache is under root."""
    videos = root / "videos"
    videos.mkdir(parents=True)
    for v in VIDEOS:
        shutil.copy(FOOTAGE / v, videos / v)
    # An interrupted copy: an AVI declares its frame count up front and decodes what is there.
    cut = videos / "cut.avi"
    write_video(cut, iter(decode_video(FOOTAGE / "single_face.mp4").frames), 30, width=640, height=360)
    data = cut.read_bytes()
    cut.write_bytes(data[: len(data) * 7 // 10])
    assert 0 < len(decode_video(cut, allow_truncated=True).frames) < 72
    names = [*VIDEOS, "cut.avi"]
    (root / "labels.csv").write_text(
        "path,split,Boredom,Engagement,Confusion,Frustration\n" + "".join(f"videos/{n},Train,1,2,0,1\n" for n in names)
    )
    return write_manifest(root / "m.yaml", {"footage": {"layout": "csv", "root": str(root), "csv": "labels.csv"}})


def _store(manifest: Path) -> Path:
    info = run_cli("info", "--manifest", str(manifest), "--backbone", "fer2013", "--max-fps", "5", "--json")
    return Path(last_json(info.stdout)["store"])


def _relative(error: str) -> str:
    """An error line with its video's path relative to the dataset (each test has its own copy)."""
    return error.split("/videos/", 1)[-1]


def _run(manifest: Path, in_flight: int, *extra: str, check: int = 0) -> dict:
    proc = run_cli("run", "--manifest", str(manifest), *OPTS, "--clips-in-flight", str(in_flight), *extra, check=check)
    return last_json(proc.stdout)


def _clips(store: Path) -> dict[str, dict]:
    """read_clips, with each error's video path relative to its dataset."""
    out = read_clips(store)
    for clip in out.values():
        if clip["attrs"].get("error"):
            clip["attrs"]["error"] = _relative(clip["attrs"]["error"])
    return out


def _assert_same_stores(got: Path, ref: Path, leave_out: str | None = None) -> None:
    mine, theirs = _clips(got), _clips(ref)
    theirs.pop(leave_out, None)
    assert sorted(mine) == sorted(theirs)
    for cid, r in theirs.items():
        m = mine[cid]
        for key in ("complete", "frames", "error", "truncated", "rotation"):
            assert m["attrs"].get(key) == r["attrs"].get(key), (cid, key)
        if r["attrs"].get("complete"):
            np.testing.assert_array_equal(m["timestamps"], r["timestamps"])
            # MTCNN's and the CNN's batches hold other clips' frames too: float rounding differs.
            assert_same_frames(m, r, label=cid)


@pytest.fixture(scope="module")
def serial(tmp_path_factory) -> dict:
    """The footage embedded one clip at a time (the reference), then with --allow-truncated."""
    manifest = _dataset(tmp_path_factory.mktemp("serial"))
    first = _run(manifest, 1, check=1)
    store = _store(manifest)
    snapshot = store.parent / "after-first-run"
    shutil.copytree(store, snapshot)
    second = _run(manifest, 1, "--allow-truncated", check=1)
    return {"first": first, "second": second, "store": store, "snapshot": snapshot}


@pytest.mark.slow
def test_clips_in_flight_leave_the_stores_one_clip_at_a_time_leaves(serial, tmp_path):
    manifest = _dataset(tmp_path)
    first = _run(manifest, 3, check=1)
    ref = serial["first"]
    assert (first["clips_in_flight"], ref["clips_in_flight"]) == (3, 1)
    assert (first["embedded"], first["failed"], first["frames"]) == (ref["embedded"], ref["failed"], ref["frames"])
    assert first["embedded"] == 4 and first["failed"] == 2  # no face in no_face.mp4; cut.mov truncated
    errors = {f["clip"]: _relative(f["error"]) for f in first["failures"]}
    assert errors == {f["clip"]: _relative(f["error"]) for f in ref["failures"]}
    assert "no face found" in errors["videos--no_face"] and "truncated" in errors["videos--cut"]
    store = _store(manifest)
    _assert_same_stores(store, serial["snapshot"])

    second = _run(manifest, 3, "--allow-truncated", check=1)
    assert second["truncated"] == serial["second"]["truncated"] == ["videos--cut"]
    assert second["embedded"] == 1 and second["skipped"] == 4
    _assert_same_stores(store, serial["store"])


@pytest.mark.slow
def test_a_run_killed_with_clips_in_flight_resumes_to_the_same_stores(serial, tmp_path):
    manifest = _dataset(tmp_path)
    labels = tmp_path / "labels.csv"
    labels.write_text("".join(f"{line}\n" for line in labels.read_text().splitlines() if "cut.avi" not in line))
    store = _store(manifest)
    proc = start_run(manifest, "--max-fps", "5", "--clips-in-flight", "3")
    # Killed once one clip is complete, while others are being written.
    wait_for(lambda: any(clip_states(store).values()), proc, "a clip completed")
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    states = clip_states(store)
    assert 1 <= sum(states.values()) < 4 and len(states) >= 2, states
    out = _run(manifest, 3, check=1)
    assert out["embedded"] + out["skipped"] == 4 and out["failed"] == 1 and out["skipped"] == sum(states.values())
    _assert_same_stores(store, serial["snapshot"], leave_out="videos--cut")
