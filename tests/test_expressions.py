"""fer2013's expression track on real faces: `embed expressions` through its CLI, the astronaut's
smile, faceless frames, and videos stored sideways with a display rotation."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import torch
import zarr
from skimage import data
from torchvision.ops import box_iou

from embed.backbones.fer2013 import EXPRESSIONS
from embed.detector import FaceDetector
from embed.sample import write_video
from tests.conftest import last_json, run_cli, write_manifest
from tests.footage import DEFAULT_DIR
from tests.frames import decode_video, track_frames
from tests.rotated import stored_sideways


def _rows(path: Path) -> list[dict]:
    return list(csv.DictReader(path.open()))


def test_expressions_of_real_footage_with_a_faceless_stretch(tmp_path):
    out = last_json(
        run_cli(
            "expressions", str(DEFAULT_DIR / "face_noface.mov"), "--out", str(tmp_path / "e"), "--device", "cpu", "--json"
        ).stdout
    )
    rows = _rows(Path(out["csv"]))
    assert list(rows[0]) == ["time", "frame", "face", *EXPRESSIONS]
    assert len(rows) == out["frames"] == 169 and [int(r["frame"]) for r in rows] == list(range(169))
    face = np.array([r["face"] == "1" for r in rows])
    # The frames with a face are those the face track of the whole video in memory finds (tests.frames).
    whole = track_frames(FaceDetector(), decode_video(DEFAULT_DIR / "face_noface.mov").frames).probs > 0
    np.testing.assert_array_equal(face, whole)
    assert out["faces"] == face.sum() and 0 < face.sum() < len(rows)
    # The face leaves and does not come back: a face stretch, then frames without one.
    assert face[: face.sum()].all() and not face[face.sum() :].any()
    for r in rows:
        if r["face"] == "0":
            assert all(r[e] == "" for e in EXPRESSIONS)  # no face, no probabilities
        else:
            assert abs(sum(float(r[e]) for e in EXPRESSIONS) - 1) < 1e-3
    mean = {e: np.mean([float(r[e]) for r in rows if r["face"] == "1"]) for e in EXPRESSIONS}
    assert max(abs(out["mean"][e] - mean[e]) for e in EXPRESSIONS) < 1e-4  # rounded to 4 places, the CSV to 5
    times = [float(r["time"]) for r in rows]
    assert times[0] == 0 and all(b > a for a, b in zip(times, times[1:], strict=False))
    assert Path(out["png"]).read_bytes()[:4] == b"\x89PNG"
    assert out["weights"] == "fer2013:sha256:59534287fdfb125e" and out["rotation"] == 0
    assert sorted(p.name for p in (tmp_path / "e").iterdir()) == ["expressions.csv", "expressions.png"]


def test_the_astronaut_smiles_on_every_frame_of_a_still_video(tmp_path):
    video = tmp_path / "astronaut.mp4"
    write_video(video, [data.astronaut()] * 12, 10, width=512, height=512)
    out = last_json(run_cli("expressions", str(video), "--out", str(tmp_path / "e"), "--device", "cpu", "--json").stdout)
    rows = _rows(Path(out["csv"]))
    assert out["faces"] == out["frames"] == len(rows) == 12
    assert min(float(r["happy"]) for r in rows) > 0.9 and max(out["mean"], key=out["mean"].get) == "happy"


def test_a_video_without_a_face_is_one_line_and_leaves_no_files(tmp_path):
    proc = run_cli("expressions", str(DEFAULT_DIR / "no_face.mp4"), "--out", str(tmp_path / "e"), "--device", "cpu", check=2)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "no_face.mp4: no face found in any of its 95 frames; fix:" in lines[0], proc.stderr
    assert not list((tmp_path / "e").iterdir())


def test_a_phone_video_stored_sideways_is_embedded_upright(tmp_path):
    """Real footage stored as phones store portrait video (pixels turned 90 degrees, the turn back in the
    container's display matrix) gives the faces, boxes (display coordinates) and expressions of the
    same footage stored upright, and its clips record the rotation applied."""
    root = tmp_path / "data"
    root.mkdir()
    upright = stored_sideways(DEFAULT_DIR / "single_face.mp4", root / "upright.mp4", 0)
    stored_sideways(DEFAULT_DIR / "single_face.mp4", root / "sideways.mp4", 90)
    stored_sideways(DEFAULT_DIR / "single_face.mp4", root / "upside_down.mp4", 180)
    (root / "labels.csv").write_text(
        "path,split,Boredom,Engagement,Confusion,Frustration\n"
        + "".join(f"{n}.mp4,Train,0,2,0,0\n" for n in ("upright", "sideways", "upside_down"))
    )
    manifest = write_manifest(tmp_path / "m.yaml", {"phone": {"layout": "csv", "root": "data", "csv": "labels.csv"}})
    run_cli("run", "--manifest", str(manifest), "--backbone", "fer2013", "--device", "cpu", "--quiet")
    info = last_json(run_cli("info", "--manifest", str(manifest), "--backbone", "fer2013", "--json").stdout)
    clips = zarr.open_group(info["store"], mode="r")["clips"]
    ref = clips["upright"]
    assert ref.attrs["rotation"] == 0 and ref.attrs["faces"] == len(upright) == 72
    ref_boxes, ref_emb = ref["boxes"][...], ref["embeddings"][...].astype(np.float32)
    assert (ref_boxes[:, 2] <= 640).all() and (ref_boxes[:, 3] <= 360).all()
    for name, turned in (("sideways", 270), ("upside_down", 180)):
        clip = clips[name]
        assert clip.attrs["complete"] and clip.attrs["rotation"] == turned
        assert clip.attrs["faces"] == 72
        iou = np.diag(box_iou(torch.as_tensor(clip["boxes"][...]), torch.as_tensor(ref_boxes)).numpy())
        assert iou.min() > 0.85
        emb = clip["embeddings"][...].astype(np.float32)
        cos = (emb * ref_emb).sum(1) / np.linalg.norm(emb, axis=1) / np.linalg.norm(ref_emb, axis=1)
        assert cos.min() > 0.9, cos.min()
    # The expression track of the sideways file reads what the upright file reads.
    tracks = {
        n: last_json(
            run_cli("expressions", str(root / f"{n}.mp4"), "--out", str(tmp_path / n), "--device", "cpu", "--json").stdout
        )
        for n in ("upright", "sideways")
    }
    assert tracks["sideways"]["rotation"] == 270 and tracks["upright"]["rotation"] == 0
    p = {n: np.array([[float(r[e]) for e in EXPRESSIONS] for r in _rows(Path(t["csv"]))]) for n, t in tracks.items()}
    assert np.abs(p["sideways"] - p["upright"]).mean() < 0.02
    assert (p["sideways"].argmax(1) == p["upright"].argmax(1)).mean() > 0.9
    assert max(tracks["sideways"]["mean"], key=tracks["sideways"]["mean"].get) == "happy"  # he smiles
