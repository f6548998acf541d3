"""A grid's configurations as dask tasks: each trains on a worker process with its own torch threads
and writes its run folder as when run alone; this process records each run and collects the table.

A configuration that cannot run (a ConfigError: no cache for its backbone, say) fails alone and is
reported, never retried; a worker that dies mid-run has its configuration retried elsewhere (dask's
retries), and since a run folder is only renamed from `.partial` once finished, a killed attempt
leaves nothing that looks finished.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from embed.cluster import ClusterChoice, cluster_session
from embed.errors import ConfigError
from embed.manifest import Manifest
from sequence.config import TrainConfig
from sequence.experiment import command_line, train_run
from sequence.grid_file import numbered_grid, record_grid_run

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class GridJob:
    """One configuration of a grid as a task: its number, its settings and its command line."""

    experiment: int
    cfg: TrainConfig
    command: str


def grid_task(manifest: Manifest, job: GridJob, threads: int | None) -> dict:
    """One configuration, on a worker: train it; a ConfigError comes back as {"error": ...}."""
    if threads:
        import torch

        torch.set_num_threads(threads)
    try:
        return {**train_run(manifest, job.cfg, progress=False, command=job.command), "experiment": job.experiment}
    except ConfigError as e:
        return {"experiment": job.experiment, "error": str(e)}


def run_grid_distributed(
    manifest: Manifest,
    path: Path,
    *,
    cluster: ClusterChoice,
    dataset: str | None = None,
    retries: int = 2,
) -> tuple[list[dict], list[dict], dict]:
    """run_grid on a dask cluster: (results in the grid's order, failures, {"seconds", "dashboard"})."""
    from dask.distributed import as_completed

    configs = numbered_grid(path, dataset)
    done: dict[int, dict] = {}
    with cluster_session(cluster) as dask:
        futures = [
            dask.client.submit(
                grid_task,
                manifest,
                GridJob(k, cfg, f"{command_line()}  # experiment {k}"),
                threads=dask.threads,
                pure=False,
                retries=retries,
            )
            for k, cfg in configs
        ]
        order = {f.key: i for i, f in enumerate(futures)}
        for fut in as_completed(futures):
            i = order[fut.key]
            result = fut.result()
            done[i] = result
            if "error" in result:
                log.error("experiment %d: %s", result["experiment"], result["error"])
            else:
                record_grid_run(manifest, configs[i][1], path, experiment=configs[i][0], run=result["run"])
    results = [done[i] for i in sorted(done) if "error" not in done[i]]
    failures = [{"experiment": done[i]["experiment"], "error": done[i]["error"]} for i in sorted(done) if "error" in done[i]]
    return results, failures, dask.info()
