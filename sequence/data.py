"""Stage two's input: a split of the cache as padded tensors, labels joined by clip id.

Reads the Zarr cache (through embed.cache) and the manifest's label files (through embed.layouts);
never decodes a video or runs a detector. Frames are chosen at load time, so one cache serves any
frame count.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import numpy as np
import torch

from embed.cache import CacheStore
from embed.layouts import Clip, DatasetIndex

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class FramePolicy:
    """Which of a clip's face frames enter the sequence.

    frames: at most this many, spread uniformly over the clip's face frames (None or 0: all);
    stride: first keep every k-th face frame (then `frames` caps the count);
    deltas: append each chosen frame's difference from the previous one (the first frame's is 0), as
      speech front ends append delta features. Frame-to-frame change is tiny beside the differences
      between clips (~1e-4 against ~1e-2 per dimension for the sample's random-weight Inception),
      so after standardisation a head barely sees motion; standardised on their own, deltas make
      motion as visible as appearance (sample Confusion, a motion cue: see the README).
    Frames without a face (face_prob 0) never enter: they are masked out before choosing, and a clip
    with fewer face frames than `frames` is shorter (its length says so).
    """

    frames: int | None = 100
    stride: int | None = None
    deltas: bool = False

    @classmethod
    def from_config(cls, config: dict) -> FramePolicy:
        """From a run's settings (TrainConfig.model_dump() or a run folder's config.yaml)."""
        return cls(config["frames"] or None, config.get("stride"), bool(config.get("deltas", False)))

    def input_dim(self, embedding_dim: int) -> int:
        return embedding_dim * (2 if self.deltas else 1)

    def select(self, face_prob: np.ndarray) -> np.ndarray:
        idx = np.flatnonzero(face_prob > 0)
        if self.stride and self.stride > 1:
            idx = idx[:: self.stride]
        if self.frames and len(idx) > self.frames:
            idx = idx[np.linspace(0, len(idx) - 1, self.frames).round().astype(np.int64)]
        return idx


@dataclass
class SequenceSet:
    """One split in memory. x stays float16 (as cached: half the memory); batches are cast on use."""

    x: torch.Tensor  # (N, T, D) float16, zero-padded after each clip's length
    lengths: torch.Tensor  # (N,) int64, >= 1
    y: torch.Tensor  # (N, S) int64 levels, states in manifest order
    clip_ids: list[str]
    durations: np.ndarray  # (N,) seconds spanned by each clip's cached frames

    def __len__(self) -> int:
        return len(self.clip_ids)

    def subset(self, rows: np.ndarray | list[int]) -> SequenceSet:
        rows = np.asarray(rows, dtype=np.int64)
        t = int(self.lengths[rows].max()) if len(rows) else 0
        return SequenceSet(self.x[rows, :t], self.lengths[rows], self.y[rows], [self.clip_ids[i] for i in rows],
                           self.durations[rows])


@dataclass
class LoadReport:
    """What could not be used, per split: reported (and saved with the run), never fatal."""

    unlabelled: list[str] = field(default_factory=list)  # on disk, no label row
    missing_embeddings: dict[str, list[str]] = field(default_factory=dict)  # labelled, not complete in the cache
    missing_on_disk: list[str] = field(default_factory=list)  # labelled, no video at all
    clips_per_second: float = 0.0

    def as_dict(self) -> dict:
        return {"unlabelled": self.unlabelled, "missing_embeddings": self.missing_embeddings,
                "missing_on_disk": self.missing_on_disk, "clips_per_second": round(self.clips_per_second, 1)}


def to_tensors(arrays: list[tuple[np.ndarray, np.ndarray, np.ndarray]], policy: FramePolicy,
               labels: np.ndarray, clip_ids: list[str]) -> SequenceSet:
    """(embeddings, face_prob, timestamps) per clip -> one padded SequenceSet."""
    chosen = [policy.select(prob) for _, prob, _ in arrays]
    lengths = np.array([len(c) for c in chosen], dtype=np.int64)
    dim = arrays[0][0].shape[1] if arrays else 0
    x = np.zeros((len(arrays), int(lengths.max()) if len(arrays) else 0, dim * (2 if policy.deltas else 1)),
                 dtype=np.float16)
    durations = np.zeros(len(arrays), dtype=np.float32)
    for i, ((emb, _, ts), idx) in enumerate(zip(arrays, chosen, strict=True)):
        x[i, : len(idx), :dim] = emb[idx]
        if policy.deltas:
            e = emb[idx].astype(np.float32)
            x[i, : len(idx), dim:] = np.diff(e, axis=0, prepend=e[:1])
        durations[i] = float(ts[-1] - ts[0]) + (float(np.median(np.diff(ts))) if len(ts) > 1 else 0.0)
    return SequenceSet(torch.from_numpy(x), torch.from_numpy(lengths), torch.from_numpy(labels.astype(np.int64)),
                       clip_ids, durations)


def load_splits(store: CacheStore, index: DatasetIndex, states: list[str], policy: FramePolicy,
                splits: tuple[str, ...] = ("Train", "Validation", "Test")
                ) -> tuple[dict[str, SequenceSet], LoadReport]:
    """Every labelled clip of each split that is complete in the store, as tensors."""
    complete = set(store.complete_ids())
    report = LoadReport(unlabelled=list(index.unlabelled), missing_on_disk=list(index.missing_on_disk))
    wanted: dict[str, list[Clip]] = {}
    for split in splits:
        clips = [c for c in index.split(split) if c.labels is not None]
        wanted[split] = [c for c in clips if c.clip_id in complete]
        missing = sorted(c.clip_id for c in clips if c.clip_id not in complete)
        if missing:
            report.missing_embeddings[split] = missing
            log.warning("%s: %d labelled clips have no complete embeddings in %s (first: %s); they are left out",
                        split, len(missing), store.path, missing[0])
    if report.unlabelled:
        log.warning("%d clips have embeddings or videos but no label row (first: %s); they are left out",
                    len(report.unlabelled), report.unlabelled[0])
    start = time.perf_counter()
    ids = [c.clip_id for clips in wanted.values() for c in clips]
    raw = store.read_arrays(ids, ("embeddings", "face_prob", "timestamps"))
    report.clips_per_second = len(ids) / max(time.perf_counter() - start, 1e-9)
    out = {}
    for split, clips in wanted.items():
        arrays = [(raw[c.clip_id]["embeddings"], raw[c.clip_id]["face_prob"], raw[c.clip_id]["timestamps"])
                  for c in clips]
        labels = np.array([[c.labels[s] for s in states] for c in clips], dtype=np.int64).reshape(len(clips),
                                                                                              len(states))
        out[split] = to_tensors(arrays, policy, labels, [c.clip_id for c in clips])
    log.info("loaded %s from %s at %.0f clips/s", ", ".join(f"{k} {len(v)}" for k, v in out.items()),
             store.path, report.clips_per_second)
    return out, report


def train_subset(data: SequenceSet, n: int | None, seed: int) -> SequenceSet:
    """A seeded random subset of n training clips (the study's 1,430-clip runs); None: all."""
    if not n or n >= len(data):
        return data
    rows = np.sort(np.random.default_rng(seed).choice(len(data), size=n, replace=False))
    return data.subset(rows)
