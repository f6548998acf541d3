"""A real PostgreSQL server for a test: Debian's `postgresql` package (`make test` installs it), a new
cluster in a temporary folder, run as the package's `postgres` user (the server refuses root),
listening on loopback only at a free port; stopped and removed afterwards."""

from __future__ import annotations

import contextlib
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _binaries() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        raise RuntimeError("PostgreSQL's server is not installed; fix: `make test` installs Debian's postgresql package")
    return found[-1].parent


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _as_postgres(*cmd: str) -> None:
    subprocess.run(["runuser", "-u", "postgres", "--", *cmd], check=True, capture_output=True, timeout=120)


@contextlib.contextmanager
def postgres_server(database: str = "affectseq") -> Iterator[str]:
    """A running server with one empty database; yields its SQLAlchemy URL (psycopg 3)."""
    bin_dir, port = _binaries(), _free_port()
    # Under /tmp itself: the server's user must reach its folder (pytest's are root's alone).
    root = Path(tempfile.mkdtemp(prefix="affectseq-pg-", dir="/tmp"))
    shutil.chown(root, "postgres", "postgres")
    data = root / "data"
    try:
        _as_postgres(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        _as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(root / "log"), "-w", "start")
        try:
            _as_postgres(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", database)
            yield f"postgresql+psycopg://postgres@127.0.0.1:{port}/{database}"
        finally:
            _as_postgres(str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop")
    finally:
        shutil.rmtree(root, ignore_errors=True)
