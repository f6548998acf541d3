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
from typing import TYPE_CHECKING

from embed.errors import ConfigError
from sequence.run import Run

if TYPE_CHECKING:
    from sequence.serve.hub import SourceHub
    from sequence.serve.options import ServeOptions

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


def serve(options: ServeOptions) -> None:
    """Serve until interrupted (Ctrl-C or SIGTERM: uvicorn ends its loop, the hub stops every source
    and closes the engine). Prints `serving on URL` on stderr once the socket listens. With a TLS
    certificate and key, over HTTPS: beyond this machine a browser grants the student page its
    camera only on a secure page, and the token must not cross the network in clear."""
    import uvicorn

    token = read_token(options.token, options.token_file)
    host, port, max_sources = options.host, options.port, options.max_sources
    if not is_loopback(host) and not token:
        raise ConfigError(
            f"--host {host}: binding beyond this machine shows students' faces' states to the network; "
            f"fix: pass --token (or --token-file), or keep the default --host 127.0.0.1"
        )
    if max_sources < 1 or (options.sample_fps is not None and options.sample_fps <= 0):
        raise ConfigError(
            "--max-sources must be at least 1 and --sample-fps positive; fix: e.g. --max-sources 30 --sample-fps 5"
        )
    if options.allow_files is not None and not Path(options.allow_files).is_dir():
        raise ConfigError(
            f"--allow-files {options.allow_files}: no such folder; fix: name the folder of videos sources may read"
        )
    if (options.tls_cert is None) != (options.tls_key is None):
        raise ConfigError("--tls-cert and --tls-key go together; fix: pass both PEM files, or neither")
    tls = (options.tls_cert, options.tls_key) if options.tls_cert else None
    for f in tls or ():
        if not Path(f).is_file():
            raise ConfigError(f"{f}: no such file; fix: pass the PEM certificate and key with --tls-cert / --tls-key")
    run = Run.open(options.run)
    options.windows.for_run(run.config["clip_seconds"])  # a bad window fails before the networks load
    # Imported only now: a mistaken option or run folder is reported before seconds of imports.
    from sequence.serve.app import create_app
    from sequence.serve.history import History
    from sequence.serve.hub import SourceHub

    history = History(options.db, options.session, retain_days=options.retain_days)  # a bad --db fails now
    made: list[SourceHub] = []
    try:
        engine = run.engine(options.weights, options.device or "auto")
    except BaseException:
        history.close()
        raise
    try:

        def make_hub() -> SourceHub:
            made.append(SourceHub(run, engine, asyncio.get_running_loop(), options=options, history=history))
            return made[0]

        app = create_app(make_hub, token)
        sock = _listen(host, port)
        bound = sock.getsockname()[1]
        shown = f"[{host}]" if ":" in host else host
        where = (
            f"serving on {'https' if tls else 'http'}://{shown}:{bound}/ (run {run.path.name}, at most {max_sources} "
            f"sources{', token required' if token else ''})"
        )
        if options.log_json:
            log.warning("%s", where)  # a JSON line like every other (shown at any log level)
        else:
            print(where, file=sys.stderr, flush=True)
        certificate, key = tls or (None, None)
        config = uvicorn.Config(
            app,
            log_config=None,  # this process's logging (embed.console), not a second set-up of uvicorn's own
            log_level="warning",
            access_log=False,
            ws="websockets-sansio",
            lifespan="on",
            ssl_certfile=certificate,
            ssl_keyfile=key,
        )
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        engine.close()  # the hub has closed it on a normal shutdown; this covers a start that failed
        if not made:
            history.close()  # the hub closes it otherwise


def _listen(host: str, port: int) -> socket.socket:
    """A listening socket: connections wait in its backlog from now on, not refused while uvicorn starts."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(128)
    except OSError as e:
        sock.close()
        raise ConfigError(f"{host}:{port}: cannot listen ({e.strerror}); fix: choose another --port") from None
    return sock
