"""Readers for the Google FEC triplet CSV and an AffectNet-style expression table, and face crops
made the way stage one makes them (so the trained net sees at training what it will see in use).

FEC CSV (faceexp-comparison-data-{train,test}-public.csv), one triplet per row, no header:
  3 x [image URL, box left, box right, box top, box bottom] (box sides as fractions of the image
  width/height), triplet type (ONE_CLASS_TRIPLET, TWO_CLASS_TRIPLET, THREE_CLASS_TRIPLET), then
  pairs of [annotator id, annotation], annotation 1-3 naming the image least like the other two.
  Images are never downloaded: each URL's file name is looked up under --images (the layout the
  usual FEC download scripts write); a local path in the URL column is taken relative to --images.
AffectNet (training.csv / validation.csv in the AffectNet folder), with a header: image path in
  `subDirectory_filePath` (or `image`), label in `expression` (0-7: neutral, happy, sad, surprise,
  fear, disgust, anger, contempt; 8-10, none/uncertain/no-face, are skipped), and optionally the
  face box in `face_x, face_y, face_width, face_height` pixels (else the whole image is the face).
  Paths are relative to the folder, or to its Manually_Annotated_Images/ when that exists.
"""

from __future__ import annotations

import csv
import logging
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlparse

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from embed.crops import crop_faces
from embed.errors import ConfigError
from embed.extraction import DetectorConfig

log = logging.getLogger(__name__)

TRIPLET_TYPES = ("ONE_CLASS_TRIPLET", "TWO_CLASS_TRIPLET", "THREE_CLASS_TRIPLET")
EXPRESSIONS = ("neutral", "happy", "sad", "surprise", "fear", "disgust", "anger", "contempt")
_NOT_AN_EXPRESSION = {8, 9, 10}  # AffectNet's none / uncertain / no-face


@dataclass(frozen=True)
class FaceImage:
    path: Path
    box: tuple[float, float, float, float] | None  # x0, y0, x1, y1 in pixels; None: normalised (FEC)
    fraction_box: tuple[float, float, float, float] | None = None  # FEC: left, top, right, bottom as fractions


@dataclass
class Triplets:
    """FEC triplets: images[i] for i in rows of `index` (N, 3), `odd` (N,) 0-2 the least alike."""

    images: list[FaceImage]
    index: np.ndarray
    odd: np.ndarray
    types: list[str]
    skipped: Counter = field(default_factory=Counter)  # why rows were left out, and how many

    def __len__(self) -> int:
        return len(self.odd)

    def subset(self, rows: np.ndarray) -> Triplets:
        return Triplets(
            self.images, self.index[rows], self.odd[rows], types=[self.types[i] for i in rows], skipped=self.skipped
        )


@dataclass
class Expressions:
    images: list[FaceImage]
    labels: np.ndarray  # (N,) 0-7
    skipped: Counter = field(default_factory=Counter)

    def __len__(self) -> int:
        return len(self.labels)


def _local_file(ref: str, images: Path) -> Path:
    url = urlparse(ref)
    if url.scheme in ("http", "https"):
        return images / Path(url.path).name
    return images / ref


def read_fec_csv(path: Path, images: Path) -> Triplets:
    """The triplets of one FEC CSV whose three images are on disk; majority annotation decides."""
    path, images = Path(path), Path(images)
    if not path.is_file():
        raise ConfigError(f"{path}: no such FEC CSV; fix: pass the faceexp-comparison-data CSV to --triplets")
    if not images.is_dir():
        raise ConfigError(f"{images}: no such image folder; fix: pass the folder holding the FEC images to --images")
    known: dict[tuple, int] = {}
    faces: list[FaceImage] = []
    rows, odd, types, skipped = [], [], [], Counter()
    with path.open(newline="") as f:
        for line_no, row in enumerate(csv.reader(f), 1):
            if not row or not "".join(row).strip():
                continue
            where = f"{path}:{line_no}"
            if len(row) < 18 or (len(row) - 16) % 2:
                raise ConfigError(
                    f"{where}: {len(row)} fields, expected 15 image fields, the triplet type and "
                    f"annotator/annotation pairs; fix: pass an unmodified FEC CSV"
                )
            if row[15] not in TRIPLET_TYPES:
                raise ConfigError(
                    f"{where}: triplet type {row[15]!r} is not one of {', '.join(TRIPLET_TYPES)}; "
                    f"fix: pass an unmodified FEC CSV"
                )
            try:
                boxes = [tuple(float(v) for v in row[5 * k + 1 : 5 * k + 5]) for k in range(3)]
                votes = [int(v) for v in row[17::2]]
            except ValueError:
                raise ConfigError(
                    f"{where}: a face box or annotation is not a number; fix: pass an unmodified FEC CSV"
                ) from None
            if any(v not in (1, 2, 3) for v in votes):
                raise ConfigError(f"{where}: annotations must be 1, 2 or 3, got {votes}; fix: correct the row")
            top = Counter(votes).most_common()
            if len(top) > 1 and top[0][1] == top[1][1]:
                skipped["annotators disagree (tie)"] += 1
                continue
            files = [_local_file(row[5 * k], images) for k in range(3)]
            if not all(p.is_file() for p in files):
                skipped["image not on disk"] += 1
                continue
            ids = []
            for p, (left, right, top_, bottom) in zip(files, boxes, strict=True):
                key = (p, left, right, top_, bottom)
                if key not in known:
                    known[key] = len(faces)
                    faces.append(FaceImage(p, None, (left, top_, right, bottom)))
                ids.append(known[key])
            rows.append(ids)
            odd.append(top[0][0] - 1)
            types.append(row[15])
    if not rows:
        raise ConfigError(
            f"{path}: no usable triplet ({dict(skipped) or 'the file is empty'}); fix: put the FEC "
            f"images under {images} (named as in the URLs) before training"
        )
    if skipped:
        log.warning("%s: %d triplets used; left out: %s", path, len(rows), dict(skipped))
    return Triplets(faces, np.asarray(rows, dtype=np.int64), np.asarray(odd, dtype=np.int64), types=types, skipped=skipped)


def read_affectnet(folder: Path, split: str) -> Expressions:
    """One AffectNet table (split 'training' or 'validation') of images that are on disk."""
    folder = Path(folder)
    table = folder / f"{split}.csv"
    if not table.is_file():
        raise ConfigError(
            f"{table}: no such file; fix: pass the AffectNet folder holding training.csv and validation.csv to --affectnet"
        )
    base = folder / "Manually_Annotated_Images" if (folder / "Manually_Annotated_Images").is_dir() else folder
    faces, labels, skipped = [], [], Counter()
    with table.open(newline="") as f:
        reader = csv.DictReader(f)
        cols = set(reader.fieldnames or ())
        path_col = next((c for c in ("subDirectory_filePath", "image") if c in cols), None)
        if path_col is None or "expression" not in cols:
            raise ConfigError(
                f"{table}: needs an image column (subDirectory_filePath or image) and an expression "
                f"column, found {sorted(cols)}; fix: use AffectNet's own CSV header"
            )
        has_box = {"face_x", "face_y", "face_width", "face_height"} <= cols
        for line_no, row in enumerate(reader, 2):
            where = f"{table}:{line_no}"
            try:
                label = int(row["expression"])
                box = None
                if has_box and row["face_width"]:
                    x, y, w, h = (float(row[k]) for k in ("face_x", "face_y", "face_width", "face_height"))
                    box = (x, y, x + w, y + h)
            except (TypeError, ValueError):
                raise ConfigError(f"{where}: expression or face box is not a number; fix: correct the row") from None
            if label in _NOT_AN_EXPRESSION:
                skipped["not an expression (8-10)"] += 1
                continue
            if not 0 <= label < len(EXPRESSIONS):
                raise ConfigError(f"{where}: expression {label} is not 0-10; fix: correct the row")
            p = base / row[path_col]
            if not p.is_file():
                skipped["image not on disk"] += 1
                continue
            faces.append(FaceImage(p, box))
            labels.append(label)
    if not faces:
        raise ConfigError(f"{table}: no usable image ({dict(skipped) or 'no rows'}); fix: put the images under {base}")
    if skipped:
        log.warning("%s: %d images used; left out: %s", table, len(faces), dict(skipped))
    return Expressions(faces, np.asarray(labels, dtype=np.int64), skipped)


def load_crop(face: FaceImage, size: int, margin: float | None = None) -> torch.Tensor:
    """(3, size, size) float 0..255: the face's square box with stage one's margin, from the image."""
    try:
        with Image.open(face.path) as im:
            rgb = np.asarray(im.convert("RGB"))
    except (OSError, UnidentifiedImageError) as e:
        raise ConfigError(f"{face.path}: cannot read the image ({e}); fix: re-download or remove it") from None
    h, w = rgb.shape[:2]
    if face.box is not None:
        box = face.box
    elif face.fraction_box is not None:
        left, top, right, bottom = face.fraction_box
        box = (left * w, top * h, right * w, bottom * h)
    else:
        box, margin = (0.0, 0.0, float(w), float(h)), 0.0  # an already-cropped face: all of it
    margin = DetectorConfig().margin if margin is None else margin
    return crop_faces(rgb[None], np.asarray([box], dtype=np.float32), size, margin=margin)[0]
