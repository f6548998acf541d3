"""Finding stores: which store of a dataset a backbone (or import) name, weights and key prefix mean.

Stage two finds its input this way rather than by recomputing the extraction config, which would
mean importing face detection: the configs in the stores themselves are the truth.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from embed.cache import CacheStore
from embed.errors import ConfigError
from embed.extraction import PREPROCESSING_VERSION
from embed.identity import WeightsIdentity

if TYPE_CHECKING:
    from embed.extraction import DetectorConfig
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
    cache_dir: Path, dataset: str, backbone: str, weights: str | None = None, key: str | None = None
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


def locate_store(
    manifest: Manifest,
    dataset: str | None,
    backbone: str,
    weights: str | None,
    detector: DetectorConfig | None = None,
    max_fps: float | None = None,
) -> tuple[DatasetIndex, dict, Path]:
    """(dataset index, extraction config, store path) that a backbone name and its settings mean. A
    backbone's store is named by its extraction config (it may not exist yet); any other name is an
    imported store's, found among the stores on disk."""
    from embed.backbones import backbone_names, get_backbone
    from embed.cache import store_path
    from embed.extraction import DetectorConfig, extraction_config
    from embed.layouts import read_dataset

    name, _ = manifest.dataset(dataset)
    index = read_dataset(manifest, name)
    if backbone not in backbone_names():
        store = find_store(manifest.cache_path, name, backbone, weights)
        return index, store.config, store.path
    spec = get_backbone(backbone)
    config = extraction_config(spec, spec.identity(weights), detector or DetectorConfig(), max_fps)
    return index, config, store_path(manifest.cache_path, name, config)


def clip_sources(index: DatasetIndex, store: CacheStore) -> dict[str, Path]:
    """Each clip's source file: the video, or for an imported store the feature file it was read from."""
    if store.config.get("importer"):
        return {k: Path(a["source"]["path"]) for k, a in store.clip_attrs().items() if (a.get("source") or {}).get("path")}
    return {c.clip_id: c.path for c in index.clips}
