"""`sequence predict --live` on a stream that arrives at real-time pace on standard input (MPEG-TS,
remuxed packet by packet with sleeps by tests/live_feed.py), against offline predict on the same file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

from tests import zygote
from tests.conftest import offline_windows, run_cli, same_as_offline

STATES = ["Boredom", "Engagement", "Confusion", "Frustration"]
FEED = Path(__file__).with_name("live_feed.py")


def _start_live(setup: dict, *extra: str) -> tuple[zygote.Process, list[str]]:
    """`predict - --live` started (forked from the session's zygote: tests/zygote.py; Ctrl-C raises
    KeyboardInterrupt in it as at a terminal), returned once it says it is reading (an observable event,
    not a guessed sleep: the models are set up); its stderr lines so far, the rest collected on a thread."""
    proc = zygote.Process(
        "sequence",
        [
            "predict",
            "-",
            "--run",
            setup["run"],
            "--live",
            "--device",
            "cpu",
            "--json",
            *extra,
        ],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    err = []
    for line in proc.stderr:
        err.append(line)
        if line.startswith("live: reading"):
            break
    threading.Thread(target=lambda: err.extend(proc.stderr), daemon=True).start()
    return proc, err


def _feed(setup: dict, proc: zygote.Process, stop_after: float | None = None) -> subprocess.Popen:
    """The video fed at real-time pace into proc's standard input; the feeder holds the pipe, so its
    exit is the end of the stream."""
    cmd = [sys.executable, str(FEED), str(setup["video"])] + (["--stop-after", str(stop_after)] if stop_after else [])
    feeder = subprocess.Popen(cmd, stdout=proc.stdin)
    proc.stdin.close()
    return feeder


def _live(setup: dict, *extra: str, stop_after: float | None = None) -> dict:
    """Feed the video into `predict - --live` once it is reading; its lines, summary and stderr."""
    proc, err = _start_live(setup, *extra)
    _feed(setup, proc, stop_after)
    lines = [json.loads(raw) for raw in proc.stdout]
    proc.wait(timeout=120)
    return {
        "code": proc.returncode,
        "windows": [ln for ln in lines if "t_start" in ln],
        "summary": lines[-1].get("summary") if lines else None,
        "stderr": "".join(err),
    }


@pytest.fixture(scope="module")
def smoothed(live_setup, tmp_path_factory) -> dict:
    """The whole video streamed once with --smooth 3: the raw values it writes are what an unsmoothed
    stream writes (the next test), and its 'smoothed' key is the smoothing's (the one after)."""
    return _live(live_setup, "--smooth", "3", "--out", str(tmp_path_factory.mktemp("live") / "out"))


def test_live_lines_arrive_while_the_stream_goes_on_and_equal_offline_predict(smoothed, live_setup, tmp_path):
    live = smoothed
    assert live["code"] == 0, live["stderr"]
    windows, summary = live["windows"], live["summary"]
    assert [(w["t_start"], w["t_end"]) for w in windows] == [(float(k), float(k + 1)) for k in range(7)]  # one per hop
    # The stream's 35 frames were each embedded, or dropped while the machine was behind (how many: the bench's).
    assert summary["frames"] + summary["dropped"] == 35 and summary["ended"] == "end of stream"
    for w in windows:
        assert set(w["states"]) == set(STATES) and w["face_fraction"] == 1.0 and w["latency_s"] >= 0
        for v in w["states"].values():
            assert v["level"] in range(4) and abs(sum(v["probs"]) - 1) < 1e-3
    timeline = json.loads(Path(live["summary"]["timeline"]).read_text())
    assert len(timeline) == 7 and Path(live["summary"]["timeline_png"]).read_bytes()[:4] == b"\x89PNG"

    rows = offline_windows(live_setup, tmp_path / "offline")
    assert [(r["start"], r["end"]) for r in rows] == [(w["t_start"], w["t_end"]) for w in windows]
    assert same_as_offline(windows, rows) == sum(w["dropped"] == 0 for w in windows) >= 1


def test_a_stream_shorter_than_a_window_ends_with_one_window_over_all_of_it(live_setup, tmp_path):
    """Windows of 10 s on the 7-s stream: none completes while it goes on; at its end the whole
    stream is one window, scored, as offline predict scores a video shorter than a window."""
    live = _live(live_setup, "--window", "10", "--out", str(tmp_path / "short"))
    assert live["code"] == 0, live["stderr"]
    assert [(w["t_start"], w["t_end"]) for w in live["windows"]] == [(0.0, 7.0)]
    assert set(live["windows"][0]["states"]) == set(STATES) and live["summary"]["scored"] == 1


def test_a_stream_cut_off_mid_way_ends_with_the_windows_it_had(live_setup, tmp_path):
    # The feeder dies at 3.5 s without ending its container. On a pipe that is just the end of the
    # stream (MPEG-TS has no trailer, FFmpeg reads to EOF without an error): the windows before it.
    live = _live(live_setup, "--out", str(tmp_path / "cut"), stop_after=3.5)
    assert live["code"] == 0, live["stderr"]
    # Frames at 0, 0.2 ... 3.4 s arrived (the feeder flushes each frame as its own packet): the windows
    # [0, 1), [1, 2) and [2, 3) are whole, [3, 4) is not.
    assert [(w["t_start"], w["t_end"]) for w in live["windows"]] == [(0.0, 1.0), (1.0, 2.0), (2.0, 3.0)]
    assert live["summary"]["frames"] + live["summary"]["dropped"] == 18
    assert Path(live["summary"]["timeline_csv"]).is_file()


def test_smoothing_changes_the_display_never_the_written_values(smoothed):
    live = smoothed
    assert live["code"] == 0, live["stderr"]
    w = live["windows"]
    assert "smoothed" in w[1] and w[0]["smoothed"] == {s: w[0]["states"][s]["probs"] for s in STATES}
    alpha = 1 - np.exp(-1 / 3)
    for s in STATES:
        expected = alpha * np.array(w[1]["states"][s]["probs"]) + (1 - alpha) * np.array(w[0]["states"][s]["probs"])
        np.testing.assert_allclose(w[1]["smoothed"][s], expected, atol=2e-4)


def test_a_source_that_cannot_be_opened_exits_2_with_one_line(live_setup):
    proc = run_cli(
        "predict",
        "rtsp://127.0.0.1:9/camera",
        "--run",
        live_setup["run"],
        "--live",
        "--device",
        "cpu",
        module="sequence",
        check=2,
    )
    lines = [ln for ln in proc.stderr.splitlines() if ln.strip()]
    error = [ln for ln in lines if "error:" in ln]
    assert len(error) == 1 and "rtsp://127.0.0.1:9/camera: cannot open" in error[0] and "fix:" in error[0]
    assert proc.stdout == ""


def test_ctrl_c_ends_with_the_timeline_and_exit_0(live_setup, tmp_path):
    proc, _ = _start_live(live_setup, "--out", str(tmp_path / "stopped"))
    feeder = _feed(live_setup, proc)
    first = proc.stdout.readline()  # an observable event: the first window is out, the stream goes on
    assert json.loads(first)["t_start"] == 0.0
    proc.send_signal(signal.SIGINT)
    rest = proc.stdout.read().splitlines()
    assert proc.wait(timeout=60) == 0
    feeder.kill()
    summary = json.loads(rest[-1])["summary"]
    printed = 1 + sum("t_start" in json.loads(line) for line in rest)
    assert summary["ended"] == "interrupted" and summary["windows"] == printed < 7
    assert Path(summary["timeline_csv"]).is_file() and Path(summary["timeline_png"]).is_file()
