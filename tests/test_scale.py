"""One decode for many backbones, the face-track cache, and a real dask LocalCluster on loopback."""

import numpy as np
import pytest

from tests.conftest import copy_tiny, last_json, run_cli
from tests.embed_runs import ARRAYS, read_clips


def _assert_same(a, b):
    """Same clips, complete, same values to within a few float16 ulps: CPU convolution kernels are
    not bitwise reproducible across processes (seen: 9 of 5,120 values off by 6e-5), and other torch
    thread counts sum in another order."""
    assert sorted(a) == sorted(b)
    for cid in a:
        assert a[cid]["attrs"]["complete"] is True and b[cid]["attrs"]["complete"] is True
        for n in ARRAYS:
            np.testing.assert_allclose(
                a[cid][n].astype(np.float32),
                b[cid][n].astype(np.float32),
                rtol=0,
                atol=2e-3 if n == "embeddings" else 0.05,
                err_msg=f"{cid}/{n}",
            )


def _info(manifest, backbone):
    """The store of `backbone`: fer2013 with its real weights, the others random."""
    weights = [] if backbone == "fer2013" else ["--weights", "random"]
    return last_json(run_cli("info", "--manifest", str(manifest), "--backbone", backbone, *weights, "--json").stdout)


def test_many_backbones_one_decode_equal_separate_runs(tiny_embedded, tmp_path):
    manifest = copy_tiny(tiny_embedded, tmp_path / "multi", with_cache=False)
    proc = run_cli(
        "run",
        "--manifest",
        str(manifest),
        "--backbone",
        "fer2013,resnet18",
        "--weights",
        "fer2013,random",
        "--device",
        "cpu",
        "--quiet",
    )
    assert "detected in 7 clips" in proc.stderr
    multi = {b: _info(manifest, b) for b in ("fer2013", "resnet18")}
    assert all(i["complete"] == 7 and i["failed"] == 0 for i in multi.values())
    # fer2013: the same as the single-backbone run of the shared fixture.
    assert multi["fer2013"]["key"] == tiny_embedded["info"]["key"]
    _assert_same(read_clips(multi["fer2013"]["store"]), read_clips(tiny_embedded["store"]))
    # resnet18: the same as running it alone.
    alone = copy_tiny(tiny_embedded, tmp_path / "alone", with_cache=False)
    run_cli("run", "--manifest", str(alone), "--backbone", "resnet18", "--weights", "random", "--device", "cpu", "--quiet")
    _assert_same(read_clips(multi["resnet18"]["store"]), read_clips(_info(alone, "resnet18")["store"]))


def test_a_later_backbone_reuses_the_cached_face_tracks(tiny_embedded, tmp_path):
    manifest = copy_tiny(tiny_embedded, tmp_path, with_cache=False)
    run_cli("run", "--manifest", str(manifest), "--backbone", "fer2013", "--device", "cpu", "--quiet")
    faces = sorted((tmp_path / "cache" / "tiny").glob("faces-*.zarr"))
    assert len(faces) == 1
    tracks = read_clips(faces[0])
    assert len(tracks) == 7 and all("embeddings" not in t for t in tracks.values())
    proc = run_cli(
        "run", "--manifest", str(manifest), "--backbone", "fec", "--weights", "random", "--device", "cpu", "--quiet"
    )
    assert "detected in 0 clips, read from the face-track cache for 7" in proc.stderr
    fec = read_clips(_info(manifest, "fec")["store"])
    for cid, t in tracks.items():
        np.testing.assert_array_equal(fec[cid]["boxes"], t["boxes"])
        assert fec[cid]["embeddings"].shape[1] == 128
    # Another detector setting is another track store, never the old one.
    run_cli(
        "run",
        "--manifest",
        str(manifest),
        "--backbone",
        "fec",
        "--weights",
        "random",
        "--device",
        "cpu",
        "--detect-every",
        "2",
        "--quiet",
    )
    assert len(list((tmp_path / "cache" / "tiny").glob("faces-*.zarr"))) == 2


@pytest.mark.slow
def test_local_dask_cluster_of_two_workers_equals_the_single_process_run(tiny_embedded, tmp_path):
    manifest = copy_tiny(tiny_embedded, tmp_path, with_cache=False)
    proc = run_cli(
        "run",
        "--manifest",
        str(manifest),
        "--backbone",
        "fer2013",
        "--device",
        "cpu",
        "--workers",
        "2",
        "--clips-in-flight",
        "2",
        "--quiet",
        "--json",
        timeout=600,
        process=True,  # the command's process, its cluster's scheduler and two worker processes
    )
    assert "dask" in proc.stderr and "http://127.0.0.1:" in proc.stderr
    assert "7 embedded now, 0 already complete, 0 failed" in proc.stderr
    # Each worker embeds its clips in flight (two at once) through one model stage: every detector and
    # backbone call of each worker went through its stage (how often two clips' calls met in one batch
    # depends on timing: the stage's batching itself is tested in test_clips_in_flight).
    report = last_json(proc.stdout)
    assert report["clips_in_flight"] == 2 and len(report["batching"]) == 2
    for worker in report["batching"].values():
        assert {"FaceDetector._find_in_batch", "_BackbonePass"} <= set(worker), worker
    clips = sum(w["_BackbonePass"]["items"] for w in report["batching"].values())
    assert clips >= 7  # at least one backbone call per clip, all through the stages
    info = _info(manifest, "fer2013")
    assert info["key"] == tiny_embedded["info"]["key"] and (info["complete"], info["failed"], info["pending"]) == (7, 0, 0)
    distributed, single = read_clips(info["store"]), read_clips(tiny_embedded["store"])
    # Every clip written once, completely: no group left behind by a collision, no partial arrays.
    assert sorted(distributed) == sorted(single)
    _assert_same(distributed, single)
    # And a rerun through the cluster finds nothing to do.
    proc = run_cli(
        "run",
        "--manifest",
        str(manifest),
        "--backbone",
        "fer2013",
        "--device",
        "cpu",
        "--workers",
        "2",
        "--quiet",
        timeout=600,
    )
    assert "0 embedded now, 7 already complete" in proc.stderr
