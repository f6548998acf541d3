"""What `sequence serve` is told (shared by the server, which binds and checks, and the hub)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sequence.config import WindowOptions


@dataclass(frozen=True)
class ServeOptions:
    """The run whose model watches the sources; where to listen (any host but loopback needs a
    token, given here or in `token_file`); how many sources at once and at what frame rate (None:
    the run's); the windows; HTTPS with `tls_cert` and `tls_key`; `allow_files`, the one folder whose
    videos `{"url": PATH}` or a device path may name (None: network addresses and /dev only); a source
    that sends nothing for `idle_timeout` seconds fails, freeing its place; `log_json`: log lines as
    JSON objects; `db`, the history's database (a SQLite file, or a URL), `session` the class session
    recorded into (None: a new one named by the time; an existing name continues it), kept
    `retain_days` days."""

    run: Path
    host: str = "127.0.0.1"
    port: int = 8765
    token: str | None = None
    token_file: Path | None = None
    max_sources: int = 32
    sample_fps: float | None = None
    device: str | None = None
    weights: str | None = None
    windows: WindowOptions = field(default_factory=WindowOptions)
    tls_cert: Path | None = None
    tls_key: Path | None = None
    allow_files: Path | None = None
    idle_timeout: float = 30.0
    log_json: bool = False
    db: str = "serve.db"
    session: str | None = None
    retain_days: float = 30.0
