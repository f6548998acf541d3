"""OpenFace 2 FeatureExtraction CSVs, one per video (`<video>.csv`).

The format (github.com/TadasBaltrusaitis/OpenFace/wiki/Output-Format): a header row whose names
follow ", " (a space after every comma), then one row per frame: frame (1-based), face_id,
timestamp (s), confidence, success, gaze_*, eye_lmk_*, pose_T*/pose_R*, x_*/y_* (2-D landmarks),
X_*/Y_*/Z_* (3-D), p_* (shape parameters), AU*_r (intensity), AU*_c (presence). Releases before 2.0
lack face_id, gaze_angle_* and the eye landmarks. Parsed with the csv module rather than pandas so
that a damaged file fails with the line and column at fault.
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np

from embed.errors import ClipError, ConfigError
from embed.importers import FeatureFile, Features, Importer, register_importer

GROUPS = {
    "gaze": re.compile(r"gaze_\w+"),
    "pose": re.compile(r"pose_[TR][xyz]"),
    "au_r": re.compile(r"AU\d+_r"),
    "au_c": re.compile(r"AU\d+_c"),
    "landmarks2d": re.compile(r"[xy]_\d+"),
    "landmarks3d": re.compile(r"[XYZ]_\d+"),
    "shape": re.compile(r"p_\w+"),
}
DEFAULT_GROUPS = ["gaze", "pose", "au_r"]
# OpenFace's tracker reports a confidence per frame; below this its landmarks (and everything
# computed from them) are unreliable, so the frame counts as faceless, like success 0.
MIN_CONFIDENCE = 0.5
_FIX = "fix: re-run OpenFace FeatureExtraction on this video (the file is damaged or cut short)"


@register_importer
class OpenFaceImporter(Importer):
    name = "openface"
    describe = "OpenFace 2 FeatureExtraction CSVs, one <video>.csv per clip"

    def __init__(self, columns: list[str] | None = None, fps: float | None = None):
        columns = columns or list(DEFAULT_GROUPS)
        unknown = [c for c in columns if c not in GROUPS]
        if unknown:
            raise ConfigError(
                f"--columns {unknown[0]!r}: not an OpenFace column group; fix: use some of {', '.join(GROUPS)}"
            )
        super().__init__(columns, fps)

    def options(self) -> dict:
        return {**super().options(), "min_confidence": MIN_CONFIDENCE}

    def find(self, src: Path, names: set[str]) -> tuple[dict[str, FeatureFile], list[str]]:
        found, unmatched = self._find(src, names)
        self._common_columns(found.values())
        return found, unmatched

    def _common_columns(self, files) -> None:
        """The selected columns every file has (header lines only). A dataset extracted partly with
        an older release lacks gaze_angle_* in some files: all clips keep what all of them have, and
        what was left out is said (self.dropped), rather than most clips failing on the first file's set."""
        headers = []
        for f in files:
            try:
                with open(f.path, newline="", encoding="utf-8") as fh:
                    headers.append([h.strip() for h in next(csv.reader(fh, skipinitialspace=True), [])])
            except (OSError, UnicodeDecodeError, csv.Error):
                continue  # its read fails it with the reason
        wanted = [[h for h in header if any(GROUPS[g].fullmatch(h) for g in self.columns)] for header in headers]
        common = set.intersection(*(set(w) for w in wanted)) if wanted else set()
        every = {c for w in wanted for c in w}
        self.common: set[str] | None = common if wanted else None
        self.dropped = sorted(every - common)

    def _find(self, src: Path, names: set[str]) -> tuple[dict[str, FeatureFile], list[str]]:
        if not src.exists():
            raise ConfigError(f"{src}: no such file or folder; fix: pass the folder of OpenFace CSVs")
        files = sorted(src.rglob("*.csv")) if src.is_dir() else [src]
        found: dict[str, FeatureFile] = {}
        unmatched = []
        for path in files:
            if path.stem not in names:
                unmatched.append(str(path))
            elif path.stem in found:
                raise ConfigError(
                    f"{path}: a second CSV for {path.stem} (also {found[path.stem].path}); fix: keep one per video"
                )
            else:
                found[path.stem] = FeatureFile(path.stem, path)
        return found, unmatched

    def read(self, f: FeatureFile) -> Features:
        header, data = _read_csv(f.path)
        col = {name: i for i, name in enumerate(header)}
        for needed in ("frame", "timestamp", "confidence", "success"):
            if needed not in col:
                raise ClipError(
                    f"{f.path}: line 1: no '{needed}' column: not an OpenFace FeatureExtraction CSV; "
                    f"fix: import FeatureExtraction's per-video CSV"
                )
        if "face_id" in col and len(np.unique(data[:, col["face_id"]])) > 1:
            raise ClipError(
                f"{f.path}: several faces (face_id column); this importer reads FeatureExtraction's "
                f"single-face output; fix: re-run FeatureExtraction (not FaceLandmarkVidMulti)"
            )
        frames = data[:, col["frame"]]
        back = np.flatnonzero(np.diff(frames) <= 0)
        if len(back):
            i = int(back[0]) + 1
            raise ClipError(
                f"{f.path}: line {i + 2}: frame {frames[i]:g} after frame {frames[i - 1]:g}: rows out of order; {_FIX}"
            )
        selected = []
        for group in self.columns:
            names = [
                h
                for h in header
                if GROUPS[group].fullmatch(h) and (getattr(self, "common", None) is None or h in self.common)
            ]
            if not names:
                raise ClipError(
                    f"{f.path}: no {group} columns; fix: re-run FeatureExtraction with that output "
                    f"switched on, or leave {group} out of --columns"
                )
            selected += names
        confidence, success = data[:, col["confidence"]], data[:, col["success"]]
        face = (success > 0) & (confidence >= MIN_CONFIDENCE)
        timestamps = self.frame_times(frames, str(f.path), data[:, col["timestamp"]])
        return Features(
            data[:, [col[c] for c in selected]].astype(np.float32),
            timestamps,
            np.where(face, confidence, 0.0).astype(np.float32),
            boxes=_boxes(header, data, face),
            columns=selected,
        )


def _read_csv(path: Path) -> tuple[list[str], np.ndarray]:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            reader = csv.reader(fh, skipinitialspace=True)
            header = [h.strip() for h in next(reader, [])]
            if not header:
                raise ClipError(f"{path}: empty file; {_FIX}")
            rows, lines = [], []
            for row in reader:
                if not row:
                    continue
                if len(row) != len(header):
                    raise ClipError(
                        f"{path}: line {reader.line_num}: {len(row)} fields, the header has {len(header)}; {_FIX}"
                    )
                rows.append(row)
                lines.append(reader.line_num)
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise ClipError(f"{path}: cannot read it ({e}); {_FIX}") from None
    if not rows:
        raise ClipError(f"{path}: a header but no frames; {_FIX}")
    try:
        data = np.array(rows, dtype=np.float64)
    except ValueError:
        data = None
    if data is None or not np.isfinite(data).all():
        # Find the first field at fault (a second pass, only for a broken file).
        for row, line in zip(rows, lines, strict=True):
            for name, value in zip(header, row, strict=True):
                try:
                    ok = np.isfinite(float(value))
                except ValueError:
                    ok = False
                if not ok:
                    raise ClipError(f"{path}: line {line}: column '{name}' is {value!r}, not a number; {_FIX}")
    return header, data


def _boxes(header: list[str], data: np.ndarray, face: np.ndarray) -> np.ndarray:
    """The face's box from the 2-D landmarks' extent when the CSV has them (NaN otherwise or without a face)."""
    xs = [i for i, h in enumerate(header) if re.fullmatch(r"x_\d+", h)]
    ys = [i for i, h in enumerate(header) if re.fullmatch(r"y_\d+", h)]
    boxes = np.full((len(data), 4), np.nan, dtype=np.float32)
    if xs and ys:
        x, y = data[:, xs], data[:, ys]
        boxes[face] = np.stack([x.min(1), y.min(1), x.max(1), y.max(1)], 1)[face]
    return boxes
