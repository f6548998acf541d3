"""Every thread the program starts ends with what started it (docs/architecture.md, "Threads"): after
`embed run`, `predict --live` and `serve` end, normally, on Ctrl-C and with a source that fails, no
thread they started is alive. Run in this process, so that its threads can be listed."""

from __future__ import annotations

import contextlib
import io
import signal
import sys
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest

from embed.cache import CacheStore
from embed.errors import ClipError
from embed.pipeline import EmbedRunOptions, run_embedding
from embed.stores import StoreQuery
from sequence.config import WindowOptions
from sequence.live import predict_live
from sequence.predict import PredictOptions
from sequence.serve.options import ServeOptions
from sequence.serve.server import serve
from tests.conftest import copy_tiny
from tests.embed_runs import clip_states

# zarr's own event loop and thread pool live as long as the process, started by the first zarr call
# of any kind (docs/architecture.md, "Threads"): the only threads allowed to outlive a command.
PROCESS_WIDE = ("zarr_io", "zarr_pool")


@contextlib.contextmanager
def no_thread_left(store: Path) -> Iterator[None]:
    CacheStore(store).complete_ids()  # zarr's process-wide threads exist before the count
    before = set(threading.enumerate())
    yield
    left = [t.name for t in threading.enumerate() if t not in before and not t.name.startswith(PROCESS_WIDE)]
    assert left == []


class Terminated(Exception):
    """What SIGTERM raises here (a process of its own would end)."""


def _terminated(signum, frame):
    raise Terminated


@contextlib.contextmanager
def ctrl_c(signum: int = signal.SIGINT) -> Iterator[Callable[[], None]]:
    """A function that sends `signum` to this process's main thread from any thread: Ctrl-C, with
    Python's own handler meanwhile (the KeyboardInterrupt a terminal's Ctrl-C raises), or SIGTERM (a
    service manager's stop), raising Terminated."""
    main = threading.main_thread().ident
    old = signal.signal(signum, signal.default_int_handler if signum == signal.SIGINT else _terminated)
    try:
        yield lambda: signal.pthread_kill(main, signum)
    finally:
        signal.signal(signum, old)


def _embed(manifest: Path) -> EmbedRunOptions:
    store = StoreQuery(manifest, backbone="fer2013")
    return EmbedRunOptions(store, "cpu", clips_in_flight=2, progress=False)


def test_embed_run_leaves_no_thread_at_its_end_with_a_failing_video_and_after_ctrl_c(tiny_embedded, tmp_path):
    manifest = copy_tiny(tiny_embedded, tmp_path / "whole")
    victim = sorted((tmp_path / "whole" / "data").rglob("*.avi"))[0]
    victim.write_bytes(victim.read_bytes()[:40] + b"garbage" * 50)
    with no_thread_left(tiny_embedded["store"]):
        report = run_embedding(_embed(manifest))
    assert report.embedded == 6 and [f["clip"] for f in report.failures] == [victim.stem] and not report.interrupted

    manifest = copy_tiny(tiny_embedded, tmp_path / "stopped")
    store = manifest.parent / "cache" / "tiny" / tiny_embedded["store"].name
    first_clip = threading.Event()
    with no_thread_left(tiny_embedded["store"]), ctrl_c() as press:

        def watch() -> None:  # the event: a clip committed complete (read from the store's files)
            while not any(clip_states(store).values()):
                if first_clip.wait(0.002):
                    return
            press()

        watcher = threading.Thread(target=watch)
        watcher.start()
        try:
            report = run_embedding(_embed(manifest))
        finally:
            first_clip.set()
            watcher.join()
    # Stopped after a clip was committed and before the last one: the clips in flight stopped after the
    # chunk in hand (the report may not have counted a clip committed just as Ctrl-C came).
    assert report.interrupted and 1 <= sum(clip_states(store).values()) < 7


def _live(live_setup: dict, source: str) -> PredictOptions:
    out = live_setup["tmp"] / "threads"  # the timeline goes here, not into the shared run folder
    return PredictOptions(source, Path(live_setup["run"]), device="cpu", windows=WindowOptions(hop=1.0), out=out)


def test_predict_live_leaves_no_thread_at_the_end_on_ctrl_c_and_when_the_source_fails(live_setup, tiny_embedded):
    lines: list[str] = []
    with no_thread_left(tiny_embedded["store"]):
        report = predict_live(_live(live_setup, str(live_setup["video"])), emit=lines.append)
    assert report.ended == "end of stream" and report.windows == len(lines) == 7

    with no_thread_left(tiny_embedded["store"]), ctrl_c() as press:
        report = predict_live(_live(live_setup, str(live_setup["video"])), emit=lambda line: press())
    assert report.ended == "interrupted"

    with no_thread_left(tiny_embedded["store"]), pytest.raises(ClipError, match="cannot open"):
        predict_live(_live(live_setup, "rtsp://127.0.0.1:9/camera"), emit=lines.append)


class _Listening(io.TextIOBase):
    """This process's stderr while a server starts: passed on, and `url` set from its `serving on`
    line (the event that it listens)."""

    def __init__(self, stderr) -> None:
        self.stderr, self.url, self.listening = stderr, None, threading.Event()

    def write(self, text: str) -> int:
        if text.startswith("serving on "):
            self.url = text.split()[2].rstrip("/")
            self.listening.set()
        return self.stderr.write(text)


@pytest.mark.parametrize("signum", [signal.SIGINT, signal.SIGTERM], ids=["ctrl-c", "sigterm"])
def test_serve_leaves_no_thread_once_stopped_with_a_source_streaming_and_one_failed(live_setup, tiny_embedded, signum):
    from tests.serve_helpers import Listener, push

    db = str(live_setup["tmp"] / f"threads-{signum}.db")
    options = ServeOptions(Path(live_setup["run"]), port=0, device="cpu", sample_fps=5, db=db)
    out = _Listening(sys.stderr)
    seen: dict = {}
    with no_thread_left(tiny_embedded["store"]), ctrl_c(signum) as press:

        def client() -> None:
            out.listening.wait()
            failed = httpx.post(f"{out.url}/sources", json={"url": "rtsp://127.0.0.1:9/cam"}).json()["id"]
            ended = Listener(out.url, failed)
            pushed = httpx.post(f"{out.url}/sources", json={"push": True, "name": "ada"}).json()["id"]
            watched = Listener(out.url, pushed)
            seen["status"] = push(out.url, pushed, video=live_setup["video"], realtime=False)
            ended.join()
            watched.join()
            seen["failed"], seen["pushed"] = ended.end(), watched.end()
            press()

        thread = threading.Thread(target=client)
        thread.start()
        try:
            # uvicorn stops on either signal, then hands it on to the handler it found.
            with contextlib.redirect_stderr(out), pytest.raises((KeyboardInterrupt, Terminated)):
                serve(options)
        finally:
            out.listening.set()
            thread.join()
    assert seen["status"] == 200 and seen["failed"]["status"] == "failed"
    assert (seen["pushed"]["status"], seen["pushed"]["reason"]) == ("ended", "end of stream")
