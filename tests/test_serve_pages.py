"""The pages of `sequence serve` in a real browser: Debian's chromium, driven by Playwright (the
system browser; Playwright downloads none). A student's page sends Chromium's fake camera, fed from a
real face video, and the class page shows that student's four states; pushed streams and a broken
one show as healthy and failed tiles."""

from __future__ import annotations

import shutil
from pathlib import Path

import av
import httpx
import numpy as np
import pytest

from tests.frames import decode_video
from tests.serve_helpers import Server, pushing

CHROMIUM = shutil.which("chromium")
STATES = ["Boredom", "Engagement", "Confusion", "Frustration"]


def _y4m(video: Path, out: Path) -> Path:
    """The video as Y4M (raw YUV 4:2:0), the format Chromium's fake camera reads from a file."""
    frames = decode_video(video).frames
    with av.open(str(out), "w", format="yuv4mpegpipe") as container:
        stream = container.add_stream("rawvideo", rate=5)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(f), format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return out


@pytest.fixture(scope="module")
def browser(live_setup, tmp_path_factory):
    from playwright.sync_api import sync_playwright

    assert CHROMIUM, "chromium not found; fix: `make test` installs Debian's chromium (apt-get install chromium)"
    camera = _y4m(live_setup["video"], tmp_path_factory.mktemp("camera") / "face.y4m")
    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",  # the tests run as root
                "--use-fake-ui-for-media-stream",  # grant the camera without a prompt
                "--use-fake-device-for-media-stream",
                f"--use-file-for-fake-video-capture={camera}",
            ],
        )
        yield b
        b.close()


def _tile(page, name: str):
    return page.locator("section.tile", has=page.locator("h2", has_text=name))


def test_a_students_camera_shows_on_the_class_page_with_four_states(live_setup, browser):
    server = Server(live_setup["run"])
    try:
        teacher = browser.new_page()
        teacher.goto(server.url + "/")
        student = browser.new_page()
        student.goto(server.url + "/student?name=Ada")
        tile = _tile(teacher, "Ada")
        # Within a few seconds of the camera starting, a scored window: every state with a level.
        for state in STATES:
            level = tile.locator(f'.state[data-state="{state}"]')
            level.first.wait_for(timeout=30_000)
            teacher.wait_for_function(
                "([name, state]) => [...document.querySelectorAll('section.tile')].some(t => "
                "t.querySelector('h2').textContent === name && "
                "/^[0-3]$/.test(t.querySelector(`.state[data-state='${state}']`)?.dataset.level || ''))",
                arg=["Ada", state],
                timeout=30_000,
            )
        assert tile.get_attribute("data-status") == "running"
        # The class at a glance: one student watched, the low-engagement count agrees with the tile's.
        assert teacher.locator("#watched").text_content() == "1 watched"
        # Read together, in one turn of the page's event loop: a new window cannot come between.
        level, low = teacher.evaluate(
            "() => [document.querySelector('section.tile .state[data-state=Engagement]').dataset.level, "
            "document.querySelector('#low').dataset.count]"
        )
        assert low == str(int(int(level) <= 1)), (level, low)
        assert teacher.locator("#report-link").get_attribute("href") == "/sessions/current/report"
        # The student sees their own states too.
        student.wait_for_function(
            "() => /^[0-3]$/.test(document.querySelector('.state[data-state=Engagement]')?.dataset.level || '')",
            timeout=30_000,
        )
        assert student.locator("#error").text_content() == ""
    finally:
        log = server.stop()
    assert "Traceback" not in log, log


def test_three_pushed_streams_show_healthy_tiles_and_a_broken_one_a_failed_tile(live_setup, browser):
    server = Server(live_setup["run"])
    try:
        page = browser.new_page()
        page.goto(server.url + "/")
        with server.client() as c:
            ids = [c.post("/sources", json={"push": True, "name": f"pushed {i}"}).json()["id"] for i in range(3)]
            broken = c.post("/sources", json={"push": True, "name": "broken"}).json()["id"]
        for sid in ids:
            pushing(server.url, sid, video=live_setup["video"])
        pushing(server.url, broken, data=b"this is not a video stream" * 4000)
        page.wait_for_function(
            "() => document.querySelectorAll('section.tile').length === 4 && "
            "document.querySelectorAll('section.tile[data-status=failed]').length === 1 && "
            "[...document.querySelectorAll('section.tile:not([data-status=failed])')].every(t => "
            "t.querySelectorAll('.state[data-level]:not([data-level=\"\"])').length === 4)",
            timeout=60_000,
        )
        failed = page.locator("section.tile[data-status=failed]")
        assert failed.locator("h2").text_content() == "broken"
        assert "cannot open" in failed.locator(".badge").text_content()
        # Each pushed stream runs to its end: its tile says so.
        page.wait_for_function(
            "() => document.querySelectorAll('section.tile[data-status=ended]').length === 3", timeout=60_000
        )
        for i in range(3):
            assert _tile(page, f"pushed {i}").get_attribute("data-status") == "ended"
        page.screenshot(path=str(live_setup["tmp"] / "class-page.png"))
    finally:
        server.stop()


def test_a_sessions_report_page_shows_its_figure_and_a_row_per_student(live_setup, browser, tmp_path):
    from tests.serve_helpers import Listener, push

    server = Server(live_setup["run"], "--db", str(tmp_path / "report.db"), "--session", "Wednesday")
    try:
        sid = httpx.post(f"{server.url}/sources", json={"push": True, "name": "Ada"}).json()["id"]
        listener = Listener(server.url, sid)
        push(server.url, sid, video=live_setup["video"], realtime=False)
        listener.join(timeout=120)
        session = httpx.get(f"{server.url}/sessions").json()[0]["id"]
        page = browser.new_page()
        page.goto(f"{server.url}/sessions/{session}/report")
        page.wait_for_function("() => document.querySelector('#report').naturalWidth > 0", timeout=30_000)
        cells = page.locator("#students tbody tr td").all_text_contents()
        heading = page.locator("h1").text_content()
    finally:
        log = server.stop()
    assert heading == "Session Wednesday" and cells[0] == "Ada" and cells[1] == str(len(listener.windows()))
    assert "Traceback" not in log, log
