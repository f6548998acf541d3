"""`embed run` on this machine: the pending clips through decode-ahead, tracking and each backbone
into the stores, one clip at a time or several in flight (embed.clips_in_flight), with a progress
bar; Ctrl-C ends in the summary. On a dask cluster instead: embed.distributed."""

from __future__ import annotations

import dataclasses
import logging
import threading
import time
from collections.abc import Iterator

from embed.clip_embedding import ClipTargets, embed_clip, pending
from embed.clips_in_flight import embed_in_flight
from embed.decode_ahead import decode_ahead
from embed.embedder import Embedder
from embed.layouts import Clip, DatasetIndex
from embed.run_report import ClipOutcome, RunReport, progress_bar, rate_text

log = logging.getLogger(__name__)


def embed_dataset(
    index: DatasetIndex,
    embedder: Embedder,
    targets: ClipTargets,
    *,
    limit: int | None = None,
    progress: bool = True,
    clips_in_flight: int = 1,
) -> RunReport:
    """Embed every clip of the index (the first `limit`) into the targets' stores, one decode and one
    detection per clip for every backbone, skipping clips complete and unchanged in every store.
    With `clips_in_flight` above one (the embedder then runs through a model stage) that many clips
    are embedded at once, their network calls batched together; the stores are the same."""
    clips = index.clips[:limit] if limit else index.clips
    report = RunReport(stores=[s.path for s in targets.stores], total=len(clips), clips_in_flight=clips_in_flight)
    start = time.perf_counter()
    try:  # Ctrl-C at any point from here ends in the summary, never a traceback
        todo, report.skipped = pending(clips, targets.stores)
        log.info("%d clips, %d already complete, %d to embed", len(clips), report.skipped, len(todo))
        with progress_bar(progress) as bar:
            task = bar.add_task("embed", total=len(todo), rate="")
            live = {"frames": 0}  # frames of the clips in progress, for the rate shown while long videos run
            counting = threading.Lock()  # on_frames comes from every clip in flight's thread

            def on_frames(n: int) -> None:
                with counting:
                    live["frames"] += n
                bar.update(task, rate=rate_text(report, time.perf_counter() - start, live["frames"]))

            counted = dataclasses.replace(targets, on_frames=on_frames)
            for outcome in _outcomes(embedder, todo, counted, in_flight=clips_in_flight):
                with counting:
                    live["frames"] -= outcome.frames
                report.add(outcome)
                bar.update(task, advance=1, rate=rate_text(report, time.perf_counter() - start, live["frames"]))
    except KeyboardInterrupt:
        report.interrupted = True
    report.seconds = time.perf_counter() - start
    return report


def _outcomes(embedder: Embedder, todo: list[Clip], targets: ClipTargets, in_flight: int) -> Iterator[ClipOutcome]:
    if in_flight > 1:
        yield from embed_in_flight(embedder, todo, targets, in_flight=in_flight)
        return
    streams = [embedder.stream(clip.path) for clip in todo]
    for clip, (_, chunks) in zip(todo, decode_ahead(streams), strict=True):
        yield embed_clip(embedder, clip, chunks, targets=targets)
