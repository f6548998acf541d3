import json

import numpy as np
import pytest

from embed.faces import FaceTracker
from embed.manifest import SampleSpec
from embed.sample import DAISEE_LEVEL_COUNTS, SAMPLE_STATES, _sample_levels, generate_sample
from embed.video import decode_video
from tests.conftest import TINY_SAMPLE


def _iou(a, b):
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    return inter / ((a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter)


@pytest.fixture(scope="module")
def two_samples(tmp_path_factory):
    spec = SampleSpec(**TINY_SAMPLE)
    a, b = tmp_path_factory.mktemp("a") / "s", tmp_path_factory.mktemp("b") / "s"
    return generate_sample(a, spec), a, generate_sample(b, spec), b


def test_sample_is_deterministic(two_samples):
    meta_a, a, meta_b, b = two_samples
    assert json.dumps(meta_a, default=float) == json.dumps(meta_b, default=float)
    files_a = sorted(p.relative_to(a) for p in a.rglob("*") if p.is_file())
    assert files_a == sorted(p.relative_to(b) for p in b.rglob("*") if p.is_file())
    for rel in files_a:
        assert (a / rel).read_bytes() == (b / rel).read_bytes(), rel


def test_sample_tree_is_daisee_shaped(two_samples):
    meta, root, _, _ = two_samples
    header = (root / "Labels" / "TrainLabels.csv").read_text().splitlines()[0]
    assert header == "ClipID,Boredom,Engagement,Confusion,Frustration "  # the real file's trailing space
    videos = sorted(root.glob("DataSet/*/*/*/*"))
    assert len(videos) == len(meta["clips"]) == 7
    assert {v.suffix for v in videos} <= {".avi", ".mp4"}
    for v in videos:
        assert v.parent.name == v.stem and v.parent.parent.name == meta["clips"][v.stem]["subject"]
        decoded = decode_video(v)
        assert decoded.frames.shape == (10, 240, 320, 3)
        np.testing.assert_allclose(decoded.timestamps, np.arange(10) / 10, atol=1e-4)


def test_sample_labels_are_as_imbalanced_as_daisee():
    rng = np.random.default_rng(0)
    draws = [_sample_levels(rng, "Train") for _ in range(4000)]
    for state in SAMPLE_STATES:
        counts = np.bincount([d[state] for d in draws], minlength=4) / len(draws)
        expected = np.asarray(DAISEE_LEVEL_COUNTS["Train"][state]) / sum(DAISEE_LEVEL_COUNTS["Train"][state])
        np.testing.assert_allclose(counts, expected, atol=0.03)


def test_mtcnn_finds_the_face_in_sample_frames(two_samples):
    meta, root, _, _ = two_samples
    tracker = FaceTracker()
    for video in sorted(root.glob("DataSet/*/*/*/*"))[:3]:
        decoded = decode_video(video)
        track = tracker.track(decoded.frames)
        assert (track.probs > 0.9).all(), video
        truth = meta["clips"][video.stem]["face_box"]
        assert _iou(track.boxes[0], truth) > 0.6, (track.boxes[0], truth)
