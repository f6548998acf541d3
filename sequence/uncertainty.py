"""How far a test figure can be trusted: bootstrap intervals, resampling whole subjects when they are
known, and paired comparisons of two runs (or two groups of seed runs) on the same test clips.

Each resample is a confusion matrix: a draw is a vector of clip weights (how often each clip, or each
subject's clips, was drawn), and the (draws, levels, levels) confusion matrices are one matrix
product. The five figures are then computed from them in numpy, all draws at once (sequence.metrics):
calling scikit-learn per draw (1,000 draws x 5 figures x 4 states) would take minutes on DAiSEE's
1,784 test clips where this takes well under a second.
"""

from __future__ import annotations

import numpy as np

from sequence.metrics import INTERVAL_METRICS, confusions, figures

DRAWS = 1000
SEED = 0


def unit(groups: list | None, n: int) -> str:
    """What the bootstrap resamples: subjects when every clip has one, else clips."""
    return "subject" if groups is not None and len(groups) == n and all(g is not None for g in groups) else "clip"


def resample_weights(n: int, groups: list | None, draws: int, rng: np.random.Generator) -> np.ndarray:
    """(draws, n) clip weights. When every clip has a group (subject): a two-stage draw, subjects
    with replacement and then, for each time a subject is drawn, its clips with replacement; else
    clips. A subject's clips are not independent (one face, one room, one labeller's view of that
    person): drawing clips alone makes the interval too narrow. Drawing whole subjects alone
    collapses with few of them (three test subjects allow ten distinct resamples, and intervals a
    few points wide); the second stage keeps the variation within each subject."""
    if unit(groups, n) == "subject":
        _, inverse = np.unique(np.asarray(groups, dtype=str), return_inverse=True)
        g = int(inverse.max()) + 1
        times = rng.multinomial(g, np.full(g, 1.0 / g), size=draws)  # (draws, subjects)
        weights = np.zeros((draws, n), dtype=np.int64)
        for k in range(g):
            members = np.flatnonzero(inverse == k)
            # Its clips drawn times[:, k] * len(members) times in all: one multinomial per draw.
            weights[:, members] = rng.multinomial(times[:, k] * len(members), np.full(len(members), 1.0 / len(members)))
        return weights
    return rng.multinomial(n, np.full(n, 1.0 / n), size=draws)


def intervals(
    y_true: np.ndarray, y_pred: np.ndarray, levels: int, groups: list | None = None, draws: int = DRAWS, seed: int = SEED
) -> dict[str, list[float]]:
    """{metric: [low, high]}: the 95 % percentile interval of each INTERVAL_METRICS figure; where every
    resample gives the same value (all right, or all wrong), exact_interval on the number of units."""
    if len(y_true) == 0:
        return {m: [0.0, 0.0] for m in INTERVAL_METRICS}
    w = resample_weights(len(y_true), groups, draws, rng=np.random.default_rng(seed))
    f = figures(confusions(y_true, y_pred, w, levels=levels))
    out = {}
    for m in INTERVAL_METRICS:
        low, high = float(np.percentile(f[m], 2.5)), float(np.percentile(f[m], 97.5))
        if high - low < 1e-9:
            low, high = exact_interval(low, independent_units(groups, len(y_true)), signed=m in SIGNED)
        out[m] = [round(low, 4), round(high, 4)]
    return out


SIGNED = ("qwk", "mcc")  # figures on [-1, 1]; the others are on [0, 1]


def independent_units(groups: list | None, n: int) -> int:
    """How many independent observations a test split holds: its subjects when known, else its clips."""
    return len({str(g) for g in groups}) if unit(groups, n) == "subject" else n


def exact_interval(value: float, units: int, signed: bool = False) -> tuple[float, float]:
    """A 95 % interval for a figure every bootstrap resample reproduced exactly. A percentile bootstrap
    cannot leave a boundary (32 of 32 right reads 1.00 [1.00, 1.00]); the figure is then treated as a
    proportion of `units` independent observations and given its exact (Clopper-Pearson) binomial
    interval, so it still says how few they were. Figures on [-1, 1] are mapped to [0, 1] and back."""
    from scipy.stats import binomtest

    p = (value + 1) / 2 if signed else value
    ci = binomtest(int(round(p * units)), units).proportion_ci(0.95, method="exact")
    low, high = float(ci.low), float(ci.high)
    return (2 * low - 1, 2 * high - 1) if signed else (low, high)


def paired_difference(
    y_true: np.ndarray,
    preds_a: list[np.ndarray],
    preds_b: list[np.ndarray],
    levels: int,
    groups: list | None = None,
    draws: int = DRAWS,
    seed: int = SEED,
) -> dict[str, dict]:
    """B against A on the same clips, for each figure: the point difference of the seed-averaged
    figures, and a 95 % interval from a paired bootstrap in which every draw resamples the clips
    (or subjects) once for both sides and picks one seed run of each side, so the interval holds
    both sources of chance. `exceeds`: the interval leaves out 0."""
    rng = np.random.default_rng(seed)
    w = resample_weights(len(y_true), groups, draws, rng=rng)
    pick_a, pick_b = rng.integers(len(preds_a), size=draws), rng.integers(len(preds_b), size=draws)
    ones = np.ones((1, len(y_true)))

    def side(preds: list[np.ndarray], pick: np.ndarray) -> tuple[dict, dict]:
        drawn = np.stack([confusions(y_true, p, w, levels=levels) for p in preds])[pick, np.arange(draws)]
        whole = [figures(confusions(y_true, p, ones, levels=levels)) for p in preds]
        return figures(drawn), {m: float(np.mean([f[m][0] for f in whole])) for m in INTERVAL_METRICS}

    (da, pa), (db, pb) = side(preds_a, pick_a), side(preds_b, pick_b)
    out = {}
    for m in INTERVAL_METRICS:
        diff = db[m] - da[m]
        low, high = float(np.percentile(diff, 2.5)), float(np.percentile(diff, 97.5))
        out[m] = {
            "a": round(pa[m], 4),
            "b": round(pb[m], 4),
            "difference": round(pb[m] - pa[m], 4),
            "ci": [round(low, 4), round(high, 4)],
            "exceeds": bool(low > 0 or high < 0),
        }
    return out
