"""Per-state metrics with scikit-learn, each beside the majority-class baseline it must beat."""

from __future__ import annotations

import warnings

import numpy as np
from sklearn.metrics import (
    accuracy_score,
    balanced_accuracy_score,
    cohen_kappa_score,
    confusion_matrix,
    f1_score,
    matthews_corrcoef,
)

# The figures that get a bootstrap interval (sequence.uncertainty) and a mean ± sd over seeds.
INTERVAL_METRICS = ("accuracy", "macro_f1", "balanced_accuracy", "qwk", "mcc")


def state_metrics(y_true: np.ndarray, y_pred: np.ndarray, levels: int, majority_level: int) -> dict:
    """Metrics of one state. `majority_level` is the most frequent level of the *training* split:
    always predicting it is the baseline (a real classifier, unlike the evaluated split's own rate)."""
    with warnings.catch_warnings():
        # A level missing from a small split, or one answer for every clip, is expected here; the
        # figures are defined for it (0 or the sklearn convention) and need no warning on every epoch.
        warnings.simplefilter("ignore", UserWarning)
        return _state_metrics(y_true, y_pred, levels, majority_level)


def _state_metrics(y_true: np.ndarray, y_pred: np.ndarray, levels: int, majority_level: int) -> dict:
    labels = list(range(levels))
    per_level = f1_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    low_high_true, low_high_pred = (y_true >= levels // 2).astype(int), (y_pred >= levels // 2).astype(int)
    majority_pred = np.full_like(y_true, majority_level)
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        # Mean recall over the levels present: always answering the majority level scores 1/levels
        # present, however skewed the split (DAiSEE's Frustration: 79 % accuracy, 0.25 balanced).
        "balanced_accuracy": _balanced_accuracy(y_true, y_pred),
        # The levels are ordered: quadratic weighted kappa charges a 0-for-3 more than a 2-for-3, and
        # is 0 for chance agreement (and for any constant answer).
        "qwk": _qwk(y_true, y_pred, labels),
        "mcc": float(matthews_corrcoef(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
        "per_level_f1": [float(v) for v in per_level],
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "majority_level": int(majority_level),
        "majority_accuracy": float(accuracy_score(y_true, majority_pred)),
        "majority_macro_f1": float(f1_score(y_true, majority_pred, labels=labels, average="macro", zero_division=0)),
        # The literature's two-level variant: levels 0-1 ("low") against 2-3 ("high").
        "binary_accuracy": float(accuracy_score(low_high_true, low_high_pred)),
        "binary_macro_f1": float(f1_score(low_high_true, low_high_pred, labels=[0, 1], average="macro", zero_division=0)),
    }


def _balanced_accuracy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(balanced_accuracy_score(y_true, y_pred)) if len(y_true) else 0.0


def _qwk(y_true: np.ndarray, y_pred: np.ndarray, labels: list[int]) -> float:
    """0 where kappa is undefined (truth and answers one and the same level: no disagreement was
    possible, so nothing beyond chance was shown)."""
    return float(cohen_kappa_score(y_true, y_pred, labels=labels, weights="quadratic", replace_undefined_by=0.0))


def evaluate(
    y_true: np.ndarray, probs: dict[str, np.ndarray], states: list[str], levels: int, majority: dict[str, int]
) -> dict[str, dict]:
    """{state: metrics} from (N, S) true levels and per-state (N, levels) probabilities."""
    return {s: state_metrics(y_true[:, i], probs[s].argmax(1), levels, majority[s]) for i, s in enumerate(states)}


def majority_levels(train_y: np.ndarray, states: list[str], levels: int) -> dict[str, int]:
    return {s: int(np.bincount(train_y[:, i], minlength=levels).argmax()) for i, s in enumerate(states)}


def mean_over_states(metrics: dict[str, dict], key: str) -> float:
    return float(np.mean([m[key] for m in metrics.values()]))


def by_subject(rows: list[dict], states: list[str], levels: int) -> list[dict]:
    """Per test subject, from predictions.csv rows: clips, and each state's accuracy and macro-F1.
    Which students the model reads well, and which it does not (a figure averaged over a split hides
    a subject it fails on entirely)."""
    out = []
    for subject in sorted({r["subject"] for r in rows}):
        mine = [r for r in rows if r["subject"] == subject]
        row: dict = {"subject": subject, "clips": len(mine)}
        for s in states:
            t = np.array([int(r[f"{s}_true"]) for r in mine])
            p = np.array([int(r[f"{s}_pred"]) for r in mine])
            row[f"{s}_accuracy"] = round(float(accuracy_score(t, p)), 4)
            row[f"{s}_macro_f1"] = round(
                float(f1_score(t, p, labels=list(range(levels)), average="macro", zero_division=0)), 4
            )
        out.append(row)
    return out
