"""The cache contract, end to end through the CLI (in this process: tests/test_cli_processes.py runs each
command as a process) and read back with plain zarr."""

import json
import re
import shutil

import numpy as np
import pytest
import zarr

from embed.cache import CacheStore
from embed.errors import ConfigError
from embed.extraction import PREPROCESSING_VERSION
from embed.stores import find_store
from tests.conftest import copy_tiny, last_json, run_cli, write_manifest


def test_store_matches_the_contract_with_plain_zarr(tiny_embedded):
    store, info = tiny_embedded["store"], tiny_embedded["info"]
    assert re.fullmatch(r"fer2013-[0-9a-f]{12}\.zarr", store.name) and store.parent.name == "tiny"
    assert store.parent.parent == tiny_embedded["manifest"].parent / "cache"
    assert info["key"] in store.name and info["dim"] == 128 and info["backbone"] == "fer2013"
    assert (info["complete"], info["failed"], info["pending"], info["frames"]) == (7, 0, 0, 70)
    root = zarr.open_group(str(store), mode="r")
    config = root.attrs["config"]
    assert config["weights"] == "fer2013:sha256:59534287fdfb125e" and config["backbone"] == "fer2013"
    assert config["input_size"] == 64
    assert {"detector", "frames", "preprocessing_version"} <= set(config)
    assert "torch" in root.attrs["versions"]
    clips = root["clips"]
    assert len(list(clips.group_keys())) == 7
    for clip_id, g in clips.groups():
        assert g.attrs["complete"] is True and g.attrs["frames"] == 10
        assert set(g.attrs["source"]) == {"size", "mtime_ns", "sha256"}
        emb, ts, prob, boxes = (g[n][...] for n in ("embeddings", "timestamps", "face_prob", "boxes"))
        assert emb.shape == (10, 128) and emb.dtype == np.float16 and np.isfinite(emb).all()
        assert ts.dtype == np.float32 and np.all(np.diff(ts) > 0)
        assert prob.shape == (10,) and prob.dtype == np.float32 and (prob > 0.9).all(), clip_id
        assert boxes.shape == (10, 4) and boxes.dtype == np.float32
        # A real embedding of a face, not the zeros a faceless frame gets.
        assert (np.linalg.norm(emb.astype(np.float32), axis=1) > 1).all()


def test_rerun_embeds_nothing(tiny_embedded):
    store, manifest = tiny_embedded["store"], tiny_embedded["manifest"]
    chunks = sorted(store.glob("clips/*/embeddings/c/*/*"))
    before = {p: p.stat().st_mtime_ns for p in chunks}
    assert len(before) == 7
    proc = run_cli("run", "--manifest", str(manifest), "--backbone", "fer2013", "--device", "cpu", "--quiet")
    assert "0 embedded now, 7 already complete, 0 failed" in proc.stderr
    assert {p: p.stat().st_mtime_ns for p in chunks} == before


def test_corrupt_video_fails_alone_with_exit_1(tiny_embedded, tmp_path):
    sample_root = tiny_embedded["manifest"].parent / "data" / "tiny"
    root = tmp_path / "copy"
    shutil.copytree(sample_root, root)
    victim = sorted(root.glob("DataSet/Train/*/*/*"))[0]
    victim.write_bytes(victim.read_bytes()[:40] + b"\x00garbage" * 50)
    manifest = write_manifest(tmp_path / "m.yaml", {"copy": {"layout": "daisee", "root": str(root)}})
    proc = run_cli("run", "--manifest", str(manifest), "--backbone", "fer2013", "--device", "cpu", "--quiet", check=1)
    assert f"failed {victim.stem}: {victim}" in proc.stderr
    info = last_json(run_cli("info", "--manifest", str(manifest), "--backbone", "fer2013", "--json").stdout)
    assert (info["complete"], info["failed"], info["pending"]) == (6, 1, 0)
    assert info["failures"][0]["clip"] == victim.stem and str(victim) in info["failures"][0]["error"]
    # The same config gives the same key, whatever the dataset's name: stores differ by folder.
    assert info["key"] == tiny_embedded["info"]["key"]


def test_changed_extraction_config_gets_a_new_store(tiny_embedded):
    manifest = tiny_embedded["manifest"]
    info = last_json(
        run_cli("info", "--manifest", str(manifest), "--backbone", "fer2013", "--detect-every", "2", "--json").stdout
    )
    assert info["store"] != str(tiny_embedded["store"]) and info["complete"] == 0 and info["pending"] == 7
    info = last_json(
        run_cli("info", "--manifest", str(manifest), "--backbone", "fer2013", "--weights", "random:1", "--json").stdout
    )
    assert info["key"] != tiny_embedded["info"]["key"]


def test_info_without_a_backbone_names_the_datasets_one_store_or_all_of_them(tiny_embedded, tmp_path):
    """A dataset with only fer2013 stores: `embed info` needs no --backbone (and no VGGFace2 weights);
    with a second store it names both and asks for one."""
    manifest = str(copy_tiny(tiny_embedded, tmp_path, with_cache=True))
    info = last_json(run_cli("info", "--manifest", manifest, "--json").stdout)
    assert info["backbone"] == "fer2013" and info["complete"] == 7 and info["key"] == tiny_embedded["info"]["key"]
    run_cli("run", "--manifest", manifest, "--backbone", "resnet18", "--weights", "random", "--limit", "1", "--quiet")
    proc = run_cli("info", "--manifest", manifest, check=2)
    assert "2 stores: " in proc.stderr and "fer2013 (" in proc.stderr and "resnet18 (" in proc.stderr
    assert "fix: pick one with --backbone" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_ls_lists_the_store(tiny_embedded):
    rows = json.loads(run_cli("ls", "--manifest", str(tiny_embedded["manifest"]), "--json").stdout)
    row = next(r for r in rows if r["store"] == str(tiny_embedded["store"]))
    assert row["complete"] == 7 and row["config"]["backbone"] == "fer2013" and row["bytes"] > 0


def test_bad_config_exits_2_with_one_line(tmp_path, tiny_manifest):
    (tmp_path / "m.yaml").write_text("datasets: {d: {layout: daisee, root: nowhere}}\n")
    proc = run_cli("run", "--manifest", str(tmp_path / "m.yaml"), "--backbone", "fer2013", check=2)
    assert "datasets.d.root" in proc.stderr and "fix:" in proc.stderr and len(proc.stderr.strip().splitlines()) == 1
    proc = run_cli("run", "--manifest", str(tiny_manifest), "--backbone", "vgg", check=2)
    assert "unknown backbone 'vgg'; fix: use one of fec, fer2013, inception, resnet18" in proc.stderr


def test_reader_api_matches_plain_zarr(tiny_embedded):
    from embed.cache import CacheStore

    store = CacheStore(tiny_embedded["store"])
    ids = store.complete_ids()
    assert len(ids) == 7 and store.dim == 128 and store.dataset == "tiny"
    many = store.read_clips(ids, concurrency=4)
    raw = zarr.open_group(str(tiny_embedded["store"]), mode="r")["clips"]
    for clip_id in ids:
        one = store.read_clip(clip_id)
        np.testing.assert_array_equal(one.embeddings, raw[clip_id]["embeddings"][...])
        np.testing.assert_array_equal(many[clip_id].boxes, one.boxes)


def test_find_store_picks_the_one_store_and_names_the_choices_when_several_match(tmp_path):
    """Stage two's way to its input: by backbone, weights and key prefix; several matches are an error
    listing them; a store written by an older preprocessing version is superseded, not ambiguous."""

    def store(weights: str, version: int = PREPROCESSING_VERSION, backbone: str = "inception") -> CacheStore:
        config = {"backbone": backbone, "weights": weights, "dim": 8, "preprocessing_version": version}
        return CacheStore.create(tmp_path, "d", config)

    a, b = store("random:0"), store("random:1")
    store("random:0", PREPROCESSING_VERSION - 1)  # older code's store with a's weights
    store("random:0", backbone="resnet18")
    with pytest.raises(
        ConfigError,
        match=r"2 stores match backbone 'inception': .*\(random:0\).*\(random:1\); "
        r"fix: pass --weights or --key",
    ):
        find_store(tmp_path, "d", "inception")
    assert find_store(tmp_path, "d", "inception", weights="random:1").path == b.path
    assert find_store(tmp_path, "d", "inception", weights="random").path == a.path  # random is random:0
    assert find_store(tmp_path, "d", "inception", key=a.key[:6]).path == a.path
    with pytest.raises(ConfigError, match="no embedding store for backbone 'inception', weights 'random:2'; fix:"):
        find_store(tmp_path, "d", "inception", weights="random:2")
    old_only = tmp_path / "old"
    CacheStore.create(old_only, "d", {"backbone": "fec", "weights": "random:0", "dim": 8, "preprocessing_version": 1})
    assert find_store(old_only, "d", "fec").config["preprocessing_version"] == 1  # still found when it is all there is


def test_max_fps_keeps_one_frame_per_interval_through_the_pipeline(tiny_embedded, tmp_path):
    """--max-fps 5 on the 10-fps sample: every other frame, at its own timestamp, in a store of its own."""

    manifest = copy_tiny(tiny_embedded, tmp_path)
    run_cli("run", "--manifest", str(manifest), "--backbone", "fer2013", "--device", "cpu", "--quiet", "--max-fps", "5")
    info = last_json(
        run_cli("info", "--manifest", str(manifest), "--backbone", "fer2013", "--max-fps", "5", "--json").stdout
    )
    assert info["complete"] == 7 and info["key"] != tiny_embedded["info"]["key"]
    g = zarr.open_group(info["store"], mode="r")
    assert g.attrs["config"]["frames"]["max_fps"] == 5
    for _, clip in g["clips"].groups():
        np.testing.assert_allclose(clip["timestamps"][...], np.arange(0, 1, 0.2), atol=1e-4)
        assert clip["embeddings"].shape == (5, 128) and clip.attrs["frames"] == 5


def test_ls_lists_stores_that_no_detector_made(tmp_path):
    """A store whose config has no detector settings (features made elsewhere) is listed like any other."""
    manifest = write_manifest(tmp_path / "m.yaml", {"d": {"layout": "csv", "root": ".", "csv": "l.csv"}})
    (tmp_path / "l.csv").write_text("path,split,Boredom,Engagement,Confusion,Frustration\n")
    CacheStore.create(
        tmp_path / "cache",
        "d",
        {"backbone": "openface", "importer": "openface", "dim": 3, "preprocessing_version": PREPROCESSING_VERSION},
    )
    proc = run_cli("ls", "--manifest", str(manifest))
    assert "openface" in proc.stdout and "import: openface" in proc.stdout
    rows = json.loads(run_cli("ls", "--manifest", str(manifest), "--json").stdout)
    assert [r["config"]["backbone"] for r in rows] == ["openface"] and rows[0]["complete"] == 0
