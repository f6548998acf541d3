"""`sequence compare A B`: is B's difference from A more than seeds and the choice of test clips explain?

Each side is a finished run together with the runs that differ from it only by seed (its row in
`sequence runs`). Both are read from their predictions.csv on the test clips they share; the paired
bootstrap is sequence.uncertainty.paired_difference.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from embed.errors import ConfigError
from embed.manifest import Manifest, load_manifest
from sequence.grid_file import grid_record
from sequence.runs import list_runs, load_run, seed_groups
from sequence.uncertainty import DRAWS, paired_difference, unit


def resolve_run(ref: str, runs_path: Path) -> Path:
    """A run folder, or a run's name under runs_dir (as `sequence runs` prints it)."""
    path = Path(ref)
    if path.is_dir():
        return path
    hits = sorted(Path(runs_path).glob(f"*/{ref}"))
    if len(hits) != 1:
        raise ConfigError(
            f"{ref}: {'no' if not hits else 'more than one'} run of that name under {runs_path}; "
            f"fix: pass a run folder (`python -m sequence runs` lists them)"
        )
    return hits[0]


def seed_group_of(run_dir: Path) -> list[dict]:
    run = load_run(run_dir)
    found, _ = list_runs(run_dir.parent.parent, run_dir.parent.name)
    for group in seed_groups(found):
        if any(r["path"] == run["path"] for r in group):
            return group
    return [run]


def _test_rows(run: dict) -> dict[str, dict]:
    path = run["path"] / "predictions.csv"
    if not path.is_file():
        raise ConfigError(
            f"{run['path']}: no predictions.csv (a run older than per-clip predictions); fix: "
            f"`python -m sequence evaluate {run['path']}` writes it"
        )
    with open(path, newline="") as f:
        return {r["clip"]: r for r in csv.DictReader(f) if r["split"] == "Test"}


def compare_runs(a: Path, b: Path, manifest: Manifest) -> dict:
    """Per state, B's paired difference from A on their shared test clips (`sequence compare`)."""
    states, levels, runs_path = manifest.states, manifest.levels, manifest.runs_path
    side_a, side_b = seed_group_of(resolve_run(str(a), runs_path)), seed_group_of(resolve_run(str(b), runs_path))
    rows_a, rows_b = [_test_rows(r) for r in side_a], [_test_rows(r) for r in side_b]
    clips = sorted(set.intersection(*(set(r) for r in rows_a + rows_b)))
    if not clips:
        raise ConfigError(f"{a} and {b} share no test clip; fix: compare runs on one dataset's test split")
    first = rows_a[0]
    subjects = [first[c].get("subject") or None for c in clips]
    groups = subjects if all(subjects) else None
    out = {
        "a": [str(r["path"]) for r in side_a],
        "b": [str(r["path"]) for r in side_b],
        "clips": len(clips),
        "unit": unit(groups, len(clips)),
        "method": (
            f"paired bootstrap over the {len(clips)} test clips both sides scored: {DRAWS} draws, each "
            f"resampling the test {'subjects and then their clips' if groups else 'clips'} with "
            f"replacement once for both sides and "
            f"picking one seed run per side; the difference is B - A of the seed-averaged figures, "
            f"'beyond chance' when its 95 % interval leaves out 0"
        ),
        "states": {},
    }
    for s in states:
        truth = np.array([int(first[c][f"{s}_true"]) for c in clips])
        preds_a = [np.array([int(r[c][f"{s}_pred"]) for c in clips]) for r in rows_a]
        preds_b = [np.array([int(r[c][f"{s}_pred"]) for c in clips]) for r in rows_b]
        out["states"][s] = paired_difference(truth, preds_a, preds_b, levels=levels, groups=groups)
    return out


def compare_grids(record_a: Path, record_b: Path, manifest: Manifest) -> dict:
    """Every experiment both grids ran (their records: sequence.grid_file.grid_record), B against A
    with compare_runs: per experiment, state and figure the paired difference and its interval."""
    records = []
    for path in (record_a, record_b):
        if not Path(path).is_file():
            raise ConfigError(f"{path}: no record of that grid's runs; fix: run it with `python -m sequence experiments`")
        records.append(json.loads(Path(path).read_text())["experiments"])
    shared = sorted(set(records[0]) & set(records[1]), key=int)
    if not shared:
        raise ConfigError(f"{record_a} and {record_b} share no experiment number; fix: compare grids with the same rows")
    out = {"a": str(record_a), "b": str(record_b), "experiments": {}}
    for k in shared:
        # Any seed's run names the experiment's row: compare_runs takes its whole seed group.
        run_a, run_b = (next(iter(r[k].values())) for r in records)
        out["experiments"][int(k)] = compare_runs(Path(run_a), Path(run_b), manifest)
    return out


@dataclass(frozen=True)
class CompareOptions:
    """What `sequence compare` (two runs: folders or names) and `compare-grids` (two grid files, their
    runs on `dataset`) are told."""

    a: str
    b: str
    manifest: Path = Path("data_manifest.yaml")
    dataset: str | None = None


def compare_two_runs(options: CompareOptions) -> dict:
    return compare_runs(Path(options.a), Path(options.b), load_manifest(options.manifest))


def compare_two_grids(options: CompareOptions) -> dict:
    m = load_manifest(options.manifest)
    record_a, record_b = (grid_record(m, options.dataset, Path(g)) for g in (options.a, options.b))
    return compare_grids(record_a, record_b, m)
