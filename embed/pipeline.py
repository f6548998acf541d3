"""`embed run` on one process: every pending clip of a dataset through decode-ahead, tracking and
each backbone into the stores, with a progress bar and a report; Ctrl-C ends in the summary."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator

from embed.cache import CacheStore, source_unchanged
from embed.clip_embedding import embed_clip
from embed.clips_in_flight import embed_in_flight
from embed.decode_ahead import decode_ahead
from embed.embedder import Embedder
from embed.layouts import Clip, DatasetIndex
from embed.run_report import ClipOutcome, RunReport, progress_bar, rate_text

log = logging.getLogger(__name__)


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


def embed_dataset(
    index: DatasetIndex,
    stores: CacheStore | list[CacheStore],
    embedder: Embedder,
    limit: int | None = None,
    progress: bool = True,
    faces: CacheStore | None = None,
    clips_in_flight: int = 1,
) -> RunReport:
    """Embed every clip of the index into each backbone's store (one decode and one detection per
    clip for all of them); skip clips complete and unchanged in every store. With `clips_in_flight`
    above one (the embedder then runs through a model stage) that many clips are embedded at once,
    their network calls batched together (embed.clips_in_flight); the stores are the same."""
    stores = [stores] if isinstance(stores, CacheStore) else list(stores)
    clips = index.clips[:limit] if limit else index.clips
    report = RunReport(stores=[s.path for s in stores], total=len(clips), clips_in_flight=clips_in_flight)
    start = time.perf_counter()
    try:  # Ctrl-C at any point from here ends in the summary, never a traceback
        todo, report.skipped = pending(clips, stores)
        log.info(
            "%s: %d clips, %d already complete, %d to embed",
            ", ".join(str(s.path) for s in stores),
            len(clips),
            report.skipped,
            len(todo),
        )
        with progress_bar(progress) as bar:
            task = bar.add_task("embed", total=len(todo), rate="")
            live = {"frames": 0}  # frames of the clips in progress, for the rate shown while long videos run
            counting = threading.Lock()  # on_frames comes from every clip in flight's thread

            def on_frames(n: int) -> None:
                with counting:
                    live["frames"] += n
                bar.update(task, rate=rate_text(report, time.perf_counter() - start, live["frames"]))

            for outcome in _outcomes(embedder, todo, stores, faces, clips_in_flight, on_frames):
                with counting:
                    live["frames"] -= outcome.frames
                report.add(outcome)
                bar.update(task, advance=1, rate=rate_text(report, time.perf_counter() - start, live["frames"]))
    except KeyboardInterrupt:
        report.interrupted = True
    report.seconds = time.perf_counter() - start
    return report


def _outcomes(
    embedder: Embedder,
    todo: list[Clip],
    stores: list[CacheStore],
    faces: CacheStore | None,
    clips_in_flight: int,
    on_frames: Callable[[int], None],
) -> Iterator[ClipOutcome]:
    if clips_in_flight > 1:
        yield from embed_in_flight(embedder, todo, stores, faces, clips_in_flight, on_frames)
        return
    streams = [embedder.stream(clip.path) for clip in todo]
    for clip, (_, chunks) in zip(todo, decode_ahead(streams), strict=True):
        yield embed_clip(embedder, clip, chunks, stores, faces, on_frames)
