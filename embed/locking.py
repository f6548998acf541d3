"""The writer lock of cache stores: one writing process per store at a time."""

from __future__ import annotations

import contextlib
import fcntl
import os
from pathlib import Path

from embed.errors import ConfigError


@contextlib.contextmanager
def writer_lock(store_paths: list[Path]):
    """Exclusive right to write these stores, held for a whole `embed run`.

    One `<store>.lock` file beside each store, locked with flock: the kernel drops the lock when
    its process dies, SIGKILL included, so there are no stale locks to clean up. A second run on
    the same store refuses at once rather than interleaving writes (dask workers write under
    their coordinator's lock)."""
    handles = []
    try:
        for path in store_paths:
            try:
                Path(path).parent.mkdir(parents=True, exist_ok=True)
                f = open(Path(str(path) + ".lock"), "a+")  # noqa: SIM115 (held until the run ends)
            except OSError as e:
                raise ConfigError(
                    f"{path}.lock: cannot take the writer lock ({e.strerror or e}); fix: make the "
                    f"cache directory writable, or point cache_dir elsewhere"
                ) from None
            handles.append(f)
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                f.seek(0)
                holder = f.read().strip() or "another process"
                raise ConfigError(
                    f"{path}: being written by another `embed run` ({holder}); fix: wait for it to "
                    f"finish (clips it completes are kept), or use --workers to parallelise"
                ) from None
            f.seek(0)
            f.truncate()
            f.write(f"pid {os.getpid()}")
            f.flush()
        yield
    finally:
        for f in handles:
            f.close()
