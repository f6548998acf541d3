"""Bad input, killed runs, concurrent writers and `embed verify`, all for real: processes killed with
signals, dask workers killed, real files and stores."""

import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
import zarr

from embed.sample import write_video
from tests import zygote
from tests.conftest import copy_tiny, last_json, run_cli, write_manifest
from tests.embed_runs import RUN, complete_clips_match, store_of
from tests.frames import decode_video


def test_verify_finds_broken_clips_and_repair_resets_them(tiny_embedded, tmp_path):
    manifest = copy_tiny(tiny_embedded, tmp_path)
    store = store_of(manifest)
    shutil.copytree(tiny_embedded["store"], store)
    clean = last_json(run_cli("verify", "--manifest", str(manifest), "--backbone", "fer2013", "--json").stdout)
    assert clean["checked"] == 7 and clean["broken"] == []
    clips = zarr.open_group(str(store), mode="a")["clips"]
    ids = sorted(clips.group_keys())
    emb = clips[ids[0]]["embeddings"]
    emb[0, 0] = np.nan  # silent corruption under a complete flag
    videos = sorted((tmp_path / "data" / "DataSet").glob("*/*/*/*"))
    victim = next(v for v in videos if v.stem == ids[1])
    other = next(v for v in videos if v.stem == ids[2])
    victim.write_bytes(other.read_bytes())  # replaced after it was embedded
    proc = run_cli("verify", "--manifest", str(manifest), "--backbone", "fer2013", "--json", check=1)
    broken = {b["clip"]: b["problem"] for b in last_json(proc.stdout)["broken"]}
    assert broken == {ids[0]: "non-finite embedding values", ids[1]: f"source {victim} changed since it was embedded"}
    # What a process SIGKILLed inside one of zarr's writes leaves: a file under zarr's temporary name.
    leftover = store / "clips" / ids[3] / "zarr.0123456789abcdef0123456789abcdef.partial"
    leftover.write_text("{")
    proc = run_cli("verify", "--manifest", str(manifest), "--backbone", "fer2013", check=1)
    assert "1 unfinished zarr write(s) of a killed process left (--repair removes them)" in proc.stderr
    repaired = last_json(
        run_cli("verify", "--manifest", str(manifest), "--backbone", "fer2013", "--repair", "--json").stdout
    )
    assert repaired["repaired"] == 2 and repaired["partial_files"] == [str(leftover)] and not leftover.exists()
    assert repaired["removed_partial_files"] == 1
    proc = run_cli("run", "--manifest", str(manifest), *RUN)
    assert "2 embedded now, 5 already complete" in proc.stderr
    assert (
        last_json(run_cli("verify", "--manifest", str(manifest), "--backbone", "fer2013", "--json").stdout)["broken"] == []
    )


def test_a_replaced_video_is_detected_by_its_fingerprint_and_reembedded(tiny_embedded, tmp_path):
    manifest = copy_tiny(tiny_embedded, tmp_path)
    store = store_of(manifest)
    shutil.copytree(tiny_embedded["store"], store)
    videos = sorted((tmp_path / "data" / "DataSet").glob("*/*/*/*"))
    videos[0].write_bytes(videos[1].read_bytes())
    os.utime(videos[0], ns=(1, 1))  # even a forged old mtime does not hide it: the size or hash differs
    proc = run_cli("run", "--manifest", str(manifest), *RUN)
    assert "1 embedded now, 6 already complete" in proc.stderr
    g = zarr.open_group(str(store), mode="r")["clips"]
    np.testing.assert_array_equal(g[videos[0].stem]["embeddings"][...], g[videos[1].stem]["embeddings"][...])


# ---- bad videos: each recorded as failed (or complete with faceless frames flagged), exit 1 ----


def _audio_only(path: Path) -> None:
    with av.open(str(path), "w") as c:
        s = c.add_stream("mp2", rate=16000)
        s.layout = "mono"
        for i in range(10):
            frame = av.AudioFrame.from_ndarray(np.zeros((1, 1152), dtype=np.int16), format="s16", layout="mono")
            frame.sample_rate, frame.pts, frame.time_base = 16000, i * 1152, Fraction(1, 16000)
            for p in s.encode(frame):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def _vfr(path: Path, frames: np.ndarray) -> None:
    with av.open(str(path), "w") as c:
        s = c.add_stream("libx264", rate=30)
        s.width, s.height, s.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        s.codec_context.time_base = Fraction(1, 1000)
        for f, t in zip(frames, np.cumsum([0, 33, 67, 33, 100, 33, 200, 33, 33, 50])[: len(frames)], strict=False):
            vf = av.VideoFrame.from_ndarray(f, format="rgb24")
            vf.pts, vf.time_base = int(t), Fraction(1, 1000)
            for p in s.encode(vf):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


@pytest.mark.slow
def test_every_kind_of_bad_video_fails_alone_with_a_one_line_error(tiny_embedded, tmp_path):
    sample = sorted((tiny_embedded["manifest"].parent / "data" / "tiny" / "DataSet").glob("*/*/*/*"))
    face = decode_video(sample[0]).frames  # 10 frames, 320x240, a face in each
    blank = np.full_like(face, 90)
    root = tmp_path / "bad"
    root.mkdir()
    good = sample[0].read_bytes()
    cases = {
        "truncated.avi": good[: len(good) // 3],
        "empty.avi": b"",
        "notavideo.mp4": b"this is a text file, not a video\n" * 100,
    }
    for name, data in cases.items():
        (root / name).write_bytes(data)
    write_video(root / "noface.mp4", iter(blank), 10, width=320, height=240)
    write_video(root / "someface.mp4", iter(np.concatenate([face[:5], blank[:5]])), 10, width=320, height=240)
    write_video(root / "tiny.mp4", iter(face[:, ::8, ::8].copy()), 10, width=40, height=30)
    _vfr(root / "vfr.mp4", face)
    _audio_only(root / "audio.mp4")
    (root / "odd name é ü").mkdir()
    shutil.copy(sample[0], root / "odd name é ü" / "clip ß 1.avi")
    rows = [p.relative_to(root).as_posix() for p in sorted(root.rglob("*")) if p.is_file()]
    (root / "labels.csv").write_text(
        "path,split,Boredom,Engagement,Confusion,Frustration\n" + "".join(f"{r},Train,0,2,0,0\n" for r in rows)
    )
    manifest = write_manifest(tmp_path / "m.yaml", {"bad": {"layout": "csv", "root": "bad", "csv": "labels.csv"}})
    proc = run_cli("run", "--manifest", str(manifest), *RUN, check=1, timeout=600)
    info = last_json(run_cli("info", "--manifest", str(manifest), "--backbone", "fer2013", "--json").stdout)
    failed = {f["clip"]: f["error"] for f in info["failures"]}
    expect_failed = {
        "truncated": "decod",
        "empty": "empty file",
        "notavideo": "cannot decode",
        "noface": "no face found",
        "tiny": "no face found",
        "audio": "no video stream",
    }
    assert set(failed) == set(expect_failed), failed
    for clip, cause in expect_failed.items():
        assert cause in failed[clip] and str(root / clip) in failed[clip], failed[clip]
        assert f"failed {clip}: {root / clip}" in proc.stderr
    assert info["complete"] == 3 and info["pending"] == 0  # someface, vfr, the odd path
    g = zarr.open_group(info["store"], mode="r")["clips"]
    np.testing.assert_array_equal(g["someface"]["face_prob"][...] > 0, [True] * 5 + [False] * 5)
    assert not np.isfinite(g["someface"]["boxes"][5:]).any() and (g["someface"]["embeddings"][5:] == 0).all()
    np.testing.assert_allclose(
        g["vfr"]["timestamps"][...], np.cumsum([0, 33, 67, 33, 100, 33, 200, 33, 33, 50]) / 1000, atol=2e-3
    )
    assert g["odd name é ü--clip ß 1"].attrs["complete"] is True


# ---- bad manifests and labels: exit 2, one line naming the file and the fix, nothing written ----

HEADER = "ClipID,Boredom,Engagement,Confusion,Frustration \n"


@pytest.mark.parametrize(
    "manifest_text, labels, needle",
    [
        ("datasets: {d: {layout: daisee, root: data}\n", None, "YAML syntax error"),
        ("datasets: {d: {layout: daisee, root: data}}\ncache_dri: c\n", None, "unknown key 'cache_dri'"),
        ("datasets: {d: {layout: daisee, root: nowhere}}\n", None, "datasets.d.root"),
        (None, "ClipID,Boredom,Engagement,Confusion\n1.avi,0,0,0\n", "no column 'Frustration'"),
        (None, HEADER + "1.avi,0,7,0,0\n", "line 2: Engagement = '7' is not a level 0..3"),
        (None, HEADER + "1.avi,0,x,0,0\n", "line 2: Engagement = 'x' is not a level 0..3"),
        (None, HEADER + "1.avi,0,1,0,0\n1.avi,0,2,0,0\n", "line 3: duplicate ClipID '1.avi'"),
    ],
)
def test_bad_manifests_and_labels_exit_2_with_one_line_and_write_nothing(tmp_path, manifest_text, labels, needle):
    root = tmp_path / "data"
    (root / "DataSet" / "Train" / "1" / "1").mkdir(parents=True)
    write_video(
        root / "DataSet/Train/1/1/1.avi", (np.zeros((48, 64, 3), np.uint8) for _ in range(3)), 10, width=64, height=48
    )
    (root / "Labels").mkdir()
    (root / "Labels" / "TrainLabels.csv").write_text(labels or HEADER + "1.avi,0,1,0,0\n")
    m = tmp_path / "m.yaml"
    m.write_text(manifest_text or "datasets: {d: {layout: daisee, root: data}}\n")
    proc = run_cli("run", "--manifest", str(m), *RUN, check=2)
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0] and "fix:" in lines[0], proc.stderr
    assert str(m) in lines[0] or str(root) in lines[0]
    assert not (tmp_path / "cache").exists()


def test_a_cache_that_cannot_be_written_stops_with_a_clear_error_and_keeps_complete_clips(tiny_embedded, tmp_path):
    """A full disk, simulated by a file-size limit on the run (the write fails with EFBIG, as a
    full disk fails with ENOSPC): one line naming the store and the fix, exit 2, and every clip
    complete before stays complete and right; the clip being written is never marked complete."""
    manifest = copy_tiny(tiny_embedded, tmp_path)
    store = store_of(manifest)
    shutil.copytree(tiny_embedded["store"], store)
    videos = sorted((tmp_path / "data" / "DataSet").glob("*/*/*/*"))
    videos[0].write_bytes(videos[1].read_bytes())  # one clip to redo

    proc = zygote.run(
        "embed",
        ["run", "--manifest", str(manifest), *RUN],
        text=True,
        timeout=300,
        rlimits={"RLIMIT_FSIZE": (2000, 2000)},  # below one embeddings chunk
        ignore=("SIGXFSZ",),
    )
    assert proc.returncode == 2, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and f"{store}: cannot write the cache" in errors[0] and "fix: free disk space" in errors[0]
    assert complete_clips_match(store, tiny_embedded["store"]) == 6
    g = zarr.open_group(str(store), mode="r")["clips"]
    assert g[videos[0].stem].attrs.get("complete") is not True


@pytest.mark.slow
def test_a_dask_worker_killed_mid_run_costs_nothing(tiny_embedded, tmp_path):
    """SIGKILL one of two workers while it holds tasks: dask reschedules them on the survivor (and
    the nanny restarts the dead one), the run reports no failure, and the store ends complete and
    right: a half-written clip of the dead worker was never marked complete and is redone."""
    import threading

    from dask.distributed import Client, LocalCluster

    from embed.cache import CacheStore
    from embed.clip_embedding import ClipTargets
    from embed.cluster import ClusterChoice
    from embed.distributed import embed_dataset_on_cluster
    from embed.embedder import EmbedSpec
    from embed.layouts import read_dataset
    from embed.manifest import load_manifest

    manifest = load_manifest(copy_tiny(tiny_embedded, tmp_path))
    index = read_dataset(manifest, "tiny")
    spec = EmbedSpec(("fer2013",), (None,), "cpu", batch_size=64)
    embedder = spec.build()
    store = CacheStore.create(manifest.cache_path, "tiny", embedder.configs[0])
    faces = CacheStore.create(manifest.cache_path, "tiny", embedder.faces_config)
    cluster = LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1", dashboard_address=None)
    watcher = Client(cluster)
    try:
        result = {}
        t = threading.Thread(
            target=lambda: result.update(
                report=embed_dataset_on_cluster(
                    index,
                    spec,
                    ClipTargets([store], faces),
                    cluster=ClusterChoice(scheduler=cluster.scheduler_address),
                    progress=False,
                )
            )
        )
        t.start()
        victim = None
        end = time.time() + 120
        # Two observable events, through dask's public client API and the store: both workers hold
        # tasks, and at least one clip has been committed (so the victim dies mid-run, not before it).
        while time.time() < end and victim is None:
            busy = {address for address, keys in watcher.processing().items() if keys}
            if len(busy) == 2 and len(store.complete_ids()) >= 1:
                pids = watcher.run(os.getpid)
                victim = pids[sorted(busy)[0]]
            time.sleep(0.05)
        assert victim is not None, "no worker was ever busy: nothing to kill"
        os.kill(victim, signal.SIGKILL)
        t.join(300)
        report = result["report"]
        assert report.failures == [] and report.embedded == 7
    finally:
        watcher.close()
        cluster.close()
    assert len(store.complete_ids()) == 7
    ref = zarr.open_group(str(tiny_embedded["store"]), mode="r")["clips"]
    for cid, g in zarr.open_group(str(store.path), mode="r")["clips"].groups():
        np.testing.assert_allclose(
            g["embeddings"][...].astype(np.float32), ref[cid]["embeddings"][...].astype(np.float32), atol=2e-3
        )


def test_a_read_only_cache_stops_with_a_clear_error_and_keeps_complete_clips(tiny_embedded, tmp_path):
    manifest = copy_tiny(tiny_embedded, tmp_path)
    store = store_of(manifest)
    shutil.copytree(tiny_embedded["store"], store)
    videos = sorted((tmp_path / "data" / "DataSet").glob("*/*/*/*"))
    videos[0].write_bytes(videos[1].read_bytes())  # one clip to redo
    for p in [store, *store.rglob("*")]:
        if p.is_dir():
            p.chmod(0o555)
    (tmp_path / "cache" / "tiny").chmod(0o555)
    prefix = []
    if os.geteuid() == 0:
        # Root ignores permission bits; without the DAC-override capabilities it obeys them.
        if not shutil.which("setpriv"):
            pytest.skip("running as root and util-linux's setpriv is missing: cannot drop CAP_DAC_OVERRIDE")
        prefix = ["setpriv", "--bounding-set", "-dac_override,-dac_read_search", "--"]
    try:
        proc = subprocess.run(
            [*prefix, sys.executable, "-m", "embed", "run", "--manifest", str(manifest), *RUN],
            capture_output=True,
            text=True,
            timeout=300,
        )
    finally:
        for p in [store, *store.rglob("*"), tmp_path / "cache" / "tiny"]:
            if p.is_dir():
                p.chmod(0o755)
    assert proc.returncode == 2, proc.stderr
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and str(store.parent) in errors[0] and "fix: make the cache directory writable" in errors[0]
    # It stopped before writing anything: every clip is as it was (the stale one is verify's to find).
    assert complete_clips_match(store, tiny_embedded["store"]) == 7


@pytest.mark.slow
def test_a_killed_training_leaves_no_run_that_looks_finished(tiny_embedded):
    manifest = tiny_embedded["manifest"]
    runs = manifest.parent / "runs" / "tiny"
    before = set(runs.glob("*")) if runs.exists() else set()
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = zygote.Process(
        "sequence",
        [
            "train",
            "--manifest",
            str(manifest),
            "--backbone",
            "fer2013",
            "--epochs",
            "100000",
            "--patience",
            "100000",
            "--quiet",
            "--device",
            "cpu",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    # command.txt is the last file written into the run folder before the training loop starts.
    end = time.time() + 300
    while time.time() < end and not [p for p in runs.glob("*.partial/command.txt") if p.parent not in before]:
        assert proc.poll() is None, proc.communicate()[1]
        time.sleep(0.05)
    proc.kill()
    proc.communicate(timeout=60)
    new = set(runs.glob("*")) - before
    assert len(new) == 1 and next(iter(new)).name.endswith(".partial")
    assert not (next(iter(new)) / "metrics.json").exists()
    out = run_cli("runs", "--manifest", str(manifest), "--json", module="sequence")
    import json

    assert all(not r["run"].endswith(".partial") for r in json.loads(out.stdout.splitlines()[-1]))
    assert "unfinished run" in out.stderr


@pytest.mark.slow
def test_a_gpu_worker_restarted_by_its_nanny_comes_back_on_its_own_device():
    """Each local GPU worker's device is set in its nanny's environment, so a worker killed and
    restarted sees the same one. On this CPU machine two GPUs are declared: the variable is what counts."""
    from embed.cluster import start_local_cluster

    cluster, client, _ = start_local_cluster(2, gpus=2)

    def device_and_pid():
        return os.environ.get("CUDA_VISIBLE_DEVICES"), os.getpid()

    try:
        before = client.run(device_and_pid)
        assert sorted(d for d, _ in before.values()) == ["0", "1"]
        dead = sorted(before.values())[0][1]
        os.kill(dead, signal.SIGKILL)
        after, end = {}, time.time() + 120
        while time.time() < end:  # the nanny's restart is observable: a new process answers
            with contextlib.suppress(Exception):
                after = client.run(device_and_pid, wait=True)
            if len(after) == 2 and dead not in {p for _, p in after.values()}:
                break
            time.sleep(0.2)
        assert len(after) == 2 and dead not in {p for _, p in after.values()}, after
        assert sorted(d for d, _ in after.values()) == ["0", "1"]
    finally:
        client.close()
        cluster.close()


def test_a_clip_complete_in_its_stores_but_not_in_the_face_track_store_is_left_alone(tiny_embedded, tmp_path):
    """What a dask task retried after its worker died between the two commits finds: the clip is
    complete in the backbone store, its face track is not. Nothing is redone, nothing fails."""
    from embed.cache import CacheStore
    from embed.clip_embedding import ClipTargets, embed_clip
    from embed.decode_ahead import decode_ahead
    from embed.embedder import EmbedSpec
    from embed.layouts import read_dataset
    from embed.manifest import load_manifest

    manifest = load_manifest(copy_tiny(tiny_embedded, tmp_path, with_cache=True))
    clip = read_dataset(manifest, "tiny").clips[0]
    embedder = EmbedSpec(("fer2013",), (None,), "cpu").build()
    store = CacheStore(manifest.cache_path / "tiny" / tiny_embedded["store"].name, mode="a")
    assert store.config == embedder.configs[0] and store.is_complete(clip.clip_id, clip.path)
    faces = CacheStore.create(manifest.cache_path, "tiny", embedder.faces_config)
    before = store.attrs_of(clip.clip_id)
    for _, chunks in decode_ahead([embedder.stream(clip.path)]):
        outcome = embed_clip(embedder, clip, chunks, targets=ClipTargets([store], faces))
    assert outcome.error is None and outcome.frames == 0
    assert store.attrs_of(clip.clip_id) == before
