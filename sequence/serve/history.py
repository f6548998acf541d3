"""What `sequence serve` saw, kept in a database through SQLAlchemy 2: class sessions, their sources and
every window line. SQLite on disk by default (WAL, so reads never wait on the writer), or any URL
(PostgreSQL, `postgresql+psycopg://...`, for several servers sharing one history).

Only states, names as given and timings are stored: never a frame, an embedding or an address.

Lines are written off the scoring path: the hub hands each to `History` (a bounded queue, never a
wait), and one writer thread (`history`) writes what has queued in one transaction. If the database
cannot be written, lines wait in the queue up to its bound (the oldest dropped past it, counted),
the failure is reported by `problem` (/healthz) and in the log, and writing is tried again.
"""

from __future__ import annotations

import csv
import io
import logging
import threading
import time
from collections import deque
from pathlib import Path

from sqlalchemy import JSON, Float, ForeignKey, Integer, String, create_engine, delete, event, func, select
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import DeclarativeBase, Mapped, Session, mapped_column

from embed.errors import ConfigError

log = logging.getLogger(__name__)
SCHEMA_VERSION = 1
BUFFER = 200_000  # lines kept while the database cannot be written (~ a class of 30 for two hours)
BATCH_WAIT_S = 0.5  # once a line is queued, how long the writer gathers more before a transaction
RETRY_S = 5.0  # after a failed write, before the next try
DAY_S = 86400.0


class Base(DeclarativeBase):
    pass


class Meta(Base):
    __tablename__ = "meta"
    key: Mapped[str] = mapped_column(String(32), primary_key=True)
    value: Mapped[str] = mapped_column(String(64))


class ClassSession(Base):
    __tablename__ = "sessions"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    started: Mapped[float] = mapped_column(Float)
    ended: Mapped[float | None] = mapped_column(Float, nullable=True)


class SourceRow(Base):
    __tablename__ = "sources"
    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    session_id: Mapped[int] = mapped_column(ForeignKey("sessions.id", ondelete="CASCADE"), index=True)
    name: Mapped[str] = mapped_column(String(200), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    status: Mapped[str] = mapped_column(String(16))
    reason: Mapped[str | None] = mapped_column(String(500), nullable=True)
    started: Mapped[float] = mapped_column(Float)
    ended: Mapped[float | None] = mapped_column(Float, nullable=True)


class WindowRow(Base):
    __tablename__ = "windows"
    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    source_id: Mapped[str] = mapped_column(ForeignKey("sources.id", ondelete="CASCADE"), index=True)
    t_start: Mapped[float] = mapped_column(Float)
    t_end: Mapped[float] = mapped_column(Float)
    frames: Mapped[int] = mapped_column(Integer)
    face_fraction: Mapped[float] = mapped_column(Float)
    states: Mapped[dict] = mapped_column(JSON)  # {state: {"level", "probs"}}, as the line has them
    latency_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    dropped: Mapped[int] = mapped_column(Integer)


def _engine(url: str):
    if "://" not in url:
        url = f"sqlite:///{Path(url).resolve()}"
    engine = create_engine(url, pool_pre_ping=True)
    if engine.dialect.name == "sqlite":

        @event.listens_for(engine, "connect")
        def _pragmas(connection, _record) -> None:  # WAL: readers never wait on the writer
            cursor = connection.cursor()
            cursor.execute("PRAGMA journal_mode=WAL")
            cursor.execute("PRAGMA foreign_keys=ON")
            cursor.execute("PRAGMA busy_timeout=30000")
            cursor.close()

    return engine


class History:
    """One server's history: the session it records into, and its writer thread (close() ends it
    after what is queued is written, or given up on once the database stays unreachable)."""

    def __init__(
        self, url: str, session: str | None = None, retain_days: float = 30.0, buffer: int = BUFFER, record: bool = True
    ):
        """`record` False: only to read (a report): no session is opened and nothing is deleted."""
        self.url, self.retain_days = url, retain_days
        self.session_id, self.session_name = None, None
        try:
            if not record and "://" not in url and not Path(url).is_file():
                raise ConfigError(f"--db {url}: no such file; fix: give the history database a server wrote")
            self.engine = _engine(url)
            self._check_schema()
            if record:
                self.session_id, self.session_name = self._open_session(session)
                self._purge()
        except SQLAlchemyError as e:
            raise ConfigError(
                f"--db {_shown(url)}: cannot open ({str(e).splitlines()[0]}); fix: check the URL and the server"
            ) from None
        self._queue: deque = deque(maxlen=buffer)
        self._queued = self._written = 0  # items ever queued / written: what a reader waits for
        self.lost = 0  # lines dropped from a full queue while the database could not be written
        self.problem: str | None = None
        self._cond = threading.Condition()
        self._stop = threading.Event()
        self._purged = time.time()
        self._thread = threading.Thread(target=self._write_loop, name="history", daemon=True)
        self._thread.start()

    # ---- set-up ----

    def _check_schema(self) -> None:
        Base.metadata.create_all(self.engine)
        with Session(self.engine) as s:
            row = s.get(Meta, "schema")
            if row is None:
                s.add(Meta(key="schema", value=str(SCHEMA_VERSION)))
                s.commit()
            elif int(row.value) != SCHEMA_VERSION:
                raise ConfigError(
                    f"--db {_shown(self.url)}: its history has schema version {row.value}, this server writes "
                    f"{SCHEMA_VERSION}; fix: give a new --db (the old one is kept as it is)"
                )

    def _open_session(self, name: str | None) -> tuple[int, str]:
        """The session named (continued when it exists), or a new one named by the time."""
        name = name or time.strftime("%Y-%m-%d %H:%M:%S")
        with Session(self.engine) as s:
            row = s.scalars(select(ClassSession).where(ClassSession.name == name)).first()
            if row is None:
                row = ClassSession(name=name, started=time.time())
                s.add(row)
            row.ended = None
            s.commit()
            return row.id, row.name

    def _purge(self) -> int:
        """Sessions that started more than retain_days ago, with their sources and windows."""
        cutoff = time.time() - self.retain_days * DAY_S
        with Session(self.engine) as s:
            old = list(s.scalars(select(ClassSession.id).where(ClassSession.started < cutoff)))
            if old:
                sources = select(SourceRow.id).where(SourceRow.session_id.in_(old))
                s.execute(delete(WindowRow).where(WindowRow.source_id.in_(sources)))
                s.execute(delete(SourceRow).where(SourceRow.session_id.in_(old)))
                s.execute(delete(ClassSession).where(ClassSession.id.in_(old)))
                s.commit()
                log.info("history: %d sessions older than %g days deleted", len(old), self.retain_days)
        return len(old)

    # ---- what the hub hands over (never waits) ----

    def source(self, row: dict) -> None:
        """A source started or changed status: {"id", "name", "kind", "status", "reason", "started"};
        it belongs to the session current now."""
        self._put(("source", {**row, "session_id": self.session_id}))

    def window(self, source_id: str, line: dict) -> None:
        self._put(("window", source_id, line))

    def _put(self, item: tuple) -> None:
        with self._cond:
            if len(self._queue) == self._queue.maxlen:
                self.lost += 1
            self._queue.append((time.monotonic(), *item))
            self._queued += 1
            self._cond.notify_all()

    def flush(self, timeout: float = 10.0) -> None:
        """Wait until what was queued before this call is written (a reader sees every line scored so
        far), at most `timeout` seconds (the database may be down: then the reader sees what is there)."""
        with self._cond:
            target = self._queued
            self._cond.wait_for(lambda: self._written >= target or self._stop.is_set(), timeout=timeout)

    def lag(self) -> tuple[int, float]:
        """Lines waiting to be written, and how long the oldest has waited (seconds)."""
        with self._cond:
            oldest = self._queue[0][0] if self._queue else None
            return len(self._queue), 0.0 if oldest is None else time.monotonic() - oldest

    # ---- the writer thread ----

    def _write_loop(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._queue or self._stop.is_set())
                if not self._queue and self._stop.is_set():
                    return
            self._stop.wait(BATCH_WAIT_S)  # gather a batch (or go at once when stopping)
            with self._cond:
                batch = list(self._queue)
            try:
                self._write(batch)
            except SQLAlchemyError as e:
                self.problem = f"history database unreachable ({str(e).splitlines()[0][:200]}); {len(batch)} lines waiting"
                log.error("history: %s", self.problem)
                if self._stop.wait(RETRY_S):
                    return  # stopping: what could not be written is given up, and said
                continue
            with self._cond:
                for _ in batch:
                    self._queue.popleft()
                self._written += len(batch)
                self._cond.notify_all()
            self.problem = None
            if time.time() - self._purged > DAY_S:
                self._purged = time.time()
                self._purge()

    def _write(self, batch: list[tuple]) -> None:
        with Session(self.engine) as s, s.begin():
            for _, *item in batch:
                if item[0] == "source":
                    row = item[1]
                    existing = s.get(SourceRow, row["id"])
                    if existing is None:
                        s.add(SourceRow(ended=None, **row))
                    else:
                        existing.status, existing.reason = row["status"], row["reason"]
                        existing.ended = time.time() if row["status"] in ("ended", "failed") else None
                    s.flush()
                else:
                    _, source_id, line = item
                    s.add(
                        WindowRow(
                            source_id=source_id,
                            t_start=line["t_start"],
                            t_end=line["t_end"],
                            frames=line["frames"],
                            face_fraction=line["face_fraction"],
                            states=line.get("states") or {},
                            latency_s=line.get("latency_s"),
                            dropped=line.get("dropped") or 0,
                        )
                    )

    def close(self) -> None:
        """Write what is queued (one last try), then end the writer thread."""
        self._stop.set()
        with self._cond:
            self._cond.notify_all()
        self._thread.join()
        if self._queue:
            log.error("history: %d lines could not be written to %s", len(self._queue), _shown(self.url))
        with Session(self.engine) as s:
            try:
                row = s.get(ClassSession, self.session_id) if self.session_id is not None else None
                if row is not None:
                    row.ended = time.time()
                    s.commit()
            except SQLAlchemyError:
                pass
        self.engine.dispose()

    # ---- sessions ----

    def start_session(self, name: str) -> dict:
        """End the current session and record into `name` from now on (continued if it exists)."""
        with Session(self.engine) as s:
            current = s.get(ClassSession, self.session_id)
            if current is not None and current.name != name:
                current.ended = time.time()
                s.commit()
        self.session_id, self.session_name = self._open_session(name)
        return {"id": self.session_id, "name": self.session_name}

    def sessions(self) -> list[dict]:
        """Every session kept, oldest first, with its number of sources."""
        self.flush()
        with Session(self.engine) as s:
            counts = dict(s.execute(select(SourceRow.session_id, func.count()).group_by(SourceRow.session_id)).all())
            rows = s.scalars(select(ClassSession).order_by(ClassSession.started))
            return [
                {"id": r.id, "name": r.name, "started": r.started, "ended": r.ended, "sources": counts.get(r.id, 0)}
                for r in rows
            ]

    def session_windows(self, session: int | str) -> tuple[dict, list[dict]]:
        """A session (by id or name) and its windows, each with its source's id, name and start."""
        self.flush()
        with Session(self.engine) as s:
            where = ClassSession.id == session if isinstance(session, int) else ClassSession.name == session
            found = s.scalars(select(ClassSession).where(where)).first()
            if found is None:
                raise KeyError(session)
            query = (
                select(WindowRow, SourceRow)
                .join(SourceRow, WindowRow.source_id == SourceRow.id)
                .where(SourceRow.session_id == found.id)
                .order_by(SourceRow.started, WindowRow.t_start)
            )
            rows = [
                {"source": src.id, "name": src.name, "source_started": src.started, **_as_line(w)}
                for w, src in s.execute(query).all()
            ]
            return {"id": found.id, "name": found.name, "started": found.started, "ended": found.ended}, rows

    # ---- reading and erasing (a request's, off the event loop) ----

    def windows_of(self, source_id: str, t_from: float | None = None, t_to: float | None = None) -> list[dict]:
        self.flush()
        query = select(WindowRow).where(WindowRow.source_id == source_id).order_by(WindowRow.t_start)
        if t_from is not None:
            query = query.where(WindowRow.t_end > t_from)
        if t_to is not None:
            query = query.where(WindowRow.t_start < t_to)
        with Session(self.engine) as s:
            return [_as_line(w) for w in s.scalars(query)]

    def erase(self, name: str) -> int:
        """Everything stored under a student's name: their sources and windows. Returns the rows removed."""
        self.flush()  # lines of theirs still queued are erased too, not written after
        with Session(self.engine) as s, s.begin():
            ids = list(s.scalars(select(SourceRow.id).where(SourceRow.name == name)))
            if not ids:
                return 0
            windows = s.execute(delete(WindowRow).where(WindowRow.source_id.in_(ids))).rowcount
            sources = s.execute(delete(SourceRow).where(SourceRow.id.in_(ids))).rowcount
        log.info("history: erased %d sources and %d windows of one student", sources, windows)
        return windows + sources


def _as_line(w: WindowRow) -> dict:
    return {
        "t_start": w.t_start,
        "t_end": w.t_end,
        "frames": w.frames,
        "face_fraction": w.face_fraction,
        "states": w.states,
        "latency_s": w.latency_s,
        "dropped": w.dropped,
    }


def as_csv(lines: list[dict], states: list[str]) -> str:
    """Stored windows as CSV: one row each, per state its level and probabilities."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    levels = max((len(v["probs"]) for w in lines for v in (w["states"] or {}).values() if v), default=4)
    writer.writerow(
        ["t_start", "t_end", "frames", "face_fraction", "latency_s", "dropped"]
        + [f"{s}_{c}" for s in states for c in ["level", *(f"p{k}" for k in range(levels))]]
    )
    for w in lines:
        row = [w["t_start"], w["t_end"], w["frames"], w["face_fraction"], w["latency_s"], w["dropped"]]
        for s in states:
            v = (w["states"] or {}).get(s)
            row += [v["level"], *v["probs"]] if v else [""] * (levels + 1)
        writer.writerow(row)
    return buf.getvalue()


def _shown(url: str) -> str:
    """A database URL without its password."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True) if "://" in url else url
    except Exception:  # noqa: BLE001 (only for showing it)
        return "<the --db URL>"
