"""What determines a store's contents: the face detector's settings and each store's extraction
config, whose hash is the store key (embed.cache.config_key). Light on purpose (no torch, no zarr):
commands that only name or read stores (info, verify, ls, train) import it, not the networks."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from importlib.metadata import version
from typing import TYPE_CHECKING

# Bump whenever the code changes what is written for the same config (new keys, never old stores).
# 2: crops taken from each face's window of the frame (float rounding differs by <0.02/255).
# 3: detection frames downscaled by Pillow instead of torch (pixels differ by <= 1 level).
PREPROCESSING_VERSION = 3

if TYPE_CHECKING:
    from embed.backbones import Backbone


@dataclass(frozen=True)
class DetectorConfig:
    # MTCNN on every k-th frame: at 5, 0.95 mean IoU with detection on every frame (3: 0.953,
    # 10: 0.941) for 1/5 of the detection time (`bench/embed_bench.py --sweep`).
    detect_every: int = 5
    detect_width: int = 320  # frames are downscaled to this width for detection
    min_face_size: int = 40  # smallest face MTCNN looks for, in detection pixels
    thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7)
    min_prob: float = 0.9  # weaker detections count as "no face"
    smooth: int = 3  # moving-average window over consecutive detections (1 = off)
    margin: float = 0.2  # crop side = (1 + margin) * max(box w, box h)
    # Region search (StreamTracker): between whole-frame searches MTCNN refines only candidates
    # centred within a square of `search_region` face sizes around the track, from the pyramid levels
    # for faces within a factor `search_sizes` of its size (embed/face_search.py). Off (0) by default:
    # it keeps the boxes (0.0000 IoU lost) but on DAiSEE-shaped close-ups, where nearly every MTCNN
    # candidate lies on the face, it saved no time on the 2-core CPU (`bench/embed_bench.py`, docs/performance.md).
    search_region: float = 0.0
    search_sizes: float = 2.5
    full_search_every: int = 60  # frames (2 s at 30 fps): with region search, the whole frame this often

    def __post_init__(self) -> None:
        if self.search_region > 0 and (self.full_search_every < 1 or self.search_sizes < 1):
            raise ValueError(
                f"region search needs full_search_every >= 1 frame and search_sizes >= 1 "
                f"(got {self.full_search_every} and {self.search_sizes})"
            )

    def as_dict(self) -> dict:
        d = asdict(self)
        d["thresholds"] = list(self.thresholds)
        if self.search_region <= 0:  # whole-frame search: its keys leave region search's settings out
            for k in ("search_region", "search_sizes", "full_search_every"):
                del d[k]
        return d

    @classmethod
    def from_dict(cls, d: dict) -> DetectorConfig:
        return cls(**{**d, "thresholds": tuple(d["thresholds"])})


def extraction_config(spec: Backbone, weights_identity: str, detector: DetectorConfig, max_fps: float | None) -> dict:
    """Everything that determines what is written; its hash is the store key (embed.cache)."""
    return {
        "backbone": spec.name,
        "weights": weights_identity,
        "dim": spec.dim,
        "input_size": spec.input_size,
        "detector": detector.as_dict(),
        "frames": {"max_fps": max_fps, "crop": "roi_align-bilinear-square"},
        "preprocessing_version": PREPROCESSING_VERSION,
    }


def faces_config(detector: DetectorConfig, max_fps: float | None) -> dict:
    """The config of a face-track store: what determines the boxes, and nothing about any backbone,
    so every backbone embedded with the same detector settings shares one detection pass."""
    return {
        "backbone": "faces",
        "weights": f"mtcnn:facenet-pytorch-{_facenet_version()}",
        "dim": 0,
        "input_size": 0,
        "detector": detector.as_dict(),
        "frames": {"max_fps": max_fps},
        "preprocessing_version": PREPROCESSING_VERSION,
    }


def _facenet_version() -> str:
    return version("facenet-pytorch")
