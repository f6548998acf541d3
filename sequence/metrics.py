"""Per-state metrics, each beside the majority-class baseline it must beat, all computed from
confusion matrices in numpy: one matrix per state and epoch, or (B, L, L) of them for the bootstrap's
resamples (sequence.uncertainty). They are scikit-learn's definitions, held to its functions by the
tests; calling scikit-learn itself, whose input validation costs about a millisecond a call, took
half of a short training's time (20 figures a state, every epoch) and has no batched form.
"""

from __future__ import annotations

import numpy as np

# The figures that get a bootstrap interval (sequence.uncertainty) and a mean ± sd over seeds.
INTERVAL_METRICS = ("accuracy", "macro_f1", "balanced_accuracy", "qwk", "mcc")


def confusions(y_true: np.ndarray, y_pred: np.ndarray, weights: np.ndarray, levels: int) -> np.ndarray:
    """(B, levels, levels) confusion matrices (rows true, columns predicted) of B weightings of the clips."""
    onehot = np.zeros((len(y_true), levels * levels), dtype=np.float64)
    onehot[np.arange(len(y_true)), np.asarray(y_true) * levels + np.asarray(y_pred)] = 1.0
    return (np.asarray(weights, dtype=np.float64) @ onehot).reshape(-1, levels, levels)


def confusion(y_true: np.ndarray, y_pred: np.ndarray, levels: int) -> np.ndarray:
    """(levels, levels) float64 counts, rows true, columns predicted."""
    codes = np.asarray(y_true, dtype=np.int64) * levels + np.asarray(y_pred, dtype=np.int64)
    return np.bincount(codes, minlength=levels * levels).reshape(levels, levels).astype(np.float64)


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    return np.divide(a, b, out=np.zeros_like(a, dtype=np.float64), where=b > 0)


def per_level_f1(c: np.ndarray) -> np.ndarray:
    """(..., L) F1 of each level of (..., L, L) confusion matrices; 0 for a level never true nor
    predicted (scikit-learn's zero_division=0)."""
    tp = np.diagonal(c, axis1=-2, axis2=-1)
    return _ratio(2 * tp, c.sum(-1) + c.sum(-2))


def figures(c: np.ndarray) -> dict[str, np.ndarray]:
    """The INTERVAL_METRICS of each (B, L, L) confusion matrix, as scikit-learn defines them
    (macro-F1 over all levels with 0 for a level never true nor predicted; balanced accuracy over
    the levels present; QWK and MCC 0 where undefined)."""
    levels = c.shape[-1]
    total = c.sum((1, 2))
    tp = np.diagonal(c, axis1=1, axis2=2)
    true, pred = c.sum(2), c.sum(1)
    present = true > 0
    recall = _ratio(tp, true)
    weights = (np.arange(levels)[:, None] - np.arange(levels)[None, :]) ** 2 / max(levels - 1, 1) ** 2
    expected = true[:, :, None] * pred[:, None, :] / np.where(total > 0, total, 1)[:, None, None]
    observed_cost, chance_cost = (weights * c).sum((1, 2)), (weights * expected).sum((1, 2))
    correct = tp.sum(1)
    cov_tp = correct * total - (true * pred).sum(1)
    cov_pp = total**2 - (pred * pred).sum(1)
    cov_tt = total**2 - (true * true).sum(1)
    return {
        "accuracy": _ratio(correct, total),
        "macro_f1": per_level_f1(c).mean(1),
        "balanced_accuracy": _ratio((recall * present).sum(1), present.sum(1).astype(np.float64)),
        "qwk": np.where(chance_cost > 0, 1 - _ratio(observed_cost, chance_cost), 0.0),
        "mcc": _ratio(cov_tp, np.sqrt(cov_tt * cov_pp)),
    }


def state_metrics(y_true: np.ndarray, y_pred: np.ndarray, levels: int, majority_level: int) -> dict:
    """Metrics of one state. `majority_level` is the most frequent level of the *training* split:
    always predicting it is the baseline (a real classifier, unlike the evaluated split's own rate).

    Balanced accuracy is the mean recall over the levels present: always answering the majority
    level scores 1/levels present, however skewed the split (DAiSEE's Frustration: 79 % accuracy,
    0.25 balanced). The levels are ordered: quadratic weighted kappa (QWK) charges a 0-for-3 more
    than a 2-for-3, and is 0 for chance agreement (and for any constant answer)."""
    c = confusion(y_true, y_pred, levels)
    support = c.sum(1)
    always = np.zeros_like(c)
    always[:, majority_level] = support  # the baseline's confusion matrix
    # The literature's two-level variant: levels 0-1 ("low") against 2-3 ("high").
    half = levels // 2
    low_high = np.array([[c[:half, :half].sum(), c[:half, half:].sum()], [c[half:, :half].sum(), c[half:, half:].sum()]])
    f = {k: float(v[0]) for k, v in figures(c[None]).items()}
    base, binary = figures(always[None]), figures(low_high[None])
    per_level = per_level_f1(c)
    return {
        "n": int(support.sum()),
        "accuracy": f["accuracy"],
        "balanced_accuracy": f["balanced_accuracy"],
        "qwk": f["qwk"],
        "mcc": f["mcc"],
        "macro_f1": f["macro_f1"],
        "weighted_f1": float(_ratio((per_level * support).sum(), support.sum())),
        "per_level_f1": [float(v) for v in per_level],
        "confusion": c.astype(np.int64).tolist(),
        "majority_level": int(majority_level),
        "majority_accuracy": float(base["accuracy"][0]),
        "majority_macro_f1": float(base["macro_f1"][0]),
        "binary_accuracy": float(binary["accuracy"][0]),
        "binary_macro_f1": float(binary["macro_f1"][0]),
    }


def evaluate(
    y_true: np.ndarray, probs: dict[str, np.ndarray], states: list[str], levels: int, majority: dict[str, int]
) -> dict[str, dict]:
    """{state: metrics} from (N, S) true levels and per-state (N, levels) probabilities."""
    return {
        s: state_metrics(y_true[:, i], probs[s].argmax(1), levels, majority_level=majority[s]) for i, s in enumerate(states)
    }


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
            f = figures(confusion(t, p, levels)[None])
            row[f"{s}_accuracy"] = round(float(f["accuracy"][0]), 4)
            row[f"{s}_macro_f1"] = round(float(f["macro_f1"][0]), 4)
        out.append(row)
    return out
