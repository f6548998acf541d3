"""The built-in sample: a small DAiSEE-shaped dataset generated deterministically, no downloads.

Real encoded videos (PyAV/libx264) of a real face photo (scikit-image's astronaut) composited onto
per-subject backgrounds. Each state's level drives a visual cue that survives face cropping:

- Engagement: brightness of the face (the screen's glow on an attentive face).
- Boredom: a static head roll (a slumped, tilted head).
- Confusion: the *frequency* of a head-roll oscillation of fixed amplitude. Levels 1-3 share the same
  distribution of poses and differ only in their order over time, so temporal pooling cannot tell
  them apart: a sequence model has to.
- Frustration: a frown (darkened brow band).

Levels are drawn from DAiSEE's published per-split label distribution, so the sample is as imbalanced
as the real data and imbalance handling is exercised.
"""

from __future__ import annotations

import json
import logging
import math
import os
import shutil
import tempfile
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFilter

from embed.errors import ConfigError
from embed.manifest import SPLITS, Manifest, SampleSpec, load_manifest

log = logging.getLogger(__name__)

SAMPLE_STATES = ("Boredom", "Engagement", "Confusion", "Frustration")
# Label counts per level 0/1/2/3 per split, as published with the DAiSEE dataset.
DAISEE_LEVEL_COUNTS = {
    "Train": {
        "Boredom": (2433, 1696, 1073, 156),
        "Engagement": (34, 213, 2617, 2494),
        "Confusion": (3616, 1245, 431, 66),
        "Frustration": (4183, 941, 191, 43),
    },
    "Validation": {
        "Boredom": (446, 376, 475, 132),
        "Engagement": (23, 143, 813, 450),
        "Confusion": (942, 322, 153, 12),
        "Frustration": (1058, 271, 81, 19),
    },
    "Test": {
        "Boredom": (823, 584, 338, 39),
        "Engagement": (4, 84, 882, 814),
        "Confusion": (1200, 427, 136, 21),
        "Frustration": (1388, 316, 57, 2),
    },
}
ENGAGEMENT_GAIN = (0.55, 0.7, 0.85, 1.0)
# A slumped head leans the same way for everyone: a sign per subject made the level invisible to
# random-weight features (measured: boredom at chance), and the sample exists to be learnable.
BOREDOM_ROLL_DEG = (0.0, 10.0, 20.0, 30.0)
CONFUSION_HZ = (0.0, 0.5, 1.0, 2.0)
CONFUSION_AMPLITUDE_DEG = 6.0
FRUSTRATION_BROW_DARKEN = (0.0, 0.3, 0.55, 0.8)

# The head in skimage.data.astronaut(): crop window, and the face box MTCNN finds inside it.
_HEAD_WINDOW = (150, 10, 300, 230)  # x0, y0, x1, y1 in the 512x512 photo
FACE_IN_HEAD = (31.0, 52.0, 118.0, 162.0)
BROW_IN_HEAD = (40, 62, 110, 80)
FACE_HEIGHT_FRACTION = 0.36  # face box height / frame height, like a webcam at a desk
SAMPLE_FORMAT_VERSION = 4
MAX_ROTATIONS = 64  # rotated heads kept per clip (a few MB): a slow roll repeats after fps / hz frames


def head_sprite() -> tuple[np.ndarray, np.ndarray]:
    """RGB head crop (float32 0..1) and a soft elliptical alpha mask (float32 0..1)."""
    from skimage import data

    x0, y0, x1, y1 = _HEAD_WINDOW
    rgb = data.astronaut()[y0:y1, x0:x1].astype(np.float32) / 255.0
    h, w = rgb.shape[:2]
    mask = Image.new("L", (w, h), 0)
    ImageDraw.Draw(mask).ellipse((6, 4, w - 6, h - 4), fill=255)
    alpha = np.asarray(mask.filter(ImageFilter.GaussianBlur(5)), dtype=np.float32) / 255.0
    return rgb, alpha


def soft_ellipse(shape: tuple[int, int], box: tuple[int, int, int, int], blur: float = 4) -> np.ndarray:
    """(H, W) float32 0..1: a filled ellipse in box (x0, y0, x1, y1), edges blurred."""
    mask = Image.new("L", (shape[1], shape[0]), 0)
    ImageDraw.Draw(mask).ellipse(box, fill=255)
    return np.asarray(mask.filter(ImageFilter.GaussianBlur(blur)), dtype=np.float32) / 255.0


def backdrop(rng: np.random.Generator, w: int, h: int) -> np.ndarray:
    """A room-like backdrop: a two-colour gradient plus a few soft rectangles (shelves, a window)."""
    c0, c1 = rng.uniform(0.15, 0.85, 3), rng.uniform(0.15, 0.85, 3)
    t = np.linspace(0, 1, h, dtype=np.float32)[:, None, None]
    bg = (c0 * (1 - t) + c1 * t).repeat(w, axis=1).astype(np.float32)
    img = Image.fromarray((bg * 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(4):
        x, y = int(rng.uniform(0, w * 0.8)), int(rng.uniform(0, h * 0.8))
        draw.rectangle(
            (x, y, x + int(rng.uniform(40, 200)), y + int(rng.uniform(20, 120))),
            fill=tuple(int(v) for v in rng.uniform(30, 230, 3)),
        )
    return np.asarray(img.filter(ImageFilter.GaussianBlur(3)), dtype=np.float32) / 255.0


def _sample_levels(rng: np.random.Generator, split: str) -> dict[str, int]:
    out = {}
    for state in SAMPLE_STATES:
        counts = np.asarray(DAISEE_LEVEL_COUNTS[split][state], dtype=np.float64)
        out[state] = int(rng.choice(4, p=counts / counts.sum()))
    return out


def render_clip(params: dict, spec: SampleSpec, sprite: tuple[np.ndarray, np.ndarray], background: np.ndarray):
    """Yield the clip's frames (H, W, 3) uint8, following `params` (see generate_sample)."""
    rgb, alpha = sprite
    lv = params["levels"]
    head = rgb * ENGAGEMENT_GAIN[lv["Engagement"]] * params["light"]
    head *= 1.0 - FRUSTRATION_BROW_DARKEN[lv["Frustration"]] * soft_ellipse(head.shape[:2], BROW_IN_HEAD)[..., None]
    head = np.clip(head, 0, 1)
    k = params["scale"]
    size = (round(rgb.shape[1] * k), round(rgb.shape[0] * k))
    rgba = np.dstack([head, alpha])
    head_img = Image.fromarray((rgba * 255).astype(np.uint8), "RGBA").resize(size, Image.BICUBIC)
    base = Image.fromarray((background * 255).astype(np.uint8)).convert("RGBA")
    n = round(spec.fps * spec.seconds)
    # The rotation is most of a frame's cost, and the roll is periodic (constant without confusion):
    # each distinct roll, to a thousandth of a degree, is rotated once per clip.
    rotations: dict[float, Image.Image] = {}
    for i in range(n):
        t = i / spec.fps
        roll = BOREDOM_ROLL_DEG[lv["Boredom"]]
        roll += CONFUSION_AMPLITUDE_DEG * math.sin(2 * math.pi * CONFUSION_HZ[lv["Confusion"]] * t + params["phase"])
        roll = round(roll, 3)
        if roll not in rotations:
            if len(rotations) >= MAX_ROTATIONS:
                rotations.clear()
            rotations[roll] = head_img.rotate(roll, resample=Image.BICUBIC, expand=True)
        rotated = rotations[roll]
        frame = base.copy()
        cx = params["cx"] + params["sway"] * math.sin(2 * math.pi * 0.23 * t)
        frame.alpha_composite(rotated, (round(cx - rotated.width / 2), round(params["cy"] - rotated.height / 2)))
        yield np.asarray(frame.convert("RGB"))


def write_video(path: Path, frames, fps: float, width: int, height: int, lossless: bool = False) -> int:
    """Encode frames with libx264 (single-threaded so the bytes are reproducible); `lossless`: H.264
    in RGB at qp 0, so decoding gives back exactly these pixels (use a .mkv path)."""
    n = 0
    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264rgb" if lossless else "libx264", rate=Fraction(fps).limit_denominator(1001))
        stream.width, stream.height, stream.pix_fmt = width, height, "rgb24" if lossless else "yuv420p"
        stream.options = (
            {"qp": "0", "preset": "ultrafast", "threads": "1"}
            if lossless
            else {"crf": "20", "preset": "veryfast", "threads": "1", "bf": "0"}
        )
        for arr in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(arr, format="rgb24")):
                container.mux(packet)
            n += 1
        for packet in stream.encode():
            container.mux(packet)
    return n


def face_box(params: dict) -> tuple[float, float, float, float]:
    """Where the upright face sits in the frame (x0, y0, x1, y1) at the clip's mean position."""
    k = params["scale"]
    hw, hh = (_HEAD_WINDOW[2] - _HEAD_WINDOW[0]) * k, (_HEAD_WINDOW[3] - _HEAD_WINDOW[1]) * k
    ox, oy = params["cx"] - hw / 2, params["cy"] - hh / 2
    x0, y0, x1, y1 = FACE_IN_HEAD
    return ox + x0 * k, oy + y0 * k, ox + x1 * k, oy + y1 * k


def generate_sample(root: Path, spec: SampleSpec) -> dict:
    """Write the sample tree under `root` (which must not exist). Returns the metadata written."""
    rng = np.random.default_rng(spec.seed)
    sprite = head_sprite()
    base_scale = FACE_HEIGHT_FRACTION * spec.height / (FACE_IN_HEAD[3] - FACE_IN_HEAD[1])
    meta: dict = {"format": SAMPLE_FORMAT_VERSION, "spec": spec.model_dump(), "clips": {}}
    (root / "Labels").mkdir(parents=True)
    all_rows = []
    subject_no = 0
    for split in SPLITS:
        n_clips = getattr(spec, split.lower())
        subjects = []
        for _ in range(max(1, spec.subjects.get(split, 1))):
            subject_no += 1
            subjects.append(
                {
                    "id": f"{900000 + subject_no:06d}",
                    "background": backdrop(rng, spec.width, spec.height),
                    "scale": base_scale * rng.uniform(0.9, 1.12),
                    "cx": spec.width * rng.uniform(0.4, 0.6),
                    "cy": spec.height * rng.uniform(0.45, 0.55),
                    "light": rng.uniform(0.92, 1.08),
                }
            )
        rows = []
        for k in range(n_clips):
            subj = subjects[k % len(subjects)]
            clip_id = f"{subj['id']}{k // len(subjects) + 1:04d}"
            ext = ".mp4" if k % 5 == 4 else ".avi"  # DAiSEE mixes both
            params = {
                "split": split,
                "subject": subj["id"],
                "levels": _sample_levels(rng, split),
                "scale": subj["scale"] * rng.uniform(0.97, 1.03),
                "light": subj["light"] * rng.uniform(0.97, 1.03),
                "cx": subj["cx"] + rng.uniform(-12, 12),
                "cy": subj["cy"] + rng.uniform(-8, 8),
                "sway": rng.uniform(0, 6),
                "phase": rng.uniform(0, 2 * math.pi),
            }
            folder = root / "DataSet" / split / subj["id"] / clip_id
            folder.mkdir(parents=True)
            write_video(
                folder / f"{clip_id}{ext}",
                render_clip(params, spec, sprite, background=subj["background"]),
                spec.fps,
                width=spec.width,
                height=spec.height,
            )
            params["face_box"] = face_box(params)
            meta["clips"][clip_id] = params
            rows.append(f"{clip_id}{ext}," + ",".join(str(params["levels"][s]) for s in SAMPLE_STATES))
        # DAiSEE's real header has a trailing space after Frustration; reproduce it.
        header = "ClipID," + ",".join(SAMPLE_STATES) + " "
        (root / "Labels" / f"{split}Labels.csv").write_text("\n".join([header, *rows]) + "\n")
        all_rows += rows
    (root / "Labels" / "AllLabels.csv").write_text("\n".join([header, *all_rows]) + "\n")
    (root / "sample.json").write_text(json.dumps(meta, indent=1, default=float))
    return meta


def ensure_sample(manifest: Manifest, name: str) -> Path:
    """Generate the dataset's sample under its root if it is missing (atomically: temp dir + rename)."""
    spec = manifest.datasets[name].sample
    root = manifest.dataset_root(name, must_exist=False)
    marker = root / "sample.json"
    if marker.is_file():
        existing = json.loads(marker.read_text())
        if existing.get("spec") == spec.model_dump() and existing.get("format") == SAMPLE_FORMAT_VERSION:
            return root
        log.warning("%s: sample settings changed in %s; regenerating it", root, manifest.path)
    elif root.exists() and any(root.iterdir()):
        raise ConfigError(
            f"{root}: exists but is not a generated sample (no sample.json); "
            f"fix: delete it or point datasets.{name}.root elsewhere"
        )
    root.parent.mkdir(parents=True, exist_ok=True)
    log.info("generating the built-in sample dataset in %s", root)
    tmp = Path(tempfile.mkdtemp(prefix=f".{root.name}-", dir=root.parent))
    try:
        meta = generate_sample(tmp / "tree", spec)
        old = None
        if root.exists():
            old = root.with_name(f".{root.name}-old-{os.getpid()}")
            root.rename(old)
        try:
            (tmp / "tree").rename(root)
        except OSError:
            if not marker.is_file():  # nobody else won the race: a real error
                raise
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("sample: %d clips written to %s", len(meta["clips"]), root)
    return root


def generate_dataset(manifest_path: Path, dataset: str | None = "sample") -> Path:
    """`embed sample`: the manifest's generated dataset made (if missing); its root."""
    m = load_manifest(manifest_path)
    name, spec = m.dataset(dataset)
    if spec.sample is None:
        raise ConfigError(f"{m.path}: dataset '{name}' has no 'sample' settings; fix: pick a generated dataset")
    return ensure_sample(m, name)
