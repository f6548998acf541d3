"""`sequence tune` on the built-in sample: a study on two dask workers, a second call that adds trials,
the best settings as a grid `experiments` runs, the Test split scored for the best trial alone, and a
killed tuning that resumes with no trial lost or counted twice."""

import json
import os
import signal
import subprocess
from pathlib import Path

import optuna
import pytest
import yaml
from optuna.trial import TrialState

from tests import zygote
from tests.conftest import last_json, run_cli

ROOT = Path(__file__).parents[1]
STATES = {"Boredom", "Engagement", "Confusion", "Frustration"}


def _study(manifest: Path, name: str):
    url = f"sqlite:///{manifest.parent / 'runs' / 'sample' / 'optuna.db'}"
    return optuna.load_study(study_name=name, storage=url)


def _metrics(run: str) -> dict:
    return json.loads((Path(run) / "metrics.json").read_text())


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_a_study_on_two_workers_grows_and_its_best_grid_runs(sample_embedded):
    m = str(sample_embedded)
    first = run_cli(
        "tune",
        str(ROOT / "configs/tune_sample.yaml"),
        "--manifest",
        m,
        "--trials",
        "6",
        "--workers",
        "2",
        "--json",
        module="sequence",
        timeout=800,
    )
    out = last_json(first.stdout)
    assert len(out["trials"]) == 6 and out["retried"] == []
    assert first.stderr.count("Test split, scored once") == 1
    study = _study(sample_embedded, "tune_sample")
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(study.trials) == len(finished) == 6
    # Every trial is an ordinary finished run folder, validated but never tested, but the best.
    runs = [r for t in finished for r in t.user_attrs["runs"]]
    assert len(set(runs)) == 6
    best = out["test"]["run"]
    assert best == study.best_trial.user_attrs["runs"][0] and out["test"]["new"]
    for r in runs:
        assert bool(_metrics(r)["test"]) == (r == best), r
    assert set(_metrics(best)["test"]) == STATES
    for name in ("trials_csv", "best_grid", "seeds_grid", "history_png", "importance_png"):
        assert Path(out["outputs"][name]).stat().st_size > 0, name

    second = last_json(
        run_cli(
            "tune", str(ROOT / "configs/tune_sample.yaml"), "--manifest", m, "--trials", "2", "--json", module="sequence"
        ).stdout
    )
    study = _study(sample_embedded, "tune_sample")
    assert [t.number for t in study.trials] == list(range(8))
    assert [t["number"] for t in second["trials"]] == [6, 7]
    # The Test split is scored once per best trial: an unchanged best is not scored again.
    assert second["test"]["new"] == (second["best"]["number"] != out["best"]["number"])

    grid = Path(second["outputs"]["best_grid"])
    assert yaml.safe_load(grid.read_text())["base"] == {k: v for k, v in second["best"]["config"].items() if k != "device"}
    run_cli("experiments", str(grid), "--manifest", m, "--quiet", module="sequence")
    # The grid's run has exactly the best trial's settings: `runs` groups the two as seeds of one row.
    rows = json.loads(run_cli("runs", "--manifest", m, "--json", module="sequence").stdout)
    best_name = Path(second["test"]["run"]).name
    assert any(r["run"] == f"{best_name} (+1 runs)" for r in rows), [r["run"] for r in rows]


def _space(tmp_path: Path) -> Path:
    path = tmp_path / "small.yaml"
    path.write_text(
        "base: {dataset: sample, backbone: fer2013, frames: 20, epochs: 6, head: fc}\n"
        "space:\n  lr: {low: 1.0e-3, high: 1.0e-2, log: true}\n  head_params.dropout: {low: 0.0, high: 0.5}\n"
    )
    return path


@pytest.mark.timeout(600)
def test_a_killed_tuning_resumes_with_no_trial_lost_or_counted_twice(sample_embedded, tmp_path):
    space, m = _space(tmp_path), str(sample_embedded)
    args = ["tune", str(space), "--manifest", m, "--trials", "4"]
    proc = zygote.Process("sequence", args, stderr=subprocess.PIPE, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    seen = []
    for line in proc.stderr:  # killed while its second trial trains (the first has finished)
        seen.append(line)
        if "trial 1 started" in line:
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    proc.stderr.close()
    assert proc.returncode == -signal.SIGKILL, "".join(seen)
    study = _study(sample_embedded, "small")
    assert [t.state for t in study.trials] == [TrialState.COMPLETE, TrialState.RUNNING]
    cut = study.trials[1]

    out = last_json(run_cli("tune", str(space), "--manifest", m, "--trials", "3", "--json", module="sequence").stdout)
    assert out["retried"] == [1]
    study = _study(sample_embedded, "small")
    states = [t.state for t in study.trials]
    assert states[1] == TrialState.FAIL and states.count(TrialState.FAIL) == 1
    finished = [t for t in study.trials if t.state in (TrialState.COMPLETE, TrialState.PRUNED)]
    assert len(finished) == 1 + 3
    retry = next(t for t in finished if t.user_attrs.get("retry_of") == 1)
    assert retry.params == cut.params and retry.number == 2  # run first, with the cut trial's settings
    runs = [r for t in finished for r in t.user_attrs["runs"]]
    assert len(set(runs)) == 4 and all((Path(r) / "metrics.json").is_file() for r in runs)
    listed = json.loads(run_cli("runs", "--manifest", m, "--json", module="sequence").stdout)
    assert sorted(r["run"] for r in listed) == sorted(Path(r).name for r in runs)


def test_cross_validation_folds_by_subject(sample_embedded):
    m = str(sample_embedded)
    args = ["--manifest", m, "--backbone", "fer2013", "--head", "fc", "--frames", "30", "--epochs", "6", "--cv", "3"]
    out = last_json(run_cli("train", *args, "--json", "--quiet", module="sequence").stdout)
    assert [f["fold"] for f in out["folds"]] == [1, 2, 3]
    subjects = out["fold_subjects"]
    assert all(subjects) and sum(len(s) for s in subjects) == len(set().union(*subjects)) == 8  # no subject twice
    pooled = set()
    for f in out["folds"]:
        data = json.loads((Path(f["run"]) / "data.json").read_text())
        assert data["fold"]["train"] + data["fold"]["validation"] == 120
        assert _metrics(f["run"])["test"] == {}  # the Test split stays untouched by the folds
        validation = {r for r in (Path(f["run"]) / "predictions.csv").read_text().splitlines()[1:]}
        clips = {line.split(",")[1] for line in validation}
        assert not clips & pooled
        pooled |= clips
    assert len(pooled) == 120
    for state, figures in out["summary"].items():
        f1 = figures["macro_f1"]
        assert f1["low"] <= f1["mean"] <= f1["high"], state
    final = out["final"]
    assert (
        set(final["test"]) == set(out["summary"])
        and json.loads((Path(final["run"]) / "data.json").read_text())["clips"]["Train"] == 120
    )
    assert yaml.safe_load((Path(final["run"]) / "config.yaml").read_text())["epochs"] == out["epochs"]


def test_tuning_with_cross_validation_scores_trials_on_folds_and_tests_the_final_model(sample_embedded, tmp_path):
    space, m = _space(tmp_path), str(sample_embedded)
    out = last_json(
        run_cli(
            "tune", str(space), "--manifest", m, "--trials", "2", "--cv", "2", "--json", "--quiet", module="sequence"
        ).stdout
    )
    study = _study(sample_embedded, "small")
    for t in study.trials:
        assert len(t.user_attrs["runs"]) == 2  # one run per fold, each validated on its own fold
        assert all(_metrics(r)["test"] == {} for r in t.user_attrs["runs"])
    final = out["test"]["run"]
    assert final not in [r for t in study.trials for r in t.user_attrs["runs"]]
    data = json.loads((Path(final) / "data.json").read_text())
    assert data["clips"]["Train"] == 120 and data["final"] and set(_metrics(final)["test"]) == set(STATES)
    # A study tuned with folds cannot be continued without them: its scores would not compare.
    refused = run_cli("tune", str(space), "--manifest", m, "--trials", "1", module="sequence", check=2)
    assert "--cv 2" in refused.stderr and "fix:" in refused.stderr


def test_a_study_in_postgresql_is_shared_by_dask_workers_and_a_later_call(sample_embedded, tmp_path):
    """Machines that share one database tune one study: here a real PostgreSQL server on loopback, two
    dask worker processes reporting to it, then a second call adding a trial. No SQLite file is made."""
    from tests.postgres import postgres_server

    space, m = _space(tmp_path), str(sample_embedded)
    with postgres_server() as url:
        args = ["tune", str(space), "--manifest", m, "--storage", url, "--quiet", "--json"]
        first = last_json(run_cli(*args, "--trials", "2", "--workers", "2", module="sequence").stdout)
        second = last_json(run_cli(*args, "--trials", "1", module="sequence").stdout)
        study = optuna.load_study(study_name="small", storage=url)
        assert [t.number for t in study.trials] == [0, 1, 2]
        assert all(t.state in (TrialState.COMPLETE, TrialState.PRUNED) for t in study.trials)
    assert first["storage"] == second["storage"] == url
    assert not (sample_embedded.parent / "runs" / "sample" / "optuna.db").exists()
