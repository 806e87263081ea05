"""Prometheus metrics for one server: a registry of its own, so that several
servers in one process (as in the tests) never share counters."""

from __future__ import annotations

from contextlib import AbstractContextManager

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

__all__ = ["Metrics"]

disable_created_metrics()  # the *_created series only add noise to every scrape


class Metrics:
    """The counters, gauges and histograms ds_trio exports at /metrics."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        registry = self.registry
        self.requests = Counter(
            "ds_trio_requests", "HTTP requests answered", ["method", "status"], registry=registry
        )
        self.appends = Counter("ds_trio_appends", "Appends that stored data", registry=registry)
        self.bytes_in = Counter("ds_trio_bytes_in", "Stream bytes appended", registry=registry)
        self.bytes_out = Counter("ds_trio_bytes_out", "Stream bytes sent to readers", registry=registry)
        self.live_readers = Gauge(
            "ds_trio_live_readers",
            "Readers in a long-poll, SSE or WebSocket read",
            ["mode"],
            registry=registry,
        )
        self.streams = Gauge("ds_trio_streams", "Streams held by the store", registry=registry)
        self.store_bytes = Gauge("ds_trio_store_bytes", "Bytes the store occupies", registry=registry)
        self.watchers = Gauge(
            "ds_trio_watchers",
            "Waits on a stream's changes (live readers, producers awaiting a sequence gap)",
            registry=registry,
        )
        self.tasks = Gauge("ds_trio_tasks", "Trio tasks living in this process", registry=registry)
        self.commit_seconds = Histogram(
            "ds_trio_commit_seconds",
            "Time to commit one write transaction (LMDB)",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=registry,
        )

    def live(self, mode: str) -> AbstractContextManager[None]:
        """Count a live reader (`long-poll`, `sse` or `ws`) for the duration of a `with` block."""
        return self.live_readers.labels(mode).track_inprogress()

    def render(self) -> bytes:
        """The text exposition format."""
        return generate_latest(self.registry)
