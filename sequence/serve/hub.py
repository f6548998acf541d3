"""The sources a server watches: each added to one engine (Run.engine: one decoder, tracker and window
scorer per source; one detector, backbone and head call for all of them), its window lines kept and
handed to whoever listens, its end or failure recorded with its reason. It ends alone; the others go on.

Lines and status changes are produced on each source's thread and delivered on the server's event loop
to subscriber queues. A subscriber that does not keep up loses its oldest events, never the source's
pace; one that leaves costs nothing. Memory per source is fixed: the last RECENT lines (what a page
that opens later draws its timeline from), counters, and a pushed stream's bounded pipe.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit, urlunsplit

from embed.push_pipe import PushPipe
from sequence.live import LiveWindows
from sequence.serve.metrics import ServeMetrics

log = logging.getLogger(__name__)

if TYPE_CHECKING:
    from embed.engine import EngineSource, StreamEngine
    from sequence.run import Run
    from sequence.serve.history import History
    from sequence.serve.options import ServeOptions

RECENT = 600  # lines kept per source: ten minutes of one-second windows for a page's timeline
# What a {"url"} source may name: network addresses. A path on the server's disk only under --allow-files:
# otherwise anyone holding the token could have the server read (and describe) any video file it can.
NETWORK_SCHEMES = ("rtsp", "rtsps", "rtmp", "http", "https", "srt", "udp", "tcp")
ACTIVE = ("waiting", "running")  # a source that holds a place: until its first frame, then while it runs
QUEUE = 256  # events a subscriber may fall behind by before its oldest are dropped
ENDED_KEPT = 64  # ended or failed sources still listed (the oldest are forgotten: a server runs for weeks)


class SourceError(ValueError):
    """A request the hub refuses, with the status code to answer it with."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def redact(url: str) -> str:
    """A URL without its user name and password (rtsp://user:pass@cam/ -> rtsp://***@cam/)."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparseable address>"
    if parts.username is None and parts.password is None:
        return url
    host = parts.hostname or ""
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))


@dataclass
class Source:
    id: str
    kind: str  # url, device or push
    label: str  # what it is shown as: never an address's credentials
    name: str  # a display name the client chose (a student's), or the label
    windows: LiveWindows
    secret: str = ""  # the raw address, only ever passed to the decoder and redacted from errors
    status: str = "waiting"  # until its first frame; then running, and at last ended or failed
    reason: str | None = None
    started: float = field(default_factory=time.time)
    recent: deque = field(default_factory=lambda: deque(maxlen=RECENT))
    subscribers: set[asyncio.Queue] = field(default_factory=set)
    pipe: PushPipe | None = None
    handle: EngineSource | None = None
    counted: tuple[int, int] = (0, 0)  # frames and dropped already in the server's metrics

    @property
    def latest(self) -> dict | None:
        return self.recent[-1] if self.recent else None

    def describe(self) -> dict:
        report = self.windows.report
        return {
            "id": self.id,
            "kind": self.kind,
            "source": self.label,
            "name": self.name,
            "status": self.status,
            "reason": self.reason,
            "started": round(self.started, 3),
            "windows": report.windows,
            "frames": report.frames,
            "dropped": report.dropped,
            "latest": self.latest,
        }

    def clean(self, text: str) -> str:
        """Text about this source with its raw address replaced by its label."""
        return text.replace(self.secret, self.label) if self.secret else text


class SourceHub:
    """Adds, lists and removes sources on one engine, which it owns from then on (close() closes it);
    fans their events out to subscribers. Its methods run on the server's event loop, except the
    callbacks marked as running on a source's thread."""

    def __init__(
        self,
        run: Run,
        engine: StreamEngine,
        loop: asyncio.AbstractEventLoop,
        options: ServeOptions,
        history: History | None = None,
    ):
        self.run, self.engine, self.loop, self.history = run, engine, loop, history
        self.scorer = run.scorer(options.device or "auto", engine.stage)
        self.windows = options.windows.for_run(run.config["clip_seconds"])
        self.max_sources, self.sample_fps = options.max_sources, options.sample_fps
        self.allow_files = Path(options.allow_files).resolve() if options.allow_files else None
        self.idle_timeout = options.idle_timeout
        self.sources: dict[str, Source] = {}
        self.everyone: set[asyncio.Queue] = set()  # subscribers to every source's events
        self.lock = threading.Lock()
        # A pushed stream's writer waits while its pipe is full: one thread each, never the event loop's.
        self.pushers = ThreadPoolExecutor(max_workers=options.max_sources, thread_name_prefix="push")
        self.metrics = ServeMetrics(self.status_counts, engine.stage.stats, history.lag if history else None)
        self.started = time.time()

    # ---- adding and removing ----

    def add(self, spec: dict) -> Source:
        """A source from a request's JSON: {"url": ...}, {"device": ..., "input_format": ...} or
        {"push": true, "format": ...}, each with an optional "name"."""
        kinds = [k for k in ("url", "device", "push") if spec.get(k)]
        if len(kinds) != 1:
            raise SourceError('give exactly one of "url", "device" or "push": true; e.g. {"url": "rtsp://cam/1"}')
        kind = kinds[0]
        with self.lock:
            running = sum(s.status in ACTIVE for s in self.sources.values())
            if running >= self.max_sources:
                raise SourceError(
                    f"the server already watches its maximum of {self.max_sources} sources; fix: remove one "
                    f"(DELETE /sources/ID) or start the server with a higher --max-sources",
                    429,
                )
            # Unique across restarts and across servers sharing one history database.
            sid = f"s{secrets.token_hex(4)}"
        input_format, options = spec.get("input_format") or spec.get("format"), spec.get("input_options") or {}
        if not isinstance(options, dict):
            raise SourceError('"input_options" must be an object of FFmpeg options, e.g. {"video_size": "640x480"}')
        if kind == "push":
            pipe = PushPipe(f"push {sid}", idle_timeout=self.idle_timeout)
            target, label, secret = pipe, "push", ""
        elif kind == "url":
            url = str(spec["url"])
            target, label, secret = self._address(url), redact(url), url
        else:
            device = str(spec["device"])
            # Resolved, so that /dev/../some/file is the file it names.
            in_dev = Path(device).resolve().is_relative_to("/dev")
            target, label, secret = device if in_dev else self._local_file(device, "device"), device, ""
        windows = LiveWindows(self.run.states, self.scorer.score, self.windows, keep_timeline=False)
        name = str(spec.get("name") or label)[:80]
        source = Source(sid, kind, label, name=name, windows=windows, secret=secret)
        source.pipe = target if kind == "push" else None
        with self.lock:
            self.sources[sid] = source
        reading = self.run.reading(
            target,
            input_format=input_format,
            input_options={str(k): str(v) for k, v in options.items()},
            sample_fps=self.sample_fps,
            live=True,
            idle_timeout=self.idle_timeout,
        )
        source.handle = self.engine.add(
            target,
            on_chunk=lambda chunk: self._chunk(source, chunk),
            on_end=lambda error: self._end(source, error),
            reading=reading,
            name=f"{sid} ({label})",
        )
        self._status(source)
        self._record(source)
        log.info("source %s (%s) added", sid, kind)
        return source

    def _address(self, url: str) -> str:
        """A url source's address: a network one as it is; a local file only under --allow-files."""
        scheme = urlsplit(url).scheme.lower() if "://" in url else ""
        if scheme in NETWORK_SCHEMES:
            return url
        if scheme not in ("", "file"):
            raise SourceError(
                f'"url": scheme {scheme!r} is not served; fix: use one of {", ".join(NETWORK_SCHEMES)} '
                f'(a camera: {{"device": "/dev/video0"}}; a browser or encoder: {{"push": true}})'
            )
        return self._local_file(unquote(urlsplit(url).path) if scheme else url, "url")

    def _local_file(self, path: str, key: str) -> str:
        if self.allow_files is None:
            raise SourceError(
                f'"{key}": this server reads no local file (only network addresses and /dev devices); '
                f"fix: push the video, or start the server with --allow-files DIR holding it"
            )
        resolved = Path(path).resolve()
        if not resolved.is_relative_to(self.allow_files):
            raise SourceError(f'"{key}": not under --allow-files {self.allow_files}; fix: name a video in that folder')
        return str(resolved)

    def remove(self, sid: str) -> Source:
        source = self.get(sid)
        with self.lock:
            del self.sources[sid]
        if source.handle is not None:
            source.handle.stop()
        if source.pipe is not None:
            source.pipe.close()  # its decoder sees the end at once
        if source.status in ACTIVE:
            source.status, source.reason = "ended", "removed"
        self._record(source)
        self._deliver(source, {"event": "end", "data": source.describe()})
        return source

    def get(self, sid: str) -> Source:
        try:
            return self.sources[sid]
        except KeyError:
            raise SourceError(f"no source {sid!r}; fix: GET /sources lists them", 404) from None

    def is_push(self, sid: str) -> bool:
        """Whether a source that is still listed takes pushed bytes."""
        source = self.sources.get(sid)
        return source is not None and source.pipe is not None

    def describe(self, sid: str) -> dict:
        """One source's description; one that has been forgotten meanwhile reads as ended."""
        source = self.sources.get(sid)
        return source.describe() if source is not None else {"id": sid, "status": "ended"}

    def status_counts(self) -> dict[str, int]:
        """How many listed sources are in each status."""
        with self.lock:
            statuses = [s.status for s in self.sources.values()]
        return {status: statuses.count(status) for status in set(statuses)}

    def health(self) -> dict:
        """What /healthz answers: ok or degraded (and why), the sources by status and the uptime; no
        name, no address."""
        problem = self.history.problem if self.history is not None else None
        return {
            "status": "degraded" if problem else "ok",
            **({"reason": problem} if problem else {}),
            "sources": self.status_counts(),
            "uptime_s": round(time.time() - self.started, 1),
        }

    def listing(self, recent: int = 0) -> list[dict]:
        """Every source; with `recent`, each with its last lines (a page's timeline)."""
        with self.lock:
            sources = list(self.sources.values())
        return [{**s.describe(), **({"recent": list(s.recent)[-recent:]} if recent else {})} for s in sources]

    def close(self) -> None:
        """Stop every source, then the engine (its sources' threads and the model stage end before
        this returns) and the pushers (their pipes are closed, so none of them waits any more)."""
        for sid in list(self.sources):
            with contextlib.suppress(SourceError):
                self.remove(sid)
        self.engine.close()
        self.pushers.shutdown(wait=True, cancel_futures=True)
        if self.history is not None:
            self.history.close()  # after the engine: no line comes any more

    # ---- pushing ----

    async def push(self, sid: str, data: bytes) -> None:
        """Bytes of a pushed source's stream, as they arrive (waits while its pipe is full)."""
        source = self.get(sid)
        if source.pipe is None:
            raise SourceError(f'source {sid} is not a push source; fix: POST /sources with {{"push": true}}', 409)
        # Straight in while the pipe has room (a webcam's every packet): a thread only for a full
        # pipe's wait, which must not hold up the loop.
        if not source.pipe.offer(data):
            await self.loop.run_in_executor(self.pushers, source.pipe.push, data)

    def push_ended(self, sid: str) -> None:
        source = self.sources.get(sid)
        if source is not None and source.pipe is not None:
            source.pipe.end()

    # ---- events ----

    def subscribe(self, sid: str | None = None) -> tuple[asyncio.Queue, Callable[[], None]]:
        """A queue of (event, data) for one source or (None) every source, and how to leave."""
        queue: asyncio.Queue = asyncio.Queue(maxsize=QUEUE)
        group = self.everyone if sid is None else self.get(sid).subscribers
        group.add(queue)
        return queue, lambda: group.discard(queue)

    def _chunk(self, source: Source, chunk) -> None:  # the source's thread
        if source.status == "waiting":
            self.loop.call_soon_threadsafe(self._running, source)
        for line in source.windows.add(chunk):
            self.loop.call_soon_threadsafe(self._line, source, line)

    def _end(self, source: Source, error: Exception | None) -> None:  # the source's thread
        ended = None if error is None else source.clean(str(error).splitlines()[0] if str(error) else type(error).__name__)
        lines = source.windows.close(ended)
        self.loop.call_soon_threadsafe(self._finished, source, lines, ended)

    def _count(self, source: Source, line: dict | None = None) -> None:
        """The source's frames and drops since last counted (and its line) into the metrics."""
        report = source.windows.report
        frames, dropped = report.frames - source.counted[0], report.dropped - source.counted[1]
        source.counted = (report.frames, report.dropped)
        self.metrics.count(line, frames=frames, dropped=dropped)

    def _running(self, source: Source) -> None:
        if source.status == "waiting":  # its first frames: not ended or removed meanwhile
            source.status = "running"
            self._status(source)
            self._record(source)

    def _record(self, source: Source) -> None:
        """The source's row in the history (its name as given, never its address)."""
        if self.history is not None:
            name = source.name if source.name != source.label else source.id  # a name given, never an address
            row = {"id": source.id, "name": name, "kind": source.kind, "status": source.status}
            self.history.source({**row, "reason": source.reason, "started": source.started})

    def _line(self, source: Source, line: dict) -> None:
        source.recent.append(line)
        if self.history is not None:
            self.history.window(source.id, line)
        self._count(source, line)
        report = source.windows.report
        counts = {"frames": report.frames, "dropped": report.dropped, "windows": report.windows}
        self._deliver(source, {"event": "window", "data": line, "counts": counts})

    def _finished(self, source: Source, lines: list[dict], error: str | None) -> None:
        for line in lines:
            self._line(source, line)
        if source.status in ACTIVE:
            source.status, source.reason = ("failed", error) if error else ("ended", "end of stream")
        self._count(source)  # frames after its last window's
        self._record(source)
        self._status(source, "end")
        log.info("source %s %s: %s", source.id, source.status, source.reason)
        with self.lock:
            gone = [s.id for s in self.sources.values() if s.status not in ACTIVE][:-ENDED_KEPT]
            for sid in gone:
                del self.sources[sid]

    def _status(self, source: Source, event: str = "status") -> None:
        self._deliver(source, {"event": event, "data": source.describe()})

    def _deliver(self, source: Source, event: dict) -> None:
        for queue in (*source.subscribers, *self.everyone):
            item = event if queue in source.subscribers else {**event, "source": source.id}
            if queue.full():
                with contextlib.suppress(asyncio.QueueEmpty):
                    queue.get_nowait()  # a slow listener loses its oldest event, never the source's pace
            queue.put_nowait(item)


def check_spec(spec: object) -> dict:
    if not isinstance(spec, dict):
        raise SourceError('the body must be a JSON object, e.g. {"url": "rtsp://cam/1"} or {"push": true}')
    return spec
