"""Test helpers: `sequence serve` as a real process on loopback, and streams pushed into it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests import zygote

FEED = Path(__file__).with_name("live_feed.py")


class Server:
    """`python -m sequence serve --port 0 ...` (forked from the session's zygote: tests/zygote.py), returned
    once it says where it listens (an event, not a guessed sleep); its stderr is collected on a thread."""

    def __init__(self, run: str, *extra: str):
        # Each server's history in its own folder unless the test names a database (removed by stop()).
        self.db_dir = None if "--db" in extra else Path(tempfile.mkdtemp(prefix="serve-db-"))
        db = [] if self.db_dir is None else ["--db", str(self.db_dir / "serve.db")]
        self.proc = zygote.Process(
            "sequence",
            ["serve", "--run", run, "--port", "0", "--device", "cpu", *db, *extra],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.err: list[str] = []
        self.url = None
        for line in self.proc.stderr:
            self.err.append(line)
            text = json.loads(line)["message"] if line.startswith('{"') else line  # --log-json
            if text.startswith("serving on "):
                self.url = text.split()[2].rstrip("/")
                break
        threading.Thread(target=lambda: self.err.extend(self.proc.stderr), daemon=True).start()
        if self.url is None:
            self.proc.wait(timeout=30)

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=60)

    def stop(self) -> str:
        self.proc.terminate()
        self.proc.wait(timeout=30)
        if self.db_dir is not None:
            shutil.rmtree(self.db_dir, ignore_errors=True)
        return "".join(self.err)


def push(
    url: str, sid: str, video: Path | None = None, data: bytes | None = None, token: str | None = None, realtime: bool = True
) -> int:
    """A push source's stream: VIDEO's packets as MPEG-TS at real-time pace (tests/live_feed.py; or as
    fast as they go), or the given bytes; a chunked PUT, returning its status code."""
    headers = {"Authorization": f"Bearer {token}"} if token else {}

    def body() -> Iterator[bytes]:
        if data is not None:
            yield data
            return
        cmd = [sys.executable, str(FEED), str(video)] + ([] if realtime else ["--no-realtime"])
        feeder = subprocess.Popen(cmd, stdout=subprocess.PIPE)
        while chunk := feeder.stdout.read1(65536):
            yield chunk
        feeder.wait()

    return httpx.put(f"{url}/sources/{sid}/stream", content=body(), headers=headers, timeout=120).status_code


def pushing(url: str, sid: str, **kw) -> threading.Thread:
    thread = threading.Thread(target=push, args=(url, sid), kwargs=kw, daemon=True)
    thread.start()
    return thread


def server_events(response: httpx.Response) -> Iterator[tuple[str, dict]]:
    """A server-sent event stream's (event, data) pairs, as they arrive."""
    event = None
    for line in response.iter_lines():
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: ") and event is not None:
            yield event, json.loads(line[6:])


class Listener(threading.Thread):
    """A source's server-sent events read on a thread until its `end` event; `subscribed` is set once
    the first event (its status) arrived, so nothing pushed after that can be missed."""

    def __init__(self, url: str, sid: str, token: str | None = None, on_event=None):
        super().__init__(daemon=True)
        self.url, self.sid, self.token, self.on_event = url, sid, token, on_event
        self.events: list[tuple[str, dict]] = []
        self.broken: Exception | None = None
        self.subscribed = threading.Event()
        self.start()
        self.subscribed.wait(timeout=60)

    def run(self) -> None:
        try:
            self._read()
        except httpx.TransportError as e:  # the server went (a test killed it): recorded, not raised in a thread
            self.broken = e

    def _read(self) -> None:
        headers = {"Authorization": f"Bearer {self.token}"} if self.token else {}
        with httpx.stream("GET", f"{self.url}/sources/{self.sid}/events", headers=headers, timeout=300) as response:
            for event, data in server_events(response):
                self.events.append((event, data))
                self.subscribed.set()
                if self.on_event is not None:
                    self.on_event(event)
                if event == "end":
                    return

    def windows(self) -> list[dict]:
        return [data for event, data in self.events if event == "window"]

    def end(self) -> dict:
        return next(data for event, data in self.events if event == "end")


class ClassListener(threading.Thread):
    """The class's event stream (/events), subscribed before a source is added, so that none of the
    source's events can be missed however fast it runs (a source's own stream only has what comes
    after it was opened): each source's events, as its own stream words them, read on a thread."""

    def __init__(self, url: str):
        super().__init__(daemon=True)
        self.url = url
        self.events: dict[str, list[tuple[str, dict]]] = {}
        self.changed = threading.Condition()
        self.subscribed = threading.Event()
        self.start()
        self.subscribed.wait(timeout=60)

    def run(self) -> None:
        with contextlib.suppress(httpx.TransportError), httpx.stream("GET", f"{self.url}/events", timeout=300) as response:
            for event, data in server_events(response):  # until the server stops
                self.subscribed.set()
                if event != "sources":  # the snapshot of the sources before this one
                    with self.changed:
                        self.events.setdefault(data["source"], []).append((event, data.get("line", data.get("state"))))
                        self.changed.notify_all()

    def until_end(self, sid: str, timeout: float = 120) -> list[tuple[str, dict]]:
        """Source `sid`'s events up to its `end`, once that came."""
        with self.changed:
            self.changed.wait_for(lambda: any(e == "end" for e, _ in self.events.get(sid, [])), timeout)
            return list(self.events.get(sid, []))
