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

from embed.cache import CacheStore, span_seconds
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
      motion as visible as appearance (the sample's Confusion is a motion cue: README, "Quick start").
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


class StreamedClips:
    """The x of a SequenceSet whose embeddings stay in the Zarr cache: indexing reads just those
    clips (what training does for a cache larger than memory). Supports what the training loop
    does with x: x[rows, :steps] for a batch, x[i:j] for a chunk, shape and len."""

    dtype = torch.float16

    def __init__(self, store: CacheStore, clip_ids: list[str], chosen: list[np.ndarray], dim: int, deltas: bool):
        self.store, self.clip_ids, self.chosen, self.dim, self.deltas = store, clip_ids, chosen, dim, deltas
        self.steps = max((len(c) for c in chosen), default=0)
        self.shape = (len(clip_ids), self.steps, dim * (2 if deltas else 1))

    def __len__(self) -> int:
        return len(self.clip_ids)

    def __getitem__(self, key) -> torch.Tensor:
        rows, steps = key if isinstance(key, tuple) else (key, slice(None))
        rows = np.arange(len(self))[rows] if isinstance(rows, slice) else np.asarray(rows, dtype=np.int64).reshape(-1)
        if steps.start is not None or steps.step is not None:
            raise IndexError("StreamedClips supports x[rows] and x[rows, :steps] only")
        ids = [self.clip_ids[r] for r in rows]
        raw = self.store.read_arrays(ids, ("embeddings",), known_complete=True)  # checked when loaded
        x = pack(
            [raw[i]["embeddings"] for i in ids],
            [self.chosen[r] for r in rows],
            len(range(self.steps)[steps]),
            deltas=self.deltas,
        )
        return torch.from_numpy(x)

    def take(self, rows: np.ndarray) -> StreamedClips:
        return StreamedClips(
            self.store, [self.clip_ids[r] for r in rows], [self.chosen[r] for r in rows], dim=self.dim, deltas=self.deltas
        )


@dataclass
class SequenceSet:
    """One split. x stays float16 (as cached: half the memory); batches are cast on use. x is a
    tensor in memory, or StreamedClips when the split is read from the cache batch by batch."""

    x: torch.Tensor | StreamedClips  # (N, T, D) float16, zero-padded after each clip's length
    lengths: torch.Tensor  # (N,) int64, >= 1
    y: torch.Tensor  # (N, S) int64 levels, states in manifest order
    clip_ids: list[str]
    durations: np.ndarray  # (N,) seconds spanned by each clip's cached frames

    def __len__(self) -> int:
        return len(self.clip_ids)

    @property
    def streamed(self) -> bool:
        return isinstance(self.x, StreamedClips)

    def subset(self, rows: np.ndarray | list[int]) -> SequenceSet:
        rows = np.asarray(rows, dtype=np.int64)
        t = int(self.lengths[rows].max()) if len(rows) else 0
        x = self.x.take(rows) if isinstance(self.x, StreamedClips) else self.x[rows, :t]
        return SequenceSet(
            x, self.lengths[rows], self.y[rows], clip_ids=[self.clip_ids[i] for i in rows], durations=self.durations[rows]
        )


def pack(
    embeddings: list[np.ndarray], chosen: list[np.ndarray], steps: int, deltas: bool, out: np.ndarray | None = None
) -> np.ndarray:
    """Each clip's chosen frames (and, with deltas, their differences from the previous chosen
    frame) as one (N, steps, D or 2D) float16 array, zero-padded after each clip's frames; written
    into `out` (zeroed, of that shape) when given."""
    dim = embeddings[0].shape[1] if embeddings else 0
    x = np.zeros((len(embeddings), steps, dim * (2 if deltas else 1)), dtype=np.float16) if out is None else out
    for i, (emb, idx) in enumerate(zip(embeddings, chosen, strict=True)):
        x[i, : len(idx), :dim] = emb[idx]
        if deltas:
            e = emb[idx].astype(np.float32)
            x[i, : len(idx), dim:] = np.diff(e, axis=0, prepend=e[:1])
    return x


@dataclass
class LoadReport:
    """What could not be used, per split: reported (and saved with the run), never fatal."""

    unlabelled: list[str] = field(default_factory=list)  # on disk, no label row
    missing_embeddings: dict[str, list[str]] = field(default_factory=dict)  # labelled, not complete in the cache
    missing_on_disk: list[str] = field(default_factory=list)  # labelled, no video at all
    clips_per_second: float = 0.0
    streamed: bool = False  # embeddings read from the cache batch by batch (larger than memory)
    subjects: dict[str, list[str]] = field(default_factory=dict)  # per split, when the layout names them
    leaking_subjects: dict[str, list[str]] = field(default_factory=dict)  # subject -> the splits it is in
    subject_of: dict[str, str | None] = field(default_factory=dict)  # clip -> subject (not saved)

    def as_dict(self) -> dict:
        return {
            "unlabelled": self.unlabelled,
            "missing_embeddings": self.missing_embeddings,
            "missing_on_disk": self.missing_on_disk,
            "clips_per_second": round(self.clips_per_second, 1),
            "streamed": self.streamed,
            "subjects": self.subjects,
            "leaking_subjects": self.leaking_subjects,
        }


def to_tensors(
    arrays: list[tuple[np.ndarray, np.ndarray, np.ndarray]], policy: FramePolicy, labels: np.ndarray, clip_ids: list[str]
) -> SequenceSet:
    """(embeddings, face_prob, timestamps) per clip, in memory -> one padded SequenceSet."""
    chosen = [policy.select(prob) for _, prob, _ in arrays]
    lengths = np.array([len(c) for c in chosen], dtype=np.int64)
    x = pack([emb for emb, _, _ in arrays], chosen, int(lengths.max()) if len(arrays) else 0, deltas=policy.deltas)
    durations = np.array([span_seconds(ts) for _, _, ts in arrays], dtype=np.float32)
    return SequenceSet(
        torch.from_numpy(x),
        torch.from_numpy(lengths),
        torch.from_numpy(labels.astype(np.int64)),
        clip_ids=clip_ids,
        durations=durations,
    )


def expected_lengths(attrs: dict[str, dict], clip_ids: list[str], policy: FramePolicy) -> np.ndarray:
    """How many frames the policy keeps of each clip, from the clips' `faces` attribute alone."""
    counts = np.array([int(attrs[c].get("faces") or 0) for c in clip_ids], dtype=np.int64)
    if policy.stride and policy.stride > 1:
        counts = -(-counts // policy.stride)
    if policy.frames:
        counts = np.minimum(counts, policy.frames)
    return counts


def padded_bytes(attrs: dict[str, dict], clip_ids: list[str], policy: FramePolicy, dim: int) -> int:
    """What these clips take in memory as one padded float16 tensor."""
    steps = int(expected_lengths(attrs, clip_ids, policy).max()) if clip_ids else 0
    return len(clip_ids) * steps * policy.input_dim(dim) * 2


def memory_budget() -> int:
    """Bytes the splits may take in memory: half of what is available now (the other half is
    for the model, the batches and everything else on the machine)."""
    import psutil

    return psutil.virtual_memory().available // 2


def load_clips(
    store: CacheStore,
    clip_ids: list[str],
    policy: FramePolicy,
    labels: np.ndarray,
    attrs: dict[str, dict],
    stream: bool = False,
) -> SequenceSet:
    """Complete clips of the store as a SequenceSet: in memory, or (stream) with only the frame
    masks read now and the embeddings read batch by batch during training."""
    steps = int(expected_lengths(attrs, clip_ids, policy).max()) if clip_ids else 0
    x = None if stream else np.zeros((len(clip_ids), steps, policy.input_dim(store.dim)), dtype=np.float16)
    chosen: list[np.ndarray | None] = [None] * len(clip_ids)
    durations = np.zeros(len(clip_ids), dtype=np.float32)
    row = {c: i for i, c in enumerate(clip_ids)}
    # A clip with a face in every frame (its `faces` attribute equals `frames`) needs no face_prob
    # read: its mask is all ones. Zarr costs ~1 ms of Python per array read, so for the usual clip
    # this halves the reading. Durations are an attribute since the cache recorded them; older
    # stores need their timestamps read.
    groups: dict[tuple[str, ...], list[str]] = {}
    for c in clip_ids:
        a = attrs[c]
        names = (
            (() if stream else ("embeddings",))
            + (() if a.get("faces") == a.get("frames") else ("face_prob",))
            + (() if "duration" in a else ("timestamps",))
        )
        groups.setdefault(names, []).append(c)
    for names, ids in groups.items():
        # attrs were read just now and say these clips are complete: arrays are opened by path.
        for block, raw in store.iter_arrays(ids, names, known_complete=True) if names else [(ids, {})]:
            for c in block:
                i, a = row[c], attrs[c]
                mask = raw[c]["face_prob"] if "face_prob" in names else np.ones(int(a["frames"]), np.float32)
                chosen[i] = idx = policy.select(mask)
                if len(idx) > steps:
                    raise ValueError(
                        f"{store.path}: clip {c}: its faces attribute disagrees with its face_prob; "
                        f"fix: `python -m embed verify --repair`"
                    )
                durations[i] = span_seconds(raw[c]["timestamps"]) if "timestamps" in names else a["duration"]
                if x is not None:
                    pack([raw[c]["embeddings"]], [idx], steps, deltas=policy.deltas, out=x[i : i + 1])
    lengths = torch.tensor([len(c) for c in chosen], dtype=torch.int64)
    data = StreamedClips(store, clip_ids, chosen, dim=store.dim, deltas=policy.deltas) if stream else torch.from_numpy(x)
    return SequenceSet(data, lengths, torch.from_numpy(labels.astype(np.int64)), clip_ids=clip_ids, durations=durations)


def load_splits(
    store: CacheStore,
    index: DatasetIndex,
    states: list[str],
    policy: FramePolicy,
    splits: tuple[str, ...] = ("Train", "Validation", "Test"),
    stream: bool | None = None,
) -> tuple[dict[str, SequenceSet], LoadReport]:
    """Every labelled clip of each split that is complete in the store, as SequenceSets: in memory,
    or streamed from the cache (stream=True, or None and the splits would not fit in memory)."""
    attrs = store.clip_attrs()
    complete = {k for k, a in attrs.items() if a.get("complete") is True}
    report = LoadReport(
        unlabelled=list(index.unlabelled),
        missing_on_disk=list(index.missing_on_disk),
        subjects=index.subjects(),
        leaking_subjects=index.leaking_subjects(),
        subject_of={c.clip_id: c.subject for c in index.clips + index.absent},
    )
    for subject, in_splits in report.leaking_subjects.items():
        log.warning(
            "subject %s is in %s: a model can learn the person rather than the state (leakage), and the "
            "test figures are optimistic; fix: keep each subject in one split",
            subject,
            " and ".join(in_splits),
        )
    wanted: dict[str, list[Clip]] = {}
    for split in splits:
        clips = [c for c in index.split(split) if c.labels is not None]
        # A clip whose video is not here is still usable when its features are (an imported store).
        wanted[split] = sorted(
            (c for c in index.split(split, with_absent=True) if c.labels is not None and c.clip_id in complete),
            key=lambda c: c.clip_id,
        )
        missing = sorted(c.clip_id for c in clips if c.clip_id not in complete)
        if missing:
            report.missing_embeddings[split] = missing
            log.warning(
                "%s: %d labelled clips have no complete embeddings in %s (first: %s); they are left out",
                split,
                len(missing),
                store.path,
                missing[0],
            )
    if report.unlabelled:
        log.warning(
            "%d clips have embeddings or videos but no label row (first: %s); they are left out",
            len(report.unlabelled),
            report.unlabelled[0],
        )
    ids = [c.clip_id for clips in wanted.values() for c in clips]
    if stream is None:
        needed, budget = padded_bytes(attrs, ids, policy, dim=store.dim), memory_budget()
        stream = needed > budget
        if stream:
            log.warning(
                "the splits take %.1f GB as tensors, more than the %.1f GB budget (half the available "
                "memory): embeddings are streamed from %s batch by batch",
                needed / 1e9,
                budget / 1e9,
                store.path,
            )
    report.streamed = stream
    start = time.perf_counter()
    out = {}
    for split, clips in wanted.items():
        labels = np.array([[c.labels[s] for s in states] for c in clips], dtype=np.int64).reshape(len(clips), len(states))
        out[split] = load_clips(store, [c.clip_id for c in clips], policy, labels=labels, attrs=attrs, stream=stream)
    report.clips_per_second = len(ids) / max(time.perf_counter() - start, 1e-9)
    log.info(
        "%s %s from %s at %.0f clips/s",
        "indexed (streamed)" if stream else "loaded",
        ", ".join(f"{k} {len(v)}" for k, v in out.items()),
        store.path,
        report.clips_per_second,
    )
    return out, report


def train_subset(data: SequenceSet, n: int | None, seed: int) -> SequenceSet:
    """A seeded random subset of n training clips (the study's 1,430-clip runs); None: all."""
    if not n or n >= len(data):
        return data
    rows = np.sort(np.random.default_rng(seed).choice(len(data), size=n, replace=False))
    return data.subset(rows)


def concat_sets(a: SequenceSet, b: SequenceSet) -> SequenceSet:
    """Two splits as one (Train and Validation pooled for cross-validation), padded to the longer."""
    if a.streamed != b.streamed:
        raise ValueError("concat_sets: both in memory or both streamed")
    if isinstance(a.x, StreamedClips) and isinstance(b.x, StreamedClips):
        x = StreamedClips(a.x.store, a.x.clip_ids + b.x.clip_ids, a.x.chosen + b.x.chosen, dim=a.x.dim, deltas=a.x.deltas)
    else:
        steps = max(a.x.shape[1], b.x.shape[1])
        x = torch.zeros((len(a) + len(b), steps, a.x.shape[2]), dtype=a.x.dtype)
        x[: len(a), : a.x.shape[1]] = a.x
        x[len(a) :, : b.x.shape[1]] = b.x
    return SequenceSet(
        x,
        torch.cat([a.lengths, b.lengths]),
        torch.cat([a.y, b.y]),
        clip_ids=a.clip_ids + b.clip_ids,
        durations=np.concatenate([a.durations, b.durations]),
    )
