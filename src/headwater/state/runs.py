"""Runs, intervals, versions and watermarks: what ran, what is done, what is stale.

An interval is recorded done in the same transaction that records its run as
succeeded and owes its deliveries, and only while the run still holds its
pipeline's lease (its fencing token): a run that stalled past its lease and
lost it to another cannot record over the other's work.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import sqlalchemy as sa

from headwater.core.clock import utc_now
from headwater.core.errors import TransientError
from headwater.core.types import Interval
from headwater.state import deliveries
from headwater.state.errors import LeaseLost
from headwater.state.leases import Holder, release_in, still_held
from headwater.state.tables import intervals, record, runs, versions, watermarks

RunStatus = Literal["running", "succeeded", "failed"]
IntervalStatus = Literal["done", "stale"]
Trigger = Literal["schedule", "backfill", "manual"]
#: Whether retrying a failed run can help: the type of the error it failed with.
ErrorKind = Literal["transient", "terminal"]


#: What a finished run came to, as logs and metrics name it: ``transient`` failed with an
#: error that retrying can help (the runner and the scheduler retry it), ``failed`` with one
#: it cannot (it waits for a new version of the pipeline or a manual run).
RunOutcome = Literal["succeeded", "transient", "failed"]
RUN_OUTCOMES: dict[ErrorKind, RunOutcome] = {"transient": "transient", "terminal": "failed"}


def error_kind(exc: BaseException) -> ErrorKind:
    """How a run failed with ``exc``: ``transient`` only when its type says retrying helps."""
    return "transient" if isinstance(exc, TransientError) else "terminal"


@dataclass(frozen=True)
class IntervalState:
    """A published interval."""

    interval: Interval
    version: str
    status: IntervalStatus
    #: The run whose output the interval holds.
    run_id: int
    done_at: datetime
    reason: str | None


@dataclass(frozen=True)
class IntervalsSummary:
    """A pipeline's recorded intervals in a few numbers."""

    count: int
    oldest_done_at: datetime | None
    newest_done_at: datetime | None
    stale: int
    done: int


@dataclass(frozen=True)
class RunRecord:
    id: int
    pipeline: str
    interval: Interval
    trigger: Trigger
    status: RunStatus
    attempt: int
    started_at: datetime
    finished_at: datetime | None
    rows_read: int | None
    rows_written: int | None
    error: str | None
    error_kind: ErrorKind | None


# The statements every run makes, built once (building one costs as much as SQLite
# running it); values bound by name.
_VERSION_KNOWN = sa.select(versions.c.version).where(
    versions.c.pipeline == sa.bindparam("pipeline"), versions.c.version == sa.bindparam("version")
)
_INTERRUPTED = (
    runs.update()
    .where(runs.c.status == "running", runs.c.pipeline.in_(sa.bindparam("names", expanding=True)))
    .values(
        status="failed",
        finished_at=sa.bindparam("now"),
        error="interrupted: the process running it stopped",
        error_kind="transient",
    )
)
_SUCCEEDED = (
    runs.update()
    .where(runs.c.id == sa.bindparam("run_id"))
    .values(
        status="succeeded",
        finished_at=sa.bindparam("now"),
        rows_read=sa.bindparam("read"),
        rows_written=sa.bindparam("written"),
    )
)
_STARTED_AT = sa.select(runs.c.started_at).where(runs.c.id == sa.bindparam("run_id"))
_FORGET_ALL = intervals.delete().where(intervals.c.pipeline == sa.bindparam("pipeline"))
_FORGET_SPAN = intervals.delete().where(
    intervals.c.pipeline == sa.bindparam("pipeline"),
    intervals.c.start >= sa.bindparam("since"),
    intervals.c.start < sa.bindparam("before"),
)

# What the planner asks on every pass, for every pipeline (see RunLog.first_gap).
_DONE = (intervals.c.pipeline == sa.bindparam("pipeline")) & (intervals.c.status == "done")
_DONE_AT = sa.select(intervals.c.end).where(_DONE, intervals.c.start == sa.bindparam("cursor"))
_NEXT = intervals.alias("next")
_GAP_END = sa.select(sa.func.min(intervals.c.end)).where(
    _DONE,
    intervals.c.start >= sa.bindparam("cursor"),
    ~sa.exists().where(
        _NEXT.c.pipeline == sa.bindparam("pipeline"),
        _NEXT.c.start == intervals.c.end,
        _NEXT.c.status == "done",
    ),
)
_COUNT_DONE = sa.select(sa.func.count()).where(
    _DONE, intervals.c.start >= sa.bindparam("start"), intervals.c.start < sa.bindparam("end")
)
_LATER = runs.alias("later")
_TERMINAL = sa.select(runs.c.interval_start, runs.c.interval_end).where(
    runs.c.pipeline == sa.bindparam("pipeline"),
    runs.c.status == "failed",
    runs.c.error_kind == "terminal",
    runs.c.version == sa.bindparam("version"),
    ~sa.exists().where(
        _LATER.c.pipeline == sa.bindparam("pipeline"),
        _LATER.c.id > runs.c.id,
        _LATER.c.interval_start < runs.c.interval_end,
        _LATER.c.interval_end > runs.c.interval_start,
    ),
)
_TERMINAL_SINCE = _TERMINAL.where(runs.c.interval_end > sa.bindparam("since"))


class RunLog:
    """Reads and writes runs, intervals, versions and watermarks."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def start_run(
        self, pipeline: str, version: str, interval: Interval, trigger: Trigger, attempt: int
    ) -> int:
        """Record a run as running (and the pipeline's version when it is new)."""
        with self.engine.begin() as db:
            return self.start_run_in(db, pipeline, version, interval, trigger, attempt)

    @staticmethod
    def start_run_in(
        db: sa.Connection,
        pipeline: str,
        version: str,
        interval: Interval,
        trigger: Trigger,
        attempt: int,
    ) -> int:
        """:meth:`start_run` inside the transaction of ``db`` (the one that takes the lease,
        so a run starts in one metadata transaction)."""
        named = {"pipeline": pipeline, "version": version}
        if db.execute(_VERSION_KNOWN, named).first() is None:
            db.execute(versions.insert(), {**named, "first_seen": utc_now()})
        result = db.execute(
            runs.insert(),
            {
                **named,
                "interval_start": interval.start,
                "interval_end": interval.end,
                "trigger": trigger,
                "status": "running",
                "attempt": attempt,
                "started_at": utc_now(),
            },
        )
        key = result.inserted_primary_key
        return int(key[0]) if key else 0

    def succeed(
        self,
        run_id: int,
        pipeline: str,
        version: str,
        interval: Interval,
        *,
        rows_read: int | None,
        rows_written: int,
        record_interval: bool,
        holder: Holder,
        sinks: Sequence[str] = (),
        whole_table: bool = False,
        each: Sequence[Interval] = (),
        release: bool = False,
        then: Callable[[sa.Connection], None] | None = None,
    ) -> None:
        """Record a published run, its interval as done and its deliveries as owed, in one
        transaction that holds only while ``holder`` still holds the pipeline's lease
        (:class:`LeaseLost` otherwise, and nothing is recorded).

        The interval's ``done_at`` is when the run *started*: an input published
        after that may not be in its output, so readers compare against it.

        ``whole_table``: the run replaced its whole table (a full refresh), so the
        intervals earlier runs recorded describe nothing published any more and are
        dropped; one stale from before would otherwise stay stale for good.

        ``each``: the intervals a batch run covered (``interval`` is their span), each
        recorded done and owed to the sinks as if run alone. ``release``: the lease is
        released in the same transaction (a run ends in one metadata transaction).
        ``then``: more of the run's record, written in the same transaction (the model
        versions it scored with).
        """
        now = utc_now()
        with self.engine.begin() as db:
            if not still_held(db, holder):
                raise LeaseLost(holder.name, holder.token)
            if then is not None:
                then(db)
            db.execute(
                _SUCCEEDED,
                {"run_id": run_id, "now": now, "read": rows_read, "written": rows_written},
            )
            if record_interval:
                started = db.execute(_STARTED_AT, {"run_id": run_id}).scalar()
                recorded = list(each) or [interval]
                if whole_table:
                    db.execute(_FORGET_ALL, {"pipeline": pipeline})
                else:
                    span = {"since": recorded[0].start, "before": recorded[-1].end}
                    db.execute(_FORGET_SPAN, {"pipeline": pipeline, **span})
                db.execute(
                    intervals.insert(),
                    [
                        {
                            "pipeline": pipeline,
                            "start": one.start,
                            "end": one.end,
                            "version": version,
                            "status": "done",
                            "run_id": run_id,
                            "done_at": started or now,
                            "reason": None,
                        }
                        for one in recorded
                    ],
                )
                for one in recorded:
                    deliveries.schedule(db, pipeline, sinks, one, run_id)
            if release:
                release_in(db, holder)

    def fail(self, run_id: int, error: str, kind: ErrorKind) -> None:
        with self.engine.begin() as db:
            db.execute(
                runs.update()
                .where(runs.c.id == run_id)
                .values(status="failed", finished_at=utc_now(), error=error, error_kind=kind)
            )

    def interrupted(self, pipelines: Iterable[str]) -> int:
        """Mark runs left ``running`` by a process that died; call while holding their leases."""
        with self.engine.begin() as db:
            return self.interrupted_in(db, pipelines)

    @staticmethod
    def interrupted_in(db: sa.Connection, pipelines: Iterable[str]) -> int:
        """:meth:`interrupted` inside the transaction of ``db``."""
        result = db.execute(_INTERRUPTED, {"names": list(pipelines), "now": utc_now()})
        return int(result.rowcount or 0)

    def intervals(
        self,
        pipeline: str,
        since: datetime | None = None,
        before: datetime | None = None,
        *,
        done_before: datetime | None = None,
        changed_after: datetime | None = None,
    ) -> dict[datetime, IntervalState]:
        """The recorded intervals of ``pipeline``: those starting in ``[since, before)``,
        done before ``done_before``, done after ``changed_after`` or stale."""
        query = sa.select(intervals).where(intervals.c.pipeline == pipeline)
        if since is not None:
            query = query.where(intervals.c.start >= since)
        if before is not None:
            query = query.where(intervals.c.start < before)
        if done_before is not None:
            query = query.where(intervals.c.done_at < done_before)
        if changed_after is not None:
            query = query.where(
                (intervals.c.done_at > changed_after) | (intervals.c.status == "stale")
            )
        with self.engine.connect() as db:
            rows = db.execute(query).mappings()
            return {
                row["start"]: record(
                    IntervalState, row, interval=Interval(row["start"], row["end"])
                )
                for row in rows
            }

    def first_gap(self, pipeline: str, cursor: datetime, known: GapHints | None = None) -> datetime:
        """The start of ``pipeline``'s first interval from ``cursor`` on that is not done (an
        interval starts where the one before it ends), asked of the database: the done
        history is not read.

        ``known``: what earlier calls found, kept by the caller between passes, keyed by
        ``(pipeline, cursor)``, one mapping per version of the pipeline (so of its
        schedule). Finding the gap walks every done interval from ``cursor`` (40 ms
        a pass after a year of hours); with a gap found before, a count of the done
        intervals before it tells whether they all still are, and only those from it
        on are walked."""
        with self.engine.connect() as db:
            hint = known.get((pipeline, cursor)) if known is not None else None
            start, before = cursor, 0
            if hint is not None and hint[1] == _count_done(db, pipeline, cursor, hint[0]):
                # The same done intervals from the cursor to the gap (one schedule: a
                # start fixes its interval, so the same count is the same intervals).
                start, before = hint
            gap = _gap_from(db, pipeline, start)
            if known is not None:
                known[(pipeline, cursor)] = (gap, before + _count_done(db, pipeline, start, gap))
        return gap

    def summary(self, pipeline: str) -> IntervalsSummary:
        """What the planner checks before reading any interval of ``pipeline``."""
        with self.engine.connect() as db:
            row = db.execute(
                sa.select(
                    sa.func.count(),
                    sa.func.min(intervals.c.done_at),
                    sa.func.max(intervals.c.done_at),
                    sa.func.count().filter(intervals.c.status == "stale"),
                    sa.func.count().filter(intervals.c.status == "done"),
                ).where(intervals.c.pipeline == pipeline)
            ).one()
        return IntervalsSummary(int(row[0]), row[1], row[2], int(row[3]), int(row[4]))

    def mark_stale(self, pipeline: str, starts: Iterable[datetime], reason: str) -> int:
        starts = list(starts)
        if not starts:
            return 0
        with self.engine.begin() as db:
            result = db.execute(
                intervals.update()
                .where(
                    intervals.c.pipeline == pipeline,
                    intervals.c.start.in_(starts),
                    intervals.c.status == "done",
                )
                .values(status="stale", reason=reason)
            )
            return int(result.rowcount or 0)

    def published(self) -> dict[str, str]:
        """Each pipeline with intervals recorded, and the version of its latest one."""
        with self.engine.connect() as db:
            rows = db.execute(
                sa.select(intervals.c.pipeline, intervals.c.version).order_by(
                    intervals.c.pipeline, intervals.c.start
                )
            ).all()
        return {str(pipeline): str(version) for pipeline, version in rows}

    def rows_read(self, pipeline: str) -> int | None:
        """Rows the runs that made ``pipeline``'s recorded intervals read (``None``: no
        run of it said)."""
        with self.engine.connect() as db:
            total = db.execute(
                sa.select(sa.func.sum(runs.c.rows_read))
                .select_from(intervals.join(runs, runs.c.id == intervals.c.run_id))
                .where(intervals.c.pipeline == pipeline)
            ).scalar()
        return int(total) if total is not None else None

    def runs(self, pipeline: str, limit: int = 20) -> list[RunRecord]:
        with self.engine.connect() as db:
            rows = db.execute(
                sa.select(runs)
                .where(runs.c.pipeline == pipeline)
                .order_by(runs.c.id.desc())
                .limit(limit)
            ).mappings()
            return [record(RunRecord, row) for row in rows]

    def failures(self, pipeline: str, version: str, limit: int = 20) -> list[RunRecord]:
        """The latest failed runs of ``pipeline`` at ``version``, newest first."""
        with self.engine.connect() as db:
            rows = db.execute(
                sa.select(runs)
                .where(
                    runs.c.pipeline == pipeline,
                    runs.c.version == version,
                    runs.c.status == "failed",
                )
                .order_by(runs.c.id.desc())
                .limit(limit)
            ).mappings()
            return [record(RunRecord, row) for row in rows]

    def runs_over(self, pipeline: str, since: datetime, before: datetime) -> list[RunRecord]:
        """Every run of ``pipeline`` whose span overlaps ``[since, before)``, oldest first."""
        with self.engine.connect() as db:
            rows = db.execute(
                sa.select(runs)
                .where(
                    runs.c.pipeline == pipeline,
                    runs.c.interval_start < before,
                    runs.c.interval_end > since,
                )
                .order_by(runs.c.id)
            ).mappings()
            return [record(RunRecord, row) for row in rows]

    def terminal_failures(
        self, pipeline: str, version: str, since: datetime | None = None
    ) -> list[Interval]:
        """What runs of ``version`` that failed for good covered (one interval, or a batch's
        span), where no run of ``pipeline`` came after over it: not retried by the scheduler
        (a backfill or a manual run tries again). ``since``: only what ends after it."""
        params: dict[str, object] = {"pipeline": pipeline, "version": version}
        query = _TERMINAL
        if since is not None:
            query, params["since"] = _TERMINAL_SINCE, since
        with self.engine.connect() as db:
            return [Interval(start, end) for start, end in db.execute(query, params).all()]

    # -- watermarks --------------------------------------------------------

    def watermark(self, pipeline: str) -> datetime | None:
        with self.engine.connect() as db:
            value = db.execute(
                sa.select(watermarks.c.arrival_mark).where(watermarks.c.pipeline == pipeline)
            ).scalar()
            return value if isinstance(value, datetime) else None

    def set_watermark(self, pipeline: str, mark: datetime) -> None:
        with self.engine.begin() as db:
            db.execute(watermarks.delete().where(watermarks.c.pipeline == pipeline))
            db.execute(watermarks.insert().values(pipeline=pipeline, arrival_mark=mark))


#: Per ``(pipeline, cursor)``: the first gap found, and how many done intervals precede it.
GapHints = dict[tuple[str, datetime], tuple[datetime, int]]


def _gap_from(db: sa.Connection, pipeline: str, cursor: datetime) -> datetime:
    """:meth:`RunLog.first_gap` from ``cursor``, walking the done intervals from it."""
    params = {"pipeline": pipeline, "cursor": cursor}
    if db.execute(_DONE_AT, params).first() is None:
        return cursor
    end = db.execute(_GAP_END, params).scalar()
    return end if isinstance(end, datetime) else cursor


def _count_done(db: sa.Connection, pipeline: str, start: datetime, end: datetime) -> int:
    """Done intervals of ``pipeline`` starting in ``[start, end)``."""
    if end <= start:
        return 0
    params = {"pipeline": pipeline, "start": start, "end": end}
    return int(db.execute(_COUNT_DONE, params).scalar() or 0)
