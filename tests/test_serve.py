"""`sequence serve` as a real server on loopback: pushed streams against offline predict, a broken
source failing alone, frames dropped rather than memory grown, the token on every endpoint, the limit
on sources, and addresses' credentials never echoed."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import psutil
import pytest
import websockets.sync.client

from embed.video import VideoStream
from sequence.run import Run
from tests.conftest import offline_windows, run_cli, same_as_offline
from tests.serve_helpers import ClassListener, Listener, Server, pushing

STATES = ["Boredom", "Engagement", "Confusion", "Frustration"]
TOKEN = "test-token-0123456789abcdef"
FOOTAGE = Path(__file__).parents[1] / "data" / "footage"


@pytest.fixture(scope="module")
def offline(live_setup, tmp_path_factory) -> list[dict]:
    """Offline predict's windows of the lesson video (hop 1 s): what each pushed copy must give."""
    return offline_windows(live_setup, tmp_path_factory.mktemp("offline"))


@pytest.fixture(scope="module")
def server(live_setup) -> Iterator[Server]:
    """One server with the default settings for the tests below (each adds sources of its own)."""
    server = Server(live_setup["run"])
    yield server
    server.stop()


def test_three_pushed_streams_equal_offline_predict_and_a_broken_one_fails_alone(server, live_setup, offline):
    with server.client() as c:
        ids = [c.post("/sources", json={"push": True, "name": f"student {i}"}).json()["id"] for i in range(3)]
        broken = c.post("/sources", json={"push": True, "name": "broken"}).json()["id"]
        listeners = {sid: Listener(server.url, sid) for sid in [*ids, broken]}
        feeds = [pushing(server.url, sid, video=live_setup["video"]) for sid in ids]
        garbage = np.random.default_rng(0).integers(0, 256, 300_000, dtype=np.uint8).tobytes()
        feeds.append(pushing(server.url, broken, data=garbage))
        for thread in [*feeds, *listeners.values()]:
            thread.join(timeout=180)
        listed = {s["id"]: s for s in c.get("/sources").json()}
    log = "".join(server.err)
    for sid in ids:
        windows, end = listeners[sid].windows(), listeners[sid].end()
        assert (end["status"], end["reason"]) == ("ended", "end of stream"), log
        assert end["frames"] + end["dropped"] == 35  # each frame embedded, or dropped while behind
        # The same windows as offline predict on the file, with the same tolerance as `predict --live`.
        assert [(w["t_start"], w["t_end"]) for w in windows] == [(r["start"], r["end"]) for r in offline]
        assert same_as_offline(windows, offline) == sum(w["dropped"] == 0 for w in windows) >= 1
        assert listed[sid]["status"] == "ended" and listed[sid]["latest"] == windows[-1]
    end = listeners[broken].end()
    assert end["status"] == "failed" and listeners[broken].windows() == [], end
    assert "cannot open" in end["reason"] and "send a container stream" in end["reason"] and "\n" not in end["reason"]
    assert listed[broken]["status"] == "failed"


def test_sources_faster_than_the_engine_drop_frames_and_memory_stays_flat(server, live_setup):
    """Three 20-s streams pushed as fast as they go: each keeps its latest frames and drops the rest
    (counted in its lines), every stream is read to its end, and the server's memory stays flat."""
    video = FOOTAGE / "WolfgangLanger_Pexels.mp4"
    # The frames the run's rate cap keeps of the 24-fps video: each is embedded, or counted dropped.
    kept = sum(len(c) for c in VideoStream(video, max_fps=Run.open(live_setup["run"]).rate_cap()))
    rss: list[float] = []
    process = psutil.Process(server.proc.pid)
    with server.client() as c:
        ids = [c.post("/sources", json={"push": True}).json()["id"] for _ in range(3)]

        def sample(event: str) -> None:
            if event == "window":
                rss.append(process.memory_info().rss / 2**20)

        listeners = [Listener(server.url, sid, on_event=sample) for sid in ids]
        feeds = [pushing(server.url, sid, video=video, realtime=False) for sid in ids]
        for thread in [*feeds, *listeners]:
            thread.join(timeout=300)
    for listener in listeners:
        end = listener.end()
        assert end["status"] == "ended" and end["dropped"] > 0, (end, "".join(server.err))
        assert end["frames"] + end["dropped"] == kept
        assert listener.windows()[-1]["t_end"] > 18.0 and listener.windows()[-1]["dropped"] > 0
    # Loosely (the bench measures it): flat, not growing with the streams' length. The second half of
    # the run peaks within 100 MB of the first half (batches of frames a source fell behind on come
    # and go; a leak would climb), and the whole stays under 2.5 GB.
    half = len(rss) // 2
    assert len(rss) > 20 and max(rss[half:]) - max(rss[:half]) < 100 and max(rss) < 2500, rss


def test_every_endpoint_refuses_a_request_without_the_token(live_setup):
    server = Server(live_setup["run"], "--token", TOKEN)
    try:
        with server.client(TOKEN) as ok:
            sid = ok.post("/sources", json={"push": True}).json()["id"]
        requests = [
            ("GET", "/"),
            ("GET", "/student"),
            ("GET", "/static/common.js"),
            ("GET", "/sources"),
            ("POST", "/sources"),
            ("GET", f"/sources/{sid}"),
            ("PUT", f"/sources/{sid}/stream"),
            ("GET", f"/sources/{sid}/events"),
            ("GET", "/events"),
            ("DELETE", f"/sources/{sid}"),
        ]
        for headers in ({}, {"Authorization": "Bearer wrong-token-0123456789"}, {"Cookie": "affectseq_token=wrong"}):
            for method, path in requests:
                r = httpx.request(method, server.url + path, headers=headers, json={"push": True}, timeout=30)
                assert r.status_code == 401 and "token" in r.json()["error"], (method, path, headers)
            ws = server.url.replace("http", "ws") + f"/sources/{sid}/ws"
            with pytest.raises(websockets.exceptions.InvalidStatus) as refused:
                websockets.sync.client.connect(ws, additional_headers=headers, open_timeout=30)
            assert refused.value.response.status_code == 403  # closed before the handshake: HTTP 403
        # The token link: a cookie, then the page and the API without the header.
        with httpx.Client(base_url=server.url, timeout=30, follow_redirects=True) as browser:
            r = browser.get(f"/?token={TOKEN}")
            assert r.status_code == 200 and "The class, live" in r.text and "token" not in str(r.url)
            assert browser.get("/sources").json()[0]["id"] == sid
            assert browser.delete(f"/sources/{sid}").json()["status"] == "ended"
        with server.client(TOKEN) as ok:
            other = ok.post("/sources", json={"push": True}).json()["id"]
        with websockets.sync.client.connect(
            server.url.replace("http", "ws") + f"/sources/{other}/ws",
            additional_headers={"Authorization": f"Bearer {TOKEN}"},
            open_timeout=30,
        ) as socket:
            socket.send(b"\x00" * 16)  # let in: its bytes reach the source
    finally:
        server.stop()
    # Beyond loopback only with a token.
    proc = run_cli("serve", "--run", live_setup["run"], "--host", "0.0.0.0", "--port", "0", module="sequence", check=2)
    assert "--token" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_sources_past_the_limit_are_refused_and_credentials_never_shown(live_setup):
    server = Server(live_setup["run"], "--max-sources", "2", "--allow-files", str(Path(live_setup["video"]).parent))
    try:
        with server.client() as c:
            r = c.post("/sources", json={"url": "rtsp://alice:hunter2secret@127.0.0.1:9/cam"})
            assert r.status_code == 201 and r.json()["source"] == "rtsp://***@127.0.0.1:9/cam"
            end = Listener(server.url, r.json()["id"])
            end.join(timeout=60)
            assert end.end()["status"] == "failed" and "cannot open" in end.end()["reason"]
            first = c.post("/sources", json={"push": True}).json()["id"]
            c.post("/sources", json={"push": True})
            refused = c.post("/sources", json={"push": True})
            assert refused.status_code == 429 and "--max-sources" in refused.json()["error"]
            assert c.post("/sources", json={"nothing": 1}).status_code == 400
            assert c.get("/sources/s99").status_code == 404
            c.delete(f"/sources/{first}")
            # Room again: a capture device's way in (a device path with its input format; here a
            # file, in the --allow-files folder, read as FFmpeg's mov demuxer reads a device, at its
            # own pace, to its end).
            device = {"device": str(live_setup["video"]), "input_format": "mov", "name": "camera"}
            every = ClassListener(server.url)  # a file is read faster than it plays: listening before it starts
            r = c.post("/sources", json=device)
            assert r.status_code == 201 and r.json()["kind"] == "device"
            camera = every.until_end(r.json()["id"])
            end = next(data for event, data in camera if event == "end")
            # Read to its end (the newest frames are never the ones dropped): its 7 one-second windows.
            assert end["status"] == "ended" and end["frames"] + end["dropped"] == 35, camera
            windows = [(w["t_start"], w["t_end"]) for event, w in camera if event == "window"]
            assert windows == [(float(k), k + 1.0) for k in range(7)]
            listed = c.get("/sources").text
    finally:
        log = server.stop()
    assert "hunter2secret" not in listed and "hunter2secret" not in log and "alice" not in listed


def test_https_with_a_certificate_for_hosts_beyond_loopback(live_setup, tmp_path):
    """With --tls-cert/--tls-key the server speaks HTTPS (a browser grants a camera only to a secure
    page beyond localhost, and the token must not cross the network in clear)."""
    import ssl
    import subprocess

    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost"]
        + ["-addext", "subjectAltName=IP:127.0.0.1", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    server = Server(live_setup["run"], "--token", TOKEN, "--tls-cert", str(cert), "--tls-key", str(key))
    try:
        assert server.url.startswith("https://127.0.0.1:")
        trusted = ssl.create_default_context(cafile=str(cert))
        r = httpx.get(server.url + "/sources", headers={"Authorization": f"Bearer {TOKEN}"}, verify=trusted)
        assert r.status_code == 200 and r.json() == []
        with pytest.raises(httpx.HTTPError):  # plain HTTP is not spoken there
            httpx.get(server.url.replace("https", "http") + "/sources", timeout=10)
    finally:
        server.stop()
    proc = run_cli("serve", "--run", live_setup["run"], "--tls-cert", str(cert), module="sequence", check=2)
    assert "--tls-key" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_closed_doors_local_files_idle_senders_and_waiting_sources(live_setup, tmp_path):
    """A url names a network address (a local file only under --allow-files); a source that sends
    nothing for --idle-timeout fails and frees its place; until its first frame a source is waiting."""
    import socket

    allowed = tmp_path / "videos"
    allowed.mkdir()
    (allowed / "lesson.mp4").write_bytes(Path(live_setup["video"]).read_bytes())
    silent = socket.create_server(("127.0.0.1", 0))  # accepts a connection and never sends a byte
    args = ("--max-sources", "1", "--idle-timeout", "1.5", "--allow-files", str(allowed))
    server = Server(live_setup["run"], *args)
    try:
        with server.client() as c:
            for spec, says in [
                ({"url": "/etc/passwd"}, "not under --allow-files"),
                ({"url": f"file://{live_setup['video']}"}, "not under --allow-files"),
                ({"url": "ftp://127.0.0.1/x.mp4"}, "scheme 'ftp' is not served"),
                ({"device": str(live_setup["video"])}, "not under --allow-files"),
                ({"device": f"/dev/..{live_setup['video']}"}, "not under --allow-files"),
            ]:
                r = c.post("/sources", json=spec)
                assert r.status_code == 400 and says in r.json()["error"] and "fix:" in r.json()["error"], (spec, r.text)
            # A push source that never sends: waiting, then failed after the idle timeout; its place freed.
            r = c.post("/sources", json={"push": True, "name": "closed laptop"})
            assert r.status_code == 201 and r.json()["status"] == "waiting"
            idle = Listener(server.url, r.json()["id"])
            idle.join(timeout=60)
            assert idle.end()["status"] == "failed" and "no bytes for 1.5 s" in idle.end()["reason"], idle.events
            # A network address that connects and then sends nothing fails the same way.
            r = c.post("/sources", json={"url": f"tcp://127.0.0.1:{silent.getsockname()[1]}"})
            assert r.status_code == 201
            stalled = Listener(server.url, r.json()["id"])
            stalled.join(timeout=60)
            assert stalled.end()["status"] == "failed", stalled.events
            # A video in the allowed folder, named by path: waiting, then running, then ended.
            every = ClassListener(server.url)  # a file is read faster than it plays: listening before it starts
            r = c.post("/sources", json={"url": str(allowed / "lesson.mp4"), "name": "file"})
            assert r.status_code == 201
            lesson = every.until_end(r.json()["id"])
            statuses = [data["status"] for event, data in lesson if event in ("status", "end")]
            windows = [line for event, line in lesson if event == "window"]
            assert statuses[-1] == "ended" and "running" in statuses and windows, statuses
    finally:
        silent.close()
        log = server.stop()
    assert "Traceback" not in log, log


def test_health_metrics_and_json_log_lines_for_operations(live_setup):
    """/healthz answers anyone and names no one; /metrics (behind the token) counts what the sources
    did, exactly; --log-json makes every log line a JSON object, none naming a student."""
    from prometheus_client.parser import text_string_to_metric_families

    from tests.serve_helpers import push

    server = Server(live_setup["run"], "--token", TOKEN, "--log-json")
    try:
        assert httpx.get(server.url + "/healthz").json()["status"] == "ok"
        assert httpx.get(server.url + "/metrics").status_code == 401
        with server.client(TOKEN) as c:
            sid = c.post("/sources", json={"push": True, "name": "Ada Lovelace"}).json()["id"]
            listener = Listener(server.url, sid, token=TOKEN)
            push(server.url, sid, video=live_setup["video"], token=TOKEN, realtime=False)
            listener.join(timeout=120)
            end = listener.end()
            health = httpx.get(server.url + "/healthz").json()
            text = c.get("/metrics").text
    finally:
        log = server.stop()
    assert health["status"] == "ok" and health["sources"] == {"ended": 1} and "Ada" not in str(health)
    values = {
        (s.name, tuple(sorted(s.labels.items()))): s.value for f in text_string_to_metric_families(text) for s in f.samples
    }
    lines = listener.windows()
    assert values[("affectseq_windows_total", ())] == len(lines) > 0
    assert values[("affectseq_window_latency_seconds_count", ())] == sum(w["latency_s"] is not None for w in lines)
    assert values[("affectseq_frames_embedded_total", ())] == end["frames"]
    assert values[("affectseq_frames_dropped_total", ())] == end["dropped"]
    assert values[("affectseq_sources", (("status", "ended"),))] == 1
    assert values[("affectseq_sources", (("status", "running"),))] == 0
    assert values[("affectseq_history_waiting", ())] >= 0 and values[("affectseq_history_lag_seconds", ())] >= 0
    calls = {dict(k)["function"]: v for (name, k), v in values.items() if name == "affectseq_batch_calls_total"}
    items = {dict(k)["function"]: v for (name, k), v in values.items() if name == "affectseq_batch_items_total"}
    assert {"FaceDetector._find_in_batch", "_BackbonePass"} <= set(calls) and len(calls) >= 3, calls
    assert all(items[f] >= calls[f] >= 1 for f in calls)
    entries = [json.loads(line) for line in log.splitlines() if line.strip()]
    assert all({"time", "level", "logger", "message"} <= set(e) for e in entries)
    assert any(e["message"] == f"source {sid} (push) added" for e in entries) and "Ada" not in log
