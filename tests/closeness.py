"""How closely a frame embedded one way must equal the same frame embedded another way (batched with
other clips or sources, on another device): bounds derived from how the values are made, and checks
that a frame from another source, or shifted by one, fails them."""

from __future__ import annotations

import numpy as np

# How far batching may move a face box: MTCNN's float rounding differs with the batch (0.05 px seen
# on a full suite run), while another source's box or a shifted chunk's is tens of pixels away.
BOX_PX = 0.5


def float16_step(values: np.ndarray) -> np.ndarray:
    """One rounding step of float16 at each value (what storing an embedding rounds to)."""
    return np.spacing(np.abs(values).astype(np.float16)).astype(np.float32)


def assert_same_frames(mine: dict, ref: dict, label: str, box_px: float = BOX_PX, same_device: bool = True) -> None:
    """`mine` holds, frame by frame, what `ref` holds (dicts of embeddings, face_prob, boxes):
    - the same frames have a face, with boxes within `box_px`;
    - on the same device, where a frame's box is bit for bit the reference's, the backbone saw the
      same crop and its embedding is the reference's to one float16 step (a backbone's output does
      not depend on the batch it went in: test_backbones);
    - every face frame's embedding is nearer (L2) to its own reference frame than to the reference's
      neighbouring frames, so a frame routed from another source or shifted by one fails."""
    face = ref["face_prob"] > 0
    np.testing.assert_array_equal(mine["face_prob"] > 0, face, err_msg=label)
    np.testing.assert_allclose(mine["boxes"][face], ref["boxes"][face], rtol=0, atol=box_px, err_msg=label)
    a, b = mine["embeddings"].astype(np.float32), ref["embeddings"].astype(np.float32)
    np.testing.assert_array_equal(a[~face], b[~face], err_msg=label)  # zeros where there is no face
    # A face's probability is its detections' (the same detections, rounded as the batch rounds them).
    np.testing.assert_allclose(mine["face_prob"], ref["face_prob"], rtol=0, atol=1e-4, err_msg=label)
    if same_device:
        same_box = face & (mine["boxes"] == ref["boxes"]).all(axis=1)
        step = np.maximum(float16_step(a[same_box]), float16_step(b[same_box]))
        assert (np.abs(a[same_box] - b[same_box]) <= step).all(), f"{label}: beyond one float16 step"
    rows = np.flatnonzero(face)
    if len(rows) < 2:
        return
    own = np.linalg.norm(a[rows] - b[rows], axis=1)
    before = np.linalg.norm(a[rows[1:]] - b[rows[:-1]], axis=1)  # each frame against the reference's previous
    after = np.linalg.norm(a[rows[:-1]] - b[rows[1:]], axis=1)  # and its next
    differ = np.linalg.norm(b[rows[1:]] - b[rows[:-1]], axis=1) > 0  # neighbours a shift could be told from
    moved = rows[1:][differ & (own[1:] >= before)]
    assert len(moved) == 0, f"{label}: frames {moved.tolist()} are nearer the previous reference frame"
    moved = rows[:-1][differ & (own[:-1] >= after)]
    assert len(moved) == 0, f"{label}: frames {moved.tolist()} are nearer the next reference frame"
