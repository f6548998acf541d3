"""A dask cluster for either stage: a local one sized for this machine, or one started elsewhere.

`--workers N` starts worker processes on this machine: one worker per GPU when there are GPUs (each
sees one device, also after its nanny restarts it), else N single-threaded processes with torch
threads split evenly between them, since oversubscribed cores collapse throughput (two 2-thread
processes on 2 cores run several times slower than one). `--scheduler tcp://HOST:PORT` uses a cluster
started elsewhere (`dask scheduler` + `dask worker`, or dask-jobqueue on SLURM).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from embed.errors import ConfigError

log = logging.getLogger(__name__)
FORKSERVER_PRELOAD = ("distributed", "numpy", "torch", "torchvision")


def start_local_cluster(workers: int, gpus: int | None = None, tasks_per_worker: int = 1, *, forked: bool = True):
    """A cluster of worker processes on loopback sized for this machine (see the module docstring),
    each running `tasks_per_worker` tasks at once (stage one's clips in flight share one model stage
    per worker; torch's threads are sized by processes, not tasks). Returns the cluster, its client
    and the torch threads each worker should use. `forked`: the workers fork from a forkserver that
    imported torch once (see _forked_workers); False: dask's own way, each spawned afresh.

    With GPUs each worker's nanny starts its process with CUDA_VISIBLE_DEVICES set to one device, so
    a worker the nanny restarts (killed, out of memory) comes back on the same GPU; setting the
    variable from the client after start-up would be lost then. dask-cuda's LocalCUDACluster does
    this too, with more (UCX, RMM pools) that one model per GPU does not need; a spec of nannies is
    what it builds on, and needs no extra package."""
    import torch
    from dask.distributed import Client, Nanny, Scheduler, SpecCluster

    # The scheduler and nannies run in this process: their INFO lines (every connection and worker)
    # would bury the command's own log; their warnings and errors still show.
    logging.getLogger("distributed").setLevel(logging.WARNING)
    gpus = torch.cuda.device_count() if gpus is None else gpus
    n = min(workers, gpus) if gpus else workers
    threads = max(1, (os.cpu_count() or 1) // n)
    spec = {
        i: {
            "cls": Nanny,
            "options": {
                "nthreads": tasks_per_worker,
                "host": "127.0.0.1",
                "silence_logs": logging.ERROR,
                "env": {"CUDA_VISIBLE_DEVICES": str(i)} if gpus else {},
            },
        }
        for i in range(n)
    }
    with _forked_workers() if forked else contextlib.nullcontext():
        cluster = SpecCluster(
            workers=spec,
            scheduler={"cls": Scheduler, "options": {"host": "127.0.0.1", "dashboard_address": "127.0.0.1:0"}},
            silence_logs=logging.ERROR,
        )
    return cluster, Client(cluster), threads


@contextlib.contextmanager
def _forked_workers() -> Iterator[None]:
    """Worker processes started meanwhile fork from one server process that imported torch and
    torchvision once (multiprocessing's forkserver, preloaded): dask's default spawns each worker
    afresh, and each pays those imports (several CPU-seconds). The server imports no module of
    ours, so no state of this process's reaches the workers; CUDA is not initialised by importing.
    A worker its nanny restarts later is spawned as by default."""
    import multiprocessing

    import dask

    if "forkserver" not in multiprocessing.get_all_start_methods():
        yield
        return
    from distributed.utils import get_mp_context

    with dask.config.set({"distributed.worker.multiprocessing-method": "forkserver"}):
        # dask sets its own preload list on first use (its dependencies); ours replaces it before
        # the server starts, with torch's libraries added.
        context = get_mp_context()
        context.set_forkserver_preload([*FORKSERVER_PRELOAD])
        yield


@dataclass(frozen=True)
class ClusterChoice:
    """`--workers N` (a local cluster of N worker processes) or `--scheduler URL` (one started elsewhere)."""

    workers: int | None = None
    scheduler: str | None = None

    def __bool__(self) -> bool:
        return bool(self.workers or self.scheduler)


def connect(choice: ClusterChoice, tasks_per_worker: int = 1):
    """(cluster or None, client, torch threads per worker or None) for the choice; a local cluster's
    workers run `tasks_per_worker` tasks at once (a scheduler's, their own --nthreads)."""
    from dask.distributed import Client

    try:
        if choice.scheduler:
            return None, Client(choice.scheduler, timeout="20s"), None
        return start_local_cluster(choice.workers or 1, tasks_per_worker=tasks_per_worker)
    except OSError as e:
        raise ConfigError(
            f"--scheduler {choice.scheduler}: cannot reach the dask scheduler ({e}); "
            f"fix: start one with `dask scheduler` or check the address"
        ) from None


@dataclass
class ClusterSession:
    """A connected cluster: its client, the torch threads each local worker should use (None on a
    scheduler's), its dashboard, and how long it has been (or was) in use."""

    client: Any
    threads: int | None
    dashboard: str
    started: float = field(default_factory=time.perf_counter)
    seconds: float | None = None  # set when it closes

    @property
    def elapsed(self) -> float:
        return time.perf_counter() - self.started if self.seconds is None else self.seconds

    def info(self) -> dict:
        return {"seconds": round(self.elapsed, 1), "dashboard": self.dashboard}


@contextlib.contextmanager
def cluster_session(choice: ClusterChoice, tasks_per_worker: int = 1) -> Iterator[ClusterSession]:
    """connect(), its dashboard logged; on leaving, the client closed and a local cluster shut down."""
    local, client, threads = connect(choice, tasks_per_worker)
    session = ClusterSession(client, threads, client.dashboard_link)
    log.info("dask dashboard: %s", session.dashboard)
    try:
        yield session
    finally:
        session.seconds = time.perf_counter() - session.started
        client.close()
        if local is not None:
            local.close()
