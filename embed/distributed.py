"""Stage one on a dask cluster: one task per clip, each worker writing straight into the stores.

A task decodes, tracks and embeds one clip with an Embedder built once per worker process, and
commits the clip to each store itself (the store path is shared: a common filesystem, or any URL
zarr opens). Retrying a task is safe because a clip only reads as complete once its last attribute
is written, and a rewrite un-completes it first (embed.cache).

`--workers N` starts a cluster of worker processes on this machine: one worker per GPU when there
are GPUs (each sees one device, also after its nanny restarts it), else N single-threaded processes
with torch threads split evenly between them, since oversubscribed cores collapse MTCNN's throughput
(111 -> 38 frames/s for two 2-thread processes on 2 cores, measured). `--scheduler tcp://HOST:PORT`
uses a cluster started elsewhere
(`dask scheduler` + `dask worker`, or dask-jobqueue on SLURM).
"""

from __future__ import annotations

import logging
import os
import time

import torch

from embed.cache import CacheStore
from embed.clip_embedding import embed_clip
from embed.decode_ahead import decode_ahead
from embed.embedder import Embedder, EmbedSpec
from embed.errors import ConfigError
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


def start_local_cluster(workers: int, gpus: int | None = None):
    """A cluster of worker processes on loopback sized for this machine (see the module docstring).
    Returns the cluster, its client and the torch threads each worker should use.

    With GPUs each worker's nanny starts its process with CUDA_VISIBLE_DEVICES set to one device, so
    a worker the nanny restarts (killed, out of memory) comes back on the same GPU; setting the
    variable from the client after start-up would be lost then. dask-cuda's LocalCUDACluster does
    this too, with more (UCX, RMM pools) that one model per GPU does not need; a spec of nannies is
    what it builds on, and needs no extra package."""
    from dask.distributed import Client, Nanny, Scheduler, SpecCluster

    gpus = torch.cuda.device_count() if gpus is None else gpus
    n = min(workers, gpus) if gpus else workers
    threads = max(1, (os.cpu_count() or 1) // n)
    spec = {
        i: {
            "cls": Nanny,
            "options": {
                "nthreads": 1,
                "host": "127.0.0.1",
                "silence_logs": logging.ERROR,
                "env": {"CUDA_VISIBLE_DEVICES": str(i)} if gpus else {},
            },
        }
        for i in range(n)
    }
    cluster = SpecCluster(
        workers=spec,
        scheduler={"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"}},
        silence_logs=logging.ERROR,
    )
    return cluster, Client(cluster), threads


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
    from dask.distributed import Client, as_completed

    clips = index.clips[:limit] if limit else index.clips
    report = RunReport(stores=[s.path for s in stores], total=len(clips))
    todo, report.skipped = pending(clips, stores)
    cluster, threads = None, None
    try:
        if scheduler:
            client = Client(scheduler, timeout="20s")
        else:
            cluster, client, threads = start_local_cluster(workers or 1)
    except OSError as e:
        raise ConfigError(
            f"--scheduler {scheduler}: cannot reach the dask scheduler ({e}); "
            f"fix: start one with `dask scheduler` or check the address"
        ) from None
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
