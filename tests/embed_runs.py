"""Helpers for tests that run `embed run` as a real process and look at what it left in a store."""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import zarr

from tests import zygote
from tests.conftest import last_json, run_cli

ARRAYS = ("embeddings", "timestamps", "face_prob", "boxes")
RUN = ["--backbone", "fer2013", "--device", "cpu", "--quiet"]


def read_clips(store: Path) -> dict[str, dict]:
    """Every clip group of a store: its arrays (those written) and its attributes under "attrs"."""
    g = zarr.open_group(str(store), mode="r")["clips"]
    return {cid: {n: c[n][...] for n in ARRAYS if n in c} | {"attrs": dict(c.attrs)} for cid, c in g.groups()}


def store_of(manifest: Path) -> Path:
    return Path(last_json(run_cli("info", "--manifest", str(manifest), "--backbone", "fer2013", "--json").stdout)["store"])


def start_run(manifest: Path, *extra: str, env: dict | None = None) -> zygote.Process:
    """`python -m embed run` as a process of its own (forked from the session's zygote: tests/zygote.py),
    Ctrl-C raising KeyboardInterrupt in it as at a terminal."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})}
    return zygote.Process(
        "embed",
        ["run", "--manifest", str(manifest), *RUN, *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )


def clip_states(store: Path) -> dict[str, bool]:
    """Each clip group on disk and whether it is complete, read from the files as a run writes them."""
    out = {}
    for meta in sorted((store / "clips").glob("*/zarr.json")):
        try:
            out[meta.parent.name] = json.loads(meta.read_text()).get("attributes", {}).get("complete") is True
        except (OSError, ValueError):  # being replaced at this very moment: not complete
            out[meta.parent.name] = False
    return out


def wait_for(event: Callable[[], bool], proc: zygote.Process, what: str, timeout: float = 300) -> None:
    """Return as soon as `event()` holds (checked every 2 ms) while proc still runs."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if event():
            return
        if proc.poll() is not None:
            raise AssertionError(f"the run ended before {what}: exit {proc.returncode}\n{proc.stderr.read()}")
        time.sleep(0.002)
    raise AssertionError(f"never {what} within {timeout} s")


def lock_taken(store: Path) -> Callable[[], bool]:
    lock = Path(str(store) + ".lock")
    return lambda: lock.is_file() and lock.read_text().startswith("pid")


def complete_clips_match(store: Path, reference: Path) -> int:
    """Every clip the store says is complete equals the uninterrupted run's; returns how many.
    Embeddings to within 1e-3 (values ~0.04): CPU convolution kernels are not bitwise reproducible
    across processes (a few float16 ulps, measured), while a partial or wrong clip is off by far more."""
    ref = zarr.open_group(str(reference), mode="r")["clips"]
    n = 0
    if not (store / "zarr.json").is_file():
        return 0
    for cid, g in zarr.open_group(str(store), mode="r")["clips"].groups():
        if g.attrs.get("complete") is True:
            for name in ARRAYS:
                a, b = g[name][...].astype(np.float32), ref[cid][name][...].astype(np.float32)
                np.testing.assert_allclose(
                    a, b, rtol=0, atol=1e-3 if name == "embeddings" else 0.05, err_msg=f"{cid}/{name}"
                )
            n += 1
    return n
