"""`sequence serve` keeps what it saw: every window line in a real database (SQLite on disk; a real
PostgreSQL server shared by two servers), still there after a restart that continues the session,
readable per source, and erasable per student."""

from __future__ import annotations

import csv
import io

import httpx
from sqlalchemy import create_engine, text

from tests.serve_helpers import Listener, Server, push

STORED = ("t_start", "t_end", "frames", "face_fraction", "states", "latency_s", "dropped")


def _stream(server: Server, name: str, video) -> tuple[str, list[dict]]:
    """A push source named `name` fed the video as fast as it goes: its id and the lines it gave."""
    sid = httpx.post(f"{server.url}/sources", json={"push": True, "name": name}).json()["id"]
    listener = Listener(server.url, sid)
    push(server.url, sid, video=video, realtime=False)
    listener.join(timeout=120)
    return sid, listener.windows()


def test_history_in_sqlite_survives_a_restart_and_a_students_erasure_leaves_no_row(live_setup, tmp_path):
    db = tmp_path / "class.db"
    server = Server(live_setup["run"], "--db", str(db), "--session", "Tuesday")
    try:
        sid, lines = _stream(server, "Ada", live_setup["video"])
    finally:
        server.stop()
    assert lines and sid.startswith("s") and len(sid) == 9

    # Restarted with the same session: it continues, and the source's history is still there.
    server = Server(live_setup["run"], "--db", str(db), "--session", "Tuesday")
    try:
        with server.client() as c:
            stored = c.get(f"/sources/{sid}/history").json()
            assert stored == [{k: line[k] for k in STORED} for line in lines]
            later = c.get(f"/sources/{sid}/history", params={"from": 3}).json()
            assert later == [w for w in stored if w["t_end"] > 3] and 0 < len(later) < len(stored)
            rows = list(csv.DictReader(io.StringIO(c.get(f"/sources/{sid}/history", headers={"Accept": "text/csv"}).text)))
            # A window whose frames were all dropped (the video is pushed faster than it plays) has
            # no states: an empty cell.
            levels = [("" if w["states"]["Engagement"] is None else str(w["states"]["Engagement"]["level"])) for w in lines]
            assert [r["Engagement_level"] for r in rows] == levels and any(levels)
            removed = c.request("DELETE", "/students/Ada/history").json()["removed"]
            assert removed == len(lines) + 1  # its windows and its source
            assert c.get(f"/sources/{sid}/history").json() == []
    finally:
        server.stop()
    with create_engine(f"sqlite:///{db}").connect() as conn:
        assert conn.execute(text("select count(*) from sources where name = 'Ada'")).scalar() == 0
        assert conn.execute(text("select count(*) from windows")).scalar() == 0
        sessions = conn.execute(text("select name, ended from sessions")).all()
    assert [name for name, _ in sessions] == ["Tuesday"] and sessions[0][1] is not None  # one session, closed


def test_two_servers_share_one_postgresql_history(live_setup, tmp_path):
    from tests.conftest import last_json, run_cli
    from tests.postgres import postgres_server

    with postgres_server() as url:
        first = Server(live_setup["run"], "--db", url, "--session", "Thursday")
        second = Server(live_setup["run"], "--db", url, "--session", "Thursday")
        try:
            a, lines_a = _stream(first, "Grace", live_setup["video"])
            b, lines_b = _stream(second, "Alan", live_setup["video"])
        finally:
            log = first.stop() + second.stop()
        with create_engine(url).connect() as conn:
            sources = dict(conn.execute(text("select id, name from sources")).all())
            counts = dict(conn.execute(text("select source_id, count(*) from windows group by source_id")).all())
            sessions = conn.execute(text("select count(*) from sessions")).scalar()
        # One report covers both servers' students.
        out = last_json(
            run_cli(
                "report", "--db", url, "--session", "Thursday", "--out", str(tmp_path), "--json", module="sequence"
            ).stdout
        )
    assert (out["students"], out["windows"]) == (2, len(lines_a) + len(lines_b))
    assert a != b and sources == {a: "Grace", b: "Alan"} and sessions == 1
    assert counts == {a: len(lines_a), b: len(lines_b)}
    assert "Traceback" not in log, log


def test_sessions_older_than_the_retention_are_deleted_at_start(tmp_path):
    from sequence.serve.history import History

    db = tmp_path / "old.db"
    old = History(str(db), "last term")
    old.source({"id": "sold", "name": "Ada", "kind": "push", "status": "ended", "reason": None, "started": 0.0})
    old.window("sold", {"t_start": 0.0, "t_end": 1.0, "frames": 5, "face_fraction": 1.0, "states": {}, "dropped": 0})
    old.close()
    with create_engine(f"sqlite:///{db}").begin() as conn:
        conn.execute(text("update sessions set started = started - 40 * 86400"))
    kept = History(str(db), "this week", retain_days=30)
    kept.close()
    with create_engine(f"sqlite:///{db}").connect() as conn:
        assert conn.execute(text("select name from sessions")).scalars().all() == ["this week"]
        assert conn.execute(text("select count(*) from windows")).scalar() == 0
        assert conn.execute(text("select count(*) from sources")).scalar() == 0


def test_a_history_of_another_schema_version_is_one_line_with_the_fix(tmp_path):
    import pytest

    from embed.errors import ConfigError
    from sequence.serve.history import History

    db = tmp_path / "older.db"
    History(str(db), "one").close()
    with create_engine(f"sqlite:///{db}").begin() as conn:
        conn.execute(text("update meta set value = '0' where key = 'schema'"))
    with pytest.raises(ConfigError) as e:
        History(str(db), "two")
    assert "schema version 0" in str(e.value) and "fix: give a new --db" in str(e.value) and "\n" not in str(e.value)


def test_a_server_killed_mid_class_loses_at_most_its_last_second(live_setup, tmp_path):
    """SIGKILL while a stream is pushed at real-time pace: the windows written before are all there,
    and only those of the last second (the writer's batch) can be missing."""
    import contextlib
    import signal
    import threading

    db = tmp_path / "killed.db"
    server = Server(live_setup["run"], "--db", str(db), "--session", "Friday")
    sid = httpx.post(f"{server.url}/sources", json={"push": True, "name": "Ada"}).json()["id"]
    seen: list[float] = []
    enough = threading.Event()

    def on_event(event: str) -> None:
        if event == "window" and len(listener.windows()) >= 4:
            enough.set()

    def feed() -> None:
        with contextlib.suppress(httpx.TransportError):  # cut off by the kill
            push(server.url, sid, video=live_setup["video"])

    listener = Listener(server.url, sid, on_event=on_event)
    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    assert enough.wait(timeout=120)
    seen = [w["t_end"] for w in listener.windows()]
    server.proc.send_signal(signal.SIGKILL)
    server.proc.wait(timeout=30)
    feeder.join(timeout=60)
    listener.join(timeout=60)
    with create_engine(f"sqlite:///{db}").connect() as conn:
        stored = (
            conn.execute(text("select t_end from windows where source_id = :s order by t_end"), {"s": sid}).scalars().all()
        )
    assert stored == seen[: len(stored)] and stored, (stored, seen)
    assert seen[-1] - (stored[-1] if stored else 0.0) <= 1.0 + 1e-9, (stored, seen)


def test_sessions_and_their_reports_served_and_written_offline(live_setup, tmp_path):
    from tests.conftest import last_json, run_cli

    db = tmp_path / "term.db"
    server = Server(live_setup["run"], "--db", str(db), "--session", "Monday")
    try:
        _, ada = _stream(server, "Ada", live_setup["video"])
        with server.client() as c:
            r = c.post("/sessions", json={"name": "Monday afternoon"})
            assert r.status_code == 201 and r.json()["name"] == "Monday afternoon"
            assert c.post("/sessions", json={}).status_code == 400
        _stream(server, "Grace", live_setup["video"])
        with server.client() as c:
            listed = c.get("/sessions").json()
            assert [(s["name"], s["sources"]) for s in listed] == [("Monday", 1), ("Monday afternoon", 1)]
            monday = listed[0]["id"]
            page = c.get(f"/sessions/{monday}/report")
            served_csv = c.get(f"/sessions/{monday}/report.csv").text
            png = c.get(f"/sessions/{monday}/report.png").content
            assert c.get("/sessions/999/report").status_code == 404
    finally:
        server.stop()
    assert page.status_code == 200 and "<td>Ada</td>" in page.text and "Grace" not in page.text
    rows = list(csv.DictReader(io.StringIO(served_csv)))
    assert len(rows) == len(ada) and {r["name"] for r in rows} == {"Ada"}
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    # The same files with no server running.
    out = last_json(
        run_cli(
            "report", "--db", str(db), "--session", "Monday", "--out", str(tmp_path / "r"), "--json", module="sequence"
        ).stdout
    )
    assert (out["students"], out["windows"]) == (1, len(ada))
    assert (tmp_path / "r" / "report.csv").read_text() == served_csv and (tmp_path / "r" / "report.png").stat().st_size > 0
    refused = run_cli("report", "--db", str(db), "--session", "Sunday", module="sequence", check=2)
    assert "Monday afternoon" in refused.stderr and "fix:" in refused.stderr


def test_lines_scored_while_the_database_is_down_are_written_once_it_is_back(live_setup):
    """PostgreSQL stopped under a running server: /healthz says degraded with the reason, lines wait in
    memory, and once the database is back every one of them is written and /healthz is ok again."""
    import time

    from tests.postgres import postgres_cluster

    def health_until(server: Server, status: str) -> dict:
        # /healthz is the observable: asked until it says `status` (the writer retries every 5 s).
        deadline = time.monotonic() + 60
        while (h := httpx.get(f"{server.url}/healthz").json())["status"] != status and time.monotonic() < deadline:
            time.sleep(0.5)
        return h

    with postgres_cluster() as pg:
        server = Server(live_setup["run"], "--db", pg.url, "--session", "Friday")
        try:
            pg.stop()
            sid, lines = _stream(server, "Ada", live_setup["video"])
            degraded = health_until(server, "degraded")
            pg.start()
            recovered = health_until(server, "ok")
            stored = httpx.get(f"{server.url}/sources/{sid}/history").json()
        finally:
            log = server.stop()
    assert degraded["status"] == "degraded" and "unreachable" in degraded["reason"] and "Ada" not in str(degraded)
    assert recovered["status"] == "ok"
    assert stored == [{k: line[k] for k in STORED} for line in lines]
    assert "Traceback" not in log, log
