"""Feature files as other tools write them, for the import tests: OpenFace 2 FeatureExtraction CSVs
(the real column set and its ", " separators; the pre-2.0 column set), and datasets of clips whose
videos are not on disk (researchers who hold only the features)."""

from __future__ import annotations

from pathlib import Path

import numpy as np

AUS_R = ["01", "02", "04", "05", "06", "07", "09", "10", "12", "14", "15", "17", "20", "23", "25", "26", "45"]
AUS_C = ["01", "02", "04", "05", "06", "07", "09", "10", "12", "14", "15", "17", "20", "23", "25", "26", "28", "45"]


def openface_header(release: str = "2.2") -> list[str]:
    """FeatureExtraction's columns in its order. Releases before 2.0: no face_id, no gaze_angle_*,
    no eye landmarks (github.com/TadasBaltrusaitis/OpenFace/wiki/Output-Format)."""
    new = not release.startswith(("0.", "1."))
    cols = ["frame", *(["face_id"] if new else []), "timestamp", "confidence", "success"]
    cols += [f"gaze_{e}_{a}" for e in (0, 1) for a in "xyz"] + (["gaze_angle_x", "gaze_angle_y"] if new else [])
    if new:
        cols += [f"eye_lmk_{a}_{i}" for a in ("x", "y") for i in range(56)]
        cols += [f"eye_lmk_{a}_{i}" for a in ("X", "Y", "Z") for i in range(56)]
    cols += [f"pose_{k}{a}" for k in "TR" for a in "xyz"]
    cols += [f"{a}_{i}" for a in ("x", "y") for i in range(68)] + [f"{a}_{i}" for a in "XYZ" for i in range(68)]
    cols += ["p_scale", "p_rx", "p_ry", "p_rz", "p_tx", "p_ty"] + [f"p_{i}" for i in range(34)]
    cols += [f"AU{a}_r" for a in AUS_R] + [f"AU{a}_c" for a in AUS_C]
    return cols


def openface_rows(
    frames: int,
    level: int,
    rng: np.random.Generator,
    release: str = "2.2",
    fps: float = 30.0,
    faceless: tuple[int, ...] = (),
) -> tuple[list[str], np.ndarray]:
    """(header, values): one row per frame whose gaze, pose and AU intensities carry `level`
    (plus noise), so a head trained on them beats the majority; `faceless` frames have success 0."""
    header = openface_header(release)
    v = rng.normal(0, 1, (frames, len(header)))
    col = {h: i for i, h in enumerate(header)}
    v[:, col["frame"]] = np.arange(1, frames + 1)
    v[:, col["timestamp"]] = np.round(np.arange(frames) / fps, 3)
    v[:, col["confidence"]] = 0.98
    v[:, col["success"]] = 1
    if "face_id" in col:
        v[:, col["face_id"]] = 0
    for h in header:
        if h.startswith(("gaze_", "AU")) and h.endswith(("_r", "_x", "_y", "_z")):
            v[:, col[h]] += 0.8 * level
    v[:, col["pose_Tz"]] = 500 + 20 * level + v[:, col["pose_Tz"]]
    for i in range(68):
        v[:, col[f"x_{i}"]] += 300 + 3 * i
        v[:, col[f"y_{i}"]] += 200 + 2 * i
    for f in faceless:
        v[f, col["success"]], v[f, col["confidence"]] = 0, 0.03
    return header, v


def write_openface_csv(path: Path, header: list[str], values: np.ndarray) -> Path:
    """As FeatureExtraction writes it: ', ' between header names, ', ' between values."""
    path.parent.mkdir(parents=True, exist_ok=True)
    ints = {"frame", "face_id", "success"}
    lines = [", ".join(header)]
    for row in values:
        lines.append(", ".join(str(int(x)) if h in ints else f"{x:.3f}" for h, x in zip(header, row, strict=True)))
    path.write_text("\n".join(lines) + "\n")
    return path


STATES = ("Boredom", "Engagement", "Confusion", "Frustration")


def featureless_dataset(
    root: Path, per_split: dict[str, int], seed: int = 0, subjects: int = 0, leak: str | None = None
) -> dict[str, dict]:
    """A csv-layout dataset whose videos are absent: labels.csv and a manifest. Returns {clip: {split,
    labels, stem, subject}}; clip ids are `s<k%3>--<stem>` (the csv layout's path-derived ids). With
    `subjects`, a subject column names that many people per split (none shared between splits),
    except that the `leak` split's last clip is given a Train subject."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    clips, rows, k = {}, [], 0
    for split, n in per_split.items():
        for i in range(n):
            stem = f"clip{k:03d}"
            labels = {s: int(rng.integers(0, 4)) for s in STATES}
            subject = f"{split[:2].lower()}{i % subjects}" if subjects else None
            if split == leak and i == n - 1:
                subject = "tr0"
            clips[f"s{k % 3}--{stem}"] = {"split": split, "labels": labels, "stem": stem, "subject": subject}
            rows.append(
                f"s{k % 3}/{stem}.mp4,{split},"
                + ",".join(str(labels[s]) for s in STATES)
                + (f",{subject}" if subjects else "")
            )
            k += 1
    header = "path,split," + ",".join(STATES) + (",subject" if subjects else "")
    (root / "labels.csv").write_text(header + "\n" + "\n".join(rows) + "\n")
    (root / "data_manifest.yaml").write_text(
        f"cache_dir: {root}/cache\nruns_dir: {root}/runs\ndatasets:\n  feats:\n    layout: csv\n"
        f"    root: {root}\n    csv: labels.csv\n"
    )
    return clips
