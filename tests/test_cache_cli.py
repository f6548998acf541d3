"""The cache contract, end to end through the real CLI (subprocesses) and read back with plain zarr."""

import re
import shutil

import numpy as np
import zarr

from tests.conftest import last_json, run_cli, write_manifest


def test_store_matches_the_contract_with_plain_zarr(tiny_embedded):
    store, info = tiny_embedded["store"], tiny_embedded["info"]
    assert re.fullmatch(r"inception-[0-9a-f]{12}\.zarr", store.name) and store.parent.name == "tiny"
    assert store.parent.parent == tiny_embedded["manifest"].parent / "cache"
    assert info["key"] in store.name and info["dim"] == 512 and info["backbone"] == "inception"
    assert (info["complete"], info["failed"], info["pending"], info["frames"]) == (7, 0, 0, 70)
    root = zarr.open_group(str(store), mode="r")
    config = root.attrs["config"]
    assert config["weights"] == "random:0" and config["backbone"] == "inception" and config["input_size"] == 160
    assert {"detector", "frames", "preprocessing_version"} <= set(config)
    assert "torch" in root.attrs["versions"]
    clips = root["clips"]
    assert len(list(clips.group_keys())) == 7
    for clip_id, g in clips.groups():
        assert g.attrs["complete"] is True and g.attrs["frames"] == 10
        assert set(g.attrs["source"]) == {"size", "mtime_ns", "sha256"}
        emb, ts, prob, boxes = (g[n][...] for n in ("embeddings", "timestamps", "face_prob", "boxes"))
        assert emb.shape == (10, 512) and emb.dtype == np.float16 and np.isfinite(emb).all()
        assert ts.dtype == np.float32 and np.all(np.diff(ts) > 0)
        assert prob.shape == (10,) and prob.dtype == np.float32 and (prob > 0.9).all(), clip_id
        assert boxes.shape == (10, 4) and boxes.dtype == np.float32
        # Inception embeddings are L2-normalised: a real embedding, not zeros.
        np.testing.assert_allclose(np.linalg.norm(emb.astype(np.float32), axis=1), 1.0, atol=0.01)


def test_rerun_embeds_nothing(tiny_embedded):
    store, manifest = tiny_embedded["store"], tiny_embedded["manifest"]
    chunks = sorted(store.glob("clips/*/embeddings/c/*/*"))
    before = {p: p.stat().st_mtime_ns for p in chunks}
    assert len(before) == 7
    proc = run_cli("run", "--manifest", str(manifest), "--weights", "random", "--device", "cpu", "--quiet")
    assert "0 embedded now, 7 already complete, 0 failed" in proc.stderr
    assert {p: p.stat().st_mtime_ns for p in chunks} == before


def test_corrupt_video_fails_alone_with_exit_1(tiny_embedded, tmp_path):
    sample_root = tiny_embedded["manifest"].parent / "data" / "tiny"
    root = tmp_path / "copy"
    shutil.copytree(sample_root, root)
    victim = sorted(root.glob("DataSet/Train/*/*/*"))[0]
    victim.write_bytes(victim.read_bytes()[:40] + b"\x00garbage" * 50)
    manifest = write_manifest(tmp_path / "m.yaml", {"copy": {"layout": "daisee", "root": str(root)}})
    proc = run_cli("run", "--manifest", str(manifest), "--weights", "random", "--device", "cpu", "--quiet", check=1)
    assert f"failed {victim.stem}: {victim}" in proc.stderr
    info = last_json(run_cli("info", "--manifest", str(manifest), "--weights", "random", "--json").stdout)
    assert (info["complete"], info["failed"], info["pending"]) == (6, 1, 0)
    assert info["failures"][0]["clip"] == victim.stem and str(victim) in info["failures"][0]["error"]
    # The same config gives the same key, whatever the dataset's name: stores differ by folder.
    assert info["key"] == tiny_embedded["info"]["key"]


def test_changed_extraction_config_gets_a_new_store(tiny_embedded):
    manifest = tiny_embedded["manifest"]
    info = last_json(run_cli("info", "--manifest", str(manifest), "--weights", "random", "--detect-every", "2",
                             "--json").stdout)
    assert info["store"] != str(tiny_embedded["store"]) and info["complete"] == 0 and info["pending"] == 7
    info = last_json(run_cli("info", "--manifest", str(manifest), "--weights", "random:1", "--json").stdout)
    assert info["key"] != tiny_embedded["info"]["key"]


def test_ls_lists_the_store(tiny_embedded):
    import json

    rows = json.loads(run_cli("ls", "--manifest", str(tiny_embedded["manifest"]), "--json").stdout)
    row = next(r for r in rows if r["store"] == str(tiny_embedded["store"]))
    assert row["complete"] == 7 and row["config"]["backbone"] == "inception" and row["bytes"] > 0


def test_bad_config_exits_2_with_one_line(tmp_path, tiny_manifest):
    (tmp_path / "m.yaml").write_text("datasets: {d: {layout: daisee, root: nowhere}}\n")
    proc = run_cli("run", "--manifest", str(tmp_path / "m.yaml"), "--weights", "random", check=2)
    assert "datasets.d.root" in proc.stderr and "fix:" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    proc = run_cli("run", "--manifest", str(tiny_manifest), "--backbone", "vgg", check=2)
    assert "unknown backbone 'vgg'; fix: use one of fec, inception, resnet18" in proc.stderr


def test_reader_api_matches_plain_zarr(tiny_embedded):
    from embed.cache import CacheStore

    store = CacheStore(tiny_embedded["store"])
    ids = store.complete_ids()
    assert len(ids) == 7 and store.dim == 512 and store.dataset == "tiny"
    many = store.read_clips(ids, concurrency=4)
    raw = zarr.open_group(str(tiny_embedded["store"]), mode="r")["clips"]
    for clip_id in ids:
        one = store.read_clip(clip_id)
        np.testing.assert_array_equal(one.embeddings, raw[clip_id]["embeddings"][...])
        np.testing.assert_array_equal(many[clip_id].boxes, one.boxes)
