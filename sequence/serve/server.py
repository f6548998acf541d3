"""`sequence serve`: a run's model watching many sources at once behind a local web server.

The networks are loaded before the socket is bound (a broken run fails before anyone can connect);
the server binds to 127.0.0.1 unless given a token, since what it watches are students' faces. It
stores no video and no frame: pushed bytes pass through memory to the decoder, and states are only
sent to whoever asks.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import socket
import sys
from pathlib import Path

from embed.errors import ConfigError
from sequence.run import Run
from sequence.serve.app import create_app
from sequence.serve.hub import SourceHub

log = logging.getLogger(__name__)


def read_token(token: str | None, token_file: Path | None) -> str | None:
    if token and token_file:
        raise ConfigError("--token and --token-file: give one; fix: keep the token in the file only")
    if token_file is not None:
        try:
            token = Path(token_file).read_text().strip()
        except OSError as e:
            raise ConfigError(f"{token_file}: cannot read the token ({e.strerror}); fix: check the path") from None
    if token is not None and len(token) < 16:
        raise ConfigError("the token is shorter than 16 characters; fix: e.g. --token $(openssl rand -hex 16)")
    return token


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def serve(
    run_dir: Path,
    host: str = "127.0.0.1",
    port: int = 8765,
    token: str | None = None,
    max_sources: int = 32,
    sample_fps: float | None = None,
    device: str | None = "auto",
    weights: str | None = None,
    window: float | None = None,
    hop: float = 1.0,
    smooth: float = 0.0,
    min_face_fraction: float | None = None,
    tls: tuple[Path, Path] | None = None,
) -> None:
    """Serve until interrupted. Prints `serving on URL` on stderr once the socket listens. With `tls`
    (certificate and key files) over HTTPS: beyond this machine a browser grants the student page
    its camera only on a secure page, and the token must not cross the network in clear."""
    import uvicorn

    if not is_loopback(host) and not token:
        raise ConfigError(
            f"--host {host}: binding beyond this machine shows students' faces' states to the network; "
            f"fix: pass --token (or --token-file), or keep the default --host 127.0.0.1"
        )
    if max_sources < 1 or (sample_fps is not None and sample_fps <= 0):
        raise ConfigError(
            "--max-sources must be at least 1 and --sample-fps positive; fix: e.g. --max-sources 30 --sample-fps 5"
        )
    for f in tls or ():
        if not Path(f).is_file():
            raise ConfigError(f"{f}: no such file; fix: pass the PEM certificate and key with --tls-cert / --tls-key")
    run = Run.open(run_dir)
    engine = run.engine(weights, device)

    def make_hub() -> SourceHub:
        loop = asyncio.get_running_loop()
        return SourceHub(run, engine, loop, device, window, hop, smooth, min_face_fraction, max_sources, sample_fps)

    app = create_app(make_hub, token)
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)  # connections wait in the backlog from now on, not refused while uvicorn starts
    except OSError as e:
        raise ConfigError(f"{host}:{port}: cannot listen ({e.strerror}); fix: choose another --port") from None
    bound = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host
    print(
        f"serving on {'https' if tls else 'http'}://{shown}:{bound}/ (run {run.path.name}, at most {max_sources} sources"
        f"{', token required' if token else ''})",
        file=sys.stderr,
        flush=True,
    )
    certificate, key = tls or (None, None)
    config = uvicorn.Config(
        app,
        log_level="warning",
        access_log=False,
        ws="websockets-sansio",
        lifespan="on",
        ssl_certfile=certificate,
        ssl_keyfile=key,
    )
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        engine.close()
