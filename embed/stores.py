"""Finding stores: which store of a dataset a backbone (or import) name, weights and key prefix mean.

Stage two finds its input this way rather than by recomputing the extraction config, which would
mean importing face detection: the configs in the stores themselves are the truth.
"""

from __future__ import annotations

from pathlib import Path

from embed.cache import PREPROCESSING_VERSION, CacheStore
from embed.errors import ConfigError
from embed.identity import WeightsIdentity


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
