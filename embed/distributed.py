"""Stage one on a dask cluster: one task per clip, each worker writing straight into the stores.

A task decodes, tracks and embeds one clip with an Embedder built once per worker process, and
commits the clip to each store itself (the store path is shared: a common filesystem, or any URL
zarr opens). Retrying a task is safe because a clip only reads as complete once its last attribute
is written, and a rewrite un-completes it first (embed.cache).

The cluster, local or elsewhere: embed.cluster.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from embed.cache import CacheStore
from embed.clip_embedding import ClipTargets, embed_clip, pending
from embed.cluster import connect
from embed.decode_ahead import decode_ahead
from embed.embedder import Embedder, EmbedSpec
from embed.layouts import Clip, DatasetIndex
from embed.memory import apply_allocator_policy
from embed.run_report import ClipOutcome, RunReport, progress_bar, rate_text

if TYPE_CHECKING:
    from embed.cluster import ClusterChoice

log = logging.getLogger(__name__)
_EMBEDDERS: dict[tuple, Embedder] = {}  # per worker process: models are built once, not per task
RETRIES = 2  # a task whose worker died runs again elsewhere (safe: embed.cache's commit protocol)


def _worker_embedder(spec: EmbedSpec, threads: int | None) -> Embedder:
    key = (repr(spec), threads)  # the spec holds a dict: not hashable itself
    if key not in _EMBEDDERS:
        if threads:
            torch.set_num_threads(threads)
        device = spec.device
        if device in (None, "", "auto", "cuda") and torch.cuda.is_available():
            device = "cuda"  # CUDA_VISIBLE_DEVICES, set per worker, decides which GPU that is
        _EMBEDDERS[key] = spec.build(device)
    return _EMBEDDERS[key]


@dataclass(frozen=True)
class ClusterJob:
    """What every task of one run is given besides its clip: the recipe of the embedder, where the
    stores are (the backbones', the face-track store's) and the torch threads a worker may use."""

    spec: EmbedSpec
    store_paths: tuple[str, ...]
    faces_path: str | None
    threads: int | None


def embed_task(job: ClusterJob, clip: Clip) -> ClipOutcome:
    """One clip, run on a worker: build (once) the embedder, then decode, track, embed and write."""
    apply_allocator_policy()
    embedder = _worker_embedder(job.spec, job.threads)
    faces = CacheStore(job.faces_path, mode="a") if job.faces_path else None
    targets = ClipTargets([CacheStore(p, mode="a") for p in job.store_paths], faces)
    for _, chunks in decode_ahead([embedder.stream(clip.path)]):
        return embed_clip(embedder, clip, chunks, targets=targets)
    raise AssertionError("unreachable: decode_ahead yields one item per stream")


def embed_dataset_on_cluster(
    index: DatasetIndex,
    spec: EmbedSpec,
    targets: ClipTargets,
    *,
    cluster: ClusterChoice,
    limit: int | None = None,
    progress: bool = True,
) -> RunReport:
    """embed.local_run.embed_dataset on a dask cluster (its workers started here, or a scheduler's),
    one task per clip; Ctrl-C cancels what has not run."""
    from dask.distributed import as_completed

    clips = index.clips[:limit] if limit else index.clips
    report = RunReport(stores=[s.path for s in targets.stores], total=len(clips))
    todo, report.skipped = pending(clips, targets.stores)
    local, client, threads = connect(cluster)
    report.dashboard = client.dashboard_link
    log.info("dask dashboard: %s", report.dashboard)
    start = time.perf_counter()
    try:
        faces = str(targets.faces.path) if targets.faces else None
        job = ClusterJob(spec, tuple(str(s.path) for s in targets.stores), faces, threads=threads)
        futures = client.map(embed_task, [job] * len(todo), todo, pure=False, retries=RETRIES)
        with progress_bar(progress) as bar:
            task = bar.add_task("embed", total=len(todo), rate="")
            try:
                for fut in as_completed(futures):
                    report.add(fut.result())
                    bar.update(task, advance=1, rate=rate_text(report, time.perf_counter() - start))
            except KeyboardInterrupt:
                report.interrupted = True
                client.cancel(futures)
    finally:
        report.seconds = time.perf_counter() - start
        client.close()
        if local is not None:
            local.close()
    return report
