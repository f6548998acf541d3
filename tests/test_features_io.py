"""Features from anywhere: OpenFace CSVs and video_features .npy folders imported through the
real CLI, trained on, exported to HDF5/npy and read back with h5py/numpy alone, imported again; and
stage two fusing several stores of one dataset."""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch
import zarr

from embed.errors import ClipError
from embed.importers import FeatureFile, get_importer
from sequence.fusion import align
from tests.conftest import last_json, run_cli
from tests.feature_files import STATES, featureless_dataset, openface_rows, write_openface_csv

SPLITS = {"Train": 24, "Validation": 8, "Test": 8}
FAST = ["--epochs", "4", "--batch", "8", "--quiet", "--device", "cpu", "--json"]
OLD = {"s1--clip004", "s2--clip011"}  # made by a pre-2.0 OpenFace: no gaze_angle_*, no eye landmarks
CUT = "s0--clip003"  # its CSV ends in the middle of a row
MISSING = "s2--clip020"  # no CSV at all
BY_ID = "s0--clip006"  # its CSV is named after the clip id, not the video file


def _clip_file(root: Path, clip: str, info: dict) -> Path:
    return root / "openface" / ("batch2" if clip in OLD else "") / f"{clip if clip == BY_ID else info['stem']}.csv"


@pytest.fixture(scope="module")
def openface(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("features")
    clips = featureless_dataset(root, SPLITS)
    rng = np.random.default_rng(7)
    values = {}
    for clip, info in clips.items():
        if clip == MISSING:
            continue
        header, v = openface_rows(30, info["labels"]["Boredom"], rng, release="1.0" if clip in OLD else "2.2", faceless=(4,))
        path = write_openface_csv(_clip_file(root, clip, info), header, v)
        values[clip] = (header, v, path)
    cut = values[CUT][2]
    text = cut.read_text()
    cut.write_text(text[: len(text) - len(text.splitlines()[-1]) // 2 - 1])  # half the last row, no newline
    (root / "openface" / "notes.csv").write_text("frame, timestamp\n1, 0.0\n")  # named after no clip
    manifest = root / "data_manifest.yaml"
    proc = run_cli("import", "openface", str(root / "openface"), "--manifest", str(manifest), "--json", "--quiet", check=1)
    return {
        "root": root,
        "manifest": manifest,
        "clips": clips,
        "values": values,
        "proc": proc,
        "report": last_json(proc.stdout),
    }


def test_openface_csvs_import_with_old_releases_failed_tracking_and_a_cut_file(openface):
    report, values, clips = openface["report"], openface["values"], openface["clips"]
    # The cut CSV fails alone, naming the file and the line; everything else is complete.
    assert report["failed"] == 1 and [f["clip"] for f in report["failures"]] == [CUT]
    error = report["failures"][0]["error"]
    assert str(values[CUT][2]) in error and "line 31" in error and "fields" in error
    assert report["complete"] == len(clips) - 2
    assert report["missing_clips"] == [MISSING]
    assert report["unmatched_files"] == [str(openface["root"] / "openface" / "notes.csv")]
    # Default groups gaze, pose, au_r; the old release's files lack gaze_angle_*: left out for all, and said.
    assert report["dropped_columns"] == ["gaze_angle_x", "gaze_angle_y"]
    assert report["columns"] == (
        [f"gaze_{e}_{a}" for e in (0, 1) for a in "xyz"]
        + [f"pose_{k}{a}" for k in "TR" for a in "xyz"]
        + [c for c in values["s0--clip000"][0] if c.startswith("AU") and c.endswith("_r")]
    )
    assert report["dim"] == 29 == len(report["columns"])

    root = zarr.open_group(report["store"], mode="r")
    assert root.attrs["config"]["importer"] == "openface" and root.attrs["config"]["columns"] == report["columns"]
    for clip in ("s0--clip000", BY_ID, sorted(OLD)[0]):
        header, v, path = values[clip]
        g = root["clips"][clip]
        assert g.attrs["complete"] is True and g.attrs["split"] == clips[clip]["split"]
        assert g.attrs["source"]["path"] == str(path)
        emb = g["embeddings"][...]
        assert emb.dtype == np.float32 and emb.shape == (30, 29)
        col = {h: i for i, h in enumerate(header)}
        np.testing.assert_allclose(emb[:, report["columns"].index("pose_Tz")], v[:, col["pose_Tz"]], atol=1e-3)
        np.testing.assert_allclose(g["timestamps"][...], np.round(np.arange(30) / 30, 3), atol=1e-6)
        prob, boxes = g["face_prob"][...], g["boxes"][...]
        assert prob[4] == 0 and (np.delete(prob, 4) > 0.9).all()  # success 0: no face, like stage one
        assert np.isnan(boxes[4]).all()
        xs = v[0, [col[f"x_{i}"] for i in range(68)]]
        assert boxes[0, 0] == pytest.approx(xs.min(), abs=1e-3) and boxes[0, 2] == pytest.approx(xs.max(), abs=1e-3)
    cut = root["clips"][CUT]
    assert cut.attrs["complete"] is False and "line 31" in cut.attrs["error"]


def test_a_reimport_skips_unchanged_files_and_redoes_changed_ones(openface, tmp_path):
    root = tmp_path / "copy"
    shutil.copytree(openface["root"], root, copy_function=shutil.copy2)
    manifest = root / "data_manifest.yaml"
    manifest.write_text(manifest.read_text().replace(str(openface["root"]), str(root)))
    first = last_json(
        run_cli(
            "import", "openface", str(root / "openface"), "--manifest", str(manifest), "--json", "--quiet", check=1
        ).stdout
    )
    assert first["imported"] == len(openface["clips"]) - 2 and first["skipped"] == 0
    header, v, _ = openface["values"][CUT]
    write_openface_csv(root / "openface" / f"{openface['clips'][CUT]['stem']}.csv", header, v)  # repaired
    changed = "s0--clip000"
    v2 = openface["values"][changed][1].copy()
    v2[:, header.index("pose_Tz")] += 1000
    write_openface_csv(root / "openface" / f"{openface['clips'][changed]['stem']}.csv", header, v2)
    again = last_json(
        run_cli("import", "openface", str(root / "openface"), "--manifest", str(manifest), "--json", "--quiet").stdout
    )
    assert again["failed"] == 0 and again["imported"] == 2 and again["skipped"] == len(openface["clips"]) - 3
    assert again["store"] == first["store"] and again["complete"] == len(openface["clips"]) - 1
    emb = zarr.open_group(again["store"], mode="r")["clips"][changed]["embeddings"][...]
    np.testing.assert_allclose(emb[:, again["columns"].index("pose_Tz")], v2[:, header.index("pose_Tz")], atol=1e-3)
    # A wrong folder (no file of the format at all) is one line naming it and the format, exit 2.
    stores = sorted((root / "cache").rglob("*.zarr"))
    (root / "empty").mkdir()
    proc = run_cli("import", "openface", str(root / "empty"), "--manifest", str(manifest), "--quiet", check=2)
    assert proc.stderr.strip().splitlines() == [
        f"error: {root / 'empty'}: no openface feature file in it (OpenFace 2 FeatureExtraction CSVs, one "
        "<video>.csv per clip); fix: pass the folder (or file) the tool wrote its output to, or the --format "
        "that matches it"
    ]
    assert sorted((root / "cache").rglob("*.zarr")) == stores


def test_bad_rows_fail_their_clip_with_file_and_line(tmp_path):
    imp = get_importer("openface")()
    header, v = openface_rows(12, 1, np.random.default_rng(0))
    good = write_openface_csv(tmp_path / "good.csv", header, v)
    assert imp.read(FeatureFile("good", good)).values.shape == (12, 31)  # gaze_angle_* too
    lines = good.read_text().splitlines()

    def broken(name: str, new_lines: list[str]) -> str:
        path = tmp_path / f"{name}.csv"
        path.write_text("\n".join(new_lines) + "\n")
        with pytest.raises(ClipError) as e:
            imp.read(FeatureFile(name, path))
        assert str(path) in str(e.value) and "fix:" in str(e.value)
        return str(e.value)

    fields = lines[5].split(", ")
    fields[header.index("AU04_r")] = "n/a"
    assert "line 6: column 'AU04_r' is 'n/a', not a number" in broken("nan", lines[:5] + [", ".join(fields)] + lines[6:])
    swapped = lines[:3] + [lines[4], lines[3]] + lines[5:]
    assert "line 5: frame 3 after frame 4: rows out of order" in broken("order", swapped)
    assert "line 8: 3 fields, the header has" in broken("short", lines[:7] + ["1, 2, 3"] + lines[8:])
    assert "no 'confidence' column" in broken("other", ["frame, timestamp, x", "1, 0.0, 3"])
    stuck = [lines[0]] + [
        ", ".join([f if h != "timestamp" else "0.000" for h, f in zip(header, row.split(", "), strict=True)])
        for row in lines[1:]
    ]
    assert "timestamps that do not advance; fix: pass --fps" in broken("stuck", stuck)
    (tmp_path / "stuck.csv").write_text("\n".join(stuck) + "\n")
    times = get_importer("openface")(fps=25.0).read(FeatureFile("stuck", tmp_path / "stuck.csv")).timestamps
    np.testing.assert_allclose(times, np.arange(12) / 25.0, atol=1e-6)


def test_openface_store_trains_exports_and_comes_back_equal(openface, tmp_path):
    from embed.manifest import load_manifest
    from sequence.config import parse_config
    from sequence.experiment import train_run

    manifest = str(openface["manifest"])
    # In-process (the CLI's train on imported stores is the fused test's): the store trains unchanged.
    result = train_run(
        load_manifest(openface["manifest"]),
        parse_config({"backbone": "openface", "head": "fc", "epochs": 4, "batch": 8, "device": "cpu"}, "test"),
        progress=False,
    )
    run = Path(result["run"])
    assert set(result["test"]) == set(STATES) and all(m["n"] == SPLITS["Test"] for m in result["test"].values())
    assert json.loads((run / "store.json").read_text())["path"] == openface["report"]["store"]
    data = json.loads((run / "data.json").read_text())
    # The videos were never here: every clip is "missing on disk", yet its features train.
    assert data["clips"] == {
        "Train": SPLITS["Train"] - 2,
        "Validation": SPLITS["Validation"],
        "Test": SPLITS["Test"],
    }  # CUT and MISSING (both Train) have no features

    out = tmp_path / "openface.h5"
    exported = last_json(
        run_cli(
            "export",
            "--manifest",
            manifest,
            "--backbone",
            "openface",
            "--format",
            "hdf5",
            "--out",
            str(out),
            "--json",
            "--quiet",
        ).stdout
    )
    assert exported["clips"] == len(openface["clips"]) - 2
    store = zarr.open_group(openface["report"]["store"], mode="r")
    with h5py.File(out, "r") as h5:
        assert h5.attrs["format"] == "affectseq-export/1"
        assert json.loads(h5.attrs["config"])["columns"] == openface["report"]["columns"]
        assert sorted(h5["clips"]) == sorted(k for k, g in store["clips"].groups() if g.attrs["complete"] is True)
        for clip in ("s0--clip000", sorted(OLD)[0]):
            g, z = h5["clips"][clip], store["clips"][clip]
            for name in ("embeddings", "timestamps", "face_prob", "boxes"):
                np.testing.assert_array_equal(g[name][...], z[name][...])
            assert g.attrs["split"] == openface["clips"][clip]["split"] and g.attrs["frames"] == 30
            assert {s: int(g.attrs[f"label_{s}"]) for s in STATES} == openface["clips"][clip]["labels"]

    back = last_json(
        run_cli("import", "hdf5", str(out), "--manifest", manifest, "--name", "openface_back", "--json", "--quiet").stdout
    )
    assert back["complete"] == exported["clips"] and back["columns"] == openface["report"]["columns"]
    again = zarr.open_group(back["store"], mode="r")
    for clip, g in store["clips"].groups():
        if g.attrs["complete"] is not True:
            assert clip not in again["clips"]
            continue
        h = again["clips"][clip]
        assert h.attrs["split"] == g.attrs["split"] and h.attrs["frames"] == g.attrs["frames"]
        for name in ("embeddings", "timestamps", "face_prob", "boxes"):
            a, b = g[name][...], h[name][...]
            assert a.dtype == b.dtype
            np.testing.assert_array_equal(a, b)

    folder = tmp_path / "npy"
    run_cli(
        "export",
        "--manifest",
        manifest,
        "--backbone",
        "openface",
        "--format",
        "npy",
        "--out",
        str(folder),
        "--split",
        "Test",
        "--quiet",
    )
    rows = list(csv.DictReader(io.StringIO((folder / "index.csv").read_text())))
    tests = sorted(c for c, i in openface["clips"].items() if i["split"] == "Test" and c != MISSING)
    assert [r["clip"] for r in rows] == tests and all(r["split"] == "Test" for r in rows)
    for r in rows:
        assert {s: int(r[s]) for s in STATES} == openface["clips"][r["clip"]]["labels"]
        np.testing.assert_array_equal(np.load(folder / f"{r['clip']}.npy"), store["clips"][r["clip"]]["embeddings"][...])
        np.testing.assert_allclose(
            np.load(folder / f"{r['clip']}_timestamps_ms.npy"),
            store["clips"][r["clip"]]["timestamps"][...] * 1000,
            rtol=1e-6,
        )


def _video_features(root: Path, clips: dict, features: dict[str, int], frames: int = 10, fps: float = 10.0):
    """video_features' layout: <out>/<feature>/<video>_<feature>.npy with _timestamps_ms / _fps companions."""
    rng = np.random.default_rng(3)
    for clip, info in clips.items():
        for feature, dim in features.items():
            folder = root / feature
            folder.mkdir(parents=True, exist_ok=True)
            v = rng.normal(info["labels"]["Engagement"], 0.3, (frames, dim)).astype(np.float32)
            if clip == "s0--clip000" and feature == next(iter(features)):
                v[2] = np.nan  # a frame the tool could not compute
            np.save(folder / f"{info['stem']}_{feature}.npy", v)
            np.save(folder / f"{info['stem']}_timestamps_ms.npy", np.arange(frames) * 1000.0 / fps)
            np.save(folder / f"{info['stem']}_fps.npy", np.array(fps))


def test_a_video_features_folder_imports_and_fuses_with_openface(openface, tmp_path):
    manifest = str(openface["manifest"])
    src = tmp_path / "vf"
    clips = {c: i for c, i in openface["clips"].items() if c != "s1--clip001"}  # one clip only OpenFace has
    _video_features(src, clips, {"rgb": 6, "flow": 4})
    two = run_cli("import", "npy", str(src), "--manifest", manifest, "--name", "i3d", check=2)
    assert "several features (flow, rgb)" in two.stderr and "--columns" in two.stderr
    report = last_json(
        run_cli(
            "import", "npy", str(src), "--manifest", manifest, "--name", "i3d", "--columns", "rgb,flow", "--json", "--quiet"
        ).stdout
    )
    assert report["dim"] == 10 and report["columns"] == ["rgb:6", "flow:4"]
    assert report["missing_clips"] == ["s1--clip001"] and report["complete"] == len(clips)
    g = zarr.open_group(report["store"], mode="r")["clips"]["s0--clip000"]
    np.testing.assert_allclose(g["timestamps"][...], np.arange(10) / 10.0, atol=1e-6)
    assert g["face_prob"][2] == 0 and (np.delete(g["face_prob"][...], 2) == 1).all()

    # Fused with OpenFace (30 fps against 10): the timeline is the 10-fps stream's, each of its frames
    # joined with OpenFace's nearest one; the input is both parts side by side.
    result = last_json(
        run_cli(
            "train", "--manifest", manifest, "--backbone", "openface,i3d", "--head", "fc", *FAST, module="sequence"
        ).stdout
    )
    run = Path(result["run"])
    assert "openface+i3d" in run.name
    store = json.loads((run / "store.json").read_text())
    assert [p["config"]["backbone"] for p in store["parts"]] == ["openface", "i3d"]
    assert store["config"]["dim"] == 29 + 10
    assert torch.load(run / "model.pt", weights_only=True)["input_dim"] == 39
    data = json.loads((run / "data.json").read_text())
    assert data["not_in_every_store"] == {"s1--clip001": ["i3d"], CUT: ["openface"], MISSING: ["openface"]}
    assert data["clips"]["Train"] == SPLITS["Train"] - 3
    rows = list(csv.DictReader(io.StringIO(run_cli("runs", "--manifest", manifest, "--csv", module="sequence").stdout)))
    fused = [r for r in rows if r["run"] == run.name]
    assert fused and fused[0]["backbone"] == "openface,i3d" and fused[0]["dim"] == "39"
    # In-process from here (each CLI start costs seconds of imports; the CLI paths are tested elsewhere).
    from embed.errors import ConfigError
    from sequence.experiment import EvaluateOptions, evaluate_run
    from sequence.predict import PredictOptions, predict_video

    assert evaluate_run(EvaluateOptions(run, manifest, device="cpu"))["test"] == result["test"]  # parts found again
    # A part imported from another tool cannot be computed from a video: predict says so.
    with pytest.raises(ConfigError, match="'openface' was imported from openface files.*fix:"):
        predict_video(PredictOptions(str(tmp_path / "any.mp4"), run, device="cpu"))


def test_alignment_takes_the_coarser_stream_and_masks_what_a_part_lacks():
    fine = np.arange(30) / 30.0
    coarse = np.arange(10) / 10.0 + 0.01  # 10 fps, 10 ms later
    fine_prob = np.ones(30, np.float32)
    fine_prob[9] = 0  # no face in the fine stream at 0.3 s
    rows, ts, prob = align([(fine, fine_prob), (coarse, np.ones(10, np.float32))])
    np.testing.assert_array_equal(ts, coarse.astype(np.float32))
    np.testing.assert_array_equal(rows[1], np.arange(10))
    np.testing.assert_array_equal(rows[0], np.arange(0, 30, 3))  # nearest fine frame to each coarse one
    assert prob[3] == 0 and (np.delete(prob, 3) == 1).all()
    # A part with a gap: coarse frames farther than half a coarse frame from any of its frames are masked.
    gap = np.concatenate([fine[:12], fine[21:]])
    _, _, prob = align([(gap, np.ones(len(gap), np.float32)), (coarse, np.ones(10, np.float32))])
    assert list(np.flatnonzero(prob == 0)) == [5, 6]


def test_a_run_fused_from_two_backbones_predicts_a_video_as_it_was_trained(tiny_embedded, tmp_path):
    """stream_video embeds each frame with both backbones from one decode and detection, joined in the
    run's order: a clip predicted from its video gets the probabilities the run gave it from the cache."""
    from embed.manifest import load_manifest
    from sequence.config import parse_config
    from sequence.experiment import train_run
    from sequence.predict import PredictOptions, predict_video
    from tests.conftest import copy_tiny

    manifest = copy_tiny(tiny_embedded, tmp_path, with_cache=True)
    run_cli(
        "run", "--manifest", str(manifest), "--backbone", "resnet18", "--weights", "random", "--device", "cpu", "--quiet"
    )
    cfg = parse_config(
        {
            "backbone": "fer2013,resnet18",
            "weights": "fer2013,random",
            "head": "fc",
            "epochs": 2,
            "batch": 2,
            "device": "cpu",
        },
        "test",
    )
    result = train_run(load_manifest(manifest), cfg, progress=False)
    run = Path(result["run"])
    assert torch.load(run / "model.pt", weights_only=True)["input_dim"] == 128 + 512
    rows = [r for r in csv.DictReader(io.StringIO((run / "predictions.csv").read_text())) if r["split"] == "Test"]
    clip = rows[0]["clip"]
    video = next((tmp_path / "data").glob(f"DataSet/Test/*/{clip}/{clip}.*"))
    predicted = predict_video(PredictOptions(str(video), run, "fer2013,random", device="cpu"))
    assert predicted["windows"] == 1
    for s in STATES:
        np.testing.assert_allclose(
            predicted["states"][s]["probs"], [float(rows[0][f"{s}_p{k}"]) for k in range(4)], atol=2e-4
        )
