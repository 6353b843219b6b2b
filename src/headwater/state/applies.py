"""What ``headwater apply`` did, and what an environment has applied.

An apply is recorded when it starts (who, when, the git commit, the plan) and marked done
when it ends. What the environment has applied, each pipeline with its version, header and
columns and each source, consumer and sink, is kept in ``applied``: the next plan compares
the working tree with it, and the scheduler of an environment that has applied runs only
the versions applied (a pipeline edited since waits for the next apply).

A pipeline rebuilt by an apply is built beside the live one, under its build name, and its
intervals are recorded under that name; :meth:`ApplyLog.swap` moves them to the live name
in the same transaction that drops the old intervals, so the run state changes from one
version to the other at once, after the engine swapped the tables.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa

from headwater.core.clock import utc_now
from headwater.core.types import Interval
from headwater.state import deliveries
from headwater.state.models import move_uses
from headwater.state.tables import (
    applied,
    applies,
    intervals,
    record,
    runs,
    versions,
    watermarks,
)
from headwater.state.tables import (
    deliveries as deliveries_table,
)

Kind = Literal["pipeline", "source", "consumer", "sink"]
ApplyStatus = Literal["running", "done", "failed", "interrupted"]


@dataclass(frozen=True)
class Applied:
    """One thing an environment has applied, as the last apply left it."""

    kind: Kind
    name: str
    version: str | None
    spec: dict[str, Any]
    #: The apply that recorded it (``None`` before it is recorded).
    apply_id: int | None = None


@dataclass(frozen=True)
class ApplyRecord:
    id: int
    commit: str | None
    dirty: bool
    applied_by: str
    started_at: datetime
    finished_at: datetime | None
    status: ApplyStatus
    plan: dict[str, Any]
    error: str | None


class ApplyLog:
    """Reads and writes ``applies`` and ``applied``."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    # -- what is applied -----------------------------------------------------------

    def applied(self) -> dict[tuple[Kind, str], Applied]:
        with self.engine.connect() as db:
            rows = db.execute(sa.select(applied)).mappings().all()
        return {
            (row["kind"], row["name"]): Applied(
                row["kind"], row["name"], row["version"], json.loads(row["spec"]), row["apply_id"]
            )
            for row in rows
        }

    def pipeline_versions(self) -> dict[str, str] | None:
        """Each applied pipeline's version; ``None`` when nothing was ever applied here
        (the environment runs what its files say)."""
        with self.engine.connect() as db:
            done = db.execute(
                sa.select(applies.c.id).where(applies.c.status == "done").limit(1)
            ).first()
            if done is None:
                return None
            rows = db.execute(
                sa.select(applied.c.name, applied.c.version).where(applied.c.kind == "pipeline")
            ).all()
        return {str(name): str(version) for name, version in rows}

    # -- applies ---------------------------------------------------------------------

    def start(
        self, commit: str | None, dirty: bool, applied_by: str, plan: Mapping[str, Any]
    ) -> int:
        """Record an apply as running; one left running by a process that died is marked
        interrupted (its work is picked up by this one)."""
        with self.engine.begin() as db:
            db.execute(
                applies.update()
                .where(applies.c.status == "running")
                .values(status="interrupted", finished_at=utc_now())
            )
            result = db.execute(
                applies.insert().values(
                    commit=commit,
                    dirty=int(dirty),
                    applied_by=applied_by,
                    started_at=utc_now(),
                    status="running",
                    plan=json.dumps(plan, sort_keys=True, default=str),
                )
            )
            key = result.inserted_primary_key
            return int(key[0]) if key else 0

    def fail(self, apply_id: int, error: str) -> None:
        with self.engine.begin() as db:
            db.execute(
                applies.update()
                .where(applies.c.id == apply_id)
                .values(status="failed", finished_at=utc_now(), error=error)
            )

    def history(self, limit: int = 20) -> list[ApplyRecord]:
        with self.engine.connect() as db:
            rows = db.execute(
                sa.select(applies).order_by(applies.c.id.desc()).limit(limit)
            ).mappings()
            return [
                record(ApplyRecord, row, dirty=bool(row["dirty"]), plan=json.loads(row["plan"]))
                for row in rows
            ]

    def finished(self, apply_id: int) -> bool:
        """Whether apply ``apply_id`` ended done."""
        with self.engine.connect() as db:
            status = db.execute(
                sa.select(applies.c.status).where(applies.c.id == apply_id)
            ).scalar()
        return status == "done"

    def applied_commit(self, commit: str) -> bool:
        """Whether an apply of ``commit``, without changes not committed, finished here."""
        with self.engine.connect() as db:
            found = db.execute(
                sa.select(applies.c.id)
                .where(applies.c.commit == commit, applies.c.dirty == 0, applies.c.status == "done")
                .limit(1)
            ).first()
        return found is not None

    def record(
        self, apply_id: int, things: Iterable[Applied], removed: Iterable[tuple[Kind, str]]
    ) -> None:
        """What the environment has applied from now on: ``things`` written, ``removed``
        forgotten. Written before the engine swaps, so a scheduler running the old
        version stops taking the pipelines being swapped."""
        with self.engine.begin() as db:
            for kind, name in removed:
                db.execute(applied.delete().where(applied.c.kind == kind, applied.c.name == name))
            for thing in things:
                db.execute(
                    applied.delete().where(
                        applied.c.kind == thing.kind, applied.c.name == thing.name
                    )
                )
                db.execute(
                    applied.insert().values(
                        kind=thing.kind,
                        name=thing.name,
                        version=thing.version,
                        spec=json.dumps(thing.spec, sort_keys=True),
                        apply_id=apply_id,
                    )
                )

    def finish(self, apply_id: int) -> None:
        with self.engine.begin() as db:
            db.execute(
                applies.update()
                .where(applies.c.id == apply_id)
                .values(status="done", finished_at=utc_now())
            )

    # -- the swap ----------------------------------------------------------------------

    def built(self, build: str) -> int:
        """How many intervals are recorded done under ``build`` (a pipeline's build name)."""
        with self.engine.connect() as db:
            count = db.execute(
                sa.select(sa.func.count())
                .select_from(intervals)
                .where(intervals.c.pipeline == build)
            ).scalar()
        return int(count or 0)

    def swap(
        self,
        builds: Mapping[str, str],
        sinks: Mapping[str, Sequence[str]],
        removed: Sequence[str],
        unread: Collection[str] = (),
    ) -> None:
        """In one transaction: each pipeline in ``builds`` (live name -> build name) gets
        its build's intervals, runs, version and watermark, and owes every one of those
        intervals to its ``sinks``; its old intervals and the deliveries they still owed are
        dropped. Pipelines in ``removed`` lose their intervals, deliveries owed, watermarks.
        A pipeline in ``unread`` has readers not rebuilt (they read the same columns): each
        interval keeps the time its old one was done, so they are not taken as stale.

        Idempotent: a build already moved has no intervals left under its build name and
        is skipped, so an apply that stopped after this resumes without harm."""
        with self.engine.begin() as db:
            for live, build in builds.items():
                moving = (
                    db.execute(sa.select(intervals).where(intervals.c.pipeline == build))
                    .mappings()
                    .all()
                )
                if not moving:
                    continue
                done_at = {}
                if live in unread:
                    done_at = dict(
                        db.execute(
                            sa.select(intervals.c.start, intervals.c.done_at).where(
                                intervals.c.pipeline == live, intervals.c.status == "done"
                            )
                        ).all()
                    )
                _forget(db, live)
                db.execute(
                    intervals.update().where(intervals.c.pipeline == build).values(pipeline=live)
                )
                for start, when in done_at.items():
                    db.execute(
                        intervals.update()
                        .where(intervals.c.pipeline == live, intervals.c.start == start)
                        .values(done_at=when)
                    )
                db.execute(runs.update().where(runs.c.pipeline == build).values(pipeline=live))
                _move_versions(db, build, live)
                move_uses(db, build, live)
                mark = db.execute(
                    sa.select(watermarks.c.arrival_mark).where(watermarks.c.pipeline == build)
                ).scalar()
                db.execute(watermarks.delete().where(watermarks.c.pipeline.in_([live, build])))
                if mark is not None:
                    db.execute(watermarks.insert().values(pipeline=live, arrival_mark=mark))
                for row in moving:
                    if row["status"] == "done":
                        interval = Interval(row["start"], row["end"])
                        deliveries.schedule(db, live, sinks.get(live, ()), interval, row["run_id"])
            for name in removed:
                _forget(db, name)
                db.execute(watermarks.delete().where(watermarks.c.pipeline == name))

    def discard(self, build: str) -> None:
        """Forget what was recorded of a build that will not be swapped in (its version
        changed since it started): its intervals, runs and watermark."""
        with self.engine.begin() as db:
            db.execute(intervals.delete().where(intervals.c.pipeline == build))
            db.execute(runs.delete().where(runs.c.pipeline == build))
            db.execute(versions.delete().where(versions.c.pipeline == build))
            db.execute(watermarks.delete().where(watermarks.c.pipeline == build))


def _forget(db: sa.Connection, pipeline: str) -> None:
    """A pipeline's intervals and the deliveries they still owe (delivered ones stay as
    history in the sinks, not here)."""
    db.execute(intervals.delete().where(intervals.c.pipeline == pipeline))
    db.execute(
        deliveries_table.delete().where(
            deliveries_table.c.pipeline == pipeline,
            deliveries_table.c.status.in_(["pending", "failed"]),
        )
    )


def _move_versions(db: sa.Connection, build: str, live: str) -> None:
    known = set(
        db.execute(sa.select(versions.c.version).where(versions.c.pipeline == live)).scalars()
    )
    for row in db.execute(sa.select(versions).where(versions.c.pipeline == build)).mappings().all():
        if row["version"] not in known:
            db.execute(
                versions.insert().values(
                    pipeline=live, version=row["version"], first_seen=row["first_seen"]
                )
            )
    db.execute(versions.delete().where(versions.c.pipeline == build))
