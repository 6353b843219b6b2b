"""Metrics of pipelines and deliveries for ``/metrics``, beside the collector's.

Most are read from the run state when Prometheus scrapes, so they count the
work of every process on that state (``headwater run --due`` under cron as well
as this server): runs by outcome and their durations, intervals missing and
stale, deliveries by state, dead letters. The run state is the metadata
database (SQLite or PostgreSQL), never the warehouse, so a scrape bills
nothing. Finished runs are read once each and folded into counts kept here.

Two counters are this process's own, because the run state keeps how each
delivery stands, not every attempt: delivery attempts by outcome, and rows
delivered (see docs/operations.md).

Offload lag: a process with a warehouse fed by an offload of the hot store
passes ``offload_lag`` to :class:`StateMetrics`, a callable giving the seconds
between now and the end of the last arrival interval offloaded (``None`` while
unknown); ``headwater_offload_lag_seconds`` is exported only then.
"""

from __future__ import annotations

import bisect
import logging
import threading
import time
from collections.abc import Callable, Iterator
from datetime import datetime

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from sqlalchemy.exc import SQLAlchemyError

from headwater.core.errors import HeadwaterError
from headwater.deliver.deliverer import DeliveryResult
from headwater.process.definition import Pipeline
from headwater.process.graph import Graph
from headwater.process.schedule import floor as cron_floor
from headwater.process.schedule import iter_intervals
from headwater.state import StateStore
from headwater.state.tallies import (
    FinishedRun,
    RunsSince,
    first_interval,
    interval_counts,
    runs_since,
)

log = logging.getLogger(__name__)

#: Seconds; runs take from milliseconds (a small interval on DuckDB) to an hour (a backfill
#: interval on a warehouse).
DURATION_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0)
DELIVERY_STATES = ("pending", "failed", "delivered", "dead")
#: How long a run id the cursor skipped is looked for again.
ABSENT_SECONDS = 300.0

OffloadLag = Callable[[], float | None]


class DeliveryCounters:
    """This process's delivery attempts, by pipeline, sink and outcome, and rows delivered."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.attempts = Counter(
            "headwater_deliveries",
            "Delivery attempts made by this process, by pipeline, sink and outcome "
            "(delivered, failed: tried again later, dead: a dead letter, pending: stopped).",
            ["pipeline", "sink", "outcome"],
            registry=registry,
        )
        self.rows = Counter(
            "headwater_delivered_rows",
            "Rows this process wrote to sinks, by pipeline and sink.",
            ["pipeline", "sink"],
            registry=registry,
        )

    def observe(self, result: DeliveryResult) -> None:
        self.attempts.labels(result.pipeline, result.sink, result.status).inc()
        if result.rows:
            self.rows.labels(result.pipeline, result.sink).inc(result.rows)


class _Durations:
    """One pipeline's run durations, as a histogram's cumulative buckets."""

    def __init__(self) -> None:
        self.counts = [0] * (len(DURATION_BUCKETS) + 1)
        self.total = 0.0

    def add(self, seconds: float) -> None:
        self.counts[bisect.bisect_left(DURATION_BUCKETS, seconds)] += 1
        self.total += seconds

    def buckets(self) -> list[tuple[str, float]]:
        bounds = [*(str(b) for b in DURATION_BUCKETS), "+Inf"]
        running, cumulative = 0, []
        for bound, count in zip(bounds, self.counts, strict=True):
            running += count
            cumulative.append((bound, float(running)))
        return cumulative


class _Families:
    """The metrics :class:`StateMetrics` exports, filled at each scrape."""

    def __init__(self) -> None:
        self.runs = CounterMetricFamily(
            "headwater_runs",
            "Pipeline runs (attempts) finished, by pipeline and outcome: succeeded, "
            "transient (failed; retrying can help, and is done) or failed (waits for a "
            "changed pipeline or a manual run). Every process on the run state counts.",
            labels=["pipeline", "outcome"],
        )
        self.durations = HistogramMetricFamily(
            "headwater_run_duration_seconds",
            "Duration of finished pipeline runs, by pipeline.",
            labels=["pipeline"],
        )
        self.missing = GaugeMetricFamily(
            "headwater_intervals_missing",
            "Whole intervals of an incremental pipeline not recorded done or stale, from "
            "its declared start (else its first recorded interval) to the arrival floor.",
            labels=["pipeline"],
        )
        self.stale = GaugeMetricFamily(
            "headwater_intervals_stale",
            "Intervals of a pipeline that must run again (late events, inputs re-published).",
            labels=["pipeline"],
        )
        self.deliveries = GaugeMetricFamily(
            "headwater_delivery_intervals",
            "Intervals owed to a sink, by pipeline, sink and state: pending, failed "
            "(waiting for its next attempt), delivered, dead (finished with dead letters).",
            labels=["pipeline", "sink", "state"],
        )
        self.letters = GaugeMetricFamily(
            "headwater_dead_letters",
            "Dead letters not replayed, by pipeline and sink.",
            labels=["pipeline", "sink"],
        )
        self.up = GaugeMetricFamily(
            "headwater_run_state_up",
            "1 when the run state answered this scrape, 0 when it did not (the pipeline "
            "and delivery metrics are then left out).",
        )

    def all(self) -> list[Metric]:
        return [
            self.runs, self.durations, self.missing, self.stale, self.deliveries,
            self.letters, self.up,
        ]  # fmt: skip


class StateMetrics:
    """A Prometheus collector that reads the run state at each scrape."""

    def __init__(
        self,
        state: StateStore,
        graph: Callable[[], Graph],
        until: Callable[[], datetime],
        *,
        offload_lag: OffloadLag | None = None,
    ) -> None:
        self.state = state
        self.graph = graph
        self.until = until
        self.offload_lag = offload_lag
        self._lock = threading.Lock()
        self._last_id = 0
        self._running: set[int] = set()
        # Run ids skipped by the cursor, with when they were first missed.
        self._absent: dict[int, float] = {}
        self._runs: dict[tuple[str, str], int] = {}
        self._durations: dict[str, _Durations] = {}
        # (pipeline, schedule, first start) -> (end of the last interval counted, count)
        self._expected: dict[tuple[str, str, datetime], tuple[datetime, int]] = {}

    def describe(self) -> Iterator[Metric]:
        yield from _Families().all()

    def collect(self) -> Iterator[Metric]:
        with self._lock:
            families = _Families()
            try:
                again = self._running | set(self._absent)
                self._fold(runs_since(self.state.engine, self._last_id, again))
                for (pipeline, outcome), count in sorted(self._runs.items()):
                    families.runs.add_metric([pipeline, outcome], count)
                for pipeline, seen in sorted(self._durations.items()):
                    families.durations.add_metric([pipeline], seen.buckets(), seen.total)
                self._intervals(families.missing, families.stale)
                for counts in self.state.deliveries.counts():
                    where = [counts.pipeline, counts.sink]
                    for name, value in zip(
                        DELIVERY_STATES,
                        (counts.pending, counts.failed, counts.delivered, counts.dead),
                        strict=True,
                    ):
                        families.deliveries.add_metric([*where, name], value)
                    families.letters.add_metric(where, counts.dead_letters)
                families.up.add_metric([], 1)
            except (HeadwaterError, SQLAlchemyError) as exc:
                log.warning("metrics: the run state could not be read: %s", exc)
                families = _Families()
                families.up.add_metric([], 0)
        yield from families.all()
        lag = self.offload_lag() if self.offload_lag is not None else None
        if lag is not None:
            gauge = GaugeMetricFamily(
                "headwater_offload_lag_seconds",
                "Seconds between now and the end of the last arrival interval offloaded from "
                "the hot store into the warehouse.",
            )
            gauge.add_metric([], lag)
            yield gauge

    def _fold(self, since: RunsSince) -> None:
        for run in since.finished:
            self._count(run)
        self._running = since.running
        self._last_id = since.last_id
        # An id still absent after a while was rolled back, not committed late.
        now = time.monotonic()
        self._absent = {
            id_: self._absent.get(id_, now)
            for id_ in since.absent
            if now - self._absent.get(id_, now) < ABSENT_SECONDS
        }

    def _count(self, run: FinishedRun) -> None:
        key = (run.pipeline, run.outcome)
        self._runs[key] = self._runs.get(key, 0) + 1
        self._durations.setdefault(run.pipeline, _Durations()).add(run.seconds)

    def _intervals(self, missing: GaugeMetricFamily, stale: GaugeMetricFamily) -> None:
        try:
            graph = self.graph()
        except HeadwaterError as exc:
            log.debug("metrics: pipelines do not load: %s", exc)
            return
        until = self.until()
        for pipeline in graph:
            start = self._first(pipeline)
            counts = interval_counts(
                self.state.engine,
                pipeline.name,
                start if start is not None else until,
                until,
            )
            expected = self._expected_count(pipeline, start, until) if start is not None else 0
            missing.add_metric([pipeline.name], max(expected - counts.recorded, 0))
            stale.add_metric([pipeline.name], counts.stale)

    def _first(self, pipeline: Pipeline) -> datetime | None:
        """Where an incremental pipeline's intervals begin, read without the warehouse."""
        if not pipeline.incremental:
            return None
        declared = pipeline.start()
        if declared is not None:
            return cron_floor(pipeline.header.schedule, declared)
        first = first_interval(self.state.engine, pipeline.name)
        return cron_floor(pipeline.header.schedule, first) if first is not None else None

    def _expected_count(self, pipeline: Pipeline, start: datetime, until: datetime) -> int:
        """Whole intervals in ``[start, until)``, counted on from the last scrape's count."""
        schedule = pipeline.header.schedule
        key = (pipeline.name, schedule, start)
        reached, count = self._expected.get(key, (start, 0))
        if until < reached:
            reached, count = start, 0
        for interval in iter_intervals(schedule, reached, until):
            count += 1
            reached = interval.end
        self._expected[key] = (reached, count)
        return count
