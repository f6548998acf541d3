"""The face tracker's parts on hand-made inputs: the pick that continues a track, smoothing within runs
of detections, interpolation between them, and the crops cut from a chunk's common window."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import torch
from torchvision.ops import roi_align

from embed.crops import crop_faces, square_boxes
from embed.extraction import DetectorConfig
from embed.tracking import _interpolate, _pick, _smooth_runs
from tests.frames import track_frames

NAN4 = [np.nan] * 4


def test_pick_continues_the_track_else_takes_the_largest_probable_face():
    boxes = np.array([[0, 0, 100, 100], [200, 200, 240, 240]], np.float32)  # a large face and a small one
    probs = np.array([0.95, 0.99], np.float32)
    box, prob = _pick(boxes, probs, None, min_prob=0.9)
    assert box.tolist() == [0, 0, 100, 100] and prob == np.float32(0.95)  # largest area x probability
    box, prob = _pick(boxes, probs, np.array([205, 198, 243, 238], np.float32), min_prob=0.9)
    assert box.tolist() == [200, 200, 240, 240] and prob == np.float32(0.99)  # the track goes on with it
    box, _ = _pick(boxes, probs, np.array([300, 300, 340, 340], np.float32), min_prob=0.9)  # overlaps neither
    assert box.tolist() == [0, 0, 100, 100]
    assert _pick(boxes, np.array([0.5, 0.6], np.float32), None, min_prob=0.9) == (None, 0.0)  # none probable enough
    assert _pick(None, None, None, min_prob=0.9) == (None, 0.0)


def test_smoothing_averages_within_each_run_of_faces_and_keeps_the_gaps():
    a, b, c, d, e = (np.full(4, v, np.float32) for v in (0, 3, 9, 30, 60))
    boxes = np.stack([a, b, c, NAN4, d, e]).astype(np.float32)
    out = _smooth_runs(boxes, 3)
    want = [(a + a + b) / 3, (a + b + c) / 3, (b + c + c) / 3, NAN4, (d + d + e) / 3, (d + e + e) / 3]
    np.testing.assert_allclose(out, np.stack(want), rtol=1e-6)
    assert _smooth_runs(boxes, 1) is boxes


def test_interpolation_is_linear_between_faces_and_the_nearest_detection_decides_presence():
    det_idx = np.array([0, 5, 10])
    boxes = np.array([[0, 0, 10, 10], [5, 10, 15, 20], NAN4], np.float32)
    probs = np.array([0.9, 0.8, 0.0], np.float32)
    track = _interpolate(np.arange(11), det_idx, boxes, det_probs=probs)
    for f in range(1, 5):  # between two faces: linear, the lower probability
        np.testing.assert_allclose(track.boxes[f], boxes[0] + (boxes[1] - boxes[0]) * f / 5, rtol=1e-6)
        assert track.probs[f] == np.float32(0.8)
    # Between a face (5) and no face (10): the nearer detection decides; a tie goes to the earlier.
    assert (track.probs[5:8] == np.float32(0.8)).all() and (track.boxes[6:8] == boxes[1]).all()
    assert (track.probs[8:] == 0).all() and np.isnan(track.boxes[8:]).all()


def test_crops_from_the_common_window_equal_roi_align_on_whole_frames():
    """Cutting the chunk's common window first, and splitting the crops over threads, changes no
    crop: plain roi_align on the whole frames is the reference, with a face half out of the frame."""
    rng = np.random.default_rng(0)
    n, h, w = 40, 240, 320
    frames = rng.integers(0, 256, (n, h, w, 3), dtype=np.uint8)
    x = rng.uniform(40, 200, n)
    boxes = np.stack([x, x * 0.5, x + 60, x * 0.5 + 70], 1).astype(np.float32)
    boxes[7] = [280, -30, 360, 50]  # over the top-right corner: reads black outside the frame
    sq = square_boxes(boxes, 0.2)
    rois = torch.from_numpy(np.concatenate([np.arange(n, dtype=np.float32)[:, None], sq], 1).astype(np.float32))
    whole = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    want = roi_align(whole, rois, output_size=(160, 160), spatial_scale=1.0, sampling_ratio=2, aligned=True)
    threads, pool = torch.get_num_threads(), ThreadPoolExecutor(2)
    try:
        for k in (1, 2):  # one call, and the crops split across a pool's two threads
            torch.set_num_threads(k)
            got = crop_faces(frames, boxes, 160, margin=0.2, pool=pool if k == 2 else None)
            # Within 0.01 of 0..255: the rois shifted to the window's origin round differently in
            # float32, and on noise frames neighbouring pixels differ by up to 255 (measured: 0.005).
            # A window one pixel off would be tens away.
            torch.testing.assert_close(got, want, atol=1e-2, rtol=0)
            # Crops of some of the frames, named by row, equal those frames' crops above.
            rows = np.array([1, 7, 8, 30])
            torch.testing.assert_close(
                crop_faces(frames, boxes[rows], 160, margin=0.2, rows=rows), want[rows], atol=1e-2, rtol=0
            )
    finally:
        torch.set_num_threads(threads)
        pool.shutdown()


def test_region_search_is_in_the_store_key_only_when_on():
    """Off (the default), the detector's part of the key is what it was before region search existed,
    so existing stores keep their keys; on, its settings are part of it."""
    assert DetectorConfig().as_dict() == {
        "detect_every": 5,
        "detect_width": 320,
        "min_face_size": 40,
        "thresholds": [0.6, 0.7, 0.7],
        "min_prob": 0.9,
        "smooth": 3,
        "margin": 0.2,
    }
    on = DetectorConfig(search_region=2.5).as_dict()
    assert on["search_region"] == 2.5 and on["full_search_every"] == 60
    assert DetectorConfig.from_dict(on) == DetectorConfig(search_region=2.5)
    with pytest.raises(ValueError, match="full_search_every"):
        DetectorConfig(search_region=2.5, full_search_every=0)


def test_frames_smaller_than_the_smallest_face_have_no_face_rather_than_an_error():
    """MTCNN's pyramid is empty there (facenet-pytorch's own detect fails inside torch.cat)."""
    from embed.detector import FaceDetector

    tracker = FaceDetector()
    frames = np.full((4, 30, 30, 3), 128, np.uint8)
    assert tracker.detect(frames)[:2] == ([None] * 4, [None] * 4)
    assert (track_frames(tracker, frames).probs == 0).all()
