"""What is due: missing intervals, intervals re-opened by late events, stale downstream.

The watermark rule for event-time pipelines: each pipeline keeps an
``arrival_mark``. On every pass, the events that arrived in
``[arrival_mark, floor)`` are grouped by the interval their ``timestamp`` falls
in; every done interval among them is marked stale and runs again. ``floor`` is
the arrival time below which every event is committed (the collector knows its
in-flight requests), so no late event is missed, however late, and no fixed
lookback is needed. Re-runs flow downstream: an interval of a reader is stale
once an overlapping interval of a pipeline it reads was published after it.
"""

from __future__ import annotations

import bisect
import logging
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Literal

from headwater.core.types import Interval
from headwater.process import ranges, sql
from headwater.process.definition import BUILTIN_TABLES, Pipeline
from headwater.process.graph import Graph
from headwater.process.retention import Floors, Retired
from headwater.process.schedule import floor as cron_floor
from headwater.process.schedule import interval_at, intervals, iter_intervals, latest_tick
from headwater.state import StateStore
from headwater.state.errors import LeaseHeld
from headwater.state.leases import TTL, Lease
from headwater.state.runs import GapHints, IntervalState
from headwater.store.engine import Engine

log = logging.getLogger(__name__)

_EARLIEST = {
    "received_at": "SELECT min(received_at) AS t FROM events",
    "timestamp": "SELECT min(timestamp) AS t FROM events",
}
#: The same below a bound: the engine skips the blocks of events whose times are all past
#: it (events are stored about in time order), where the whole minimum reads the column.
_EARLIEST_BELOW = {
    "received_at": "SELECT min(received_at) AS t FROM events WHERE received_at <= $bound",
    "timestamp": "SELECT min(timestamp) AS t FROM events WHERE timestamp <= $bound",
}


class Planner:
    """Decides which intervals of which pipelines should run now."""

    def __init__(
        self,
        graph: Graph,
        engine: Engine,
        state: StateStore,
        *,
        lease_ttl: timedelta = TTL,
        floors: Floors | None = None,
        earliest: dict[str, datetime] | None = None,
        gaps: dict[str, GapHints] | None = None,
    ) -> None:
        """``floors``: where retention retired each pipeline's intervals (none: kept for
        good); retired intervals are never due. ``earliest`` and ``gaps``: the earliest
        event time per column and the first gaps found by earlier passes (per pipeline
        version: another may have another schedule), kept by the caller between passes
        (see :meth:`_earliest` and :meth:`~headwater.state.runs.RunLog.first_gap`)."""
        self.graph = graph
        self.floors = floors
        self.engine = engine
        self.state = state
        self.runs = state.runs
        self._lease_ttl = lease_ttl
        self._starts: dict[str, datetime | None] = {}
        self._gaps: dict[str, datetime] = {}
        self._failures: dict[tuple[str, datetime], set[datetime]] = {}
        self._published: dict[str, bool] = {}
        self._beyond: dict[str, dict[datetime, IntervalState]] = {}
        self._earliest_seen = {} if earliest is None else earliest
        self._gap_hints: dict[str, GapHints] = {} if gaps is None else gaps

    # -- starts --------------------------------------------------------------

    def retired(self, pipeline: Pipeline) -> Retired | None:
        """Where ``pipeline``'s retired intervals end (``None``: none is)."""
        return None if self.floors is None else self.floors.of(pipeline)

    def _cursor(self, pipeline: Pipeline, start: datetime) -> datetime:
        """Where ``pipeline``'s intervals are looked at from: its first interval, or its
        first one retention did not retire."""
        cursor = cron_floor(pipeline.header.schedule, start)
        retired = self.retired(pipeline)
        return cursor if retired is None else max(cursor, retired.before)

    def start(self, pipeline: Pipeline) -> datetime | None:
        """The first interval's start: from the header, else the earliest input data."""
        if pipeline.name not in self._starts:
            self._starts[pipeline.name] = self._start(pipeline)
        return self._starts[pipeline.name]

    def _start(self, pipeline: Pipeline) -> datetime | None:
        declared = pipeline.start()
        if declared is not None:
            return declared
        candidates: list[datetime] = []
        if pipeline.inputs & BUILTIN_TABLES:
            column = pipeline.header.time if pipeline.incremental else "received_at"
            value = self._earliest(column)
            if value is not None:
                candidates.append(value)
        for name in pipeline.inputs - BUILTIN_TABLES:
            upstream = self.start(self.graph[name])
            if upstream is not None:
                candidates.append(upstream)
        return min(candidates) if candidates else None

    def _hints(self, pipeline: Pipeline) -> GapHints:
        return self._gap_hints.setdefault(pipeline.version, {})

    def _earliest(self, column: str) -> datetime | None:
        """The earliest ``column`` of the events. Asked first below the one an earlier pass
        found, which reads only the oldest blocks: when an event is at or below it, the
        earliest of those is the earliest of all (an older one imported since included);
        when none is (those were deleted), the whole column is read."""
        value: object = None
        seen = self._earliest_seen.get(column)
        if seen is not None:
            query = sql.internal(_EARLIEST_BELOW[column], self.engine.dialect)
            value = self.engine.select(query, {"bound": seen}).table["t"][0].as_py()
        if value is None:
            query = sql.internal(_EARLIEST[column], self.engine.dialect)
            value = self.engine.select(query, {}).table["t"][0].as_py()
        if not isinstance(value, datetime):
            return None
        self._earliest_seen[column] = value
        return value

    # -- late events and staleness --------------------------------------------

    def detect_late(self, floor: datetime, only: str | None = None) -> dict[str, int]:
        """Mark done event-time intervals that received events since the last pass (of
        every pipeline, or of ``only``)."""
        reopened: dict[str, int] = {}
        for pipeline in self.graph:
            if only is not None and pipeline.name != only:
                continue
            if not (pipeline.incremental and pipeline.header.time == "timestamp"):
                continue
            if "events" not in pipeline.inputs:
                continue
            try:
                with Lease(self.state.leases, pipeline.name, self._lease_ttl):
                    count = self._reopen(pipeline, floor)
            except LeaseHeld:
                # A run holds it: look next pass, from the same mark, so the events
                # that arrive while it runs are still checked after it records.
                continue
            if count:
                reopened[pipeline.name] = count
                log.info("%s: %d intervals re-opened by late events", pipeline.name, count)
        return reopened

    def _reopen(self, pipeline: Pipeline, floor: datetime) -> int:
        count = 0
        mark = self.runs.watermark(pipeline.name)
        if mark is not None and mark < floor:
            query = sql.internal(
                "SELECT DISTINCT date_trunc('minute', timestamp) AS m FROM events "
                "WHERE received_at >= $start AND received_at < $end",
                self.engine.dialect,
            )
            table = self.engine.select(query, {"start": mark, "end": floor}).table
            minutes = sorted(m for m in table["m"].to_pylist() if m is not None)
            count = self.runs.mark_stale(
                pipeline.name, self._reading(pipeline, minutes), "late events arrived"
            )
        if mark is None or mark < floor:
            self.runs.set_watermark(pipeline.name, floor)
        return count

    def _reading(self, pipeline: Pipeline, minutes: list[datetime]) -> set[datetime]:
        """The done intervals whose read range of ``events`` holds one of ``minutes`` (the
        minutes late events belong to): the interval itself, and with a trailing window,
        every later one whose window reaches back to it."""
        found: set[datetime] = set()
        if not minutes:
            return found
        for start, state in self.runs.intervals(pipeline.name).items():
            if state.status != "done":
                continue
            read = pipeline.window("events", "timestamp", state.interval)
            # Minutes are truncated: one before the window's start may hold a later second.
            index = bisect.bisect_left(minutes, read.start - timedelta(minutes=1))
            if index < len(minutes) and minutes[index] < read.end:
                found.add(start)
        return found

    def propagate(self, pipeline: Pipeline) -> int:
        """Mark intervals of ``pipeline`` stale whose read range of an input holds an
        interval published after them (or stale itself)."""
        names = pipeline.inputs - BUILTIN_TABLES
        if not names:
            return 0
        stale: set[datetime] = set()
        for name in names:
            theirs = self.runs.summary(name)
            if theirs.newest_done_at is None:
                continue
            # Only an interval of ours done before the newest of theirs can have missed it;
            # a stale one of theirs makes every reader of it stale, whenever done. Most
            # passes nothing changed, and nothing of either is read.
            mine = self.runs.intervals(
                pipeline.name, done_before=None if theirs.stale else theirs.newest_done_at
            )
            candidates = [
                s for s in mine.values() if s.status == "done" and s.interval.start not in stale
            ]
            if not candidates:
                continue
            oldest = min(s.done_at for s in candidates)
            upstream = sorted(
                self.runs.intervals(name, changed_after=oldest).values(), key=lambda s: s.interval
            )
            starts = [s.interval.start for s in upstream]
            source = self.graph[name]
            for state in candidates:
                for other in _overlapping(upstream, starts, self._read(pipeline, source, state)):
                    if other.done_at > state.done_at or other.status == "stale":
                        stale.add(state.interval.start)
                        break
        return self.runs.mark_stale(pipeline.name, stale, "an input was re-published")

    @staticmethod
    def _read(pipeline: Pipeline, source: Pipeline, state: IntervalState) -> Interval | None:
        """What ``pipeline`` read of ``source`` when it ran ``state``'s interval: None for
        everything (a full pipeline reads all of its inputs)."""
        if not pipeline.incremental:
            return None
        if not source.incremental or source.header.time_column is None:
            return state.interval  # a full input: as it stood over the interval
        return pipeline.window(source.name, source.header.time_column, state.interval)

    # -- due intervals -----------------------------------------------------------

    def due(
        self,
        pipeline: Pipeline,
        now: datetime,
        floor: datetime,
        limit: int,
        *,
        retry_failed: bool = False,
    ) -> list[Interval]:
        """Intervals to run now, oldest first, at most ``limit``; only when inputs are ready.
        Intervals that failed for good with this version wait for a change, or for a run
        by hand (``retry_failed``)."""
        if not pipeline.incremental:
            latest = latest_tick(pipeline.header.schedule, now)
            state = self.runs.intervals(pipeline.name, latest.start, latest.end).get(latest.start)
            if state is not None and state.status == "done":
                return []
            if not retry_failed and latest.start in self._failed(pipeline, latest.start):
                return []  # failed for good: runs again when the file changes, or by hand
            return [latest] if self._readiness(pipeline, latest) == "ready" else []
        start = self.start(pipeline)
        if start is None:
            return []
        until = min(now, floor)
        # Skip the done history in one query: walking (or reading) every interval since
        # the first event would grow with the age of the project.
        cursor = self._cursor(pipeline, start)
        first = self.runs.first_gap(pipeline.name, cursor, self._hints(pipeline))
        done = self.runs.intervals(pipeline.name, first, until)
        failed = set() if retry_failed else self._failed(pipeline, first)
        todo: list[Interval] = []
        for interval in iter_intervals(pipeline.header.schedule, first, until):
            state = done.get(interval.start)
            if state is not None and state.status == "done":
                continue
            if interval.start in failed:
                continue
            readiness = self._readiness(pipeline, interval)
            if readiness == "waiting":
                break  # later intervals wait for the same inputs; keep order
            if readiness == "blocked":
                continue  # it reads an interval that failed for good; later ones may not
            todo.append(interval)
            if len(todo) >= limit:
                break
        return todo

    def missing(self, pipeline: Pipeline, start: datetime, end: datetime) -> list[Interval]:
        """Intervals in ``[start, end)`` not done (or stale): what a backfill runs."""
        if not pipeline.incremental:
            return [latest_tick(pipeline.header.schedule, end)]
        if self.floors is not None:
            self.floors.refuse_below(pipeline, start)
        # From the start of the interval holding `start`, which is looked up as done too.
        first = cron_floor(pipeline.header.schedule, start)
        done = self.runs.intervals(pipeline.name, first, end)
        return [
            i
            for i in intervals(pipeline.header.schedule, start, end)
            if i.start not in done or done[i.start].status != "done"
        ]

    def forget(self, names: Iterable[str]) -> None:
        """Look again at the intervals of ``names`` (published since this planner looked)."""
        for name in names:
            for cache in (self._gaps, self._published, self._beyond):
                cache.pop(name, None)
            for key in [k for k in self._failures if k[0] == name]:
                del self._failures[key]

    def ready(self, pipeline: Pipeline, interval: Interval) -> bool:
        """Whether every input interval ``interval`` reads is done."""
        return self._readiness(pipeline, interval) == "ready"

    def _readiness(
        self, pipeline: Pipeline, interval: Interval
    ) -> Literal["ready", "waiting", "blocked"]:
        """Whether every input interval ``interval`` reads is done; else ``waiting`` for one
        that will be, or ``blocked`` by one that failed for good (only a change or a run
        by hand runs it again)."""
        blocked = False
        for name in sorted(pipeline.inputs - BUILTIN_TABLES):
            upstream = self.graph[name]
            if not upstream.incremental:
                if not self._any_done(upstream):
                    return "waiting"
                continue
            first = self.start(upstream)
            if first is None:
                return "waiting"  # no interval of it exists yet
            if pipeline.incremental:
                read = pipeline.window(name, upstream.header.time_column or "", interval)
            else:
                read = interval  # a full reader waits for what its run's tick covers
            # Before the input's first interval there is nothing to wait for; a read with
            # no upper limit waits for what exists by the end of this interval.
            retired = self.retired(upstream)
            lower = max(read.start, first, retired.before if retired else first)
            upper = interval.end if read.end == ranges.LATEST else read.end
            if upper <= lower:
                continue
            gap = self._gap(upstream, first)
            if gap >= upper:
                continue  # done without a hole from its first interval on
            failed = self._failed(upstream, gap)
            if gap >= lower and gap not in failed:
                return "waiting"
            by_start = self._after_gap(upstream, gap)
            for needed in _covering(upstream, Interval(lower, upper)):
                if needed.start < gap:
                    continue  # before its first gap: done
                state = by_start.get(needed.start)
                if state is not None and state.status == "done":
                    continue
                if needed.start not in failed:
                    return "waiting"
                blocked = True
        return "blocked" if blocked else "ready"

    def _any_done(self, upstream: Pipeline) -> bool:
        """Whether a full ``upstream`` has published (once per pass)."""
        if upstream.name not in self._published:
            self._published[upstream.name] = self.runs.summary(upstream.name).done > 0
        return self._published[upstream.name]

    def _failed(self, pipeline: Pipeline, since: datetime) -> set[datetime]:
        """The starts of ``pipeline``'s intervals from ``since`` on that failed for good with
        its current version (once per pass)."""
        key = (pipeline.name, since)
        if key not in self._failures:
            found: set[datetime] = set()
            for span in self.runs.terminal_failures(pipeline.name, pipeline.version, since):
                covered = intervals(pipeline.header.schedule, span.start, span.end)
                found.update(i.start for i in covered or [span])
            self._failures[key] = found
        return self._failures[key]

    def _gap(self, upstream: Pipeline, first: datetime) -> datetime:
        """The start of ``upstream``'s first interval that is not done, from its first
        interval on (once per pass: a window over its whole history checks it, not each
        interval of it)."""
        if upstream.name not in self._gaps:
            cursor = self._cursor(upstream, first)
            self._gaps[upstream.name] = self.runs.first_gap(
                upstream.name, cursor, self._hints(upstream)
            )
        return self._gaps[upstream.name]

    def _after_gap(self, upstream: Pipeline, gap: datetime) -> dict[datetime, IntervalState]:
        """``upstream``'s intervals from its first gap on (once per pass)."""
        if upstream.name not in self._beyond:
            self._beyond[upstream.name] = self.runs.intervals(upstream.name, since=gap)
        return self._beyond[upstream.name]


def _covering(upstream: Pipeline, interval: Interval) -> list[Interval]:
    """The upstream intervals that together cover ``interval`` (the last may end after it)."""
    schedule = upstream.header.schedule
    first = interval_at(schedule, interval.start)
    last = interval_at(schedule, interval.end - timedelta(microseconds=1))
    return [first, *(i for i in intervals(schedule, first.end, last.end))]


def _overlapping(
    states: list[IntervalState], starts: list[datetime], window: Interval | None
) -> Iterable[IntervalState]:
    if window is None:
        return states
    # Intervals are sorted and disjoint: skip those that end before the window.
    index = max(bisect.bisect_right(starts, window.start) - 1, 0)
    result = []
    for state in states[index:]:
        if state.interval.start >= window.end:
            break
        if state.interval.end > window.start:
            result.append(state)
    return result
