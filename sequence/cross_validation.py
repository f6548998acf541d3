"""Subject-wise cross-validation of one configuration: a run folder per fold (Train and Validation
pooled and re-cut by subject, sequence.folds), each figure's mean over folds with its interval, then
the final model trained on every pooled clip for the folds' epoch count and tested once."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from embed.manifest import Manifest
from sequence.config import TrainConfig
from sequence.experiment import DataMemo, RunPlan, load_for, train_run
from sequence.folds import Fold, final_fold, pooled_folds
from sequence.metrics import INTERVAL_METRICS, mean_over_states
from sequence.runs import write_json
from sequence.uncertainty import SIGNED

log = logging.getLogger(__name__)
FoldCallback = Callable[[int, float], bool]  # (fold number, mean validation macro-F1 so far) -> stop


def make_folds(
    manifest: Manifest, cfg: TrainConfig, k: int, memo: DataMemo | None = None
) -> tuple[list[Fold], dict[str, str | None]]:
    """The k subject-wise folds of the configuration's dataset (seeded by its seed), and each clip's
    subject."""
    data, report = load_for(manifest, cfg, memo)
    return pooled_folds(data, report.subject_of, k=k, seed=cfg.seed), report.subject_of


def mean_f1(results: list[dict]) -> float:
    """Runs' validation macro-F1 (each the mean over its states), averaged: what selection maximises."""
    return float(np.mean([mean_over_states(r["validation"], "macro_f1") for r in results]))


def run_folds(
    manifest: Manifest,
    cfg: TrainConfig,
    folds: list[Fold],
    *,
    progress: bool = True,
    memo: DataMemo | None = None,
    note: dict | None = None,
    on_fold: FoldCallback | None = None,
    command: str | None = None,
) -> list[dict]:
    """One run per fold, Test unscored. `on_fold` sees the mean validation macro-F1 after each fold
    and returns True to stop there (a tuner's pruning)."""
    memo = {} if memo is None else memo
    results = []
    for fold in folds:
        log.info(
            "fold %d/%d: %d clips trained on, %d validated", fold.number, fold.of, len(fold.train), len(fold.validation)
        )
        plan = RunPlan(fold=fold, test=False, note={**(note or {})})
        run = train_run(manifest, cfg, progress=progress, memo=memo, command=command, plan=plan)
        results.append({**run, "fold": fold.number})
        if on_fold is not None and on_fold(fold.number, mean_f1(results)):
            break
    return results


def t_interval(values: list[float], bounds: tuple[float, float] = (0.0, 1.0)) -> dict:
    """{"mean", "low", "high", "sd"}: the mean over folds with its 95 % Student-t interval, kept within
    the figure's `bounds` (folds share training clips, so the interval is, if anything, too narrow:
    Bengio & Grandvalet 2004)."""
    from scipy import stats

    v = np.asarray(values, dtype=np.float64)
    mean = float(v.mean())
    sd = float(v.std(ddof=1)) if len(v) > 1 else 0.0
    half = float(stats.t.ppf(0.975, len(v) - 1) * sd / np.sqrt(len(v))) if len(v) > 1 else 0.0
    low, high = max(bounds[0], mean - half), min(bounds[1], mean + half)
    return {"mean": round(mean, 4), "low": round(low, 4), "high": round(high, 4), "sd": round(sd, 4)}


def summarise(results: list[dict], states: list[str]) -> dict:
    """{state: {metric: {"mean", "low", "high", "sd"}}} over the folds' validation figures, the
    majority baseline's accuracy among them."""
    out = {}
    for s in states:
        out[s] = {
            k: t_interval([r["validation"][s][k] for r in results], (-1.0, 1.0) if k in SIGNED else (0.0, 1.0))
            for k in (*INTERVAL_METRICS, "majority_accuracy")
        }
    return out


def final_epochs(best_epochs: list[int]) -> int:
    """The final model's epoch count: the folds' median selected epoch (it has no validation split
    to stop on)."""
    return max(1, int(round(float(np.median(best_epochs)))))


def train_final(
    manifest: Manifest,
    cfg: TrainConfig,
    folds: list[Fold],
    epochs: int,
    *,
    progress: bool = True,
    memo: DataMemo | None = None,
    note: dict | None = None,
) -> dict:
    """The configuration trained on every pooled clip for `epochs`, tested once."""
    final_cfg = cfg.model_copy(update={"epochs": epochs, "select": "last"})
    plan = RunPlan(fold=final_fold(folds), test=True, note={**(note or {}), "final": True})
    return train_run(manifest, final_cfg, progress=progress, memo=memo, plan=plan)


def cross_validate(manifest: Manifest, cfg: TrainConfig, k: int, progress: bool = True) -> dict:
    """`sequence train --cv K`: fold runs, their summary, the final model, and a record of all in
    <runs>/<dataset>/cv-<time>.json. Returns {"folds", "summary", "epochs", "final", "record"}."""
    memo: DataMemo = {}
    name = f"cv-{time.strftime('%Y%m%d-%H%M%S')}"
    folds, subject_of = make_folds(manifest, cfg, k, memo=memo)
    results = run_folds(manifest, cfg, folds, progress=progress, memo=memo, note={"cv": name})
    summary = summarise(results, manifest.states)
    epochs = final_epochs([r["best_epoch"] for r in results])
    final = train_final(manifest, cfg, folds, epochs=epochs, progress=progress, memo=memo, note={"cv": name})
    dataset, _ = manifest.dataset(cfg.dataset)
    record = Path(manifest.runs_path) / dataset / f"{name}.json"
    out = {
        "folds": [{"fold": r["fold"], "run": r["run"], "best_epoch": r["best_epoch"]} for r in results],
        "fold_subjects": [sorted({str(subject_of.get(c)) for c in f.validation}) for f in folds],
        "summary": summary,
        "epochs": epochs,
        "final": {"run": final["run"], "test": final["test"]},
    }
    write_json(record, out)
    return {**out, "record": str(record)}
