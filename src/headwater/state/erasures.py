"""Erasures as the metadata database keeps them: the request, its planned places, and the
ids suppressed at ingest.

An erasure is recorded with every place it will delete from before anything is deleted,
and each place is marked done as it finishes; what is not done is owed and retried. The
raw ids are kept only while something is owed (a sink down must still be told which rows
to delete); once every place is done only their SHA-256 hashes stay.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from headwater.core.clock import utc_now
from headwater.state.tables import erasure_places, erasures, suppressions

log = logging.getLogger(__name__)

#: Ids by kind (``user_id``, ``anonymous_id``): raw ids, or their hashes.
Ids = dict[str, list[str]]


@dataclass(frozen=True)
class Planned:
    """A place an erasure will delete from, as planned."""

    place: str
    kind: str
    detail: dict[str, object]


@dataclass(frozen=True)
class Place:
    erasure_id: int
    place: str
    seq: int
    kind: str
    detail: dict[str, object]
    status: str
    rows: int | None
    attempts: int
    next_attempt_at: datetime
    last_error: str | None
    done_at: datetime | None


@dataclass(frozen=True)
class Erasure:
    id: int
    requested_by: str
    requested_at: datetime
    status: str
    ids: Ids | None
    hashes: Ids
    finished_at: datetime | None


@dataclass(frozen=True)
class SuppressionCounts:
    active: int
    dropped: int
    last_dropped_at: datetime | None


class ErasureLog:
    """The ``erasures``, ``erasure_places`` and ``suppressions`` tables."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    # -- erasures ----------------------------------------------------------------

    def create(self, requested_by: str, ids: Ids, hashes: Ids, places: list[Planned]) -> int:
        """Record an erasure, its places and the suppression of its ids, in one
        transaction: from then on new events of the ids are dropped, and a crash leaves
        an erasure that a re-run finishes."""
        now = utc_now()
        with self.engine.begin() as db:
            inserted = db.execute(
                erasures.insert().values(
                    requested_by=requested_by, requested_at=now, status="pending",
                    ids=json.dumps(ids), hashes=json.dumps(hashes),
                )
            ).inserted_primary_key  # fmt: skip
            assert inserted is not None
            erasure_id = int(inserted[0])
            if places:
                db.execute(
                    erasure_places.insert(),
                    [
                        {"erasure_id": erasure_id, "place": p.place, "seq": seq, "kind": p.kind,
                         "detail": json.dumps(p.detail), "status": "pending", "attempts": 0,
                         "next_attempt_at": now}
                        for seq, p in enumerate(places)
                    ],
                )  # fmt: skip
            self._suppress(db, hashes, erasure_id, requested_by, now)
        return erasure_id

    def _suppress(
        self, db: sa.Connection, hashes: Ids, erasure_id: int | None, by: str, now: datetime
    ) -> None:
        for kind, values in hashes.items():
            for value in values:
                current = db.execute(
                    sa.select(suppressions.c.hash).where(suppressions.c.hash == value)
                ).first()
                if current is None:
                    db.execute(
                        suppressions.insert().values(
                            hash=value, kind=kind, erasure_id=erasure_id, added_by=by,
                            added_at=now, dropped=0,
                        )
                    )  # fmt: skip
                else:
                    db.execute(
                        suppressions.update()
                        .where(suppressions.c.hash == value)
                        .values(lifted_at=None, lifted_by=None, added_at=now, added_by=by,
                                erasure_id=erasure_id)
                    )  # fmt: skip

    def open_with(self, hashes: Ids) -> int | None:
        """The unfinished erasure of exactly these ids, if any (a re-run resumes it)."""
        wanted = json.dumps(hashes)
        with self.engine.connect() as db:
            row = db.execute(
                sa.select(erasures.c.id)
                .where(erasures.c.status != "done", erasures.c.hashes == wanted)
                .order_by(erasures.c.id)
            ).first()
        return None if row is None else int(row[0])

    def get(self, erasure_id: int) -> Erasure | None:
        with self.engine.connect() as db:
            row = db.execute(sa.select(erasures).where(erasures.c.id == erasure_id)).mappings()
            found = row.first()
        if found is None:
            return None
        return Erasure(
            id=int(found["id"]),
            requested_by=found["requested_by"],
            requested_at=found["requested_at"],
            status=found["status"],
            ids=None if found["ids"] is None else json.loads(found["ids"]),
            hashes=json.loads(found["hashes"]),
            finished_at=found["finished_at"],
        )

    def places(self, erasure_id: int) -> list[Place]:
        with self.engine.connect() as db:
            rows = db.execute(
                sa.select(erasure_places)
                .where(erasure_places.c.erasure_id == erasure_id)
                .order_by(erasure_places.c.seq)
            ).mappings()
            return [
                Place(
                    erasure_id=int(r["erasure_id"]), place=r["place"], seq=int(r["seq"]),
                    kind=r["kind"], detail=json.loads(r["detail"]), status=r["status"],
                    rows=None if r["rows"] is None else int(r["rows"]),
                    attempts=int(r["attempts"]), next_attempt_at=r["next_attempt_at"],
                    last_error=r["last_error"], done_at=r["done_at"],
                )
                for r in rows
            ]  # fmt: skip

    def unfinished(self, due_by: datetime | None = None) -> list[int]:
        """Erasures with places not done (``due_by``: only those with one due by then)."""
        query = (
            sa.select(erasure_places.c.erasure_id)
            .where(erasure_places.c.status != "done")
            .distinct()
        )
        if due_by is not None:
            query = query.where(erasure_places.c.next_attempt_at <= due_by)
        with self.engine.connect() as db:
            found = {int(r[0]) for r in db.execute(query)}
            # An erasure whose places are all done but not yet closed (a crash between).
            found |= {
                int(r[0])
                for r in db.execute(sa.select(erasures.c.id).where(erasures.c.status != "done"))
            }
        return sorted(found)

    def done(
        self, erasure_id: int, place: str, rows: int, found: Mapping[str, object] | None = None
    ) -> None:
        """Mark a place done with its rows; ``found`` (the files rewritten, say) is added to
        its detail, for the receipt."""
        with self.engine.begin() as db:
            where = (erasure_places.c.erasure_id == erasure_id, erasure_places.c.place == place)
            values: dict[str, object] = {"status": "done", "rows": rows, "done_at": utc_now(),
                                         "last_error": None}  # fmt: skip
            if found:
                current = db.execute(sa.select(erasure_places.c.detail).where(*where)).first()
                detail = json.loads(current[0]) if current is not None else {}
                values["detail"] = json.dumps({**detail, **found})
            db.execute(erasure_places.update().where(*where).values(**values))

    def failed(self, erasure_id: int, place: str, error: str, retry_at: datetime) -> int:
        """Record a failed attempt; return the attempts so far."""
        with self.engine.begin() as db:
            where = (erasure_places.c.erasure_id == erasure_id, erasure_places.c.place == place)
            db.execute(
                erasure_places.update()
                .where(*where)
                .values(attempts=erasure_places.c.attempts + 1, last_error=error,
                        next_attempt_at=retry_at)
            )  # fmt: skip
            row = db.execute(sa.select(erasure_places.c.attempts).where(*where)).first()
        return 0 if row is None else int(row[0])

    def finish(self, erasure_id: int) -> bool:
        """Close the erasure when every place is done: the raw ids are forgotten, their
        hashes kept. ``False`` while a place is owed."""
        with self.engine.begin() as db:
            owed = db.execute(
                sa.select(sa.func.count())
                .select_from(erasure_places)
                .where(erasure_places.c.erasure_id == erasure_id,
                       erasure_places.c.status != "done")
            ).scalar_one()  # fmt: skip
            if owed:
                return False
            db.execute(
                erasures.update()
                .where(erasures.c.id == erasure_id, erasures.c.status != "done")
                .values(status="done", ids=None, finished_at=utc_now())
            )
        if self.engine.dialect.name == "sqlite":
            self._empty_log()
        return True

    def _empty_log(self) -> None:
        """SQLite: the raw ids' old page is in the write-ahead log until a checkpoint;
        write it back (zeroed, by secure_delete) and empty the log now. A checkpoint waits
        for every reader, and writers wait for it: it waits 0.2 s at most here, and one a
        reader held off is left to SQLite's own (every 1,000 pages written), which
        overwrites the log from its start."""
        with self.engine.connect() as db:
            waits = db.exec_driver_sql("PRAGMA busy_timeout").scalar()
            db.exec_driver_sql("PRAGMA busy_timeout=200")
            try:
                busy = db.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)").first()
            finally:
                db.exec_driver_sql(f"PRAGMA busy_timeout={int(waits or 0)}")
        if busy is not None and busy[0]:
            log.info("erasure: a reader held the metadata's log; SQLite's checkpoint empties it")

    def pending(self) -> list[dict[str, object]]:
        """Each unfinished erasure and the places it still owes, for ``headwater status``."""
        answer = []
        for erasure_id in self.unfinished():
            owed = [p for p in self.places(erasure_id) if p.status != "done"]
            answer.append(
                {
                    "id": erasure_id,
                    "owed": [
                        {"place": p.place, "attempts": p.attempts, "last_error": p.last_error,
                         "next_attempt_at": p.next_attempt_at}
                        for p in owed
                    ],
                }
            )  # fmt: skip
        return answer

    # -- suppression -------------------------------------------------------------

    def suppress(self, hashes: Ids, by: str) -> None:
        with self.engine.begin() as db:
            self._suppress(db, hashes, None, by, utc_now())

    def lift(self, hashes: Iterable[str], by: str) -> int:
        """Stop dropping the events of these ids; return how many were suppressed."""
        values = list(hashes)
        with self.engine.begin() as db:
            lifted = db.execute(
                suppressions.update()
                .where(suppressions.c.hash.in_(values), suppressions.c.lifted_at.is_(None))
                .values(lifted_at=utc_now(), lifted_by=by)
            )
            return int(lifted.rowcount or 0)

    def suppressed(self) -> frozenset[str]:
        """The hashes whose events are dropped now."""
        with self.engine.connect() as db:
            rows = db.execute(
                sa.select(suppressions.c.hash).where(suppressions.c.lifted_at.is_(None))
            )
            return frozenset(str(r[0]) for r in rows)

    def stamp(self) -> tuple[object, ...]:
        """Changes whenever the list changes: one cheap query a collector makes every few
        seconds instead of one per event."""
        with self.engine.connect() as db:
            row = db.execute(
                sa.select(
                    sa.func.count(), sa.func.max(suppressions.c.added_at),
                    sa.func.max(suppressions.c.lifted_at),
                    sa.func.count(suppressions.c.lifted_at),
                )
            ).one()  # fmt: skip
        return tuple(row)

    def count_dropped(self, counts: Mapping[str, int], at: datetime) -> None:
        """Add the events a collector dropped since it last said, by hash."""
        if not counts:
            return
        with self.engine.begin() as db:
            for value, n in counts.items():
                db.execute(
                    suppressions.update()
                    .where(suppressions.c.hash == value)
                    .values(dropped=suppressions.c.dropped + n, last_dropped_at=at)
                )

    def counts(self) -> SuppressionCounts:
        with self.engine.connect() as db:
            row = db.execute(
                sa.select(
                    sa.func.count(suppressions.c.hash).filter(suppressions.c.lifted_at.is_(None)),
                    sa.func.coalesce(sa.func.sum(suppressions.c.dropped), 0),
                    sa.func.max(suppressions.c.last_dropped_at),
                )
            ).one()
        return SuppressionCounts(int(row[0]), int(row[1]), row[2])
