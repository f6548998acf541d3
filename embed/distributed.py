"""Stage one on a dask cluster: one task per clip, each worker writing straight into the stores.

A task decodes, tracks and embeds one clip with an Embedder built once per worker process, and
commits the clip to each store itself (the store path is shared: a common filesystem, or any URL
zarr opens). Retrying a task is safe because a clip only reads as complete once its last attribute
is written, and a rewrite un-completes it first (embed.cache).

A worker runs as many tasks at once as it has threads (`--clips-in-flight` on a local cluster;
`dask worker --nthreads N` elsewhere), and its embedder then runs through one model stage: the clips
in flight on a worker share batched network calls, as they do in a local run (embed.clips_in_flight),
so a cluster of GPU nodes batches as one node does. The stage lives as long as the worker process.

The cluster, local or elsewhere: embed.cluster.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from embed.cache import CacheStore
from embed.clip_embedding import ClipTargets, embed_clip, pending
from embed.cluster import cluster_session
from embed.decode_ahead import decode_ahead
from embed.embedder import Embedder, EmbedSpec
from embed.layouts import Clip, DatasetIndex
from embed.memory import apply_allocator_policy
from embed.run_report import ClipOutcome, RunReport, progress_bar, rate_text

if TYPE_CHECKING:
    from embed.cluster import ClusterChoice

log = logging.getLogger(__name__)
_EMBEDDERS: dict[tuple, Embedder] = {}  # per worker process: models are built once, not per task
_BUILDING = threading.Lock()  # a worker's tasks start on several threads at once
RETRIES = 2  # a task whose worker died runs again elsewhere (safe: embed.cache's commit protocol)


def _worker_embedder(spec: EmbedSpec, threads: int | None, in_flight: int) -> Embedder:
    key = (repr(spec), threads, in_flight)  # the spec holds a dict: not hashable itself
    with _BUILDING:
        if key not in _EMBEDDERS:
            from embed.model_stage import ModelStage

            if threads:
                torch.set_num_threads(threads)
            device = spec.device
            if device in (None, "", "auto", "cuda") and torch.cuda.is_available():
                device = "cuda"  # CUDA_VISIBLE_DEVICES, set per worker, decides which GPU that is
            _EMBEDDERS[key] = spec.build(device, stage=ModelStage() if in_flight > 1 else None)
        return _EMBEDDERS[key]


def worker_batching() -> dict[str, dict]:
    """On a worker: each batch function's counts over its embedders' model stages (BatchStats)."""
    out: dict[str, dict] = {}
    for embedder in _EMBEDDERS.values():
        for name, stats in (embedder.stage.stats() if embedder.stage else {}).items():
            out[name] = vars(stats)
    return out


def _in_flight_on(worker) -> int:
    """Tasks this worker runs at once: its thread count."""
    return max(1, int(getattr(getattr(worker, "state", None), "nthreads", 0) or getattr(worker, "nthreads", 1)))


@dataclass(frozen=True)
class ClusterJob:
    """What every task of one run is given besides its clip: the recipe of the embedder, where the
    stores are (the backbones', the face-track store's) and the torch threads a worker may use."""

    spec: EmbedSpec
    store_paths: tuple[str, ...]
    faces_path: str | None
    threads: int | None


def embed_task(job: ClusterJob, clip: Clip) -> ClipOutcome:
    """One clip, run on a worker: build (once) the embedder, then decode, track, embed and write.
    The worker's other clips in flight share the embedder's model stage."""
    from dask.distributed import get_worker

    apply_allocator_policy()
    embedder = _worker_embedder(job.spec, job.threads, _in_flight_on(get_worker()))
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
    clips_in_flight: int = 2,
) -> RunReport:
    """embed.local_run.embed_dataset on a dask cluster (its workers started here, or a scheduler's),
    one task per clip, `clips_in_flight` tasks at once on each local worker (a scheduler's workers:
    their own thread count); Ctrl-C cancels what has not run."""
    from dask.distributed import as_completed

    clips = index.clips[:limit] if limit else index.clips
    report = RunReport(stores=[s.path for s in targets.stores], total=len(clips), clips_in_flight=clips_in_flight)
    todo, report.skipped = pending(clips, targets.stores)
    with cluster_session(cluster, tasks_per_worker=clips_in_flight) as dask:
        report.dashboard = dask.dashboard
        faces = str(targets.faces.path) if targets.faces else None
        job = ClusterJob(spec, tuple(str(s.path) for s in targets.stores), faces, threads=dask.threads)
        futures = dask.client.map(embed_task, [job] * len(todo), todo, pure=False, retries=RETRIES)
        with progress_bar(progress) as bar:
            task = bar.add_task("embed", total=len(todo), rate="")
            try:
                for fut in as_completed(futures):
                    report.add(fut.result())
                    bar.update(task, advance=1, rate=rate_text(report, dask.elapsed))
            except KeyboardInterrupt:
                report.interrupted = True
                dask.client.cancel(futures)
        if not report.interrupted:
            report.batching = dask.client.run(worker_batching)  # per worker: how its clips' calls were batched
    report.seconds = dask.elapsed
    return report
