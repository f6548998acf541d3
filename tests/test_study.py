"""The original study's grid is its Table 4.2, read from the reference data (never typed twice)."""

from pathlib import Path

import yaml

from sequence.config import parse_config
from sequence.experiment import expand_grid

ROOT = Path(__file__).parents[1]
REFERENCE = yaml.safe_load((ROOT / "sequence" / "reference" / "study.yaml").read_text())
BACKBONE = {"teacher": "fec", "resnet18": "resnet18", "inception": "inception"}


def _rows(grid: str) -> list:
    return expand_grid(ROOT / "configs" / grid)


def test_study_grid_is_the_studys_table_row_for_row():
    rows = _rows("study.yaml")
    assert len(rows) == len(REFERENCE["experiments"]) == 11
    for k, cfg in enumerate(rows, start=1):
        e = REFERENCE["experiments"][k]
        assert (cfg.backbone, cfg.train_clips, cfg.frames, cfg.batch) == (
            BACKBONE[e["extractor"]],
            e["train_videos"],
            e["frames"],
            e["batch"],
        ), k
        assert cfg.head == "lstm" and cfg.head_params == {"hidden": e["lstm"], "dropout": e["dropout"], "fc": e["fc"]}, k
        # The study's training: Adam (AdamW without decay) at 1e-3, plain cross-entropy, no sampling,
        # the embeddings alone, 100 epochs, the last one kept.
        assert (cfg.loss, cfg.sampler, cfg.deltas, cfg.lr, cfg.weight_decay, cfg.epochs, cfg.select) == (
            "ce",
            "shuffle",
            False,
            0.001,
            0.0,
            100,
            "last",
        ), k


def test_the_ours_grid_runs_the_same_rows_with_this_tools_defaults():
    study, ours = _rows("study.yaml"), _rows("study_ours.yaml")
    same = ("backbone", "train_clips", "frames", "batch", "head", "head_params")
    assert [[getattr(c, f) for f in same] for c in ours] == [[getattr(c, f) for f in same] for c in study]
    defaults = parse_config({}, "defaults")
    for cfg in ours:
        assert (cfg.loss, cfg.deltas, cfg.lr, cfg.select, cfg.epochs) == (
            defaults.loss,
            defaults.deltas,
            defaults.lr,
            defaults.select,
            defaults.epochs,
        )


def test_reference_results_cover_every_experiment_and_state():
    states = REFERENCE["states"]
    for k in REFERENCE["experiments"]:
        for s in states:
            accuracy, f1 = REFERENCE["results"][k][s]
            assert 0 < accuracy < 100 and (f1 is None or (len(f1) == 4 and all(0 <= v <= 1 for v in f1))), (k, s)
    assert set(REFERENCE["baselines"]) == {"C3D transfer learning", "LRCN"}
