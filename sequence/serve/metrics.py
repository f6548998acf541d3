"""What `sequence serve` shows operations: `/metrics` in Prometheus' text format (prometheus-client,
one registry per server, so two servers in one process never mix their figures) and `/healthz`.

Counters that grow with each window are updated as lines are scored, on the server's event loop;
figures that are a state (sources by status, the model stage's batching) are read when scraped.
Nothing here names a student or a source.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

if TYPE_CHECKING:
    from embed.model_stage import BatchStats

STATUSES = ("waiting", "running", "ended", "failed")
LATENCY_BUCKETS = (0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0, 10.0)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class _StateCollector:
    """Sources by status and each batch function's calls, items and largest batch, read at scrape time."""

    def __init__(
        self,
        statuses: Callable[[], dict[str, int]],
        batching: Callable[[], dict[str, BatchStats]],
        lag: Callable[[], tuple[int, float]] | None,
    ):
        self.statuses, self.batching, self.lag = statuses, batching, lag

    def collect(self):
        sources = GaugeMetricFamily("affectseq_sources", "Sources the server lists, by status", labels=["status"])
        counts = self.statuses()
        for status in STATUSES:
            sources.add_metric([status], counts.get(status, 0))
        yield sources
        calls = CounterMetricFamily(
            "affectseq_batch_calls", "Batched calls of the detector, backbones and head", labels=["function"]
        )
        items = CounterMetricFamily(
            "affectseq_batch_items", "Requests those calls held (items / calls: the mean batch)", labels=["function"]
        )
        largest = GaugeMetricFamily("affectseq_batch_largest", "The largest batch so far", labels=["function"])
        for name, stats in sorted(self.batching().items()):
            calls.add_metric([name], stats.calls)
            items.add_metric([name], stats.items)
            largest.add_metric([name], stats.largest)
        yield from (calls, items, largest)
        if self.lag is not None:
            waiting, seconds = self.lag()
            yield GaugeMetricFamily(
                "affectseq_history_waiting", "Lines not yet written to the history database", value=waiting
            )
            yield GaugeMetricFamily(
                "affectseq_history_lag_seconds", "How long the oldest unwritten line has waited", value=seconds
            )


class ServeMetrics:
    def __init__(
        self,
        statuses: Callable[[], dict[str, int]],
        batching: Callable[[], dict[str, BatchStats]],
        lag: Callable[[], tuple[int, float]] | None = None,
    ):
        self.registry = CollectorRegistry()
        self.windows = Counter("affectseq_windows", "Windows scored", registry=self.registry)
        self.latency = Histogram(
            "affectseq_window_latency_seconds",
            "Seconds from a window's last frame arriving to its line",
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.frames = Counter("affectseq_frames_embedded", "Frames embedded", registry=self.registry)
        self.dropped = Counter(
            "affectseq_frames_dropped", "Frames skipped because the pipeline was behind", registry=self.registry
        )
        self.registry.register(_StateCollector(statuses, batching, lag))

    def count(self, line: dict | None, frames: int, dropped: int) -> None:
        """A line scored (None: a source's end), and its source's frames and drops since last counted."""
        if line is not None:
            self.windows.inc()
            if line.get("latency_s") is not None:
                self.latency.observe(line["latency_s"])
        self.frames.inc(frames)
        self.dropped.inc(dropped)

    def text(self) -> bytes:
        return generate_latest(self.registry)
