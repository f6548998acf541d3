"""What an `embed run` did (RunReport, one ClipOutcome per clip) and its progress bar."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

# At import, not inside the run: a Ctrl-C that lands in an import is not a clean KeyboardInterrupt (3.11).
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

log = logging.getLogger("embed.pipeline")


@dataclass
class RunReport:
    stores: list[Path]
    total: int = 0
    embedded: int = 0  # clips processed now (into every store that needed them)
    skipped: int = 0  # clips complete in every store already
    detected: int = 0  # clips whose faces were detected now (the rest came from the face-track cache)
    frames: int = 0  # frames embedded now
    resumed_frames: int = 0  # frames of part-written clips kept from a killed run (not redone)
    truncated: list[str] = field(default_factory=list)  # clips kept though cut short (--allow-truncated)
    seconds: float = 0.0
    failures: list[dict] = field(default_factory=list)
    interrupted: bool = False
    dashboard: str | None = None
    clips_in_flight: int = 1  # clips embedded at once (embed.clips_in_flight; on a cluster, per worker)
    # On a cluster: per worker address, each batch function's BatchStats (embed.model_stage) as a dict.
    batching: dict[str, dict] = field(default_factory=dict)
    weights: list[str] = field(default_factory=list)  # each store's weights identity, in the stores' order

    @property
    def store(self) -> Path:
        return self.stores[0]

    @property
    def exit_code(self) -> int:
        return 130 if self.interrupted else (1 if self.failures else 0)

    def add(self, outcome: ClipOutcome) -> None:
        if outcome.error:
            log.error("%s", outcome.error)
            self.failures.append({"clip": outcome.clip_id, "error": outcome.error})
        else:
            self.embedded += 1
            if outcome.truncated:
                self.truncated.append(outcome.clip_id)
        self.frames += outcome.frames
        self.resumed_frames += outcome.resumed_frames
        self.detected += outcome.detected

    def as_dict(self) -> dict:
        return {
            "stores": [str(p) for p in self.stores],
            "total": self.total,
            "embedded": self.embedded,
            "skipped": self.skipped,
            "detected": self.detected,
            "frames": self.frames,
            "resumed_frames": self.resumed_frames,
            "seconds": round(self.seconds, 3),
            "failed": len(self.failures),
            "failures": self.failures,
            "truncated": self.truncated,
            "interrupted": self.interrupted,
            "clips_in_flight": self.clips_in_flight,
            "weights": self.weights,
            "batching": self.batching,
        }


@dataclass
class ClipOutcome:
    clip_id: str
    frames: int = 0  # frames embedded now
    resumed_frames: int = 0  # frames kept from a killed run
    detected: bool = False
    truncated: bool = False
    error: str | None = None
    stopped: bool = False  # the run stopped it after a chunk: left part-written, resumed next run


def progress_bar(enabled: bool) -> Progress:
    columns = [
        TextColumn("[bold]embed"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]}"),
        TimeElapsedColumn(),
    ]
    return Progress(*columns, disable=not enabled, transient=False)


def rate_text(report: RunReport, elapsed: float, in_progress: int = 0) -> str:
    done = report.embedded + len(report.failures)
    frames = report.frames + in_progress
    return f"{done / elapsed:.2f} clips/s {frames / elapsed:.0f} frames/s" + (
        f" ({in_progress} frames into clips in progress)" if in_progress else ""
    )
