"""Grid files: a grid expanded into numbered configurations, and the record of each grid's runs that
lets two grids be compared row by row (sequence.compare.compare_grids)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import yaml

from embed.errors import ConfigError
from embed.manifest import Manifest
from sequence.config import TrainConfig, parse_config
from sequence.runs import write_json

GRID_KEYS = {"base", "experiments", "grid", "seeds"}


def expand_grid(path: Path) -> list[TrainConfig]:
    return [cfg for _, cfg in numbered_grid(path)]


def numbered_grid(path: Path, dataset: str | None = None) -> list[tuple[int, TrainConfig]]:
    """(experiment number from 1, its configuration) for every run of a grid file, on `dataset` when
    given instead of the grid's own. A grid file: `base` (settings for all), `experiments` (a list of
    settings, each one run), `grid` (lists of values whose every combination is applied to each
    experiment) and `seeds` (each of those run once per seed). All are checked before anything runs."""
    try:
        raw = yaml.safe_load(Path(path).read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: cannot read the grid ({str(e).splitlines()[0]}); fix: correct the file") from None
    if not isinstance(raw, dict) or set(raw) - GRID_KEYS:
        extra = sorted(set(raw) - GRID_KEYS) if isinstance(raw, dict) else ["(not a mapping)"]
        raise ConfigError(f"{path}: unknown key '{extra[0]}'; fix: a grid has only {', '.join(sorted(GRID_KEYS))}")
    base, experiments, grid = raw.get("base") or {}, raw.get("experiments") or [{}], raw.get("grid") or {}
    seeds = raw.get("seeds")
    if seeds is not None and (not isinstance(seeds, list) or not seeds or not all(isinstance(x, int) for x in seeds)):
        raise ConfigError(f"{path}: seeds {seeds!r} is not a list of integers; fix: e.g. seeds: [0, 1, 2]")
    if seeds is not None:
        grid = {**grid, "seed": seeds}
    combos = [dict(zip(grid, values, strict=True)) for values in itertools.product(*grid.values())]
    out = []
    for i, exp in enumerate(experiments, start=1):
        for combo in combos:
            merged = {**base, **exp, **combo}
            if "head_params" in base and "head_params" in exp:
                merged["head_params"] = {**base["head_params"], **exp["head_params"]}
            if dataset:
                merged["dataset"] = dataset
            out.append((i, parse_config(merged, f"{path}: experiment {i}")))
    return out


def grid_record(manifest: Manifest, dataset: str | None, grid: Path) -> Path:
    """Where a grid's runs are listed: <runs_dir>/<dataset>/grid-<grid name>.json (a file, so that
    listing the run folders never takes it for one)."""
    name, _ = manifest.dataset(dataset)
    return manifest.runs_path / name / f"grid-{Path(grid).stem}.json"


def record_grid_run(manifest: Manifest, cfg: TrainConfig, grid: Path, *, experiment: int, run: str) -> None:
    """Add a finished run to its grid's record (each experiment's runs: one per seed, the newest kept),
    so that two grids can be compared row by row (sequence.compare.compare_grids)."""
    path = grid_record(manifest, cfg.dataset, grid)
    record = json.loads(path.read_text()) if path.is_file() else {"grid": str(grid), "experiments": {}}
    runs = record["experiments"].setdefault(str(experiment), {})
    runs[str(cfg.seed)] = run
    path.parent.mkdir(parents=True, exist_ok=True)
    write_json(path, record)
