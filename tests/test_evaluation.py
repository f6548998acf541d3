"""Honest evaluation: balanced accuracy, QWK and MCC; bootstrap intervals that resample
subjects; seeds aggregated; runs compared; subjects checked for leakage and reported one by one.
The training runs here are on imported per-frame features (no video to decode), through the real CLI."""

from __future__ import annotations

import csv
import io
import json
import logging
from pathlib import Path

import numpy as np
import pytest

from sequence.metrics import state_metrics
from sequence.uncertainty import confusions, figures, intervals, paired_difference
from tests.conftest import last_json, run_cli
from tests.feature_files import STATES, featureless_dataset

FAST = ["--head", "fc", "--epochs", "30", "--batch", "8", "--lr", "3e-3", "--quiet", "--device", "cpu", "--json"]


def test_new_metrics_against_hand_computed_values():
    # Confusion (rows true 0-3, columns predicted): [[1,1,0,0],[0,2,0,0],[0,0,0,1],[0,0,0,1]].
    y_true, y_pred = np.array([0, 0, 1, 1, 2, 3]), np.array([0, 1, 1, 1, 3, 3])
    m = state_metrics(y_true, y_pred, 4, majority_level=1)
    # Recall per level 1/2, 2/2, 0/1, 1/1 -> mean 0.625.
    assert m["balanced_accuracy"] == pytest.approx(0.625)
    # MCC: t = (2,2,1,1), p = (1,3,0,2), 4 correct of 6: (4*6 - t.p) / sqrt((36 - t.t)(36 - p.p)) = 14 / sqrt(26*22).
    assert m["mcc"] == pytest.approx(14 / np.sqrt(26 * 22))
    # QWK, weights (i-j)^2/9: observed cost 2/9 (two clips one level off); chance cost sum t_i p_j (i-j)^2 / (6*9)
    # = 90/54; kappa = 1 - (2/9)/(90/54) = 13/15.
    assert m["qwk"] == pytest.approx(13 / 15)
    # Always answering one level: balanced accuracy 1/levels present, QWK 0, MCC 0.
    const = state_metrics(y_true, np.full(6, 1), 4, majority_level=1)
    assert (const["balanced_accuracy"], const["qwk"], const["mcc"]) == (pytest.approx(0.25), 0.0, 0.0)
    # The batched confusion-matrix versions the bootstrap uses give the same figures.
    rng = np.random.default_rng(0)
    for _ in range(50):
        n = int(rng.integers(1, 30))
        t, p = rng.integers(0, 4, n), rng.integers(0, 4, n)
        f, ref = figures(confusions(t, p, np.ones((1, n)), levels=4)), state_metrics(t, p, 4, majority_level=0)
        for k, v in f.items():
            assert v[0] == pytest.approx(ref[k], abs=1e-12), k


def _sklearn_metrics(t: np.ndarray, p: np.ndarray, levels: int, majority: int) -> dict:
    """Every figure of state_metrics by scikit-learn's own functions: the definitions they follow."""
    import warnings

    from sklearn import metrics as sk

    labels = list(range(levels))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        always, lo_t, lo_p = np.full_like(t, majority), (t >= levels // 2).astype(int), (p >= levels // 2).astype(int)
        return {
            "n": len(t),
            "accuracy": sk.accuracy_score(t, p),
            "balanced_accuracy": sk.balanced_accuracy_score(t, p),
            "qwk": sk.cohen_kappa_score(t, p, labels=labels, weights="quadratic", replace_undefined_by=0.0),
            "mcc": sk.matthews_corrcoef(t, p),
            "macro_f1": sk.f1_score(t, p, labels=labels, average="macro", zero_division=0),
            "weighted_f1": sk.f1_score(t, p, labels=labels, average="weighted", zero_division=0),
            "per_level_f1": list(sk.f1_score(t, p, labels=labels, average=None, zero_division=0)),
            "confusion": sk.confusion_matrix(t, p, labels=labels).tolist(),
            "majority_level": majority,
            "majority_accuracy": sk.accuracy_score(t, always),
            "majority_macro_f1": sk.f1_score(t, always, labels=labels, average="macro", zero_division=0),
            "binary_accuracy": sk.accuracy_score(lo_t, lo_p),
            "binary_macro_f1": sk.f1_score(lo_t, lo_p, labels=[0, 1], average="macro", zero_division=0),
        }


def test_every_figure_is_scikit_learns_on_random_and_degenerate_answers():
    """state_metrics computes from one confusion matrix what scikit-learn's functions compute: on random
    answers, on splits missing levels, on one answer for every clip, on perfect answers, for 2-5 levels."""
    rng = np.random.default_rng(7)
    cases = []
    for _ in range(300):
        levels, n = int(rng.integers(2, 6)), int(rng.integers(1, 40))
        t = rng.integers(0, int(rng.integers(1, levels + 1)), n)  # often some levels never true
        kind = rng.integers(0, 4)
        p = {0: rng.integers(0, levels, n), 1: np.full(n, rng.integers(0, levels)), 2: t.copy()}.get(
            int(kind), rng.integers(0, 2, n)
        )
        cases.append((t, p, levels, int(rng.integers(0, levels))))
    for t, p, levels, majority in cases:
        ours, ref = state_metrics(t, p, levels, majority_level=majority), _sklearn_metrics(t, p, levels, majority=majority)
        assert set(ours) == set(ref)
        assert ours.pop("confusion") == ref.pop("confusion")
        for k, v in ref.items():
            assert ours[k] == pytest.approx(v, abs=1e-12), (k, t, p, levels)


def _predictions(subjects: int, per_subject: int, rng: np.random.Generator, by_subject: bool):
    """Test clips of `subjects` people: right 60 % of the time, either per clip or per person."""
    y = rng.integers(0, 4, subjects * per_subject)
    right = rng.random(subjects * per_subject) < 0.6
    if by_subject:  # each person's clips are all right or all wrong (a model that reads some people only)
        right = np.repeat(rng.random(subjects) < 0.6, per_subject)
    pred = np.where(right, y, (y + 1) % 4)
    groups = [f"p{i // per_subject}" for i in range(len(y))]
    return y, pred, groups


def test_intervals_hold_the_estimate_narrow_with_more_clips_and_resample_subjects():
    rng = np.random.default_rng(1)
    y, pred, groups = _predictions(10, 8, rng, by_subject=False)
    ci = intervals(y, pred, 4)
    point = state_metrics(y, pred, 4, majority_level=0)
    for k, (low, high) in ci.items():
        assert low <= point[k] <= high, k
    assert intervals(y, pred, 4) == ci  # seeded: a rerun prints the same interval
    more = intervals(np.tile(y, 4), np.tile(pred, 4), 4)
    for k in ci:
        assert more[k][1] - more[k][0] < 0.7 * (ci[k][1] - ci[k][0]), k
    # When a person's clips succeed or fail together, clips are not independent: resampling people
    # gives the honest, wider interval; resampling clips would claim a precision the data lacks.
    y, pred, groups = _predictions(10, 8, rng, by_subject=True)
    clip, subject = intervals(y, pred, 4), intervals(y, pred, 4, groups=groups)
    assert subject["accuracy"][1] - subject["accuracy"][0] > 1.5 * (clip["accuracy"][1] - clip["accuracy"][0])
    point = state_metrics(y, pred, 4, majority_level=0)["accuracy"]
    assert subject["accuracy"][0] <= point <= subject["accuracy"][1]


def test_paired_difference_tells_a_real_gap_from_noise():
    rng = np.random.default_rng(2)
    y = rng.integers(0, 4, 300)
    noisy = [np.where(rng.random(300) < 0.5, y, rng.integers(0, 4, 300)) for _ in range(3)]
    better = [np.where(rng.random(300) < 0.8, y, rng.integers(0, 4, 300)) for _ in range(3)]
    same = [np.where(rng.random(300) < 0.5, y, rng.integers(0, 4, 300)) for _ in range(3)]
    gap = paired_difference(y, noisy, better, levels=4)
    assert gap["accuracy"]["exceeds"] and gap["accuracy"]["ci"][0] > 0
    assert gap["accuracy"]["difference"] == pytest.approx(
        np.mean([np.mean(p == y) for p in better]) - np.mean([np.mean(p == y) for p in noisy]), abs=1e-4
    )
    assert not paired_difference(y, noisy, same, levels=4)["accuracy"]["exceeds"]


def _features(root: Path, clips: dict, frames: int = 10, dim: int = 8) -> Path:
    """<stem>.npy per clip: Boredom and Engagement readable from the features, the rest noise."""
    rng = np.random.default_rng(5)
    out = root / "npy"
    out.mkdir(parents=True, exist_ok=True)
    for info in clips.values():
        v = rng.normal(0, 1, (frames, dim))
        v[:, 0] += 2.0 * info["labels"]["Boredom"]
        v[:, 1] += 2.0 * info["labels"]["Engagement"]
        np.save(out / f"{info['stem']}.npy", v.astype(np.float32))
    return out


@pytest.fixture(scope="module")
def features(tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("evaluation")
    clips = featureless_dataset(root, {"Train": 36, "Validation": 12, "Test": 24}, seed=4, subjects=4)
    manifest = root / "data_manifest.yaml"
    run_cli("import", "npy", str(_features(root, clips)), "--manifest", str(manifest), "--fps", "10", "--quiet")
    return {"root": root, "manifest": manifest, "clips": clips}


def test_seeds_are_aggregated_grouped_and_compared(features):
    manifest = str(features["manifest"])
    proc = run_cli("train", "--manifest", manifest, "--backbone", "npy", "--seeds", "0,1,2", *FAST, module="sequence")
    out = last_json(proc.stdout)
    assert len(out["runs"]) == 3 and len(set(out["runs"])) == 3
    metrics = [json.loads((Path(r) / "metrics.json").read_text())["test"] for r in out["runs"]]
    for s in STATES:
        for k in ("accuracy", "macro_f1", "balanced_accuracy", "qwk", "mcc"):
            values = [m[s][k] for m in metrics]
            assert out["aggregate"]["test"][s][k]["mean"] == pytest.approx(np.mean(values), abs=1e-4)
            assert out["aggregate"]["test"][s][k]["sd"] == pytest.approx(np.std(values, ddof=1), abs=1e-4)
        # Every test figure has its interval, from the test subjects (the csv layout's subject column).
        m = metrics[0][s]
        assert m["ci_by"] == "subject" and set(m["ci"]) == {"accuracy", "macro_f1", "balanced_accuracy", "qwk", "mcc"}
        assert all(lo <= m[k] <= hi for k, (lo, hi) in m["ci"].items())
    assert "over 3 seeds (mean ± sd)" in proc.stderr
    learnt = np.mean([m["Boredom"]["accuracy"] for m in metrics]) - metrics[0]["Boredom"]["majority_accuracy"]
    assert learnt >= 0.2  # the features carry Boredom

    rows = json.loads(run_cli("runs", "--manifest", manifest, "--json", module="sequence").stdout)
    assert len(rows) == 1 and rows[0]["seeds"] == "0,1,2" and rows[0]["run"].endswith("(+2 runs)")
    assert rows[0]["B acc"]["mean"] == pytest.approx(np.mean([m["Boredom"]["accuracy"] for m in metrics]), abs=1e-3)
    text = run_cli("runs", "--manifest", manifest, "--csv", module="sequence").stdout
    assert " ± " in list(csv.DictReader(io.StringIO(text)))[0]["B acc"]

    # A run that barely trains (one epoch at lr 1e-6; in-process: the CLI's train is tested above)
    # against the seed group (any of its runs stands for it).
    from embed.manifest import load_manifest
    from sequence.config import parse_config
    from sequence.experiment import train_run

    weak = train_run(
        load_manifest(features["manifest"]),
        parse_config({"backbone": "npy", "head": "fc", "epochs": 1, "lr": 1e-6, "device": "cpu"}, "test"),
        progress=False,
    )
    cmp = run_cli("compare", weak["run"], out["runs"][1], "--manifest", manifest, "--json", module="sequence")
    result = last_json(cmp.stdout)
    assert result["a"] == [weak["run"]] and sorted(result["b"]) == sorted(out["runs"])
    assert result["unit"] == "subject" and "paired bootstrap" in result["method"] and result["clips"] == 24
    boredom = result["states"]["Boredom"]["accuracy"]
    assert boredom["b"] == pytest.approx(np.mean([m["Boredom"]["accuracy"] for m in metrics]), abs=1e-3)
    assert boredom["exceeds"] and boredom["ci"][0] > 0, result["states"]["Boredom"]
    assert "beyond chance" in cmp.stderr and "paired bootstrap" in cmp.stderr


def test_by_subject_figures_and_a_leaking_subject_is_named(features, tmp_path, caplog):
    manifest = str(features["manifest"])
    run = last_json(run_cli("train", "--manifest", manifest, "--backbone", "npy", *FAST, module="sequence").stdout)["run"]
    data = json.loads((Path(run) / "data.json").read_text())
    assert data["subjects"] == {
        "Test": ["te0", "te1", "te2", "te3"],
        "Train": ["tr0", "tr1", "tr2", "tr3"],
        "Validation": ["va0", "va1", "va2", "va3"],
    }
    assert data["leaking_subjects"] == {}
    out = last_json(run_cli("evaluate", run, "--manifest", manifest, "--by-subject", "--json", module="sequence").stdout)
    rows = list(csv.DictReader(io.StringIO(Path(out["by_subject_csv"]).read_text())))
    assert [r["subject"] for r in rows] == ["te0", "te1", "te2", "te3"] and sum(int(r["clips"]) for r in rows) == 24
    preds = [r for r in csv.DictReader(io.StringIO((Path(run) / "predictions.csv").read_text())) if r["split"] == "Test"]
    mine = [p for p in preds if p["subject"] == "te1"]
    acc = np.mean([p["Boredom_true"] == p["Boredom_pred"] for p in mine])
    assert float(rows[1]["Boredom_accuracy"]) == pytest.approx(acc, abs=1e-4)
    assert Path(out["by_subject_png"]).read_bytes()[:4] == b"\x89PNG"

    # A tree where a Train subject also appears in Test: a warning naming the subject, and data.json says so.
    root = tmp_path / "leaky"
    clips = featureless_dataset(root, {"Train": 12, "Validation": 4, "Test": 4}, seed=4, subjects=2, leak="Test")
    run_cli(
        "import",
        "npy",
        str(_features(root, clips)),
        "--manifest",
        str(root / "data_manifest.yaml"),
        "--fps",
        "10",
        "--quiet",
    )
    from embed.manifest import load_manifest
    from sequence.config import parse_config
    from sequence.experiment import train_run

    with caplog.at_level(logging.WARNING, logger="sequence.data"):
        run = train_run(
            load_manifest(root / "data_manifest.yaml"),
            parse_config({"backbone": "npy", "head": "fc", "epochs": 1, "device": "cpu"}, "test"),
            progress=False,
        )["run"]
    warned = [r.getMessage() for r in caplog.records if "leakage" in r.getMessage()]
    assert len(warned) == 1 and "subject tr0 is in Test and Train" in warned[0]
    assert json.loads((Path(run) / "data.json").read_text())["leaking_subjects"] == {"tr0": ["Test", "Train"]}


def test_select_and_train_clips_decide_the_kept_epoch_and_the_subset(features):
    """--select picks the epoch kept by its own score; --train-clips a seeded subset of Train."""
    from embed.manifest import load_manifest
    from sequence.config import parse_config
    from sequence.experiment import train_run

    m = load_manifest(features["manifest"])
    base = {
        "backbone": "npy",
        "head": "fc",
        "epochs": 8,
        "batch": 8,
        "lr": 3e-3,
        "patience": 8,
        "device": "cpu",
        "train_clips": 20,
    }
    runs = {
        select: Path(train_run(m, parse_config({**base, "select": select}, "test"), progress=False)["run"])
        for select in ("loss", "accuracy")
    }
    for select, run in runs.items():
        history = json.loads((run / "history.json").read_text())
        metrics = json.loads((run / "metrics.json").read_text())
        score = [-h["val_loss"] if select == "loss" else h["val_accuracy"] for h in history]
        assert metrics["best_epoch"] == history[int(np.argmax(score))]["epoch"]  # the first best, as kept
        assert metrics["train_clips"] == 20 and json.loads((run / "data.json").read_text())["train_clips_used"] == 20
    # The subset is drawn by the seed alone: the same 20 clips for seed 0 each time, others for seed 1.
    from sequence.data import FramePolicy, to_tensors, train_subset

    rng = np.random.default_rng(0)
    arrays = [
        (rng.normal(size=(5, 4)).astype(np.float16), np.ones(5, np.float32), np.arange(5, dtype=np.float32))
        for _ in range(36)
    ]
    full = to_tensors(arrays, FramePolicy(), np.zeros((36, 4), np.int64), clip_ids=[f"c{i}" for i in range(36)])
    a, b, c = (train_subset(full, 20, seed).clip_ids for seed in (0, 0, 1))
    assert a == b != c and len(set(a)) == 20 and set(a) <= set(full.clip_ids)


def test_an_interval_is_never_zero_width_at_0_or_100_percent():
    """32 of 32 right (or wrong): every bootstrap resample agrees, and a percentile interval would
    read 1.00 [1.00, 1.00]. The exact binomial interval on the independent units says how few they
    were: 32 clips, or only 3 subjects (a far wider interval)."""
    from scipy.stats import beta

    y = np.array([0, 1, 2, 3] * 8)
    right, wrong = intervals(y, y, 4), intervals(y, (y + 1) % 4, 4)
    # Clopper-Pearson by its definition: the 2.5 % quantile of Beta(k, n - k + 1), here k = n = 32.
    assert right["accuracy"] == [round(float(beta.ppf(0.025, 32, 1)), 4), 1.0]
    assert wrong["accuracy"] == [0.0, round(float(beta.ppf(0.975, 1, 32)), 4)]
    for m in ("accuracy", "macro_f1", "balanced_accuracy", "qwk", "mcc"):
        low, high = right[m]
        assert high == 1.0 and low < 1.0, (m, right[m])
    subjects = intervals(y, y, 4, groups=["a"] * 10 + ["b"] * 10 + ["c"] * 12)
    assert subjects["accuracy"] == [round(float(beta.ppf(0.025, 3, 1)), 4), 1.0]
    assert subjects["accuracy"][0] < right["accuracy"][0] - 0.5


def test_two_grids_compared_row_by_row(features, tmp_path):
    """Two grids of the same rows, one trained barely (the study's settings stand-in) and one properly:
    each `experiments` run records its grid's runs, and `compare-grids` sets them side by side row by
    row with the paired difference and its interval."""
    manifest = str(features["manifest"])
    rows = "experiments: [{frames: 20}, {frames: 0}]\n"
    weak, strong = tmp_path / "weak.yaml", tmp_path / "strong.yaml"
    weak.write_text("base: {backbone: npy, head: fc, epochs: 1, lr: 1.0e-6, device: cpu}\n" + rows)
    strong.write_text("base: {backbone: npy, head: fc, epochs: 30, batch: 8, lr: 3.0e-3, device: cpu}\n" + rows)
    for grid in (weak, strong):
        run_cli("experiments", str(grid), "--manifest", manifest, "--quiet", module="sequence")
    runs_dir = features["root"] / "runs" / "feats"
    record = json.loads((runs_dir / "grid-weak.json").read_text())
    assert set(record["experiments"]) == {"1", "2"}
    assert all(Path(r).is_dir() for e in record["experiments"].values() for r in e.values())
    proc = run_cli("compare-grids", str(weak), str(strong), "--manifest", manifest, "--json", module="sequence")
    out = last_json(proc.stdout)
    assert sorted(out["experiments"], key=int) == ["1", "2"]
    for k in ("1", "2"):
        boredom = out["experiments"][k]["states"]["Boredom"]["accuracy"]
        assert boredom["exceeds"] and boredom["ci"][0] > 0, (k, boredom)  # the features carry Boredom
        assert out["experiments"][k]["a"] == list(record["experiments"][k].values())
    assert "beyond chance" in proc.stderr
    # The records are files beside the run folders: `runs` never takes them for an unfinished run.
    listed = run_cli("runs", "--manifest", manifest, "--json", module="sequence")
    assert "grid-weak" not in listed.stdout + listed.stderr


@pytest.mark.slow
def test_a_grid_on_two_dask_workers_equals_the_serial_grid(features, tmp_path):
    """The same grid serially and as dask tasks on a local cluster of two workers on loopback: the same
    runs, the same test figures (seeded training); a configuration that cannot run fails alone."""
    manifest = str(features["manifest"])
    grid = tmp_path / "grid.yaml"
    grid.write_text(
        "base: {backbone: npy, head: fc, epochs: 6, batch: 8, lr: 3.0e-3, device: cpu}\n"
        "experiments: [{frames: 20}, {frames: 0}, {backbone: nothing}, {frames: 10, seed: 3}]\n"
    )
    record = features["root"] / "runs" / "feats" / "grid-grid.json"

    def figures(proc) -> dict:
        runs = json.loads(record.read_text())["experiments"]
        assert sorted(runs, key=int) == ["1", "2", "4"]
        assert "experiment 3 did not run" in proc.stderr and "no embedding store for backbone 'nothing'" in proc.stderr
        return {k: json.loads((Path(next(iter(r.values()))) / "metrics.json").read_text())["test"] for k, r in runs.items()}

    serial = figures(run_cli("experiments", str(grid), "--manifest", manifest, "--quiet", module="sequence", check=1))
    proc = run_cli(
        "experiments",
        str(grid),
        "--manifest",
        manifest,
        "--workers",
        "2",
        "--quiet",
        module="sequence",
        check=1,
        process=True,
    )
    assert "dask: 3 runs in" in proc.stderr and "http://127.0.0.1:" in proc.stderr
    on_dask = figures(proc)  # the record now names the cluster's runs: new folders, the same figures
    assert on_dask == serial
