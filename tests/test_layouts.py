"""DAiSEE and CSV layouts on real trees (real encoded videos) with every quirk of the release."""

import numpy as np
import pytest

from embed.errors import ConfigError
from embed.layouts import read_dataset
from embed.manifest import load_manifest
from embed.sample import write_video
from tests.conftest import write_manifest
from tests.frames import decode_video

HEADER = "ClipID,Boredom,Engagement,Confusion,Frustration "


def _video(path, frames=5):
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(len(str(path)))
    write_video(path, (rng.integers(0, 255, (48, 64, 3), dtype=np.uint8) for _ in range(frames)), 30, width=64, height=48)


@pytest.fixture
def daisee_tree(tmp_path):
    root = tmp_path / "DAiSEE"
    _video(root / "DataSet/Train/110001/1100011002/1100011002.avi")
    _video(root / "DataSet/Train/110001/1100011003/1100011003.mp4")  # labelled as .avi: matched by id
    _video(root / "DataSet/Train/110002/1100021001/1100021001.avi", frames=12)  # short clip
    _video(root / "DataSet/Train/110002/1100021009/1100021009.avi")  # on disk, no label row
    _video(root / "DataSet/Validation/210001/2100011001/2100011001.mp4")
    (root / "Labels").mkdir()
    # Windows line endings and a BOM, as spreadsheet exports produce.
    (root / "Labels/TrainLabels.csv").write_bytes(
        (
            "\ufeff" + HEADER + "\r\n1100011002.avi,0,2,0,0\r\n1100011003.avi,1,3,2,0\r\n"
            "1100021001.avi,3,1,0,1\r\n1100029999.avi,0,2,0,0\r\n"
        ).encode()
    )
    (root / "Labels/ValidationLabels.csv").write_text(HEADER + "\n2100011001.mp4,2,2,1,3\n")
    return root


def _manifest(tmp_path, root, layout="daisee", **extra):
    return load_manifest(write_manifest(tmp_path / "m.yaml", {"d": {"layout": layout, "root": str(root), **extra}}))


def test_daisee_tree_with_every_quirk(tmp_path, daisee_tree):
    index = read_dataset(_manifest(tmp_path, daisee_tree), "d")
    by_id = {c.clip_id: c for c in index.clips}
    assert sorted(by_id) == ["1100011002", "1100011003", "1100021001", "1100021009", "2100011001"]
    assert by_id["1100011003"].path.suffix == ".mp4"
    assert by_id["1100011003"].labels == {"Boredom": 1, "Engagement": 3, "Confusion": 2, "Frustration": 0}
    assert by_id["2100011001"].split == "Validation" and by_id["2100011001"].labels["Frustration"] == 3
    assert index.missing_on_disk == ["1100029999"]
    assert index.unlabelled == ["1100021009"] and by_id["1100021009"].labels is None
    short = decode_video(by_id["1100021001"].path)
    assert len(short.frames) == 12 and short.timestamps[-1] == pytest.approx(11 / 30, abs=1e-3)


@pytest.mark.parametrize(
    "rows, pattern",
    [
        ("1100011002.avi,0,5,0,0", r"TrainLabels\.csv: line 2: Engagement = '5' is not a level 0\.\.3"),
        ("1100011002.avi,0,x,0,0", r"line 2: Engagement = 'x'"),
        (
            "1100011002.avi,0,1,0,0\n1100011002.avi,0,1,0,0",
            r"line 3: duplicate ClipID '1100011002\.avi' \(first on line 2\)",
        ),
    ],
)
def test_bad_label_rows(tmp_path, daisee_tree, rows, pattern):
    (daisee_tree / "Labels/TrainLabels.csv").write_text(HEADER + "\n" + rows + "\n")
    with pytest.raises(ConfigError, match=pattern):
        read_dataset(_manifest(tmp_path, daisee_tree), "d")


def test_missing_state_column(tmp_path, daisee_tree):
    (daisee_tree / "Labels/TrainLabels.csv").write_text("ClipID,Boredom,Engagement,Confusion\n1100011002.avi,0,1,0\n")
    with pytest.raises(ConfigError, match=r"TrainLabels\.csv: line 1: no column 'Frustration'"):
        read_dataset(_manifest(tmp_path, daisee_tree), "d")


def test_csv_layout_ids_are_relative_paths(tmp_path):
    root = tmp_path / "mine"
    _video(root / "a/clip.mp4")
    _video(root / "b/clip.mp4")  # same stem elsewhere: ids must not collide
    (root / "labels.csv").write_text(
        "path,split,Boredom,Engagement,Confusion,Frustration\n"
        "a/clip.mp4,Train,0,1,2,3\nb/clip.mp4,Test,1,1,1,1\nc/gone.mp4,Train,0,0,0,0\n"
    )
    index = read_dataset(_manifest(tmp_path, root, layout="csv", csv="labels.csv"), "d")
    assert [c.clip_id for c in index.clips] == ["a--clip", "b--clip"]
    assert [c.split for c in index.clips] == ["Train", "Test"]
    assert index.missing_on_disk == ["c--gone"]
