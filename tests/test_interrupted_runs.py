"""`embed run` interrupted for real: a second writer, Ctrl-C and SIGKILL, each landing at a moment the
test sees happen in the store (the lock taken, a clip begun, a clip committed), never after a guess."""

import os
import shutil
import signal

import pytest

from tests.conftest import TINY_SAMPLE, copy_tiny, last_json, run_cli, write_manifest
from tests.embed_runs import RUN, clip_states, complete_clips_match, lock_taken, start_run, store_of, wait_for

# Six clips of 4 s at 10 fps: long enough that a clip is still being embedded when the test, having
# seen it begin, signals the run (tens of milliseconds later), and that the run is still going when
# the test has seen a clip committed.
LONGER = {**TINY_SAMPLE, "seed": 5, "train": 2, "validation": 2, "test": 2, "seconds": 4.0}


@pytest.fixture(scope="module")
def longer(tmp_path_factory) -> dict:
    """The six clips, generated and embedded by one uninterrupted run: the reference."""
    root = tmp_path_factory.mktemp("longer")
    manifest = write_manifest(root / "m.yaml", {"longer": {"layout": "daisee", "root": "data", "sample": LONGER}})
    run_cli("run", "--manifest", str(manifest), *RUN)
    return {"root": root, "manifest": manifest, "store": store_of(manifest)}


def _fresh(longer: dict, tmp_path) -> tuple:
    """A manifest over the same videos with an empty cache of its own, and its store's path."""
    manifest = write_manifest(
        tmp_path / "m.yaml", {"longer": {"layout": "daisee", "root": str(longer["root"] / "data")}}, cache_dir="cache"
    )
    return manifest, tmp_path / "cache" / "longer" / longer["store"].name


def test_a_second_writer_refuses_while_the_first_holds_the_store(tiny_embedded, tmp_path):
    """The first writer is this test process holding the store's writer lock (the very lock an
    `embed run` takes), so the overlap is certain rather than a race against a fast tiny run."""
    from embed.locking import writer_lock

    manifest = copy_tiny(tiny_embedded, tmp_path)
    store = store_of(manifest)
    with writer_lock([store]):
        second = run_cli("run", "--manifest", str(manifest), *RUN, check=2)
    errors = [ln for ln in second.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and f"{store}: being written by another `embed run` (pid {os.getpid()}); fix:" in errors[0]
    assert not [p for p in (store / "clips").iterdir() if p.is_dir()]  # it embedded nothing
    run_cli("run", "--manifest", str(manifest), *RUN)  # released: the next run proceeds
    assert complete_clips_match(store, tiny_embedded["store"]) == 7


def test_ctrl_c_exits_cleanly_with_a_summary_and_keeps_complete_clips(longer, tmp_path):
    manifest, store = _fresh(longer, tmp_path)
    proc = start_run(manifest)
    wait_for(lambda: sum(clip_states(store).values()) >= 3, proc, "committed three clips")
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "interrupted: complete clips are kept; rerun to continue" in err and "stage one summary" in err
    kept = complete_clips_match(store, longer["store"])
    assert 3 <= kept < 6, kept
    proc = run_cli("run", "--manifest", str(manifest), *RUN)
    assert f"{6 - kept} embedded now, {kept} already complete" in proc.stderr
    assert complete_clips_match(store, longer["store"]) == 6


# Where each SIGKILL lands: before anything is written, inside the k-th clip (its group is on disk,
# not yet complete), or just after the k-th clip was committed (the next one begins).
MOMENTS = [("lock", 0), ("inside", 1), ("committed", 2), ("inside", 3), ("committed", 4), ("inside", 6)]


@pytest.mark.slow
def test_sigkill_at_every_stage_of_a_run_never_leaves_wrong_complete_clips(longer, tmp_path):
    manifest, store = _fresh(longer, tmp_path)
    for moment, k in MOMENTS:
        shutil.rmtree(store, ignore_errors=True)  # every trial from an empty store
        proc = start_run(manifest)
        if moment == "lock":
            wait_for(lock_taken(store), proc, "took its lock")
        elif moment == "inside":
            wait_for(lambda k=k: len(clip_states(store)) >= k, proc, f"began clip {k}")
        else:
            wait_for(lambda k=k: sum(clip_states(store).values()) >= k, proc, f"committed clip {k}")
        proc.kill()
        proc.communicate(timeout=60)
        assert proc.returncode == -signal.SIGKILL, (moment, k)  # killed while running, not after it ended
        complete = complete_clips_match(store, longer["store"])  # whatever reads complete is right
        assert complete < 6, (moment, k)
    run_cli("run", "--manifest", str(manifest), *RUN)  # the last trial's leftovers: completed on rerun
    assert complete_clips_match(store, longer["store"]) == 6


def test_a_clip_folder_left_without_metadata_is_embedded_again_without_a_warning(tiny_embedded, tmp_path):
    """SIGKILL between making a clip's folder and writing its metadata leaves an empty folder."""
    manifest = copy_tiny(tiny_embedded, tmp_path, with_cache=True)
    store = tmp_path / "cache" / "tiny" / tiny_embedded["store"].name
    clip = sorted(p for p in (store / "clips").iterdir() if p.is_dir())[0]
    shutil.rmtree(clip)
    clip.mkdir()
    # A process of its own: what the user's terminal shows. In this process pytest owns the warnings
    # filters (reset for every test), so a warning would never reach the captured stderr here.
    proc = run_cli("run", "--manifest", str(manifest), *RUN, "--json", process=True)
    report = last_json(proc.stdout)
    assert (report["embedded"], report["skipped"], report["failed"]) == (1, 6, 0), report
    assert clip_states(store)[clip.name] is True
    assert "Warning" not in proc.stderr and "not recognized" not in proc.stderr, proc.stderr
    assert complete_clips_match(store, tiny_embedded["store"]) == 7
