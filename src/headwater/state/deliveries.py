"""Delivery state: one row per pipeline, interval and sink, and the dead letters.

A delivery is scheduled in the same transaction that records its interval as
done, so an interval is done exactly when its deliveries are owed. Every update
names the run it is about: when an interval is published again while its
delivery is under way, the delivery restarts with the new run's output and the
old one's progress is not written over it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

import sqlalchemy as sa

from headwater.core.clock import utc_now
from headwater.core.types import Interval
from headwater.state.leases import Holder, still_held
from headwater.state.tables import dead_letters, deliveries, record

#: ``pending``: not tried yet (or cut short); ``failed``: waiting for its next attempt;
#: ``delivered``: every row; ``dead``: finished with dead letters.
DeliveryStatus = Literal["pending", "failed", "delivered", "dead"]
#: A delivery that has not finished: not tried yet, or waiting for its next attempt.
OPEN: tuple[DeliveryStatus, ...] = ("pending", "failed")


@dataclass(frozen=True)
class Delivery:
    pipeline: str
    sink: str
    interval: Interval
    run_id: int
    status: DeliveryStatus
    attempts: int
    batches_done: int
    rows_delivered: int
    next_attempt_at: datetime
    last_error: str | None
    #: Rows per batch of a webhook delivery, fixed before its first POST (None until then).
    batch_rows: int | None = None


@dataclass(frozen=True)
class DeadLetter:
    id: int
    pipeline: str
    sink: str
    interval: Interval
    run_id: int
    batch: int | None
    idempotency_key: str | None
    body: bytes | None
    rows: int
    reason: str
    attempts: int
    created_at: datetime
    replayed_at: datetime | None


@dataclass(frozen=True)
class DeliveryCounts:
    """Intervals by delivery state (``delivered``: every row; ``dead``: finished with dead
    letters), and dead letters not replayed."""

    pipeline: str
    sink: str
    pending: int
    failed: int
    delivered: int
    dead_letters: int
    last_error: str | None
    dead: int = 0


#: A delivery owed again replaces the one before (built once: every run owes its sinks).
_OWED_BEFORE = deliveries.delete().where(
    deliveries.c.pipeline == sa.bindparam("pipeline"),
    deliveries.c.sink == sa.bindparam("sink"),
    deliveries.c.interval_start == sa.bindparam("interval_start"),
)


#: The dead letters of an interval's older output, dropped as superseded (replayed now)
#: when a newer output is owed instead.
_SUPERSEDED = (
    dead_letters.update()
    .where(
        dead_letters.c.pipeline == sa.bindparam("of_pipeline"),
        dead_letters.c.sink == sa.bindparam("of_sink"),
        dead_letters.c.interval_start == sa.bindparam("of_start"),
        dead_letters.c.replayed_at.is_(None),
    )
    .values(replayed_at=sa.bindparam("now"))
)


def schedule(
    db: sa.Connection, pipeline: str, sinks: Sequence[str], interval: Interval, run_id: int
) -> None:
    """Owe a delivery of ``run_id``'s output to each sink (inside the caller's transaction);
    what was owed of an older output, dead letters included, is not owed any more."""
    now = utc_now()
    for sink in sinks:
        owed = {"pipeline": pipeline, "sink": sink, "interval_start": interval.start}
        db.execute(_OWED_BEFORE, owed)
        db.execute(
            _SUPERSEDED,
            {"of_pipeline": pipeline, "of_sink": sink, "of_start": interval.start, "now": now},
        )
        db.execute(
            deliveries.insert(),
            {
                **owed,
                "interval_end": interval.end,
                "run_id": run_id,
                "status": "pending",
                "attempts": 0,
                "batches_done": 0,
                "rows_delivered": 0,
                "next_attempt_at": now,
                "last_error": None,
                "updated_at": now,
            },
        )


class DeliveryLog:
    """Reads and writes the delivery tables."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def due(self, now: datetime, limit: int = 100) -> list[Delivery]:
        """Open deliveries whose next attempt is due, oldest interval first."""
        with self.engine.connect() as db:
            rows = db.execute(
                sa.select(deliveries)
                .where(deliveries.c.status.in_(OPEN), deliveries.c.next_attempt_at <= now)
                .order_by(deliveries.c.interval_start, deliveries.c.pipeline, deliveries.c.sink)
                .limit(limit)
            ).mappings()
            return [record(Delivery, row) for row in rows]

    def next_due(self) -> datetime | None:
        """When the soonest open delivery is due."""
        with self.engine.connect() as db:
            value = db.execute(
                sa.select(sa.func.min(deliveries.c.next_attempt_at)).where(
                    deliveries.c.status.in_(OPEN)
                )
            ).scalar()
            return value if isinstance(value, datetime) else None

    def get(self, pipeline: str, sink: str, start: datetime) -> Delivery | None:
        with self.engine.connect() as db:
            row = (
                db.execute(sa.select(deliveries).where(*_key(pipeline, sink, start)))
                .mappings()
                .first()
            )
            return record(Delivery, row) if row is not None else None

    def all(self, pipeline: str | None = None) -> list[Delivery]:
        query = sa.select(deliveries).order_by(deliveries.c.interval_start)
        if pipeline is not None:
            query = query.where(deliveries.c.pipeline == pipeline)
        with self.engine.connect() as db:
            return [record(Delivery, row) for row in db.execute(query).mappings()]

    def progress(
        self,
        delivery: Delivery,
        holder: Holder,
        batches_done: int,
        rows_delivered: int,
        *,
        finished: bool,
    ) -> bool:
        """Record batches sent; ``False`` when the interval was published again meanwhile,
        or ``holder`` lost its lease to another deliverer (which then records instead).

        A finished delivery is ``delivered``, or ``dead`` when some of its batches
        became dead letters.
        """
        status: DeliveryStatus = "pending"
        error = None
        if finished:
            with self.engine.connect() as db:
                newest = db.execute(
                    sa.select(dead_letters.c.batch, dead_letters.c.reason)
                    .where(
                        dead_letters.c.pipeline == delivery.pipeline,
                        dead_letters.c.sink == delivery.sink,
                        dead_letters.c.interval_start == delivery.interval.start,
                        dead_letters.c.run_id == delivery.run_id,
                        dead_letters.c.replayed_at.is_(None),
                    )
                    .order_by(dead_letters.c.id.desc())
                    .limit(1)
                ).first()
            status = "dead" if newest is not None else "delivered"
            if newest is not None:
                # Why, for status and the run's answer: the batch's own reason.
                error = (
                    newest.reason
                    if newest.batch is None
                    else f"batch {newest.batch}: {newest.reason}"
                )
        return self._update(
            delivery,
            holder,
            status=status,
            attempts=0,
            batches_done=batches_done,
            rows_delivered=rows_delivered,
            last_error=error,
        )

    def cut(self, delivery: Delivery, holder: Holder, batch_rows: int) -> bool:
        """Fix the rows per batch ``delivery`` is sent in, before its first batch goes;
        ``False`` as :meth:`progress`."""
        with self.engine.begin() as db:
            return _moved(db, delivery, holder, batch_rows=batch_rows)

    def failed(
        self,
        delivery: Delivery,
        holder: Holder,
        attempts: int,
        next_attempt_at: datetime,
        error: str,
    ) -> bool:
        """An attempt failed and will be made again at ``next_attempt_at``."""
        return self._update(
            delivery,
            holder,
            status="failed",
            attempts=attempts,
            next_attempt_at=next_attempt_at,
            last_error=error,
        )

    def dead_letter(
        self,
        delivery: Delivery,
        holder: Holder,
        *,
        batch: int | None,
        idempotency_key: str | None,
        body: bytes | None,
        rows: int,
        reason: str,
        attempts: int,
        finished: bool,
    ) -> bool:
        """Keep what could not be delivered and move on (to the next batch, or stop)."""
        now = utc_now()
        with self.engine.begin() as db:
            # The update first: if the interval was published again meanwhile, or the lease
            # taken over, nothing is written (and the newer delivery is left alone).
            if not _moved(
                db,
                delivery,
                holder,
                status="dead" if finished else "pending",
                attempts=0,
                batches_done=(batch + 1) if batch is not None else delivery.batches_done,
                next_attempt_at=now,
                last_error=reason,
                updated_at=now,
            ):
                return False
            db.execute(
                dead_letters.insert().values(
                    pipeline=delivery.pipeline,
                    sink=delivery.sink,
                    interval_start=delivery.interval.start,
                    interval_end=delivery.interval.end,
                    run_id=delivery.run_id,
                    batch=batch,
                    idempotency_key=idempotency_key,
                    body=body,
                    rows=rows,
                    reason=reason,
                    attempts=attempts,
                    created_at=now,
                    replayed_at=None,
                )
            )
            return True

    def _update(self, delivery: Delivery, holder: Holder, **values: object) -> bool:
        now = utc_now()
        values.setdefault("next_attempt_at", now)
        with self.engine.begin() as db:
            return _moved(db, delivery, holder, updated_at=now, **values)

    # -- dead letters ------------------------------------------------------------

    def dead_letters(
        self, *, pipeline: str | None = None, sink: str | None = None, ids: Sequence[int] = ()
    ) -> list[DeadLetter]:
        """Dead letters not replayed yet, oldest first."""
        query = sa.select(dead_letters).where(dead_letters.c.replayed_at.is_(None))
        if pipeline is not None:
            query = query.where(dead_letters.c.pipeline == pipeline)
        if sink is not None:
            query = query.where(dead_letters.c.sink == sink)
        if ids:
            query = query.where(dead_letters.c.id.in_(list(ids)))
        with self.engine.connect() as db:
            rows = db.execute(query.order_by(dead_letters.c.id)).mappings()
            return [record(DeadLetter, row) for row in rows]

    def replayed(self, letter: DeadLetter) -> None:
        """``letter`` was sent again and taken (or superseded): its delivery is ``delivered``
        once no dead letter of the same run's interval is left, and counts its rows."""
        now = utc_now()
        with self.engine.begin() as db:
            db.execute(
                dead_letters.update().where(dead_letters.c.id == letter.id).values(replayed_at=now)
            )
            left = db.execute(
                sa.select(sa.func.count()).where(
                    dead_letters.c.pipeline == letter.pipeline,
                    dead_letters.c.sink == letter.sink,
                    dead_letters.c.interval_start == letter.interval.start,
                    dead_letters.c.run_id == letter.run_id,
                    dead_letters.c.replayed_at.is_(None),
                )
            ).scalar()
            # The delivery of the letter's own run (a newer run's is owed anew); one still
            # under way finishes as its last batch says.
            finished = deliveries.c.status.in_(("dead", "delivered"))
            db.execute(
                deliveries.update()
                .where(
                    *_key(letter.pipeline, letter.sink, letter.interval.start),
                    deliveries.c.run_id == letter.run_id,
                )
                .values(
                    status=sa.case(
                        (finished, "dead" if left else "delivered"), else_=deliveries.c.status
                    ),
                    rows_delivered=deliveries.c.rows_delivered + letter.rows,
                    last_error=deliveries.c.last_error
                    if left
                    else sa.case((finished, sa.null()), else_=deliveries.c.last_error),
                    updated_at=now,
                )
            )

    def replay_failed(self, letter: DeadLetter, reason: str) -> None:
        with self.engine.begin() as db:
            db.execute(
                dead_letters.update()
                .where(dead_letters.c.id == letter.id)
                .values(reason=reason, attempts=letter.attempts + 1)
            )

    def reopen(self, letter: DeadLetter) -> bool:
        """A whole-interval dead letter: owe the delivery again (of the newest output)."""
        now = utc_now()
        with self.engine.begin() as db:
            db.execute(
                dead_letters.update().where(dead_letters.c.id == letter.id).values(replayed_at=now)
            )
            result = db.execute(
                deliveries.update()
                .where(*_key(letter.pipeline, letter.sink, letter.interval.start))
                .values(
                    status="pending",
                    attempts=0,
                    batches_done=0,
                    rows_delivered=0,
                    next_attempt_at=now,
                    updated_at=now,
                )
            )
            return bool(result.rowcount)

    # -- reporting -------------------------------------------------------------------

    def counts(self) -> list[DeliveryCounts]:
        """Per pipeline and sink: deliveries by state and dead letters waiting for replay."""
        with self.engine.connect() as db:
            by_status = db.execute(
                sa.select(
                    deliveries.c.pipeline,
                    deliveries.c.sink,
                    deliveries.c.status,
                    sa.func.count(),
                ).group_by(deliveries.c.pipeline, deliveries.c.sink, deliveries.c.status)
            ).all()
            letters = db.execute(
                sa.select(dead_letters.c.pipeline, dead_letters.c.sink, sa.func.count())
                .where(dead_letters.c.replayed_at.is_(None))
                .group_by(dead_letters.c.pipeline, dead_letters.c.sink)
            ).all()
            errors = db.execute(
                sa.select(deliveries.c.pipeline, deliveries.c.sink, deliveries.c.last_error)
                .where(deliveries.c.status.in_(("failed", "dead")))
                .order_by(deliveries.c.updated_at)
            ).all()
        table: dict[tuple[str, str], dict[str, int]] = {}
        for pipeline, sink, status, count in by_status:
            table.setdefault((pipeline, sink), {})[status] = count
        dead = {(p, s): n for p, s, n in letters}
        for key in dead:
            table.setdefault(key, {})
        last_error = {(p, s): e for p, s, e in errors}
        return [
            DeliveryCounts(
                pipeline=pipeline,
                sink=sink,
                pending=states.get("pending", 0),
                failed=states.get("failed", 0),
                delivered=states.get("delivered", 0),
                dead_letters=dead.get((pipeline, sink), 0),
                last_error=last_error.get((pipeline, sink)),
                dead=states.get("dead", 0),
            )
            for (pipeline, sink), states in sorted(table.items())
        ]


def _moved(db: sa.Connection, delivery: Delivery, holder: Holder, **values: object) -> bool:
    """Update ``delivery``'s row, only while ``holder`` holds its lease and the row is still
    of ``delivery``'s run; whether it was."""
    if not still_held(db, holder):
        return False
    result = db.execute(
        deliveries.update()
        .where(
            *_key(delivery.pipeline, delivery.sink, delivery.interval.start),
            deliveries.c.run_id == delivery.run_id,
        )
        .values(**values)
    )
    return bool(result.rowcount)


def _key(pipeline: str, sink: str, start: datetime) -> tuple[sa.ColumnElement[bool], ...]:
    return (
        deliveries.c.pipeline == pipeline,
        deliveries.c.sink == sink,
        deliveries.c.interval_start == start,
    )
