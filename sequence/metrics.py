"""Per-state metrics with scikit-learn, each beside the majority-class baseline it must beat."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score


def state_metrics(y_true: np.ndarray, y_pred: np.ndarray, levels: int, majority_level: int) -> dict:
    """Metrics of one state. `majority_level` is the most frequent level of the *training* split:
    always predicting it is the baseline (a real classifier, unlike the evaluated split's own rate)."""
    labels = list(range(levels))
    per_level = f1_score(y_true, y_pred, labels=labels, average=None, zero_division=0)
    low_high_true, low_high_pred = (y_true >= levels // 2).astype(int), (y_pred >= levels // 2).astype(int)
    majority_pred = np.full_like(y_true, majority_level)
    return {
        "n": int(len(y_true)),
        "accuracy": float(accuracy_score(y_true, y_pred)),
        "macro_f1": float(f1_score(y_true, y_pred, labels=labels, average="macro", zero_division=0)),
        "weighted_f1": float(f1_score(y_true, y_pred, labels=labels, average="weighted", zero_division=0)),
        "per_level_f1": [float(v) for v in per_level],
        "confusion": confusion_matrix(y_true, y_pred, labels=labels).tolist(),
        "majority_level": int(majority_level),
        "majority_accuracy": float(accuracy_score(y_true, majority_pred)),
        "majority_macro_f1": float(f1_score(y_true, majority_pred, labels=labels, average="macro", zero_division=0)),
        # The literature's two-level variant: levels 0-1 ("low") against 2-3 ("high").
        "binary_accuracy": float(accuracy_score(low_high_true, low_high_pred)),
        "binary_macro_f1": float(f1_score(low_high_true, low_high_pred, labels=[0, 1], average="macro",
                                          zero_division=0)),
    }


def evaluate(y_true: np.ndarray, probs: dict[str, np.ndarray], states: list[str], levels: int,
             majority: dict[str, int]) -> dict[str, dict]:
    """{state: metrics} from (N, S) true levels and per-state (N, levels) probabilities."""
    return {s: state_metrics(y_true[:, i], probs[s].argmax(1), levels, majority[s]) for i, s in enumerate(states)}


def majority_levels(train_y: np.ndarray, states: list[str], levels: int) -> dict[str, int]:
    return {s: int(np.bincount(train_y[:, i], minlength=levels).argmax()) for i, s in enumerate(states)}


def mean_over_states(metrics: dict[str, dict], key: str) -> float:
    return float(np.mean([m[key] for m in metrics.values()]))
