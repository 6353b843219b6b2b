"""A pipeline's intervals one by one, each with its state and the run behind it.

``headwater status`` counts intervals; this says which: for each interval of a
span, whether it is done, stale (marked so, or made by an older version of the
pipeline), failed (its last run failed and nothing is published for it),
running or missing, with the run that made it or last tried it. The totals are
:func:`~headwater.process.status.status`'s own counts for the same moment, so
a page and the command line say the same numbers.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from headwater.core.types import Interval
from headwater.process.definition import Pipeline
from headwater.process.schedule import interval_at, latest_tick
from headwater.process.service import PipelineService, span
from headwater.state.runs import IntervalState, RunRecord

CellState = Literal["done", "stale", "failed", "missing", "running"]
CELL_STATES: tuple[CellState, ...] = ("done", "stale", "failed", "missing", "running")
#: Intervals shown when no span is asked for: a week of hours, four months of days.
DEFAULT_LIMIT = 168
#: The most one answer holds: a span of years of hours is asked a page at a time.
MAX_LIMIT = 2000
OLDER_VERSION = "made by an older version of the pipeline"


@dataclass(frozen=True)
class RunSummary:
    """One run of an interval, as the grid shows it."""

    id: int
    trigger: str
    status: str
    attempt: int
    started_at: datetime
    finished_at: datetime | None
    duration_seconds: float | None
    rows_read: int | None
    rows_written: int | None
    error: str | None
    error_kind: str | None
    #: The span it covered: one interval, or a batch's span.
    interval: Interval


@dataclass(frozen=True)
class Cell:
    """One interval and its state."""

    interval: Interval
    state: CellState
    #: Why it is stale (``None`` otherwise).
    reason: str | None = None
    #: The version that made it (done or stale).
    version: str | None = None
    done_at: datetime | None = None
    #: The run that made it (done or stale), else the last run that tried it.
    run: RunSummary | None = None


@dataclass(frozen=True)
class Totals:
    """``headwater status``'s counts for the pipeline (``changed``: done, by an older
    version)."""

    done: int
    missing: int
    stale: int
    changed: int


@dataclass(frozen=True)
class Grid:
    pipeline: str
    kind: str
    schedule: str
    version: str
    cells: list[Cell]
    #: Cells by state, over the cells shown.
    counts: dict[str, int]
    totals: Totals
    #: Whether earlier intervals than the first shown exist (ask with ``end``).
    earlier: bool
    #: The first interval's start (``None``: no input data yet).
    first_start: datetime | None = None


def grid(
    service: PipelineService,
    name: str,
    start: datetime | None = None,
    end: datetime | None = None,
    limit: int = DEFAULT_LIMIT,
) -> Grid:
    """The intervals of ``name`` in ``[start, end)``, at most ``limit`` of the latest ones
    (by default up to now: the span ``status`` counts)."""
    limit = max(1, min(limit, MAX_LIMIT))
    graph = service.graph()
    pipeline = graph[name]
    planner, _ = service.tools(graph)
    now = service.clock()
    floor = min(service.floor(), now)
    states = service.state.runs.intervals(name)
    first = planner.start(pipeline)
    # What status counts as expected: whole intervals from the first up to the floor.
    expected = (
        span(pipeline.header.schedule, first, floor, True)
        if pipeline.incremental and first is not None
        else []
    )
    totals = _totals(pipeline, states, expected)
    shown = _shown(pipeline, states, expected, now, start, end)
    earlier = len(shown) > limit
    shown = shown[-limit:]
    runs = _runs(service, name, shown)
    cells = [_cell(pipeline, interval, states.get(interval.start), runs) for interval in shown]
    counts: dict[str, int] = {
        state: sum(1 for c in cells if c.state == state) for state in CELL_STATES
    }
    return Grid(
        pipeline=name,
        kind=pipeline.header.kind,
        schedule=pipeline.header.schedule,
        version=pipeline.version,
        cells=cells,
        counts=counts,
        totals=totals,
        earlier=earlier,
        first_start=first,
    )


def interval_runs(
    service: PipelineService, name: str, moment: datetime
) -> tuple[Cell, list[RunSummary]]:
    """The interval of ``name`` that holds ``moment``, and every run that covered it,
    newest first."""
    pipeline = service.graph()[name]
    interval = interval_at(pipeline.header.schedule, moment)
    state = service.state.runs.intervals(name, interval.start, interval.end).get(interval.start)
    runs = _runs(service, name, [interval])
    return _cell(pipeline, interval, state, runs), sorted(runs, key=lambda r: r.id, reverse=True)


def _totals(
    pipeline: Pipeline, states: dict[datetime, IntervalState], expected: list[Interval]
) -> Totals:
    done = [s for s in states.values() if s.status == "done"]
    return Totals(
        done=len(done),
        missing=sum(1 for i in expected if i.start not in states),
        stale=sum(1 for s in states.values() if s.status == "stale"),
        changed=sum(1 for s in done if s.version != pipeline.version),
    )


def _shown(
    pipeline: Pipeline,
    states: dict[datetime, IntervalState],
    expected: list[Interval],
    now: datetime,
    start: datetime | None,
    end: datetime | None,
) -> list[Interval]:
    """The intervals of the span asked for, oldest first: the expected ones and any
    recorded beside them (a full pipeline's ticks, or intervals past the floor)."""
    found = {i.start: i for i in expected}
    if start is not None and end is not None and pipeline.incremental:
        # Only whole intervals: a later one has not happened yet; nor is one before the
        # pipeline's first (its first expected or recorded) missing.
        firsts = [i.start for i in expected[:1]] + [min(states, default=start)]
        lower = max(start, min(firsts))
        whole = span(pipeline.header.schedule, lower, min(end, now), True)
        found.update((i.start, i) for i in whole)
    if not pipeline.incremental:
        latest = latest_tick(pipeline.header.schedule, now)
        found.setdefault(latest.start, latest)
    found.update((s.interval.start, s.interval) for s in states.values())
    chosen = sorted(found.values(), key=lambda i: i.start)
    return [
        i for i in chosen if (start is None or i.end > start) and (end is None or i.start < end)
    ]


def _runs(service: PipelineService, name: str, shown: list[Interval]) -> list[RunSummary]:
    if not shown:
        return []
    records = service.state.runs.runs_over(name, shown[0].start, shown[-1].end)
    return [_summary(r) for r in records]


def _summary(run: RunRecord) -> RunSummary:
    duration = (
        (run.finished_at - run.started_at).total_seconds() if run.finished_at is not None else None
    )
    return RunSummary(
        id=run.id,
        trigger=run.trigger,
        status=run.status,
        attempt=run.attempt,
        started_at=run.started_at,
        finished_at=run.finished_at,
        duration_seconds=duration,
        rows_read=run.rows_read,
        rows_written=run.rows_written,
        error=run.error,
        error_kind=run.error_kind,
        interval=run.interval,
    )


def _cell(
    pipeline: Pipeline,
    interval: Interval,
    state: IntervalState | None,
    runs: Iterable[RunSummary],
) -> Cell:
    covering = [
        r for r in runs if r.interval.start < interval.end and r.interval.end > interval.start
    ]
    last = max(covering, key=lambda r: r.id, default=None)
    if last is not None and last.status == "running":
        return Cell(interval, "running", run=last)
    if (
        state is not None
        and last is not None
        and last.status == "failed"
        and last.id > state.run_id
        and (state.status == "stale" or state.version != pipeline.version)
    ):
        # Run again and failed: the older output is still what readers get.
        return Cell(interval, "failed", version=state.version, done_at=state.done_at, run=last)
    if state is not None:
        made = next((r for r in covering if r.id == state.run_id), None)
        stale = state.status == "stale" or state.version != pipeline.version
        reason = (state.reason or "marked stale") if state.status == "stale" else OLDER_VERSION
        return Cell(
            interval,
            "stale" if stale else "done",
            reason=reason if stale else None,
            version=state.version,
            done_at=state.done_at,
            run=made,
        )
    if last is not None and last.status == "failed":
        return Cell(interval, "failed", run=last)
    return Cell(interval, "missing", run=last)
