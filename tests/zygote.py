"""`python -m embed|sequence ARGS` as real processes that skip the interpreter's start-up: each is forked
from a server process (a zygote, as Android starts apps and Mercurial's chg starts commands) that has
already imported the third-party libraries every command imports. Importing torch and torchvision is
most of what a short-lived server, live stream or killed run costs a test (docs/performance.md, "Test
suite"); forked, they are imported once per test session.

What a forked command gets is a process of its own: its own pid, its standard streams (pipes or the
test's), exit code, signals (Ctrl-C raises KeyboardInterrupt as in a fresh interpreter), working
directory, environment and resource limits, and the interpreter's normal exit (threads joined, atexit
handlers). It imports every module of ours afresh, as `python -m` does; only third-party libraries are
already imported, with the environment of the test worker that started the zygote. Each command
still starts once as a genuine `python -m` process in tests/test_cli_processes.py.

The zygote forks a keeper per command, which forks the command, passes its pid back, waits for it and
sends its exit status; a keeper whose test went away (the connection closed) kills its command.

`python -m tests.zygote SOCKET PID` runs a zygote until process PID ends; tests use `Process` and `run`
(subprocess's Popen and run, for these two modules)."""

from __future__ import annotations

import contextlib
import gc
import json
import os
import resource
import runpy
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
from multiprocessing.connection import wait as wait_ready
from pathlib import Path

from filelock import FileLock

ROOT = Path(__file__).resolve().parents[1]
# What both CLIs' commands import from outside this project (those not imported here are imported by
# the command itself, as in a fresh process).
PRELOAD = (
    "numpy",
    "torch",
    "torchvision",
    "facenet_pytorch",
    "av",
    "PIL.Image",
    "zarr",
    "yaml",
    "typer",
    "rich.console",
    "pydantic",
    "filelock",
    "starlette.applications",
    "uvicorn",
    "sse_starlette",
    "sqlalchemy.orm",
    "prometheus_client",
    "sklearn.metrics",
)
_MESSAGE = 1 << 20  # a request: argv, environment and working directory, as JSON


# --- the zygote and the processes it forks ------------------------------------------------------------


def _serve(path: str, watched: int) -> tuple[dict, list[int]]:
    """Preload, then fork a keeper per request until process `watched` (the test session) ends; returns
    in a forked command with its request, in the zygote with none."""
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    gc.collect()
    gc.freeze()  # what was imported is shared with every fork, never walked or copied by its collections
    if threading.active_count() != 1:
        sys.exit(f"zygote: a preloaded library started a thread ({threading.enumerate()}): cannot fork safely")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    server.bind(path)
    server.listen()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # keepers are reaped by the kernel
    session = os.pidfd_open(watched)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        if session in wait_ready([server, session]):
            shutil.rmtree(os.path.dirname(path), ignore_errors=True)
            return {}, []
        conn, _ = server.accept()
        data, fds, _, _ = socket.recv_fds(conn, _MESSAGE, 3)
        if not data:  # a connection that only checked the zygote is there
            conn.close()
            continue
        if os.fork() == 0:
            os.close(session)
            server.close()
            signal.signal(signal.SIGCHLD, signal.SIG_DFL)
            return _keep(conn, json.loads(data), fds)
        conn.close()
        for fd in fds:
            os.close(fd)


def _keep(conn: socket.socket, request: dict, fds: list[int]) -> tuple[dict, list[int]]:
    """The keeper: fork the command, send its pid, wait for it, send its exit code, and exit."""
    pid = os.fork()
    if pid == 0:
        conn.close()
        return request, fds
    for fd in fds:
        os.close(fd)
    conn.send(str(pid).encode())
    pidfd = os.pidfd_open(pid)
    ready = wait_ready([pidfd, conn])
    if pidfd not in ready:  # the connection closed: the test that started it is gone
        os.kill(pid, signal.SIGKILL)
    _, status = os.waitpid(pid, 0)
    with contextlib.suppress(OSError):
        conn.send(str(os.waitstatus_to_exitcode(status)).encode())
    os._exit(0)


def _become(request: dict, fds: list[int]) -> None:
    """Turn this fork into `python -m MODULE ARGS` as the request describes, and run it."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request["cwd"])
    os.environ.clear()
    os.environ.update(request["env"])
    for name, limit in request["rlimits"].items():
        resource.setrlimit(getattr(resource, name), tuple(limit))
    for name in request["ignore"]:
        signal.signal(getattr(signal, name), signal.SIG_IGN)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # as a fresh interpreter (see Process)
    sys.path[0] = os.getcwd()  # `python -m` puts the working directory first
    sys.argv = ["-m", *request["args"]]
    runpy.run_module(request["module"], run_name="__main__", alter_sys=True)


# --- the test's side -----------------------------------------------------------------------------------


class _Zygote:
    """The test session's zygote, shared by its xdist workers: the first to need it starts it (under a
    file lock), and it ends with the session (the xdist controller, or this process without xdist)."""

    def __init__(self) -> None:
        session = os.environ.get("PYTEST_XDIST_TESTRUNUID")
        folder = Path(tempfile.gettempdir()) / f"affectseq-zygote-{session or os.getpid()}"
        folder.mkdir(exist_ok=True)
        self.path = str(folder / "socket")
        with FileLock(str(folder / "lock")):
            try:
                self._socket().close()
            except OSError:  # none yet, or one whose zygote is gone
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self.path)
                self._start(os.getppid() if session else os.getpid())

    def _start(self, watched: int) -> None:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.zygote", self.path, str(watched)],
            cwd=ROOT,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
            start_new_session=True,  # a signal to this worker's process group is not the session's end
        )
        with proc.stdout:
            if proc.stdout.readline() != "ready\n":
                raise RuntimeError(f"the zygote did not start (exit {proc.wait()})")

    def _socket(self) -> socket.socket:
        conn = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        try:
            conn.connect(self.path)
        except OSError:
            conn.close()
            raise
        return conn

    def connect(self, request: dict, fds: list[int]) -> socket.socket:
        conn = self._socket()
        socket.send_fds(conn, [json.dumps(request).encode()], fds)
        return conn


_zygote: _Zygote | None = None
_lock = threading.Lock()


def _the_zygote() -> _Zygote:
    global _zygote
    with _lock:
        if _zygote is None:
            _zygote = _Zygote()
        return _zygote


class Process:
    """`python -m MODULE ARGS` forked from the session's zygote, with subprocess.Popen's interface for
    what the tests use: stdin/stdout/stderr each None (the test's own) or subprocess.PIPE; `text`;
    `env` (default: the test's); `rlimits` ({"RLIMIT_FSIZE": (soft, hard)}) and `ignore` (signal names
    set to SIG_IGN), as a preexec_fn would. SIGINT raises KeyboardInterrupt in it, as in an interpreter
    started from a terminal."""

    def __init__(
        self,
        module: str,
        args: list[str],
        *,
        stdin=None,
        stdout=None,
        stderr=None,
        text: bool = False,
        env: dict | None = None,
        rlimits: dict | None = None,
        ignore: tuple[str, ...] = (),
    ) -> None:
        self.args = [sys.executable, "-m", module, *args]
        self.returncode: int | None = None
        self.stdin = self.stdout = self.stderr = None
        child, theirs = [], []
        for fd, (name, spec) in enumerate((("stdin", stdin), ("stdout", stdout), ("stderr", stderr))):
            if spec is None:
                child.append(fd)
                continue
            assert spec is subprocess.PIPE, f"{name}: None or subprocess.PIPE"
            r, w = os.pipe()
            ours, end = (w, r) if name == "stdin" else (r, w)
            child.append(end)
            theirs.append(end)
            mode = ("w" if name == "stdin" else "r") + ("" if text else "b")
            setattr(self, name, open(ours, mode, buffering=1 if mode == "w" else -1))  # noqa: SIM115 (closed by its user)
        request = {
            "module": module,
            "args": list(args),
            "env": dict(os.environ if env is None else env),
            "cwd": os.getcwd(),
            "rlimits": {k: list(v) for k, v in (rlimits or {}).items()},
            "ignore": list(ignore),
        }
        try:
            self._conn = _the_zygote().connect(request, child)
            self.pid = int(self._conn.recv(64))
        finally:
            for fd in theirs:
                os.close(fd)

    def poll(self) -> int | None:
        if self.returncode is None and wait_ready([self._conn], 0):
            self._collect()
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        if self.returncode is None:
            if not wait_ready([self._conn], timeout):
                raise subprocess.TimeoutExpired(self.args, timeout)
            self._collect()
        return self.returncode

    def _collect(self) -> None:
        data = self._conn.recv(64)
        self._conn.close()
        if not data:
            raise RuntimeError(f"the zygote's keeper of {self.pid} went away")
        self.returncode = int(data)

    def send_signal(self, sig: int) -> None:
        if self.poll() is None:
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        self.send_signal(signal.SIGKILL)

    def communicate(self, timeout: float | None = None) -> tuple:
        """Read both pipes to their end (on threads, as subprocess does), close them and wait."""
        results: dict[str, object] = {}
        readers = [
            threading.Thread(target=lambda n=name, s=stream: results.__setitem__(n, s.read()), daemon=True)
            for name, stream in (("stdout", self.stdout), ("stderr", self.stderr))
            if stream is not None
        ]
        for t in readers:
            t.start()
        if self.stdin is not None:
            self.stdin.close()
        for t in readers:
            t.join(timeout)
        self.wait(timeout)
        for stream in (self.stdout, self.stderr):
            if stream is not None:
                stream.close()
        return results.get("stdout"), results.get("stderr")


def run(module: str, args: list[str], *, timeout: float | None = None, **kw) -> subprocess.CompletedProcess:
    """subprocess.run(capture_output=True) for `python -m MODULE ARGS`, forked (see Process)."""
    proc = Process(module, args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **kw)
    try:
        out, err = proc.communicate(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


if __name__ == "__main__":
    _request, _fds = _serve(sys.argv[1], int(sys.argv[2]))
    if _request:
        _become(_request, _fds)
