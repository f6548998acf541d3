"""One clip into its stores: the face track (detected now or read from the face-track store), each
backbone whose store lacks the clip, written chunk by chunk, continuing where a killed run stopped;
and which clips of a run need it."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from embed.cache import CacheStore, ClipData, source_fingerprint, source_unchanged
from embed.clip_writer import ClipWriter, resume_writers, writing
from embed.embedder import Embedder
from embed.errors import ClipError
from embed.layouts import Clip
from embed.memory import release_free_heap
from embed.run_report import ClipOutcome
from embed.tracking import FaceTrack, StoredTrack, StreamTracker, tracked_chunks
from embed.video import FrameChunk


def _stored_track(faces: CacheStore | None, clip: Clip) -> FaceTrack | None:
    if faces is None or not faces.is_complete(clip.clip_id, clip.path):
        return None
    arrays = faces.read_arrays([clip.clip_id], ("face_prob", "boxes"))[clip.clip_id]
    return FaceTrack(arrays["boxes"], arrays["face_prob"])


@dataclass(frozen=True)
class ClipTargets:
    """Where a run writes its clips: each backbone's store (in the embedder's order), the face-track
    store, and whom to tell how many frames each written chunk held (a progress bar)."""

    stores: list[CacheStore]
    faces: CacheStore | None = None
    on_frames: Callable[[int], None] | None = None


def pending(clips: list[Clip], stores: list[CacheStore]) -> tuple[list[Clip], int]:
    """Clips that some store lacks (or holds from a changed source), and how many every store has."""
    attrs = [s.clip_attrs() for s in stores]
    todo = []
    for clip in clips:
        if not all(
            (a := at.get(clip.clip_id)) and a.get("complete") is True and source_unchanged(clip.path, a.get("source"))
            for at in attrs
        ):
            todo.append(clip)
    return todo, len(clips) - len(todo)


def embed_clip(
    embedder: Embedder,
    clip: Clip,
    chunks: Iterable[FrameChunk],
    *,
    targets: ClipTargets,
    stop: threading.Event | None = None,
) -> ClipOutcome:
    """Stream one clip's decoded chunks through the face track (detected now, or read from the
    face-track store) and each backbone whose store lacks the clip, writing chunk by chunk; a clip
    left part-written by a killed run continues where it stopped. Clip errors are recorded in the
    stores and returned, never raised; a store that cannot be written is a ConfigError (the run
    stops, complete clips are kept). Once `stop` is set the clip ends after the chunk in hand,
    part-written as a killed run leaves it (`stopped`). `chunks` must be fully consumed or
    abandoned (decode_ahead)."""
    outcome, fingerprint = ClipOutcome(clip.clip_id), None
    stores, faces, on_frames = targets.stores, targets.faces, targets.on_frames
    need = [(b, s) for b, s in zip(embedder.backbones, stores, strict=True) if not s.is_complete(clip.clip_id, clip.path)]
    if not need:
        # Complete in every backbone store already: a task retried after its worker died between
        # committing the clip and its face track. The face-track store only saves later backbones
        # a detection pass, so a missing track is not worth decoding the video again.
        return outcome
    writers: list[ClipWriter] = []
    try:
        fingerprint = source_fingerprint(clip.path)
        stored = _stored_track(faces, clip)
        extra = {"split": clip.split}
        # (writer, backbone): None for the face-track store, written when the faces are detected now
        targets = [(b, s) for b, s in need] + ([(None, faces)] if stored is None and faces is not None else [])
        for _, store in targets:
            with writing(store):
                writers.append(ClipWriter.open(store, clip.clip_id, fingerprint, extra=extra))
        embedding = [w for (b, _), w in zip(targets, writers, strict=True) if b is not None]
        face_writer = next((w for (b, _), w in zip(targets, writers, strict=True) if b is None), None)
        start, state = resume_writers(embedding, face_writer, resumable_track=stored is None)
        outcome.resumed_frames = start
        if stored is not None:
            tracker: StreamTracker | StoredTrack = StoredTrack(stored, start)
        else:
            tracker = embedder.tracker(resume=state if start else None)
            outcome.detected = True
        # Faces in the frames a killed run already wrote (every writer holds the same track).
        faces_seen = int((writers[0].group["face_prob"][:start] > 0).sum()) if start else 0
        size = None
        for tracked in tracked_chunks(chunks, tracker):
            for (backbone, _), writer in zip(targets, writers, strict=True):
                emb = None if backbone is None else embedder.embed_chunk(tracked, backbone, clip.path)
                with writing(writer.store):
                    writer.append(
                        ClipData(emb, tracked.timestamps, tracked.track.probs, boxes=tracked.track.boxes), tracked.state
                    )
            faces_seen += int((tracked.track.probs > 0).sum())
            outcome.frames += len(tracked)
            size = tracked.frames.shape[1:3]
            if on_frames is not None:
                on_frames(len(tracked))
            release_free_heap()  # else the resident size creeps up with the video's length (embed.memory)
            if stop is not None and stop.is_set():
                outcome.stopped = True
                return outcome
        truncation = getattr(chunks, "truncation", None)
        marks = {"truncated": truncation.as_attrs()} if truncation else {}
        marks["rotation"] = getattr(chunks, "rotation", 0)  # degrees turned upright (embed.video)
        outcome.truncated = truncation is not None
        # The face track is right even without a face in it: a later backbone reads it from there.
        for (backbone, _), w in zip(targets, writers, strict=True):
            if backbone is None:
                with writing(w.store):
                    w.finish(marks)
        if faces_seen == 0:
            shape = f" ({size[1]}x{size[0]})" if size else ""
            raise ClipError(
                f"{clip.path}: no face found in any of its {outcome.frames + start} frames{shape}; "
                f"fix: check that the video shows a face, or lower --min-face-size"
            )
        for (backbone, _), w in zip(targets, writers, strict=True):
            if backbone is not None:
                with writing(w.store):
                    w.finish(marks)
    except ClipError as e:
        outcome.error = str(e)
    except (RuntimeError, ValueError, OSError) as e:
        outcome.error = f"{clip.path}: {type(e).__name__}: {e}"
    if outcome.error:
        outcome.error = outcome.error.splitlines()[0]
        for _, store in need:
            if not store.is_complete(clip.clip_id):
                store.record_failure(clip.clip_id, outcome.error, fingerprint)
    return outcome
