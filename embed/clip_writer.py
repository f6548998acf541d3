"""Writing one clip into a store: its arrays chunk by chunk, `complete` last (the commit protocol of
docs/architecture.md, "The cache contract"; the layout itself is embed.cache's).

A clip's first TIME_CHUNK frames are written together (so a clip of up to TIME_CHUNK frames is one
zarr chunk per array, read as fast as ever); after that each chunk of frames is appended and the
clip's `frames_written` attr (with the tracker's state at that frame) is updated after its arrays. A
run killed inside a long video continues from `frames_written` when the source is unchanged.
"""

from __future__ import annotations

import contextlib

import numpy as np
import zarr
from zarr.codecs import BloscCodec

from embed.cache import ARRAYS, TIME_CHUNK, CacheStore, ClipData, span_seconds
from embed.errors import ConfigError


def _compressor(arr: np.ndarray) -> BloscCodec:
    # Byte-shuffle groups the exponent and mantissa bytes of the values; zstd does the rest.
    return BloscCodec(cname="zstd", clevel=5, shuffle="shuffle", typesize=arr.dtype.itemsize)


def _same_source(recorded: dict | None, now: dict) -> bool:
    return bool(recorded) and all(recorded.get(k) == now.get(k) for k in ("size", "sha256"))


class ClipWriter:
    """One clip's arrays, written chunk by chunk; `complete` is written by finish(), last.

    The first TIME_CHUNK frames are held (embeddings are small: 1 MB for 1,024 x 512 float16) and
    written together, so a clip shorter than that is one chunk per array, read back in one piece.
    From then on every append writes its rows, then `frames_written` and the
    tracker state that lets a killed run continue after those rows.
    """

    def __init__(
        self, store: CacheStore, clip_id: str, *, source: dict, extra: dict | None, group: zarr.Group, resumed: dict | None
    ):
        self.store, self.clip_id, self.source, self.extra, self.group = store, clip_id, source, extra or {}, group
        self.with_embeddings = store.dim > 0
        self.held: list[ClipData] = []
        self.frames_written = 0
        self.track_state: dict | None = None
        if resumed:
            n = int(resumed["frames_written"])
            for name in self._names():
                arr = group[name]
                if arr.shape[0] != n:  # killed between the arrays and the attribute: drop the extra rows
                    arr.resize((n, *arr.shape[1:]))
            self.frames_written, self.track_state = n, resumed.get("track_state")

    @classmethod
    def open(
        cls, store: CacheStore, clip_id: str, source: dict, *, extra: dict | None = None, resume: bool = True
    ) -> ClipWriter:
        """A writer for one clip, continuing a clip left part-written by a killed run when its recorded
        source fingerprint equals `source` (resume), else starting it afresh."""
        attrs = store.attrs_of(clip_id)
        if (
            resume
            and attrs
            and attrs.get("complete") is False
            and attrs.get("frames_written", 0) > 0
            and _same_source(attrs.get("source"), source)
        ):
            group = store.root["clips"][clip_id]
            return cls(store, clip_id, source=source, extra=extra, group=group, resumed=attrs)
        store.reset(clip_id)
        group = store.root["clips"].create_group(
            clip_id, attributes={"complete": False, "frames_written": 0, "source": source}
        )
        return cls(store, clip_id, source=source, extra=extra, group=group, resumed=None)

    def _names(self) -> tuple[str, ...]:
        return ARRAYS if self.with_embeddings else ARRAYS[1:]

    @property
    def held_frames(self) -> int:
        return sum(len(d.timestamps) for d in self.held)

    def rewind(self, frames: int, track_state: dict | None = None) -> None:
        """Continue from an earlier frame (another store of the same run wrote less), where the
        tracker's state is `track_state`."""
        if frames >= self.frames_written:
            return
        if frames < TIME_CHUNK:  # nothing before the first write can be kept apart: start afresh
            w = ClipWriter.open(self.store, self.clip_id, self.source, extra=self.extra, resume=False)
            self.group, self.frames_written, self.track_state, self.held = w.group, 0, None, []
            return
        self.group.update_attributes({"frames_written": frames, "track_state": track_state})
        for name in self._names():
            arr = self.group[name]
            arr.resize((frames, *arr.shape[1:]))
        self.frames_written, self.track_state = frames, track_state

    def copy_track(self, other: ClipWriter, frames: int, track_state: dict | None) -> None:
        """Rewrite this (face-track) clip from the first `frames` rows of another writer's track."""
        self.rewind(0)
        rows = {n: other.group[n][:frames] for n in ARRAYS[1:]}
        self.append(ClipData(None, rows["timestamps"], rows["face_prob"], boxes=rows["boxes"]), track_state)

    def append(self, data: ClipData, track_state: dict | None = None) -> None:
        if self.with_embeddings and data.embeddings is None:
            raise ValueError(f"{self.store.path}: clip {self.clip_id}: this store holds embeddings")
        self.held.append(data)
        if self.frames_written or self.held_frames >= TIME_CHUNK:
            self._flush(track_state)

    def _arrays(self, data: list[ClipData]) -> dict[str, np.ndarray]:
        out = {
            "timestamps": np.concatenate([d.timestamps for d in data]).astype(np.float32),
            "face_prob": np.concatenate([d.face_prob for d in data]).astype(np.float32),
            "boxes": np.concatenate([d.boxes for d in data]).astype(np.float32).reshape(-1, 4),
        }
        if self.with_embeddings:
            out["embeddings"] = np.ascontiguousarray(np.concatenate([d.embeddings for d in data]), dtype=self.store.dtype)
        return out

    def _flush(self, track_state: dict | None) -> None:
        arrays = self._arrays(self.held)
        if not self.frames_written:
            self._create(arrays, TIME_CHUNK)
        else:
            for name, arr in arrays.items():
                self.group[name].append(arr, axis=0)
        self.frames_written += len(arrays["timestamps"])
        self.held = []
        self.group.update_attributes({"frames_written": self.frames_written, "track_state": track_state})

    def _create(self, arrays: dict[str, np.ndarray], time_chunk: int) -> None:
        for name, arr in arrays.items():
            chunks = (max(1, min(len(arr), time_chunk)), *arr.shape[1:])
            # With its data: one call writes the metadata and the chunks.
            shape = {"data": arr} if arr.size else {"shape": arr.shape, "dtype": arr.dtype}
            self.group.create_array(name, **shape, chunks=chunks, compressors=_compressor(arr))

    def finish(self, extra: dict | None = None) -> None:
        """Write what is held and mark the clip complete (the last write)."""
        if not self.frames_written:
            if not self.held:
                raise ValueError(f"{self.store.path}: clip {self.clip_id}: no frames to write")
            self._create(self._arrays(self.held), TIME_CHUNK)
        elif self.held:
            self._flush(None)
        stamps, probs = self.group["timestamps"][...], self.group["face_prob"][...]
        self.held = []
        self.group.update_attributes(
            {
                **self.extra,
                **(extra or {}),
                "frames": int(len(stamps)),
                "frames_written": int(len(stamps)),
                "track_state": None,
                "faces": int((probs > 0).sum()),
                "duration": span_seconds(stamps),
                "source": self.source,
                "error": None,
                "complete": True,
            }
        )


def write_clip(store: CacheStore, clip_id: str, data: ClipData, *, source: dict, extra: dict | None = None) -> None:
    """Write a whole clip at once (a clip writer given everything in one chunk)."""
    writer = ClipWriter.open(store, clip_id, source, extra=extra, resume=False)
    writer.append(data)
    writer.finish()


def resume_writers(
    embedding: list[ClipWriter], face_writer: ClipWriter | None, resumable_track: bool
) -> tuple[int, dict | None]:
    """Where one clip continues (0: from the start) and the tracker's state there, with every writer
    brought to that frame: where the backbone store that wrote least stopped. The face-track store is
    written after them, so a kill between the writes leaves it behind: it is refilled from a backbone
    store's track (the same one) rather than sending every store back."""
    start = min(w.frames_written for w in embedding)
    state = next((w.track_state for w in embedding if w.frames_written == start), None)
    if start and state is None and resumable_track:
        start = 0  # nothing says how the track went on: start the clip afresh
    for w in embedding:
        with writing(w.store):
            w.rewind(start, state)
    if face_writer is not None:
        with writing(face_writer.store):
            if face_writer.frames_written < start:
                face_writer.copy_track(embedding[0], start, state)
            face_writer.rewind(start, state)
    return start, state


@contextlib.contextmanager
def writing(store: CacheStore):
    try:
        yield
    except OSError as e:
        raise ConfigError(
            f"{store.path}: cannot write the cache ({e.strerror or e}); fix: free disk space or "
            f"make the cache directory writable; complete clips are kept"
        ) from None
