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


class PostgresServer:
    """A running cluster: its SQLAlchemy URL (psycopg 3), and stop()/start() to take it away and back."""

    def __init__(self, bin_dir: Path, data: Path, root: Path, port: int, database: str):
        self.bin_dir, self.data, self.port = bin_dir, data, port
        self.options = f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off"
        self.log = root / "log"
        self.url = f"postgresql+psycopg://postgres@127.0.0.1:{port}/{database}"

    def start(self) -> None:
        _as_postgres(
            str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-o", self.options, "-l", str(self.log), "-w", "start"
        )

    def stop(self) -> None:
        _as_postgres(str(self.bin_dir / "pg_ctl"), "-D", str(self.data), "-m", "fast", "-w", "stop")


@contextlib.contextmanager
def postgres_cluster(database: str = "affectseq") -> Iterator[PostgresServer]:
    """A running server with one empty database, stopped and removed afterwards."""
    bin_dir, port = _binaries(), _free_port()
    # Under /tmp itself: the server's user must reach its folder (pytest's are root's alone).
    root = Path(tempfile.mkdtemp(prefix="affectseq-pg-", dir="/tmp"))
    shutil.chown(root, "postgres", "postgres")
    data = root / "data"
    try:
        _as_postgres(str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8")
        server = PostgresServer(bin_dir, data, root, port=port, database=database)
        server.start()
        try:
            _as_postgres(str(bin_dir / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", "postgres", database)
            yield server
        finally:
            with contextlib.suppress(subprocess.CalledProcessError):  # stopped by the test already
                server.stop()
    finally:
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def postgres_server(database: str = "affectseq") -> Iterator[str]:
    """A running server with one empty database; yields its SQLAlchemy URL (psycopg 3)."""
    with postgres_cluster(database) as server:
        yield server.url
