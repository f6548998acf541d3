"""Subject-wise folds: no subject on both sides, stratified where the levels allow, and a dataset
without subjects folded clip by clip with a warning."""

import numpy as np
import pytest

from embed.errors import ConfigError
from sequence.folds import final_fold, subject_folds


def _clips(subjects: int, per: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    ids = [f"{s:06d}{k:04d}" for s in range(subjects) for k in range(per)]
    return ids, [i[:6] for i in ids], rng.integers(0, 4, len(ids))


def test_no_subject_is_in_two_folds_and_every_clip_is_validated_once():
    ids, subjects, levels = _clips(subjects=9, per=7)
    folds = subject_folds(ids, subjects, levels, k=3, seed=0)
    assert [f.number for f in folds] == [1, 2, 3]
    validated = [c for f in folds for c in f.validation]
    assert sorted(validated) == sorted(ids)  # each clip validated exactly once
    for f in folds:
        assert not {c[:6] for c in f.train} & {c[:6] for c in f.validation}
        assert set(f.train) | set(f.validation) == set(ids)
    assert final_fold(folds).validation == () and sorted(final_fold(folds).train) == sorted(ids)
    # Seeded: the same folds again.
    assert subject_folds(ids, subjects, levels, k=3, seed=0) == folds


def test_without_subjects_clips_are_folded_one_by_one_with_a_warning(caplog):
    ids, _, levels = _clips(subjects=3, per=10)
    with caplog.at_level("WARNING", logger="sequence.folds"):
        folds = subject_folds(ids, [None] * len(ids), levels, k=5, seed=1)
    assert len(folds) == 5 and sorted(c for f in folds for c in f.validation) == sorted(ids)
    assert any("does not name each clip's subject" in r.getMessage() for r in caplog.records)


def test_fewer_subjects_than_folds_is_one_line_with_the_fix():
    ids, subjects, levels = _clips(subjects=2, per=5)
    with pytest.raises(ConfigError, match=r"--cv 3: .* 2 subjects, fewer than 3 folds; fix: --cv 2"):
        subject_folds(ids, subjects, levels, k=3)
    with pytest.raises(ConfigError, match="at least 2 folds"):
        subject_folds(ids, subjects, levels, k=1)
