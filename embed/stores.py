"""Finding stores: which store of a dataset a backbone (or import) name, weights and key prefix mean.

Stage two finds its input this way rather than by recomputing the extraction config, which would
mean importing face detection: the configs in the stores themselves are the truth.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from embed.cache import CacheStore
from embed.errors import ConfigError
from embed.extraction import PREPROCESSING_VERSION, DetectorConfig
from embed.identity import WeightsIdentity

if TYPE_CHECKING:
    from embed.layouts import DatasetIndex
    from embed.manifest import Manifest


def list_stores(cache_dir: Path, dataset: str = "*") -> list[CacheStore]:
    out = []
    for path in sorted(Path(cache_dir).glob(f"{dataset}/*.zarr")):
        try:
            out.append(CacheStore(path))
        except (FileNotFoundError, ValueError, KeyError):
            continue
    return out


def _weights_match(identity: str, weights: str | None) -> bool:
    try:
        return WeightsIdentity.parse(identity).matches(weights)
    except ValueError:  # a store whose config names no weights identity (imported features): only `None` fits
        return weights is None


def split_per_store(value: str | None, n: int, what: str) -> list[str | None]:
    """`a,b,c` for n stores (backbones), one value for all of them, or nothing (each one's default)."""
    if value is None:
        return [None] * n
    parts = [p.strip() or None for p in value.split(",")]
    if len(parts) == 1:
        return parts * n
    if len(parts) != n:
        raise ConfigError(
            f"--{what} {value!r}: {len(parts)} values for {n} backbones; "
            f"fix: give one value, or one per backbone in the same order"
        )
    return parts


def find_store(
    cache_dir: Path, dataset: str, backbone: str, *, weights: str | None = None, key: str | None = None
) -> CacheStore:
    """The one store of a dataset matching a backbone (and weights, and key prefix, when given).

    Stage two finds its input this way rather than by recomputing the extraction config, which
    would mean importing face detection: the configs in the stores themselves are the truth.
    """
    stores = [
        s
        for s in list_stores(cache_dir, dataset)
        if s.config.get("backbone") == backbone
        and _weights_match(s.config.get("weights", ""), weights)
        and (key is None or s.key.startswith(key))
    ]
    current = [s for s in stores if s.config.get("preprocessing_version") == PREPROCESSING_VERSION]
    stores = current or stores  # stores written by older code are superseded, not ambiguous
    wanted = f"backbone '{backbone}'" + (f", weights '{weights}'" if weights else "") + (f", key {key}" if key else "")
    if not stores:
        raise ConfigError(
            f"{Path(cache_dir) / dataset}: no embedding store for {wanted}; "
            f"fix: run `python -m embed run --dataset {dataset} --backbone {backbone}"
            f"{' --weights ' + weights if weights else ''}` first (`python -m embed ls` lists stores)"
        )
    if len(stores) > 1:
        choices = ", ".join(f"{s.key} ({s.config.get('weights')})" for s in stores)
        raise ConfigError(
            f"{Path(cache_dir) / dataset}: {len(stores)} stores match {wanted}: {choices}; "
            f"fix: pass --weights or --key to pick one"
        )
    return stores[0]


@dataclass(frozen=True)
class StoreQuery:
    """Which store of a dataset a command means, as its options say: a backbone and the settings that
    key its store (a store that may not exist yet), an imported store's name, or nothing: the
    dataset's one store."""

    manifest: Path = Path("data_manifest.yaml")
    dataset: str | None = None
    backbone: str | None = None
    weights: str | None = None
    max_fps: float | None = None
    detect_every: int | None = None
    detect_width: int | None = None
    min_face_size: int | None = None

    def detector(self) -> DetectorConfig:
        given = {"detect_every": self.detect_every, "detect_width": self.detect_width, "min_face_size": self.min_face_size}
        return DetectorConfig(**{k: v for k, v in given.items() if v is not None})

    @property
    def backbones(self) -> list[str]:
        """The backbones named (`embed run` takes several, comma-separated)."""
        return [b.strip() for b in (self.backbone or "").split(",") if b.strip()]


def locate_store(manifest: Manifest, query: StoreQuery) -> tuple[DatasetIndex, dict, Path]:
    """(dataset index, extraction config, store path) that a query means. A backbone's store is named
    by its extraction config (it may not exist yet); any other name is an imported store's, found
    among the stores on disk; no name at all is the dataset's only store."""
    from embed.backbones import backbone_names, get_backbone
    from embed.cache import store_path
    from embed.extraction import extraction_config
    from embed.layouts import read_dataset

    name, _ = manifest.dataset(query.dataset)
    index = read_dataset(manifest, name)
    if query.backbone is None:
        store = _only_store(manifest.cache_path, name, query)
        return index, store.config, store.path
    if "," in query.backbone:
        raise ConfigError(f"--backbone {query.backbone}: one store at a time; fix: name one backbone")
    if query.backbone not in backbone_names():
        store = find_store(manifest.cache_path, name, query.backbone, weights=query.weights)
        return index, store.config, store.path
    spec = get_backbone(query.backbone)
    config = extraction_config(spec, spec.identity(query.weights), query.detector(), max_fps=query.max_fps)
    return index, config, store_path(manifest.cache_path, name, config)


def _only_store(cache_dir: Path, dataset: str, query: StoreQuery) -> CacheStore:
    """The dataset's one store (face-track stores aside) that matches the query's other options."""
    given_detector = any(v is not None for v in (query.max_fps, query.detect_every, query.detect_width, query.min_face_size))
    stores = [
        s
        for s in list_stores(cache_dir, dataset)
        if s.config.get("backbone") != "faces"
        and (query.weights is None or _weights_match(s.config.get("weights", ""), query.weights))
        and (
            not given_detector
            or (
                s.config.get("detector") == query.detector().as_dict()
                and (s.config.get("frames") or {}).get("max_fps") == query.max_fps
            )
        )
    ]
    if len(stores) == 1:
        return stores[0]
    where = Path(cache_dir) / dataset
    if not stores:
        raise ConfigError(
            f"{where}: no embedding store matches; fix: run `python -m embed run --dataset {dataset} --backbone NAME` "
            f"first, or name the store with --backbone (`python -m embed ls` lists stores)"
        )
    names = ", ".join(f"{s.config.get('backbone')} ({s.key}, {s.config.get('weights')})" for s in stores)
    raise ConfigError(f"{where}: {len(stores)} stores: {names}; fix: pick one with --backbone (and --weights)")


def clip_sources(index: DatasetIndex, store: CacheStore) -> dict[str, Path]:
    """Each clip's source file: the video, or for an imported store the feature file it was read from."""
    if store.config.get("importer"):
        return {k: Path(a["source"]["path"]) for k, a in store.clip_attrs().items() if (a.get("source") or {}).get("path")}
    return {c.clip_id: c.path for c in index.clips}
