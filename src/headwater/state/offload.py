"""Offloads: whole intervals of arrival moved from the hot store into the warehouse.

Collectors write a hot store many processes can write with exact dedupe
(PostgreSQL, or the embedded DuckDB file); pipelines run on a warehouse that
takes loads, not a commit per request (BigQuery, Spark). Every whole interval
of arrival (an hour by default) below the collectors' shared arrival floor
holds every event that will ever arrive in it, so it is read from the hot
store, written as one Parquet file per table and loaded into the warehouse
with replace semantics (``Engine.load_arrivals``: a BigQuery load job into
the interval's partition, a Spark file per interval). Then the metadata
records the span.

The order makes it exact. A crash before the record leaves the span to do
again, and a repeated load replaces what the first put there, so no interval
is loaded twice or missed; rows below the floor never change in the hot
store, so a repeat loads the same rows. The recorded spans tile arrival time
from the first offload on, and their end is the warehouse's arrival floor:
an interval by arrival runs on the warehouse only once every event that
arrived in it is there.

Retention deletes, in bounded batches, hot rows that are both older than
``retain`` and below the offload's progress: nothing is deleted before it is
in the warehouse. The dedupe keys are kept apart (``message_ids``) and pruned
by the dedupe window, so retention never touches the dedupe.
"""

from __future__ import annotations

import functools
import logging
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import sqlalchemy as sa

from headwater.core.clock import EPOCH, utc_now
from headwater.core.logs import fields
from headwater.core.types import Interval
from headwater.state.errors import LeaseHeld, LeaseLost
from headwater.state.leases import Holder, Lease, Leases, still_held
from headwater.state.tables import offloads, record
from headwater.store.engine import Engine, delete_in_batches
from headwater.store.transfer import TABLES, arrivals, first_arrival

log = logging.getLogger(__name__)

#: The lease one offloading process holds (a pipeline's name cannot hold a colon).
LEASE = "offload:warehouse"
#: Reads of one interval from the hot store: its rows come in this many slices of time,
#: so memory holds a slice, not the interval.
SLICES = 12
#: Rows deleted per statement by retention.
RETENTION_BATCH = 10_000
#: Kept back from this host's clock: with no live collector the floor is now, and another
#: host's clock, a little behind, may stamp an event just before it.
CLOCK_MARGIN = timedelta(seconds=2)
#: How often a process with nothing new to offload runs retention again.
_RETAIN_EVERY = timedelta(minutes=1)


@dataclass(frozen=True, slots=True)
class Offloaded:
    """A span of arrival time now in the warehouse: its events and failed events, and the
    Parquet bytes loaded (zero rows: nothing was loaded)."""

    interval: Interval
    events: int
    failed_events: int
    bytes: int
    done_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class OffloadResult:
    """One pass: the spans moved and the hot rows retention deleted."""

    offloaded: list[Offloaded]
    deleted: int
    progress: datetime | None


class OffloadLog:
    """The spans offloaded so far, in the metadata database."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def progress(self) -> datetime | None:
        """The end of the last span: everything that arrived before it is in the warehouse
        (``None``: nothing was offloaded yet)."""
        with self.engine.connect() as db:
            value = db.execute(sa.select(sa.func.max(offloads.c.interval_end))).scalar()
        return value if isinstance(value, datetime) else None

    def record(self, span: Offloaded, done_at: datetime, holder: Holder) -> None:
        """Record ``span`` while ``holder`` still holds the offload's lease (else
        :class:`LeaseLost`); a span recorded already is left as it is: its rows were the
        same."""
        with self.engine.begin() as db:
            if not still_held(db, holder):
                raise LeaseLost(holder.name, holder.token)
            found = db.execute(
                sa.select(offloads.c.interval_start).where(
                    offloads.c.interval_start == span.interval.start
                )
            ).first()
            if found is None:
                db.execute(
                    offloads.insert().values(
                        interval_start=span.interval.start,
                        interval_end=span.interval.end,
                        events=span.events,
                        failed_events=span.failed_events,
                        bytes=span.bytes,
                        done_at=done_at,
                    )
                )

    def spans(self, since: datetime = EPOCH) -> list[Offloaded]:
        """The spans that end after ``since``, oldest first."""
        with self.engine.connect() as db:
            rows = db.execute(
                sa.select(offloads)
                .where(offloads.c.interval_end > since)
                .order_by(offloads.c.interval_start)
            ).mappings()
            return [record(Offloaded, row) for row in rows]


class Offloader:
    """Moves whole intervals of arrival from ``hot`` into ``warehouse``, then applies the
    hot store's retention.

    ``floor`` is the collectors' shared arrival floor: everything that arrived before it
    is committed in the hot store.
    """

    def __init__(
        self,
        hot: Engine,
        warehouse: Engine,
        log_: OffloadLog,
        leases: Leases,
        *,
        every: timedelta,
        retain: timedelta,
        floor: Callable[[], datetime],
        clock: Callable[[], datetime] = utc_now,
        lease_ttl: timedelta = timedelta(seconds=60),
    ) -> None:
        self.hot = hot
        self.warehouse = warehouse
        self.log = log_
        self.leases = leases
        self.every = every
        self.retain = retain
        self.floor = floor
        self.clock = clock
        self.lease_ttl = lease_ttl
        #: The last pass here: the interval boundary it reached and when it ran retention.
        self._reached: datetime | None = None
        self._retained_at: datetime | None = None

    def progress(self) -> datetime | None:
        return self.log.progress()

    def arrival_floor(self) -> datetime:
        """The warehouse's arrival floor: everything that arrived before it is there."""
        return self.progress() or EPOCH

    def lag_seconds(self) -> float | None:
        """How far the warehouse is behind now, in seconds (``None``: nothing offloaded
        yet)."""
        progress = self.progress()
        return None if progress is None else (self.clock() - progress).total_seconds()

    def run(self, should_stop: Callable[[], bool] = bool) -> OffloadResult:
        """Offload every whole interval below the floor, then delete what retention allows.
        Another process offloading now is left to it (nothing is done here); a pass in the
        same interval as this process's last one, within a minute of its retention, asks
        only for the collectors' floor (the server's scheduler calls this every tick)."""
        now = self.clock()
        limit = self._truncated(min(self.floor(), now - CLOCK_MARGIN))
        if (
            self._reached == limit
            and self._retained_at is not None
            and now - self._retained_at < _RETAIN_EVERY
        ):
            return OffloadResult([], 0, self._reached)
        try:
            with Lease(self.leases, LEASE, self.lease_ttl) as lease:
                done: list[Offloaded] = []
                # Read once: while this process holds the lease, only it moves the progress.
                progress = self.progress()
                for span, empty in self._spans(limit, progress):
                    if should_stop():
                        break
                    lease.check()
                    done.append(self._offload(span, empty, lease))
                    progress = span.end
                deleted = self._retain(should_stop, progress)
                if progress is not None and progress >= limit:
                    self._reached, self._retained_at = limit, now
                return OffloadResult(done, deleted, progress)
        except LeaseHeld:
            return OffloadResult([], 0, self.progress())

    def _truncated(self, moment: datetime) -> datetime:
        """The interval boundary at or before ``moment`` (intervals start at the epoch)."""
        return EPOCH + (moment - EPOCH) // self.every * self.every

    def _spans(self, limit: datetime, progress: datetime | None) -> list[tuple[Interval, bool]]:
        """The spans to do below ``limit``, each with whether it is known to be empty: each
        interval with arrivals is its own span, a stretch without any is one.

        Whether an interval has arrivals is asked of that interval alone (an indexed
        range); only an empty one leads to a search for the next arrival, so a backlog of
        busy intervals is never searched end to end once per interval.
        """
        mark = progress
        if mark is None:
            first = self._first_arrival(EPOCH, limit)
            # A new hot store with nothing below the floor: the warehouse is whole up to it.
            mark = self._truncated(first) if first is not None else limit - self.every
        spans = []
        while mark < limit:
            # The next boundary: after ``offload_interval`` changed, the progress may lie
            # inside an interval, and the first span ends at its end (the hot store still
            # holds those rows); the spans after it are whole intervals again.
            end = self._truncated(mark) + self.every
            if self._first_arrival(mark, end) is not None:
                spans.append((Interval(mark, end), False))
                mark = end
                continue
            first = self._first_arrival(end, limit)
            start = self._truncated(first) if first is not None else limit
            spans.append((Interval(mark, start), True))
            mark = start
        return spans

    def _first_arrival(self, start: datetime, end: datetime) -> datetime | None:
        found = [first_arrival(self.hot, table, start, end) for table in TABLES]
        return min((f for f in found if f is not None), default=None)

    def _offload(self, interval: Interval, empty: bool, lease: Lease) -> Offloaded:
        counts = dict.fromkeys(TABLES, 0)
        loaded = 0
        with tempfile.TemporaryDirectory(prefix="headwater-offload-") as tmp:
            for table in () if empty else TABLES:
                path = os.path.join(tmp, f"{table}.parquet")
                counts[table] = self._write(table, interval, path)
                if counts[table]:
                    # An interval with no rows of a table loads nothing: every attempt at
                    # it read none, so there is nothing an earlier attempt could have put.
                    loaded += os.path.getsize(path)
                    # Fenced: a holder that stalled past its lease cannot load after the
                    # one that took over (a delete and an insert could interleave).
                    self.warehouse.load_arrivals(table, interval, path, lease.fence)
        span = Offloaded(interval, counts["events"], counts["failed_events"], loaded)
        self.log.record(span, self.clock(), lease.holder)
        log.info(
            "offloaded %s: %d events, %d failed events",
            interval,
            span.events,
            span.failed_events,
            extra=fields(
                interval_start=interval.start.isoformat(),
                interval_end=interval.end.isoformat(),
                events=span.events,
                failed_events=span.failed_events,
                bytes=loaded,
            ),
        )
        return span

    def _write(self, table: str, interval: Interval, path: str) -> int:
        """The interval's rows of ``table`` into one Parquet file, read a slice at a time."""
        import pyarrow.parquet as pq  # only an offload writes Parquet

        step = (interval.end - interval.start) / SLICES
        rows = 0

        with pq.ParquetWriter(path, TABLES[table], compression="zstd") as writer:
            for index in range(SLICES):
                start = interval.start + step * index
                end = interval.end if index == SLICES - 1 else start + step
                part = arrivals(self.hot, table, start, end)
                if part.num_rows:
                    writer.write_table(part)
                    rows += part.num_rows
        return rows

    def _retain(self, should_stop: Callable[[], bool], progress: datetime | None) -> int:
        """Delete hot rows older than ``retain`` that are in the warehouse (below
        ``progress``), a batch at a time."""
        if progress is None:
            return 0
        cut = min(self.clock() - self.retain, progress)
        deleted = 0
        for table in TABLES:
            delete = functools.partial(self.hot.delete_arrivals, table, cut)
            deleted += delete_in_batches(delete, RETENTION_BATCH, should_stop)[0]
        if deleted:
            log.info(
                "retention deleted %d offloaded rows that arrived before %s",
                deleted,
                f"{cut:%Y-%m-%dT%H:%MZ}",
                extra=fields(deleted=deleted, before=cut.isoformat()),
            )
        return deleted
