"""The FEC-style expression backbone: readers, the loss, training through the real CLI on the
synthetic FEC/AffectNet set, and the trained weights used by stage one."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import zarr

from embed.cache import CacheStore
from embed.errors import ConfigError
from embed.fec.data import read_affectnet, read_fec_csv
from embed.fec.synthetic import generate_fec_sample
from embed.fec.train import FecTrainConfig, predict_odd, train_fec, triplet_loss
from embed.identity import file_identity
from tests.conftest import copy_tiny, last_json, run_cli


def _fec_row(names, votes, kind="TWO_CLASS_TRIPLET"):
    row = []
    for n in names:
        row += [f"http://x.invalid/dir/{n}", 0.1, 0.9, 0.2, 0.8]
    for i, v in enumerate(votes):
        row += [f"a{i}", v]
    return [*row[:15], kind, *row[15:]]


def _write_csv(path, rows):
    with path.open("w", newline="") as f:
        csv.writer(f).writerows(rows)
    return path


@pytest.fixture
def images(tmp_path):
    from PIL import Image

    folder = tmp_path / "img"
    folder.mkdir()
    for n in ("a.jpg", "b.jpg", "c.jpg"):
        Image.new("RGB", (50, 40), (120, 90, 60)).save(folder / n)
    return folder


def test_fec_reader_takes_the_majority_and_leaves_out_ties_and_missing_images(tmp_path, images):
    path = _write_csv(
        tmp_path / "fec.csv",
        [
            _fec_row(["a.jpg", "b.jpg", "c.jpg"], [3, 3, 1]),  # image 3 least alike: odd index 2
            _fec_row(["c.jpg", "a.jpg", "b.jpg"], [1, 2, 1, 1, 3, 1]),
            _fec_row(["a.jpg", "b.jpg", "c.jpg"], [1, 2]),  # a tie
            _fec_row(["a.jpg", "gone.jpg", "c.jpg"], [1, 1, 1]),  # an image not on disk
        ],
    )
    t = read_fec_csv(path, images)
    assert t.odd.tolist() == [2, 0] and len(t) == 2
    assert len(t.images) == 3  # each image once, whatever triplets it is in
    assert [t.images[i].path.name for i in t.index[1]] == ["c.jpg", "a.jpg", "b.jpg"]
    assert t.images[0].fraction_box == (0.1, 0.2, 0.9, 0.8)  # left, top, right, bottom
    assert t.skipped == {"annotators disagree (tie)": 1, "image not on disk": 1}


@pytest.mark.parametrize(
    "row, message",
    [
        (_fec_row(["a.jpg", "b.jpg", "c.jpg"], [1, 1, 1], kind="FOUR_CLASS"), r"fec\.csv:1: triplet type 'FOUR_CLASS'"),
        (_fec_row(["a.jpg", "b.jpg", "c.jpg"], [1, 4, 1]), r"fec\.csv:1: annotations must be 1, 2 or 3"),
        (["http://x/a.jpg", "0.1", "0.9"], r"fec\.csv:1: 3 fields"),
    ],
)
def test_fec_reader_names_the_bad_row(tmp_path, images, row, message):
    with pytest.raises(ConfigError, match=message):
        read_fec_csv(_write_csv(tmp_path / "fec.csv", [row]), images)


def test_fec_reader_without_any_image_on_disk_says_where_to_put_them(tmp_path, images):
    path = _write_csv(tmp_path / "fec.csv", [_fec_row(["x.jpg", "y.jpg", "z.jpg"], [1, 1, 1])])
    with pytest.raises(ConfigError, match=r"no usable triplet .*image not on disk.*fix: put the FEC images under"):
        read_fec_csv(path, images)


def test_affectnet_reader_reads_boxes_skips_non_expressions_and_rejects_bad_labels(tmp_path, images):
    base = tmp_path / "affectnet"
    (base / "Manually_Annotated_Images" / "1").mkdir(parents=True)
    for n in ("a.jpg", "b.jpg", "c.jpg"):
        (base / "Manually_Annotated_Images" / "1" / n).write_bytes((images / n).read_bytes())
    header = [
        "subDirectory_filePath",
        "face_x",
        "face_y",
        "face_width",
        "face_height",
        "facial_landmarks",
        "expression",
        "valence",
        "arousal",
    ]
    _write_csv(
        base / "training.csv",
        [
            header,
            ["1/a.jpg", 5, 6, 30, 20, "", 3, 0.1, 0.2],
            ["1/b.jpg", 0, 0, 10, 10, "", 9, 0, 0],
            ["1/missing.jpg", 0, 0, 5, 5, "", 1, 0, 0],
            ["1/c.jpg", 1, 1, 8, 8, "", 7, 0, 0],
        ],
    )
    e = read_affectnet(base, "training")
    assert e.labels.tolist() == [3, 7] and e.images[0].box == (5.0, 6.0, 35.0, 26.0)
    assert e.skipped == {"not an expression (8-10)": 1, "image not on disk": 1}
    _write_csv(base / "validation.csv", [header, ["1/a.jpg", 5, 6, 30, 20, "", 12, 0, 0]])
    with pytest.raises(ConfigError, match=r"validation\.csv:2: expression 12 is not 0-10"):
        read_affectnet(base, "validation")
    _write_csv(base / "validation.csv", [["file", "label"], ["1/a.jpg", 1]])
    with pytest.raises(ConfigError, match=r"validation\.csv: needs an image column"):
        read_affectnet(base, "validation")


def test_triplet_loss_matches_a_hand_computed_case():
    a, p, n = [1.0, 0.0], [0.8, 0.6], [0.0, 1.0]  # |a-p|^2 = 0.4, |a-n|^2 = 2, |p-n|^2 = 0.8
    emb = torch.tensor([[a, p, n], [n, p, a]])  # the odd one last, then first
    odd = torch.tensor([2, 0])
    assert triplet_loss(emb, odd, 0.2).item() == pytest.approx(0.0)  # both hinges inactive
    # margin 0.5: max(0, 0.4 - 2 + 0.5) + max(0, 0.4 - 0.8 + 0.5) = 0.1 for each triplet
    assert triplet_loss(emb, odd, 0.5).item() == pytest.approx(0.1, abs=1e-6)
    # Calling a the odd one makes (p, n) the similar pair: max(0, 0.8 - 0.4 + 0.5) + max(0, 0.8 - 2 + 0.5)
    assert triplet_loss(emb, torch.tensor([0, 2]), 0.5).item() == pytest.approx(0.9, abs=1e-6)
    assert predict_odd(emb).tolist() == [2, 0]


def test_frozen_blocks_run_once_per_image_and_train_as_the_whole_net_does(tmp_path):
    """With frozen trunk blocks, fec-train feeds each image's frozen-block output, computed once:
    every epoch's loss and accuracies equal those of crops run through the whole net each time (the
    last trunk block trained too, so the split falls inside the trunk)."""
    paths = generate_fec_sample(tmp_path / "data", per_class=2, triplets=4, seed=2)
    train, val = read_fec_csv(paths["fec_train"], paths["images"]), read_fec_csv(paths["fec_test"], paths["images"])
    expressions = (read_affectnet(paths["affectnet"], "training"), read_affectnet(paths["affectnet"], "validation"))
    histories = {}
    for cache in (True, False):
        cfg = FecTrainConfig(trunk_weights="random", unfreeze=1, epochs=2, batch=8, lr=1e-3, cache_frozen=cache)
        result = train_fec(train, val, cfg, out_dir=tmp_path / str(cache), affectnet=expressions, progress=False)
        histories[cache] = [(h.loss or 0.0, h.triplet_accuracy, h.expression_accuracy) for h in result.history]
    assert len(histories[True]) == 3
    for once, every in zip(histories[True], histories[False], strict=True):
        assert once == pytest.approx(every, rel=1e-4, abs=1e-5), histories


@pytest.fixture(scope="module")
def trained_fec(tmp_path_factory):
    root = tmp_path_factory.mktemp("fec")
    paths = generate_fec_sample(root / "data", per_class=3, triplets=48, seed=1)
    proc = run_cli(
        "fec-train",
        "--triplets",
        str(paths["fec_train"]),
        "--val-triplets",
        str(paths["fec_test"]),
        "--images",
        str(paths["images"]),
        "--affectnet",
        str(paths["affectnet"]),
        "--trunk-weights",
        "random",
        "--epochs",
        "3",
        "--batch",
        "16",
        "--lr",
        "1e-3",
        "--device",
        "cpu",
        "--out",
        str(root / "out"),
        "--json",
        "--quiet",
    )
    return {"result": last_json(proc.stdout), "proc": proc, "out": root / "out"}


def test_training_on_the_synthetic_set_beats_chance_and_the_untrained_net(trained_fec):
    r, out = trained_fec["result"], trained_fec["out"]
    assert r["triplet_accuracy"] > max(0.5, r["untrained_triplet_accuracy"]), r
    assert Path(r["weights"]) == out / "fec.pt"
    history = json.loads((out / "history.json").read_text())
    # AffectNet was given: its validation accuracy is measured every epoch (the untrained net's too),
    # and the figure reported is the chosen epoch's, not another one's.
    assert all(h["expression_accuracy"] is not None for h in history)
    assert r["expression_accuracy"] == history[r["best_epoch"]]["expression_accuracy"]
    assert r["triplet_accuracy"] == max(h["triplet_accuracy"] for h in history)
    assert [h["epoch"] for h in history][:2] == [0, 1] and history[0]["loss"] is None
    assert (out / "curves.png").read_bytes()[:4] == b"\x89PNG"
    assert "RANDOM" in trained_fec["proc"].stderr  # a random trunk is said out loud


def test_trained_weights_round_trip_into_stage_one(trained_fec, tiny_embedded, tmp_path):
    """`embed run --backbone fec --weights fec.pt`: the store key records the file's hash, and its
    embeddings are the trained net's (not a random net's)."""
    from embed.cache import ClipData
    from embed.streaming import spec_for_stores, stream_video

    def embed_video(video, weights: str, config: dict) -> ClipData:
        """The video embedded as a store of `config` was (an error if these weights cannot make it)."""
        spec = spec_for_stores([config], [weights], device="cpu", label="test")
        return ClipData.concat([c.data for c in stream_video(video, spec, match=[config])])

    weights = trained_fec["result"]["weights"]
    manifest = copy_tiny(tiny_embedded, tmp_path)
    run_cli("run", "--manifest", str(manifest), "--backbone", "fec", "--weights", weights, "--device", "cpu", "--quiet")
    info = last_json(
        run_cli("info", "--manifest", str(manifest), "--backbone", "fec", "--weights", weights, "--json").stdout
    )
    assert info["weights"] == file_identity(weights) and info["dim"] == 128 and info["complete"] == 7
    config = CacheStore(info["store"]).config
    clip_id = sorted(zarr.open_group(info["store"], mode="r")["clips"].group_keys())[0]
    stored = zarr.open_group(info["store"], mode="r")[f"clips/{clip_id}/embeddings"][...].astype(np.float32)
    video = next((tmp_path / "data").rglob(f"{clip_id}.*"))
    again = embed_video(video, weights, config).embeddings.astype(np.float32)
    np.testing.assert_allclose(again, stored, atol=2e-3)
    random = embed_video(video, "random", {**config, "weights": "random:0"}).embeddings.astype(np.float32)
    assert np.abs(random - stored).mean() > 10 * np.abs(again - stored).mean() + 1e-3
