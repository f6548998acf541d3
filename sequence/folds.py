"""Cross-validation folds over Train and Validation pooled, grouped by subject: no student is in two
folds, so a fold's figures measure unseen people as the Test split does. The Test split is never in
a fold."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from embed.errors import ConfigError
from sequence.data import SequenceSet, concat_sets

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Fold:
    """One fold: the pooled clips trained on and those validated on (by clip id), its number from 1
    and the fold count. Validation empty: the final model, trained on every pooled clip."""

    train: tuple[str, ...]
    validation: tuple[str, ...]
    number: int
    of: int

    def apply(self, data: dict[str, SequenceSet]) -> dict[str, SequenceSet]:
        """The loaded splits re-cut for this fold (Test as it was)."""
        pooled = concat_sets(data["Train"], data["Validation"])
        row = {c: i for i, c in enumerate(pooled.clip_ids)}
        return {
            "Train": pooled.subset([row[c] for c in self.train]),
            "Validation": pooled.subset([row[c] for c in self.validation]),
            "Test": data["Test"],
        }

    def describe(self) -> dict:
        return {"fold": self.number, "folds": self.of, "train": len(self.train), "validation": len(self.validation)}


def subject_folds(
    clip_ids: list[str], subjects: list[str | None], first_level: np.ndarray, k: int, seed: int = 0
) -> list[Fold]:
    """k folds of these clips, no subject in two of them, each fold's first-state levels as close to
    the whole's as the subjects allow (scikit-learn's StratifiedGroupKFold). Clips without a known
    subject are folded one by one, with a warning: clips of one person may then be on both sides."""
    from sklearn.model_selection import StratifiedGroupKFold, StratifiedKFold

    if k < 2:
        raise ConfigError(f"--cv {k}: cross-validation needs at least 2 folds; fix: e.g. --cv 5")
    known = all(subjects)
    groups = np.array([s if known else c for c, s in zip(clip_ids, subjects, strict=True)])
    if not known:
        log.warning(
            "the dataset does not name each clip's subject: folds are made clip by clip, so one person's "
            "clips can be in two folds and the figures are optimistic; fix: a csv layout takes a `subject` column"
        )
    if len(set(groups)) < k:
        raise ConfigError(
            f"--cv {k}: Train and Validation hold {len(set(groups))} subjects, fewer than {k} folds; "
            f"fix: --cv {max(2, len(set(groups)))} or fewer"
        )
    # Stratifying needs each level in at least k clips; rare levels are otherwise merged into their
    # neighbours for the split only (the labels trained on are untouched).
    strata = first_level.copy()
    counts = np.bincount(strata)
    stratified = (counts[counts > 0] >= k).all()
    splitter = (StratifiedGroupKFold if known else StratifiedKFold)(n_splits=k, shuffle=True, random_state=seed)
    if not stratified:
        log.info("--cv %d: a level of the first state has fewer than %d clips; folds are not stratified", k, k)
        strata = np.zeros_like(strata)
    args = (np.zeros(len(clip_ids)), strata) + ((groups,) if known else ())
    folds = []
    for number, (train_rows, val_rows) in enumerate(splitter.split(*args), start=1):
        folds.append(
            Fold(
                train=tuple(clip_ids[i] for i in train_rows),
                validation=tuple(clip_ids[i] for i in val_rows),
                number=number,
                of=k,
            )
        )
    return folds


def pooled_folds(data: dict[str, SequenceSet], subject_of: dict[str, str | None], k: int, seed: int = 0) -> list[Fold]:
    """The folds of a dataset's loaded Train and Validation splits."""
    ids = data["Train"].clip_ids + data["Validation"].clip_ids
    first = np.concatenate([data["Train"].y[:, 0].numpy(), data["Validation"].y[:, 0].numpy()])
    return subject_folds(ids, [subject_of.get(c) for c in ids], first, k=k, seed=seed)


def final_fold(folds: list[Fold]) -> Fold:
    """Every pooled clip trained on, none validated: the model the cross-validated settings make."""
    everything = tuple(sorted({c for f in folds for c in f.train + f.validation}))
    return Fold(train=everything, validation=(), number=0, of=len(folds))
