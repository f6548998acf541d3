"""Several stores of one dataset read as one (`sequence train --backbone inception,openface`).

Per clip, the frames of the coarsest stream (the largest median frame step) are the timeline; each
other store contributes its frame nearest in time, if within half a frame of that stream, and the
features are joined per frame. A timeline frame that some store lacks (no frame near enough, or no
face there) is masked like a faceless frame. Each part keeps its own scale: heads standardise every
input dimension on the training split's statistics (sequence.heads.Head), which for joined features
is each part standardised on its own. A FusedStore answers what stage two asks of a CacheStore
(clip attributes, arrays by clip), so the data path, streaming included, is the same for both.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from embed.cache import CacheStore, span_seconds
from embed.errors import ConfigError
from embed.lookahead import read_ahead
from embed.stores import find_store, split_per_store

log = logging.getLogger(__name__)
ALIGN_BLOCK = 256  # clips whose timestamps are read at a time when aligning


def _step(ts: np.ndarray) -> float:
    return float(np.median(np.diff(ts))) if len(ts) > 1 else 0.0


def align(parts: list[tuple[np.ndarray, np.ndarray]]) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """Given each store's (timestamps, face_prob) of one clip: the row of every store for each
    timeline frame, the timeline's timestamps, and its face_prob (0 where any store lacks the frame)."""
    ref = max(range(len(parts)), key=lambda k: (_step(parts[k][0]), -k))
    ts_ref, prob_ref = parts[ref]
    half = _step(ts_ref) / 2 if len(ts_ref) > 1 else np.inf
    rows, prob = [], prob_ref.astype(np.float32).copy()
    for k, (ts, p) in enumerate(parts):
        if k == ref:
            rows.append(np.arange(len(ts_ref), dtype=np.int64))
            continue
        right = np.clip(np.searchsorted(ts, ts_ref), 0, len(ts) - 1)
        left = np.clip(right - 1, 0, len(ts) - 1)
        nearest = np.where(np.abs(ts[left] - ts_ref) <= np.abs(ts[right] - ts_ref), left, right)
        ok = (np.abs(ts[nearest] - ts_ref) <= half + 1e-6) & (p[nearest] > 0)
        prob = np.where(ok, np.minimum(prob, p[nearest]), 0).astype(np.float32)
        rows.append(nearest)
    return rows, ts_ref.astype(np.float32), prob


class FusedStore:
    """The read side of a CacheStore over several stores' common complete clips, joined per frame."""

    def __init__(self, parts: list[CacheStore]):
        if len({s.dataset for s in parts}) > 1:
            raise ConfigError(f"{parts[0].path}: fusion joins stores of one dataset; fix: pick stores of one dataset")
        self.parts = parts
        self.path = parts[0].path.parent / "+".join(s.path.name for s in parts)
        self.dataset = parts[0].dataset
        self.dim = sum(s.dim for s in parts)
        self.key = "+".join(s.key for s in parts)
        self.config = {
            "backbone": "+".join(s.config["backbone"] for s in parts),
            "dim": self.dim,
            "weights": ",".join(str(s.config.get("weights") or "-") for s in parts),
            "parts": [s.config for s in parts],
        }
        self._attrs: dict[str, dict] | None = None
        self._rows: dict[str, list[np.ndarray]] = {}
        self.not_in_every: dict[str, list[str]] = {}  # clip -> the stores it is not complete in

    def describe(self) -> list[dict]:
        return [{"path": str(s.path), "key": s.key, "config": s.config} for s in self.parts]

    def clip_attrs(self) -> dict[str, dict]:
        if self._attrs is None:
            self._attrs = self._align_all()
        return self._attrs

    def attrs_of(self, clip_id: str) -> dict | None:
        return self.clip_attrs().get(clip_id)

    def _align_all(self) -> dict[str, dict]:
        each = [s.clip_attrs() for s in self.parts]
        complete = [{k for k, a in attrs.items() if a.get("complete") is True} for attrs in each]
        common = sorted(set.intersection(*complete))
        for clip in sorted(set.union(*complete) - set(common)):
            self.not_in_every[clip] = [
                s.config["backbone"] for s, c in zip(self.parts, complete, strict=True) if clip not in c
            ]
        if self.not_in_every:
            log.warning(
                "%d clips are not complete in every fused store (first: %s, missing from %s); they are left out",
                len(self.not_in_every),
                *next(iter(self.not_in_every.items())),
            )
        out = {}
        blocks = [common[i : i + ALIGN_BLOCK] for i in range(0, len(common), ALIGN_BLOCK)]
        reads = read_ahead(
            lambda ids: [s.read_arrays(ids, ("timestamps", "face_prob"), known_complete=True) for s in self.parts], blocks
        )
        for ids, raw in zip(blocks, reads, strict=True):
            for clip in ids:
                rows, ts, prob = align([(r[clip]["timestamps"], r[clip]["face_prob"]) for r in raw])
                self._rows[clip] = rows
                out[clip] = {
                    "complete": True,
                    "frames": len(ts),
                    "faces": int((prob > 0).sum()),
                    "duration": span_seconds(ts),
                    "split": each[0][clip].get("split"),
                    "_timestamps": ts,
                    "_face_prob": prob,
                }
        return out

    def read_arrays(
        self, clip_ids: list[str], names: tuple[str, ...], concurrency: int = 64, known_complete: bool = False
    ) -> dict[str, dict]:
        attrs = self.clip_attrs()
        missing = [c for c in clip_ids if c not in attrs]
        if missing:
            raise KeyError(f"{self.path}: clip {missing[0]} is not complete in every fused store")
        out: dict[str, dict] = {c: {} for c in clip_ids}
        if "embeddings" in names:
            raw = [s.read_arrays(clip_ids, ("embeddings",), concurrency, known_complete=True) for s in self.parts]
            for c in clip_ids:
                out[c]["embeddings"] = np.concatenate(
                    [r[c]["embeddings"][rows].astype(np.float32) for r, rows in zip(raw, self._rows[c], strict=True)], axis=1
                )
        for c in clip_ids:
            if "timestamps" in names:
                out[c]["timestamps"] = attrs[c]["_timestamps"]
            if "face_prob" in names:
                out[c]["face_prob"] = attrs[c]["_face_prob"]
        return out

    def iter_arrays(
        self, clip_ids: list[str], names: tuple[str, ...], block: int = 128, known_complete: bool = False
    ) -> Iterator[tuple[list[str], dict[str, dict]]]:
        blocks = [clip_ids[i : i + block] for i in range(0, len(clip_ids), block)]
        yield from zip(blocks, read_ahead(lambda ids: self.read_arrays(ids, names), blocks), strict=True)


def open_input(
    cache_dir: Path, dataset: str, backbone: str, weights: str | None = None, key: str | None = None
) -> CacheStore | FusedStore:
    """The store a run trains on: one backbone's, or several comma-separated ones fused, each
    picked as find_store picks (weights and key given per backbone, comma-separated)."""
    names = [b.strip() for b in backbone.split(",") if b.strip()]
    if len(names) == 1:
        return find_store(cache_dir, dataset, names[0], weights=weights, key=key)
    if len(set(names)) != len(names):
        raise ConfigError(f"--backbone {backbone}: a store named twice; fix: name each store once")
    ws, ks = split_per_store(weights, len(names), "weights"), split_per_store(key, len(names), "key")
    return FusedStore([find_store(cache_dir, dataset, n, weights=w, key=k) for n, w, k in zip(names, ws, ks, strict=True)])


def reopen_input(cache_dir: Path, dataset: str, recorded: dict) -> CacheStore | FusedStore:
    """A finished run's input again, from its store.json: by path, else by backbone and key."""

    def one(entry: dict) -> CacheStore:
        path = Path(entry["path"])
        if (path / "zarr.json").is_file():
            return CacheStore(path)
        return find_store(cache_dir, dataset, entry["config"]["backbone"], key=entry["key"])

    return FusedStore([one(p) for p in recorded["parts"]]) if "parts" in recorded else one(recorded)
