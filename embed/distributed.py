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

import torch

from embed.cache import CacheStore
from embed.clip_embedding import embed_clip
from embed.cluster import connect
from embed.decode_ahead import decode_ahead
from embed.embedder import Embedder, EmbedSpec
from embed.layouts import Clip, DatasetIndex
from embed.pipeline import pending
from embed.run_report import ClipOutcome, RunReport, progress_bar, rate_text

log = logging.getLogger(__name__)
_EMBEDDERS: dict[tuple, Embedder] = {}  # per worker process: models are built once, not per task


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


def embed_task(
    spec: EmbedSpec, clip: Clip, store_paths: list[str], faces_path: str | None, threads: int | None = None
) -> ClipOutcome:
    """One clip, run on a worker: build (once) the embedder, then decode, track, embed and write."""
    embedder = _worker_embedder(spec, threads)
    stores = [CacheStore(p, mode="a") for p in store_paths]
    faces = CacheStore(faces_path, mode="a") if faces_path else None
    for _, chunks in decode_ahead([embedder.stream(clip.path)]):
        return embed_clip(embedder, clip, chunks, stores, faces)
    raise AssertionError("unreachable: decode_ahead yields one item per stream")


def embed_dataset_distributed(
    index: DatasetIndex,
    spec: EmbedSpec,
    stores: list[CacheStore],
    faces: CacheStore | None,
    workers: int | None = None,
    scheduler: str | None = None,
    limit: int | None = None,
    progress: bool = True,
    retries: int = 2,
) -> RunReport:
    from dask.distributed import as_completed

    clips = index.clips[:limit] if limit else index.clips
    report = RunReport(stores=[s.path for s in stores], total=len(clips))
    todo, report.skipped = pending(clips, stores)
    cluster, client, threads = connect(workers, scheduler)
    report.dashboard = client.dashboard_link
    log.info("dask dashboard: %s", report.dashboard)
    start = time.perf_counter()
    try:
        paths = [str(s.path) for s in stores]
        futures = client.map(
            embed_task,
            [spec] * len(todo),
            todo,
            [paths] * len(todo),
            [str(faces.path) if faces else None] * len(todo),
            [threads] * len(todo),
            pure=False,
            retries=retries,
        )
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
        if cluster is not None:
            cluster.close()
    return report
