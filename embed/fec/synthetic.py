"""A tiny FEC/AffectNet-shaped set made from the sample generator's face, for tests and demos.

Eight expression classes, each a combination of a brow (relaxed or frowning) and a mouth (four
shades from dark to bright), drawn on the sample's face with per-image nuisance (backdrop, light,
position, size). FEC triplets hold two images of one class and one of another (the odd one);
AffectNet rows give each image its class. Written as JPEG files plus the two datasets' own CSV
layouts, so training reads them through the real readers.
"""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
from PIL import Image

from embed.sample import BROW_IN_HEAD, FACE_IN_HEAD, backdrop, head_sprite, soft_ellipse

MOUTH_IN_HEAD = (52, 128, 98, 152)
BROW_DARKEN = (0.0, 0.8)
MOUTH_GAIN = (-0.6, -0.2, 0.25, 0.7)
SIZE = 240  # image side, pixels
CLASSES = len(BROW_DARKEN) * len(MOUTH_GAIN)


def render_face(expression: int, rng: np.random.Generator, sprite=None) -> tuple[np.ndarray, tuple]:
    """(SIZE, SIZE, 3) uint8 image of the face showing `expression`, and the face box (pixels)."""
    rgb, alpha = sprite or head_sprite()
    brow, mouth = BROW_DARKEN[expression % 2], MOUTH_GAIN[expression // 2]
    head = rgb * rng.uniform(0.9, 1.1)
    head = head * (1 - brow * soft_ellipse(head.shape[:2], BROW_IN_HEAD)[..., None])
    head = head * (1 + mouth * soft_ellipse(head.shape[:2], MOUTH_IN_HEAD, blur=3)[..., None])
    k = rng.uniform(0.85, 0.95)
    size = (round(rgb.shape[1] * k), round(rgb.shape[0] * k))
    rgba = np.dstack([np.clip(head, 0, 1), alpha])
    sprite_img = Image.fromarray((rgba * 255).astype(np.uint8), "RGBA").resize(size, Image.Resampling.BICUBIC)
    canvas = Image.fromarray((backdrop(rng, SIZE, SIZE) * 255).astype(np.uint8)).convert("RGBA")
    ox = round(SIZE / 2 - size[0] / 2 + rng.uniform(-8, 8))
    oy = round(SIZE / 2 - size[1] / 2 + rng.uniform(-6, 6))
    canvas.alpha_composite(sprite_img, (ox, oy))
    x0, y0, x1, y1 = FACE_IN_HEAD
    return np.asarray(canvas.convert("RGB")), (ox + x0 * k, oy + y0 * k, ox + x1 * k, oy + y1 * k)


def generate_fec_sample(root: Path, per_class: int = 4, triplets: int = 96, seed: int = 0) -> dict[str, Path]:
    """Write images/, fec-train.csv, fec-test.csv and an AffectNet folder (training.csv,
    validation.csv) under root; train and test use different images. Returns their paths."""
    root = Path(root)
    (root / "images").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    sprite = head_sprite()
    images: dict[str, list[tuple[str, int, tuple]]] = {"train": [], "test": []}
    for split in images:
        for c in range(CLASSES):
            for i in range(per_class):
                name = f"{split}-{c}-{i}.jpg"
                img, box = render_face(c, rng, sprite)
                Image.fromarray(img).save(root / "images" / name, quality=92)
                images[split].append((name, c, box))
    paths = {"images": root / "images", "affectnet": root}
    for split, table in (("train", "training"), ("test", "validation")):
        with (root / f"{table}.csv").open("w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "expression"])
            for name, c, (x0, y0, x1, y1) in images[split]:
                w.writerow([f"images/{name}", round(x0), round(y0), round(x1 - x0), round(y1 - y0), c])
        by_class = {c: [im for im in images[split] if im[1] == c] for c in range(CLASSES)}
        n = triplets if split == "train" else max(triplets // 2, 1)
        paths[f"fec_{split}"] = root / f"fec-{split}.csv"
        with paths[f"fec_{split}"].open("w", newline="") as f:
            w = csv.writer(f)
            for _ in range(n):
                same, other = rng.choice(CLASSES, 2, replace=False)
                pair = rng.choice(len(by_class[same]), 2, replace=False)
                members = [
                    by_class[same][pair[0]],
                    by_class[same][pair[1]],
                    by_class[other][rng.integers(len(by_class[other]))],
                ]
                order = rng.permutation(3)
                row = []
                for j in order:
                    name, _, (x0, y0, x1, y1) = members[j]
                    row += [f"https://fec.invalid/images/{name}", x0 / SIZE, x1 / SIZE, y0 / SIZE, y1 / SIZE]
                odd = int(np.flatnonzero(order == 2)[0]) + 1
                w.writerow([*row, "TWO_CLASS_TRIPLET", "a1", odd, "a2", odd, "a3", odd])
    return paths
