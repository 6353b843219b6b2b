"""Retention: old rows of the event tables and of pipeline outputs dropped, a bounded batch
at a time, and the intervals that would read them retired.

``[retention]`` says how long ``events`` and ``failed_events`` keep their rows, by
``received_at``: arrival is what partitions the event tables and what the offload moves
by, it only grows (a late event, whatever its ``timestamp``, is kept as long as any
other from its arrival on), and a dropped interval of arrival never receives a row
again. A pipeline's ``retain`` says the same of its output, by its ``time_column``, in
whole intervals of its schedule.

Retention and the planner agree through :class:`Floors`: an interval of an incremental
pipeline that reads rows retention drops (events older than the horizon, an input's
retired intervals) or whose own rows it drops is *retired*: the scheduler never runs it
(else it would compute it again from what is left, empty, and retention drop it again,
in a loop), and a backfill or a run by hand below it is refused, naming the setting.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from headwater.core.clock import parse_duration, utc_now
from headwater.core.errors import HeadwaterError
from headwater.core.logs import fields
from headwater.process import ranges
from headwater.process.definition import Pipeline
from headwater.process.errors import PipelineError
from headwater.process.graph import Graph
from headwater.process.schedule import floor as cron_floor
from headwater.process.schedule import interval_at
from headwater.state import StateStore
from headwater.state.errors import LeaseHeld
from headwater.state.leases import Lease
from headwater.store.engine import Engine, delete_in_batches
from headwater.store.settings import RetentionSettings

log = logging.getLogger(__name__)

#: The lease one retaining process holds (a pipeline's name cannot hold a colon).
LEASE = "retention:store"
#: Batches of ``batch_rows`` one pass deletes per table at most: a backlog takes several
#: passes, and none holds the store for long.
PASS_BATCHES = 10
#: How often a process whose last pass left nothing behind runs again.
EVERY = timedelta(minutes=10)
#: Intervals whose input expires this soon are retired already: a run started now never
#: races the pass that drops its input.
MARGIN = timedelta(hours=1)
#: The event tables retention keeps by arrival, and the key of ``[retention]`` for each.
EVENT_TABLES = ("events", "failed_events")


@dataclass(frozen=True, slots=True)
class Retention:
    """``[retention]`` as durations (``None``: kept for good), and where it was set (for
    messages)."""

    events: timedelta | None = None
    failed_events: timedelta | None = None
    batch_rows: int = 10_000
    written: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_settings(cls, settings: RetentionSettings) -> Retention:
        written = {
            key: value for key in EVENT_TABLES if (value := getattr(settings, key)) is not None
        }
        return cls(
            events=parse_duration(settings.events) if settings.events else None,
            failed_events=parse_duration(settings.failed_events)
            if settings.failed_events
            else None,
            batch_rows=settings.batch_rows,
            written=written,
        )

    def of(self, table: str) -> timedelta | None:
        return self.events if table == "events" else self.failed_events


@dataclass(frozen=True, slots=True)
class Retired:
    """A pipeline's intervals before ``before`` are retired, and why."""

    before: datetime
    why: str


class Floors:
    """Where each pipeline's retired intervals end, at ``now`` (once per pass)."""

    def __init__(self, graph: Graph, retention: Retention, now: datetime) -> None:
        self.graph = graph
        self.retention = retention
        self.now = now
        self._found: dict[str, Retired | None] = {}

    def of(self, pipeline: Pipeline) -> Retired | None:
        if pipeline.name not in self._found:
            self._found[pipeline.name] = self._of(pipeline)
        return self._found[pipeline.name]

    def _of(self, pipeline: Pipeline) -> Retired | None:
        if not pipeline.incremental:
            return None
        schedule = pipeline.header.schedule
        found: list[Retired] = []
        retain = pipeline.header.retain
        if retain:
            kept = parse_duration(retain)
            found.append(
                Retired(
                    cron_floor(schedule, self.now - kept),
                    f'its output keeps {retain} (retain = "{retain}")',
                )
            )
        for table in EVENT_TABLES:
            kept_for = self.retention.of(table)
            if table in pipeline.inputs and kept_for is not None:
                horizon = self.now - kept_for + MARGIN
                first = _first_reading_from(pipeline, table, pipeline.header.time, horizon)
                if first is not None:
                    text = self.retention.written.get(table, "")
                    found.append(
                        Retired(first, f'{table} are kept {text} ([retention] {table} = "{text}")')
                    )
        for name in sorted(pipeline.inputs - set(EVENT_TABLES)):
            upstream = self.graph.pipelines.get(name)
            if upstream is None or upstream.header.time_column is None:
                continue
            theirs = self.of(upstream)
            if theirs is None:
                continue
            first = _first_reading_from(pipeline, name, upstream.header.time_column, theirs.before)
            if first is not None:
                found.append(Retired(first, f"it reads {name}, whose {theirs.why}"))
        return max(found, key=lambda r: r.before, default=None)

    def refuse_below(self, pipeline: Pipeline, start: datetime) -> None:
        """Refuse a run of ``pipeline``'s intervals from ``start`` when some are retired."""
        retired = self.of(pipeline)
        if retired is None or start >= retired.before:
            return
        raise PipelineError(
            f"{pipeline.name}: intervals before {retired.before:%Y-%m-%dT%H:%MZ} are retired "
            f"by retention: {retired.why}; their input is dropped, so they would be computed "
            "from what is left",
            pipeline=pipeline.name,
            hint=f"start at {retired.before:%Y-%m-%dT%H:%MZ} or later, or keep longer "
            "([retention] in headwater.toml, or retain in the pipeline's header)",
        )


def _first_reading_from(
    pipeline: Pipeline, name: str, column: str, horizon: datetime
) -> datetime | None:
    """The start of ``pipeline``'s first interval whose read of ``name`` starts at or after
    ``horizon``; ``None`` when its reads have no lower bound (it reads all there is)."""
    schedule = pipeline.header.schedule
    interval = interval_at(schedule, horizon)
    if interval.start < horizon:
        interval = interval_at(schedule, interval.end)
    for _ in range(10_000):
        read = pipeline.window(name, column, interval)
        if read.start <= ranges.EARLIEST:
            return None
        if read.start >= horizon:
            return interval.start
        # Jump by what it lacks (a trailing window), at least to the next interval.
        ahead = interval_at(schedule, interval.start + (horizon - read.start))
        interval = ahead if ahead.start > interval.start else interval_at(schedule, interval.end)
    return interval.start


@dataclass(frozen=True, slots=True)
class Dropped:
    """One table's part of a pass: rows before ``horizon`` dropped, and whether none is
    left (else the next pass goes on)."""

    table: str
    horizon: datetime
    rows: int
    caught_up: bool


@dataclass(frozen=True, slots=True)
class RetentionResult:
    dropped: list[Dropped]
    errors: list[str] = field(default_factory=list)

    @property
    def rows(self) -> int:
        return sum(d.rows for d in self.dropped)


class Retainer:
    """Drops what retention no longer keeps from ``engine`` (where pipelines run and events
    are kept), a few bounded batches per table per pass."""

    def __init__(
        self,
        engine: Engine,
        state: StateStore,
        graph: Callable[[], Graph],
        retention: Callable[[], Retention],
        *,
        clock: Callable[[], datetime] = utc_now,
        lease_ttl: timedelta = timedelta(seconds=60),
        batches: int = PASS_BATCHES,
    ) -> None:
        self.engine = engine
        self.state = state
        self.graph = graph
        self.retention = retention
        self.clock = clock
        self.lease_ttl = lease_ttl
        self.batches = batches
        #: When this process's last pass left nothing behind.
        self._caught_up_at: datetime | None = None

    def targets(self, now: datetime) -> list[tuple[str, str, datetime]]:
        """Each table retention applies to: its name, the column it goes by, its horizon."""
        retention = self.retention()
        found = []
        for table in EVENT_TABLES:
            kept = retention.of(table)
            if kept is not None:
                found.append((table, "received_at", now - kept))
        for pipeline in self.graph():
            retain, column = pipeline.header.retain, pipeline.header.time_column
            if retain and column and pipeline.incremental:
                horizon = cron_floor(pipeline.header.schedule, now - parse_duration(retain))
                found.append((pipeline.name, column, horizon))
        return found

    def run(
        self, should_stop: Callable[[], bool] = bool, *, force: bool = False
    ) -> RetentionResult:
        """One pass; a process whose last pass left nothing behind waits :data:`EVERY`
        for the next (unless ``force``), and another process retaining now is left to it."""
        now = self.clock()
        if not force and self._caught_up_at is not None and now - self._caught_up_at < EVERY:
            return RetentionResult([])
        targets = self.targets(now)
        if not targets:
            return RetentionResult([])
        try:
            with Lease(self.state.leases, LEASE, self.lease_ttl) as lease:
                result = self._pass(targets, should_stop, lease)
        except LeaseHeld:
            return RetentionResult([])
        if not result.errors and all(d.caught_up for d in result.dropped):
            self._caught_up_at = now
        return result

    def _pass(
        self,
        targets: list[tuple[str, str, datetime]],
        should_stop: Callable[[], bool],
        lease: Lease,
    ) -> RetentionResult:
        batch = self.retention().batch_rows
        present = set(self.engine.list_tables()) | set(EVENT_TABLES)
        dropped: list[Dropped] = []
        errors: list[str] = []
        for table, column, horizon in targets:
            if should_stop():
                break
            if table not in present:
                continue  # an output not published yet
            lease.check()
            try:
                delete = functools.partial(self.engine.drop_before, table, column, horizon)
                rows, caught_up = delete_in_batches(delete, batch, should_stop, self.batches)
            except HeadwaterError as exc:
                log.error("retention of %s: %s", table, exc, extra=fields(table=table))
                errors.append(f"{table}: {exc}")
                continue
            self.state.retention.record(table, horizon, self.clock(), rows, caught_up)
            dropped.append(Dropped(table, horizon, rows, caught_up))
            if rows:
                log.info(
                    "retention dropped %d rows of %s before %s",
                    rows,
                    table,
                    f"{horizon:%Y-%m-%dT%H:%MZ}",
                    extra=fields(table=table, dropped=rows, before=horizon.isoformat()),
                )
        return RetentionResult(dropped, errors)
