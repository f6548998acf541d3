"""`sequence experiments`: every configuration of a grid file (sequence.grid_file) trained here, or as
dask tasks (sequence.grid_cluster), then their comparison table and, if asked, published figures."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

from embed.cluster import ClusterChoice
from embed.errors import ConfigError
from embed.manifest import Manifest, load_manifest
from sequence.experiment import DataMemo, command_line, train_run
from sequence.grid_file import numbered_grid, record_grid_run
from sequence.runs import comparison_rows, load_run

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GridOptions:
    """What `sequence experiments` is told: the grid file, the dataset (None: the grid's), published
    figures to set beside the results (a sequence/reference/NAME.yaml), and where to run."""

    grid: Path
    manifest: Path = Path("data_manifest.yaml")
    dataset: str | None = None
    reference: str | None = None
    cluster: ClusterChoice = field(default_factory=ClusterChoice)
    progress: bool = True


def run_experiments(options: GridOptions) -> dict:
    """Every configuration of the grid, then its comparison rows and, with a reference, the table
    beside published figures: {"results", "failures", "rows", "states", "cluster", "reference"}."""
    m = load_manifest(options.manifest)
    published = None
    if options.reference is not None:
        from sequence.reference import load_reference

        published = load_reference(options.reference)  # a wrong name fails before hours of training
    cluster = None
    if options.cluster:
        from sequence.grid_cluster import run_grid_distributed

        results, failures, cluster = run_grid_distributed(m, options.grid, cluster=options.cluster, dataset=options.dataset)
    else:
        results, failures = run_grid(m, options.grid, progress=options.progress, dataset=options.dataset)
    out = {
        "results": results,
        "failures": failures,
        "rows": comparison_rows([load_run(Path(r["run"])) for r in results], m.states),
        "states": m.states,
        "cluster": cluster,
        "reference": None,
    }
    if published is not None and results:
        from sequence.reference import markdown, write_reference

        rows, paths = write_reference(results, published, m.runs_path, grid_name=options.grid.name)
        out["reference"] = {"markdown": markdown(rows, published), **paths}
    return out


def run_grid(
    manifest: Manifest, path: Path, progress: bool = True, dataset: str | None = None
) -> tuple[list[dict], list[dict]]:
    """Run every configuration of a grid over the cache (each split loaded once per frame policy), on
    `dataset` when given instead of the grid's own. A configuration that cannot run (no cache for its
    backbone, say) is reported and skipped."""
    configs = numbered_grid(path, dataset)
    memo: DataMemo = {}
    results, failures = [], []
    for i, (experiment, cfg) in enumerate(configs, start=1):
        log.info(
            "experiment %d/%d: %s %s, %s frames, batch %d",
            i,
            len(configs),
            cfg.backbone,
            cfg.head,
            cfg.frames or "all",
            cfg.batch,
        )
        try:
            command = f"{command_line()}  # experiment {experiment}"
            result = train_run(manifest, cfg, progress=progress, memo=memo, command=command)
            results.append({**result, "experiment": experiment})
            record_grid_run(manifest, cfg, path, experiment=experiment, run=result["run"])
        except ConfigError as e:
            log.error("experiment %d: %s", experiment, e)
            failures.append({"experiment": experiment, "error": str(e)})
    return results, failures
