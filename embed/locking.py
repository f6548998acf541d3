"""Exclusive locks that die with their process: the writer lock of cache stores (one writing process
per store at a time) and the lock of a tuning study (one coordinator per study)."""

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
    with contextlib.ExitStack() as stack:
        for path in store_paths:
            stack.enter_context(
                exclusive(
                    Path(str(path) + ".lock"),
                    unwritable="make the cache directory writable, or point cache_dir elsewhere",
                    busy=f"{path}: being written by another `embed run` ({{holder}}); fix: wait for it to "
                    f"finish (clips it completes are kept), or use --workers to parallelise",
                )
            )
        yield


@contextlib.contextmanager
def exclusive(lock_file: Path, *, unwritable: str, busy: str):
    """Hold `lock_file` (flock, dropped by the kernel when the process dies) or raise a ConfigError:
    `busy` (its {holder} filled with the holder's pid) when another process holds it, `unwritable`
    as the fix when it cannot be created."""
    try:
        lock_file.parent.mkdir(parents=True, exist_ok=True)
        f = open(lock_file, "a+")  # noqa: SIM115 (held until the caller's work ends)
    except OSError as e:
        raise ConfigError(f"{lock_file}: cannot take the lock ({e.strerror or e}); fix: {unwritable}") from None
    try:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            f.seek(0)
            raise ConfigError(busy.format(holder=f.read().strip() or "another process")) from None
        f.seek(0)
        f.truncate()
        f.write(f"pid {os.getpid()}")
        f.flush()
        yield
    finally:
        f.close()
