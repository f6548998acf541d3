"""Stage two through its CLI (in this process: tests/test_cli_processes.py runs each command as a process)
on real caches embedded by stage one."""

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
import zarr

from tests.conftest import last_json, run_cli, write_manifest

STATES = ["Boredom", "Engagement", "Confusion", "Frustration"]
FAST = ["--epochs", "3", "--batch", "2", "--param", "hidden=8", "--quiet", "--device", "cpu"]


def _train(manifest, *args, check=0):
    return run_cli(
        "train", "--manifest", str(manifest), "--backbone", "fer2013", *FAST, *args, "--json", module="sequence", check=check
    )


@pytest.fixture(scope="module")
def tiny_run(tiny_embedded):
    proc = _train(tiny_embedded["manifest"])
    return {"proc": proc, "result": last_json(proc.stdout), **tiny_embedded}


def test_train_writes_a_complete_run_folder(tiny_run):
    result = tiny_run["result"]
    run = Path(result["run"])
    assert run.parent == tiny_run["manifest"].parent / "runs" / "tiny" and not run.name.endswith(".partial")
    names = {p.name for p in run.iterdir()}
    assert {
        "config.yaml",
        "store.json",
        "data.json",
        "history.json",
        "model.pt",
        "metrics.json",
        "curves.png",
        "command.txt",
        "predictions.csv",
        *(f"confusion_{s}.png" for s in STATES),
    } <= names
    for split in ("validation", "test"):
        assert set(result[split]) == set(STATES)
        for m in result[split].values():
            assert {
                "accuracy",
                "macro_f1",
                "weighted_f1",
                "per_level_f1",
                "confusion",
                "majority_accuracy",
                "binary_accuracy",
            } <= set(m)
            assert np.asarray(m["confusion"]).sum() == m["n"] == 2
    config = yaml.safe_load((run / "config.yaml").read_text())
    assert config["head"] == "lstm" and config["head_params"]["hidden"] == [8] and config["epochs"] == 3
    store = json.loads((run / "store.json").read_text())
    assert store["path"] == str(tiny_run["store"]) and store["key"] == tiny_run["info"]["key"]
    assert (run / "command.txt").read_text().startswith("python -m sequence train --manifest")
    assert (run / "curves.png").read_bytes()[:4] == b"\x89PNG"


def _predictions(run) -> list[dict]:
    return list(csv.DictReader(io.StringIO((Path(run) / "predictions.csv").read_text())))


def test_evaluate_from_the_run_folder_reproduces_every_clips_probabilities(tiny_run):
    run = tiny_run["result"]["run"]
    before = _predictions(run)
    # One row per validation and test clip, the true levels from the label files, probabilities that
    # argmax to the predicted level.
    assert [r["split"] for r in before] == ["Validation"] * 2 + ["Test"] * 2
    labels = {}
    for split in ("Validation", "Test"):
        text = (tiny_run["manifest"].parent / "data" / "tiny" / "Labels" / f"{split}Labels.csv").read_text()
        for row in csv.DictReader(io.StringIO(text)):
            labels[Path(row["ClipID"]).stem] = row
    for r in before:
        for s in STATES:
            assert int(r[f"{s}_true"]) == int(labels[r["clip"]][s if s != "Frustration" else "Frustration "])
            p = [float(r[f"{s}_p{k}"]) for k in range(4)]
            assert int(r[f"{s}_pred"]) == int(np.argmax(p))
    again = last_json(run_cli("evaluate", run, "--manifest", str(tiny_run["manifest"]), "--json", module="sequence").stdout)
    after = _predictions(run)
    assert [(r["split"], r["clip"]) for r in after] == [(r["split"], r["clip"]) for r in before]
    for a, b in zip(after, before, strict=True):
        for s in STATES:
            np.testing.assert_allclose(
                [float(a[f"{s}_p{k}"]) for k in range(4)], [float(b[f"{s}_p{k}"]) for k in range(4)], atol=1e-5
            )
    assert again["test"] == tiny_run["result"]["test"] and again["validation"] == tiny_run["result"]["validation"]


def test_training_is_deterministic_on_cpu_and_streaming_changes_nothing(tiny_run):
    # The second run streams its embeddings from the cache batch by batch (as for a cache larger
    # than memory): the same batches in the same order, so the very same parameters.
    other = last_json(_train(tiny_run["manifest"], "--stream").stdout)
    assert other["run"] != tiny_run["result"]["run"]
    assert json.loads((Path(other["run"]) / "data.json").read_text())["streamed"] is True
    assert json.loads((Path(tiny_run["result"]["run"]) / "data.json").read_text())["streamed"] is False
    assert other["test"] == tiny_run["result"]["test"]
    a = torch.load(Path(other["run"]) / "model.pt", weights_only=True)["state_dict"]
    b = torch.load(Path(tiny_run["result"]["run"]) / "model.pt", weights_only=True)["state_dict"]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_runs_table_lists_runs_with_the_right_columns(tiny_run):
    _train(tiny_run["manifest"], "--head", "fc", "--param", "hidden=16,8", "--frames", "5")
    out = run_cli("runs", "--manifest", str(tiny_run["manifest"]), "--csv", module="sequence").stdout
    rows = list(csv.DictReader(io.StringIO(out)))
    assert len(rows) >= 2
    assert list(rows[0])[:13] == [
        "run",
        "seeds",
        "dataset",
        "backbone",
        "weights",
        "train clips",
        "frames",
        "deltas",
        "dim",
        "batch",
        "epochs",
        "head",
        "loss",
    ]
    assert {f"{s[0]} {k}" for s in STATES for k in ("acc", "F1", "maj", "bal", "QWK", "MCC")} <= set(rows[0])
    fc = next(r for r in rows if r["head"].startswith("fc"))
    assert fc["head"] == "fc hidden 16/8 dropout 0.3 pool mean" and fc["frames"] == "5" and fc["dim"] == "128"
    assert fc["deltas"] == "no" and next(r for r in rows if r["head"].startswith("lstm"))["deltas"] == "yes"
    assert fc["train clips"] == "3" and fc["weights"] == "fer2013:sha256:59534287fdfb125e" and fc["backbone"] == "fer2013"
    md = run_cli("runs", "--manifest", str(tiny_run["manifest"]), "--markdown", module="sequence").stdout
    assert md.splitlines()[0].startswith("| run | seeds | dataset | backbone |") and len(md.splitlines()) == len(rows) + 2


def test_missing_and_unlabelled_clips_are_reported_not_fatal(tiny_embedded, tmp_path):
    src = tiny_embedded["manifest"].parent
    shutil.copytree(src / "data" / "tiny", tmp_path / "data")
    shutil.copytree(tiny_embedded["store"], tmp_path / "cache" / "tiny" / tiny_embedded["store"].name)
    labels = tmp_path / "data" / "Labels" / "TrainLabels.csv"
    lines = labels.read_text().splitlines()
    unlabelled = Path(lines[1].split(",")[0]).stem
    labels.write_text("\n".join([lines[0], *lines[2:]]) + "\n")
    (tmp_path / "data" / "Labels" / "AllLabels.csv").unlink()
    store = zarr.open_group(str(tmp_path / "cache" / "tiny" / tiny_embedded["store"].name), mode="a")
    missing = sorted(store["clips"].group_keys())[-1]  # a Test or Validation clip
    del store["clips"][missing]
    manifest = write_manifest(tmp_path / "m.yaml", {"tiny": {"layout": "daisee", "root": "data"}})
    proc = _train(manifest)
    data = json.loads((Path(last_json(proc.stdout)["run"]) / "data.json").read_text())
    assert data["unlabelled"] == [unlabelled]
    assert [missing] in data["missing_embeddings"].values()
    assert data["train_clips_used"] == 2
    assert "no complete embeddings" in proc.stderr and "no label row" in proc.stderr


def test_bad_options_exit_2_with_one_line(tiny_embedded):
    m = str(tiny_embedded["manifest"])
    proc = run_cli(
        "train", "--manifest", m, "--backbone", "fer2013", "--head", "lstm", "--param", "hiden=8", module="sequence", check=2
    )
    assert "head 'lstm' has no parameter 'hiden'; fix:" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    proc = run_cli("train", "--manifest", m, "--backbone", "resnet18", module="sequence", check=2)
    assert "no embedding store for backbone 'resnet18'" in proc.stderr and "fix: run `python -m embed run" in proc.stderr
    proc = run_cli("train", "--manifest", m, "--loss", "hinge", module="sequence", check=2)
    assert "key 'loss'" in proc.stderr
    proc = run_cli("evaluate", str(tiny_embedded["manifest"].parent), "--manifest", m, module="sequence", check=2)
    assert "not a finished run" in proc.stderr


def test_windows_scored_in_groups_equal_all_windows_at_once(tiny_run, monkeypatch):
    """predict scores a long video's overlapping windows a group at a time (memory set by the group,
    not the video's length): the probabilities must not depend on how windows are grouped, though
    each group pads to its own longest window. A 40-s video at 10 fps with faceless stretches."""
    from embed.cache import ClipData
    from sequence import windows
    from sequence.run import Run

    scorer = Run.open(tiny_run["result"]["run"]).scorer("cpu")
    rng = np.random.default_rng(0)
    t = np.arange(400, dtype=np.float32) / 10
    prob = np.where((t % 13) < 10, 0.99, 0.0).astype(np.float32)  # a face 10 s out of every 13
    emb = (rng.standard_normal((400, 128)) * (prob[:, None] > 0)).astype(np.float16)
    clip = ClipData(emb, t, prob, boxes=np.zeros((400, 4), np.float32))
    spans = windows.windows(t, 1.0, 0.5)
    monkeypatch.setattr(windows, "SCORE_WINDOWS", 10_000)
    kept_all, whole = windows.score_windows(clip, spans, scorer)
    monkeypatch.setattr(windows, "SCORE_WINDOWS", 7)
    kept, grouped = windows.score_windows(clip, spans, scorer)
    assert kept == kept_all and 7 * 3 < len(kept) < len(spans)  # several groups, and faceless windows left out
    for s in STATES:
        np.testing.assert_allclose(grouped[s], whole[s], atol=1e-5)
