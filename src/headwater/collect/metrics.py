"""Prometheus metrics of the collector, in a registry of its own per app."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram


class CollectorMetrics:
    """Counters by source, commit latency and queue depth."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.accepted = Counter(
            "headwater_events_accepted",
            "Events stored (new, not duplicates), by source.",
            ["source"],
            registry=registry,
        )
        self.duplicates = Counter(
            "headwater_events_duplicate",
            "Events answered as accepted but already stored inside the dedupe window.",
            ["source"],
            registry=registry,
        )
        self.rejected = Counter(
            "headwater_events_rejected",
            "Events and request bodies refused and kept in failed_events, by source and code.",
            ["source", "code"],
            registry=registry,
        )
        self.commit_seconds = Histogram(
            "headwater_commit_seconds",
            "Time of one group commit to the store.",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=registry,
        )
        self.ack_seconds = Histogram(
            "headwater_ack_seconds",
            "Time from a request's arrival (its body read) to its answer, the commit it waits "
            "for included: every request whose events, or their refusals, were committed.",
            buckets=(0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
            registry=registry,
        )
        self.commit_events = Histogram(
            "headwater_commit_events",
            "Events in one group commit.",
            buckets=(1, 10, 100, 1_000, 10_000, 50_000),
            registry=registry,
        )
        self.queue_depth = Gauge(
            "headwater_writer_queue_events",
            "Events waiting for the writer.",
            registry=registry,
        )
        self.commit_failures = Counter(
            "headwater_commit_failures",
            "Group commits the store refused.",
            registry=registry,
        )
