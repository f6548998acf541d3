"""The embedding cache: the only place that computes store keys and knows the Zarr layout
(docs/architecture.md, "The cache contract"); writing a clip is embed.clip_writer's.

One Zarr v3 store per (dataset, extraction config): <cache_dir>/<dataset>/<backbone>-<key>.zarr.
Per clip, readable with plain zarr: clips/<id>/{embeddings (T,D) f16, timestamps (T,) f32 s,
face_prob (T,) f32, boxes (T,4) f32 source px}. A clip is complete only when its group attr
`complete` is true; that attr is written last (zarr's LocalStore writes metadata atomically), so a
crash leaves a clip pending, never readable as complete with partial data.

This module imports neither decoding nor face detection: stage two reads through it. Finding a store
is embed.stores, the writer lock embed.locking.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import json
import os
import re
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

import numpy as np
import zarr
import zarr.api.asynchronous as zarr_async
from zarr.core.sync import sync  # zarr's own event-loop thread, which its synchronous API runs on
from zarr.errors import ZarrUserWarning
from zarr.storage import LocalStore

from embed.errors import ConfigError
from embed.identity import file_sha256
from embed.lookahead import read_ahead

CACHE_FORMAT = "affectseq-cache/1"
# zarr's LocalStore writes each file under this name and renames it when whole: a process killed in
# between leaves one behind (nothing reads it; `embed verify --repair` removes them).
PARTIAL_FILE = re.compile(r"\.[0-9a-f]{32}\.partial$")
# Frames per zarr chunk along T. A long video's arrays grow chunk by chunk from here on.
TIME_CHUNK = 1024
ARRAYS = ("embeddings", "timestamps", "face_prob", "boxes")


def canonical_json(obj) -> str:
    return json.dumps(obj, sort_keys=True, separators=(",", ":"))


def config_key(config: dict) -> str:
    """Short hash of the canonical extraction config: equal configs share a store, any change does not."""
    return hashlib.sha256(canonical_json(config).encode()).hexdigest()[:12]


def store_path(cache_dir: Path, dataset: str, config: dict) -> Path:
    return Path(cache_dir) / dataset / f"{config['backbone']}-{config_key(config)}.zarr"


def library_versions() -> dict[str, str]:
    out = {}
    for dist in ("affectseq", "torch", "torchvision", "facenet-pytorch", "av", "zarr", "numpy"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            out[dist] = metadata.version(dist)
    return out


@functools.lru_cache(maxsize=64)
def _content_hash(path: str, size: int, mtime_ns: int) -> str:
    # Keyed by size and mtime as well, which is what source_unchanged already trusts: one HDF5 file
    # holding every clip of an import is hashed once per import, not once per clip.
    return file_sha256(Path(path))


def source_fingerprint(path: Path) -> dict:
    st = path.stat()
    return {"size": st.st_size, "mtime_ns": st.st_mtime_ns, "sha256": _content_hash(str(path), st.st_size, st.st_mtime_ns)}


def source_unchanged(path: Path, recorded: dict | None) -> bool:
    """Same size and mtime: unchanged (no hashing on reruns). Otherwise the content hash decides."""
    if not recorded or not path.is_file():
        return False
    st = path.stat()
    if st.st_size != recorded.get("size"):
        return False
    if st.st_mtime_ns == recorded.get("mtime_ns"):
        return True
    return source_fingerprint(path)["sha256"] == recorded.get("sha256")


def span_seconds(timestamps: np.ndarray) -> float:
    """Seconds a clip's frames cover: first to last timestamp plus one typical frame step."""
    if len(timestamps) == 0:
        return 0.0
    step = float(np.median(np.diff(timestamps))) if len(timestamps) > 1 else 0.0
    return float(timestamps[-1] - timestamps[0]) + step


@dataclass
class ClipData:
    embeddings: np.ndarray | None  # (T, D) float16 (float32 imported); None in a face-track store
    timestamps: np.ndarray  # (T,) float32 seconds
    face_prob: np.ndarray  # (T,) float32, 0 where no face
    boxes: np.ndarray  # (T, 4) float32 source pixels, NaN where no face

    def __post_init__(self):
        t = len(self.timestamps)
        if not (len(self.face_prob) == len(self.boxes) == t) or (self.embeddings is not None and len(self.embeddings) != t):
            raise ValueError("clip arrays disagree on the number of frames")

    @classmethod
    def concat(cls, parts: list[ClipData]) -> ClipData:
        """Consecutive chunks of one clip joined."""
        emb = None if parts[0].embeddings is None else np.concatenate([p.embeddings for p in parts])
        return cls(emb, **{n: np.concatenate([getattr(p, n) for p in parts]) for n in ARRAYS[1:]})


# zarr's file reads and writes at once (its own pool, `zarr_pool`): what asyncio's default executor,
# which zarr used otherwise, would have.
ZARR_IO_THREADS = min(32, (os.cpu_count() or 1) + 4)


@functools.cache
def _configure_zarr() -> None:
    """Set for the process by the first store opened, not by importing this module:
    - a run killed between making a clip's folder and writing its metadata leaves a folder zarr does
      not recognise: no clip yet (the next run writes it), not something to warn the user about;
    - zarr's file I/O runs on its own named pool (`zarr_pool`, the threads table) rather than on its
      event loop's default executor, whose unnamed `asyncio_N` threads no one could tell apart."""
    warnings.filterwarnings("ignore", r"Object at .* is not recognized as a component of a Zarr hierarchy", ZarrUserWarning)
    if zarr.config.get("threading.max_workers", None) is None:
        zarr.config.set({"threading.max_workers": ZARR_IO_THREADS})


class CacheStore:
    """One extraction store. Open for reading with CacheStore(path); create with CacheStore.create."""

    def __init__(self, path: str | os.PathLike, mode: str = "r"):
        _configure_zarr()
        self.path = Path(path)
        if mode == "r" and not (self.path / "zarr.json").is_file():
            raise FileNotFoundError(f"{self.path}: no embedding store here; fix: run `python -m embed run` first")
        self.root = zarr.open_group(str(self.path), mode=mode)
        attrs = self.root.attrs.asdict()
        if attrs.get("format") != CACHE_FORMAT:
            raise ValueError(f"{self.path}: not an affectseq cache store (format {attrs.get('format')!r})")
        self.config: dict = attrs["config"]
        self.dataset: str = attrs["dataset"]

    @classmethod
    def create(cls, cache_dir: Path, dataset: str, config: dict) -> CacheStore:
        """Open the store for this config, creating it (with its config in the root attrs) if needed."""
        path = store_path(cache_dir, dataset, config)
        try:
            root = zarr.open_group(str(path), mode="a")
            if "format" not in root.attrs:
                root.update_attributes(
                    {
                        "format": CACHE_FORMAT,
                        "dataset": dataset,
                        "key": config_key(config),
                        "config": config,
                        "versions": library_versions(),
                    }
                )
            if "clips" not in root:
                try:
                    root.create_group("clips")
                except Exception:  # noqa: BLE001 (another writer created it first)
                    if "clips" not in root:
                        raise
        except OSError as e:
            raise ConfigError(
                f"{path}: cannot create or open the cache store ({e.strerror or e}); fix: make "
                f"the cache directory writable and give it free space, or point cache_dir elsewhere"
            ) from None
        store = cls(path, mode="a")
        if store.config != json.loads(canonical_json(config)):
            raise ValueError(f"{path}: holds a different config than its key says; fix: delete this store")
        return store

    @property
    def key(self) -> str:
        return config_key(self.config)

    @property
    def dim(self) -> int:
        return int(self.config["dim"])

    @property
    def dtype(self) -> np.dtype:
        """What the embeddings array holds: float16 from a backbone; an imported store keeps its
        source's float32 (landmarks in pixels lose half a pixel in float16)."""
        return np.dtype(self.config.get("dtype", "float16"))

    def _clips(self) -> zarr.Group:
        return self.root["clips"]

    def clip_attrs(self) -> dict[str, dict]:
        """Attributes of every clip group (one metadata read each)."""
        return {name: dict(g.attrs) for name, g in self._clips().groups()}

    def attrs_of(self, clip_id: str) -> dict | None:
        try:
            return dict(self._clips()[clip_id].attrs)
        except (KeyError, FileNotFoundError):
            return None

    def complete_ids(self) -> list[str]:
        return sorted(k for k, a in self.clip_attrs().items() if a.get("complete") is True)

    def is_complete(self, clip_id: str, source: Path | None = None) -> bool:
        attrs = self.attrs_of(clip_id)
        if not attrs or attrs.get("complete") is not True:
            return False
        return source is None or source_unchanged(source, attrs.get("source"))

    def reset(self, clip_id: str) -> None:
        """Make a clip pending again (its data is deleted; the next run embeds it)."""
        clips = self._clips()
        if clip_id in clips:
            # Un-complete first (one atomic metadata write), so a crash while deleting the arrays
            # can never leave a group that says complete over missing data.
            clips[clip_id].attrs["complete"] = False
            del clips[clip_id]

    def check_clip(self, clip_id: str, source: Path | None) -> str | None:
        """What is wrong with a complete clip (None: nothing): arrays, shapes, dtypes, values, and
        its source file against the recorded fingerprint (full content hash)."""
        g = self._clips()[clip_id]
        attrs = dict(g.attrs)
        try:
            arrays = {n: g[n][...] for n in ARRAYS if n != "embeddings" or self.dim}
        except (KeyError, FileNotFoundError, ValueError) as e:
            return f"unreadable or missing array ({type(e).__name__}: {e})"
        t = len(arrays["timestamps"])
        expected = {
            "timestamps": ((t,), np.float32),
            "face_prob": ((t,), np.float32),
            "boxes": ((t, 4), np.float32),
            "embeddings": ((t, self.dim), self.dtype),
        }
        for name, a in arrays.items():
            shape, dtype = expected[name]
            if a.shape != shape or a.dtype != dtype:
                return f"{name} is {a.dtype}{list(a.shape)}, expected {np.dtype(dtype)}{list(shape)}"
        if attrs.get("frames") != t:
            return f"frames attribute {attrs.get('frames')} but {t} timestamps"
        if "embeddings" in arrays and not np.isfinite(arrays["embeddings"]).all():
            return "non-finite embedding values"
        if not np.isfinite(arrays["timestamps"]).all() or np.any(np.diff(arrays["timestamps"]) < 0):
            return "timestamps not finite and non-decreasing"
        if source is not None:
            if not source.is_file():
                return f"source {source} is gone"
            if file_sha256(source) != (attrs.get("source") or {}).get("sha256"):
                return f"source {source} changed since it was embedded"
        return None

    def partial_files(self) -> list[Path]:
        """Files zarr was writing when a process was killed (never read: safe to remove)."""
        return sorted(f for f in self.path.rglob("*.partial") if PARTIAL_FILE.search(f.name))

    def record_failure(self, clip_id: str, error: str, source: dict | None) -> None:
        self.reset(clip_id)
        self._clips().create_group(clip_id, attributes={"complete": False, "error": error, "source": source})

    def read_clip(self, clip_id: str) -> ClipData:
        g = self._clips()[clip_id]
        if g.attrs.get("complete") is not True:
            raise KeyError(f"{self.path}: clip {clip_id} is not complete")
        return ClipData(**{name: g[name][...] for name in ARRAYS})

    def read_clips(self, clip_ids: list[str], concurrency: int = 64) -> dict[str, ClipData]:
        """Read many complete clips concurrently (see read_arrays)."""
        raw = self.read_arrays(clip_ids, ARRAYS, concurrency)
        return {c: ClipData(**raw[c]) for c in clip_ids}

    def read_arrays(
        self, clip_ids: list[str], names: tuple[str, ...], concurrency: int = 64, known_complete: bool = False
    ) -> dict[str, dict]:
        """Only some arrays of many complete clips, read concurrently on zarr's own event loop.

        zarr 3's synchronous API funnels every call through one event-loop thread, so a thread pool
        gains little; issuing all reads as coroutines at once lets zarr overlap them (see
        iter_arrays for reading thousands). With known_complete (the caller has just read the
        clips' attributes) each array is opened by its path, skipping a second read of the clip
        group's metadata.
        """
        unknown = set(names) - set(ARRAYS)
        if unknown:
            raise ValueError(f"unknown cache arrays {sorted(unknown)}; known: {', '.join(ARRAYS)}")
        return sync(
            _read_arrays_async(str(self.path), clip_ids, names, concurrency=concurrency, known_complete=known_complete)
        )

    def iter_arrays(
        self, clip_ids: list[str], names: tuple[str, ...], block: int = 128, known_complete: bool = False
    ) -> Iterator[tuple[list[str], dict[str, dict]]]:
        """read_arrays a block of clips at a time, reading the next block while the caller handles
        this one. Blocks rather than one gather over thousands of clips: zarr's event loop runs
        one huge gather slower than blocks of 64-256, and only two blocks' raw arrays are alive at a
        time. Worker processes instead of the thread gained nothing on 2 cores: shipping each block
        back costs what the second core saves (docs/performance.md, "Stage two")."""
        blocks = [clip_ids[i : i + block] for i in range(0, len(clip_ids), block)]
        reads = read_ahead(lambda ids: self.read_arrays(ids, names, 64, known_complete=known_complete), blocks)
        yield from zip(blocks, reads, strict=True)

    def summary(self) -> dict:
        return summarise(self.clip_attrs())

    @staticmethod
    def summary_at(path: Path | str) -> dict:
        """summary() of the store at path, or of an empty one where none has been written yet."""
        return CacheStore(path).summary() if (Path(path) / "zarr.json").is_file() else summarise({})


def summarise(attrs: dict[str, dict]) -> dict:
    """Counts, failures, truncated and part-written clips from the clips' attributes."""
    complete = [a for a in attrs.values() if a.get("complete") is True]
    failures = [
        {"clip": k, "error": a["error"]}
        for k, a in sorted(attrs.items())
        if a.get("complete") is not True and a.get("error")
    ]
    return {
        "complete": len(complete),
        "failed": len(failures),
        "frames": sum(a.get("frames", 0) for a in complete),
        "failures": failures,
        "truncated": sorted(k for k, a in attrs.items() if a.get("complete") is True and a.get("truncated")),
        "partial": {
            k: a["frames_written"]
            for k, a in sorted(attrs.items())
            if a.get("complete") is not True and a.get("frames_written")
        },
        "clips": attrs,
    }


async def _read_arrays_async(
    path: str, clip_ids: list[str], names: tuple[str, ...], concurrency: int, known_complete: bool = False
) -> dict[str, dict]:
    store = LocalStore(path, read_only=True)
    clips = None if known_complete else await (await zarr_async.open_group(store=store, mode="r")).getitem("clips")
    gate = asyncio.Semaphore(concurrency)

    async def one(clip_id: str) -> dict:
        async with gate:
            if known_complete:
                arrays = await asyncio.gather(
                    *(zarr_async.open_array(store=store, path=f"clips/{clip_id}/{n}", zarr_format=3) for n in names)
                )
            else:
                group = await clips.getitem(clip_id)
                if group.attrs.get("complete") is not True:
                    raise KeyError(f"{path}: clip {clip_id} is not complete")
                arrays = await asyncio.gather(*(group.getitem(n) for n in names))
            data = await asyncio.gather(*(a.getitem(...) for a in arrays))
            return dict(zip(names, data, strict=True))

    results = await asyncio.gather(*(one(c) for c in clip_ids))
    return dict(zip(clip_ids, results, strict=True))
