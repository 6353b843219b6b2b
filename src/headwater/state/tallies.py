"""Counts read from the run state for metrics: runs finished, intervals recorded.

Every process that runs pipelines records in the same run state, so counts read
here include the runs of ``headwater run --due`` under cron as well as the
server's own. The queries are small: finished runs are read once each (after an
id, plus the few that were still running last time), intervals by their primary
key.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from headwater.state.runs import RUN_OUTCOMES, RunOutcome
from headwater.state.tables import intervals, runs


@dataclass(frozen=True)
class FinishedRun:
    id: int
    pipeline: str
    outcome: RunOutcome
    seconds: float


@dataclass(frozen=True)
class RunsSince:
    """Runs finished since a cursor, and the ids to look at again."""

    finished: list[FinishedRun]
    #: Runs still running.
    running: set[int]
    #: Ids asked for (or skipped, below ``last_id``) that no run has yet: on PostgreSQL a
    #: transaction that took an id may commit after one that took a larger id, or roll back.
    absent: set[int]
    #: The largest run id seen: the next cursor.
    last_id: int


def runs_since(engine: sa.Engine, after: int, again: Collection[int]) -> RunsSince:
    """Runs with an id above ``after`` or in ``again``: those finished, the ids of those
    still running, and the ids not found."""
    columns = (
        runs.c.id,
        runs.c.pipeline,
        runs.c.status,
        runs.c.error_kind,
        runs.c.started_at,
        runs.c.finished_at,
    )
    picked = runs.c.id > after
    if again:
        picked = picked | runs.c.id.in_(list(again))
    with engine.connect() as db:
        rows = db.execute(sa.select(*columns).where(picked).order_by(runs.c.id)).all()
    finished: list[FinishedRun] = []
    running: set[int] = set()
    last = after
    for id_, pipeline, status, kind, started, ended in rows:
        last = max(last, id_)
        if status == "running" or ended is None:
            running.add(id_)
            continue
        outcome: RunOutcome = (
            "succeeded"
            if status == "succeeded"
            else RUN_OUTCOMES["transient" if kind == "transient" else "terminal"]
        )
        seconds = max((ended - started).total_seconds(), 0.0)
        finished.append(FinishedRun(id_, pipeline, outcome, seconds))
    found = {row[0] for row in rows}
    absent = set(again) - found
    previous = after
    for id_ in sorted(i for i in found if i > after):
        absent.update(range(previous + 1, id_))  # ids skipped between two found
        previous = id_
    return RunsSince(finished, running, absent, last)


def first_interval(engine: sa.Engine, pipeline: str) -> datetime | None:
    """The start of the earliest interval ``pipeline`` has recorded or tried."""
    with engine.connect() as db:
        value = db.execute(
            sa.select(sa.func.min(intervals.c.start)).where(intervals.c.pipeline == pipeline)
        ).scalar()
        if value is None:
            # Never succeeded: its failed runs say where it began.
            value = db.execute(
                sa.select(sa.func.min(runs.c.interval_start)).where(runs.c.pipeline == pipeline)
            ).scalar()
    return value if isinstance(value, datetime) else None


@dataclass(frozen=True)
class IntervalCounts:
    """A pipeline's recorded intervals inside a span, and its stale ones anywhere."""

    recorded: int
    stale: int


def interval_counts(
    engine: sa.Engine, pipeline: str, start: datetime, until: datetime
) -> IntervalCounts:
    """Intervals of ``pipeline`` recorded in ``[start, until)`` (done or stale), and stale."""
    mine = intervals.c.pipeline == pipeline
    inside = mine & (intervals.c.start >= start) & (intervals.c.end <= until)
    with engine.connect() as db:
        recorded = db.execute(sa.select(sa.func.count()).where(inside)).scalar() or 0
        stale = (
            db.execute(
                sa.select(sa.func.count()).where(mine & (intervals.c.status == "stale"))
            ).scalar()
            or 0
        )
    return IntervalCounts(int(recorded), int(stale))
