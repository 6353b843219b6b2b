"""Group commit: many requests, one transaction, then every answer.

Request handlers hand their validated events (rows, or an Arrow table when a
worker validated them) to :meth:`Writer.submit` and wait. One thread takes
everything queued since its last commit (at most ``commit_max_events`` and
``commit_max_bytes``), makes one table of them, removes duplicates inside the
group with NumPy, and commits it
with the dedupe in a single transaction; only then are the waiting requests
answered. Under load the batches grow by themselves: the longer a commit takes,
the more arrives for the next one. The queue is bounded in events and in bytes,
so memory stays bounded whatever the load.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeVar

import numpy as np
import pyarrow as pa

from headwater.collect.errors import CommitFailed, Overloaded, ShuttingDown
from headwater.collect.metrics import CollectorMetrics
from headwater.collect.validate import EventRow
from headwater.core.clock import now_us
from headwater.store import schema
from headwater.store.dedupe import U64, Mask
from headwater.store.engine import Engine, IngestBatch
from headwater.store.errors import StoreUnavailable

log = logging.getLogger(__name__)

#: A row of ``failed_events`` in the column order of :data:`headwater.store.schema.FAILED_EVENTS`.
FailedRow = tuple[str, str | None, int, str, str | None, str, str | None, None]

_PRUNE_EVERY_SECONDS = 60.0
_IDLE_SECONDS = 0.25
_CHECKPOINT_AFTER_ROWS = 20_000


@dataclass(frozen=True, slots=True)
class Outcome:
    """What became of one request's events."""

    stored: int
    duplicates: int
    #: Per event of the request, whether the store kept it (asked for with ``per_row``).
    new_rows: Mask | None = None


@dataclass(slots=True)
class _Submission:
    #: A small request's rows (turned into Arrow once per commit, with the others'), or a
    #: large one's table, built where it was validated.
    events: pa.Table | Sequence[EventRow]
    failed: Sequence[FailedRow]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Outcome]
    nbytes: int
    keys: tuple[U64, U64] | None = None
    #: Failed events whose replay these events are (``schema.REPLAYED``), marked in the commit.
    replayed: pa.Table | None = None
    per_row: bool = False
    new: int = field(default=0)
    new_rows: Mask | None = None

    @property
    def count(self) -> int:
        """Its events."""
        events = self.events
        return int(events.num_rows) if isinstance(events, pa.Table) else len(events)

    @property
    def size(self) -> int:
        return self.count + len(self.failed)

    @property
    def source(self) -> str:
        events = self.events
        if isinstance(events, pa.Table):
            return str(events["source"][0].as_py())
        return events[0][1]


class Queued(Protocol):
    """One request's events waiting to be committed (or, in an accept process, sent)."""

    @property
    def events(self) -> pa.Table | Sequence[EventRow]: ...

    @property
    def keys(self) -> tuple[U64, U64] | None: ...

    @property
    def nbytes(self) -> int: ...

    @property
    def size(self) -> int:
        """Its events and refused events: what the queue and group limits count."""
        ...


Q = TypeVar("Q", bound=Queued)


def take_group(queue: deque[Q], max_size: int, max_bytes: int) -> tuple[list[Q], int, int]:
    """From the head of ``queue``: what one group takes (at least one request, never
    split, then more while within ``max_size`` events and ``max_bytes`` bytes), and its
    size and bytes."""
    taken: list[Q] = []
    size = nbytes = 0
    while queue and (
        not taken or (size + queue[0].size <= max_size and nbytes + queue[0].nbytes <= max_bytes)
    ):
        item = queue.popleft()
        taken.append(item)
        size += item.size
        nbytes += item.nbytes
    return taken, size, nbytes


class Committer(Protocol):
    """What the tracking API hands its events to: the :class:`Writer`, or in an accept
    process the :class:`~headwater.collect.forward.Forwarder` to the owner's writer."""

    async def submit(
        self,
        events: pa.Table | Sequence[EventRow],
        failed: Sequence[FailedRow],
        received_us: int,
        *,
        nbytes: int = 0,
        keys: tuple[U64, U64] | None = None,
    ) -> Outcome: ...

    def acknowledged(self, received_us: int) -> None: ...

    def oldest_pending(self) -> int | None: ...


class Writer:
    """The single writer thread in front of an :class:`~headwater.store.engine.Engine`."""

    def __init__(
        self,
        engine: Engine,
        metrics: CollectorMetrics,
        *,
        dedupe_window_us: int,
        queue_max_events: int,
        commit_max_events: int,
        retry_after: int,
        queue_max_bytes: int = 64 * 1024 * 1024,
        commit_max_bytes: int = 8 * 1024 * 1024,
        clock: Callable[[], int] = now_us,
    ) -> None:
        self._engine = engine
        self._metrics = metrics
        self._window_us = dedupe_window_us
        self._queue_max = queue_max_events
        self._queue_max_bytes = queue_max_bytes
        self._commit_max = commit_max_events
        self._commit_max_bytes = commit_max_bytes
        self._retry_after = retry_after
        self._clock = clock
        self._queue: deque[_Submission] = deque()
        self._queued = 0
        self._queued_bytes = 0
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="headwater-writer", daemon=True)
        self._last_prune = 0.0
        self._pending: dict[int, int] = {}
        self._since_checkpoint = 0
        self.healthy = True
        #: Called from the writer's thread after each commit with the events of the group
        #: and which of them the store kept (the rest were duplicates): the dashboard's
        #: live tail. It must return quickly; what it raises is logged, not the commit's.
        self.on_commit: Callable[[pa.Table, Mask], None] | None = None

    def start(self) -> None:
        self._prune()
        self._thread.start()

    @property
    def queued(self) -> int:
        return self._queued

    def oldest_pending(self) -> int | None:
        """Arrival time of the oldest request not yet committed, if any."""
        with self._cond:
            return min(self._pending.values(), default=None)

    def acknowledged(self, received_us: int) -> None:
        """Count the wait of a request answered as stored (``headwater_ack_seconds``)."""
        self._metrics.ack_seconds.observe(max(0, self._clock() - received_us) / 1_000_000)

    @property
    def accepting(self) -> bool:
        return not self._closing and self._thread.is_alive()

    async def submit(
        self,
        events: pa.Table | Sequence[EventRow],
        failed: Sequence[FailedRow],
        received_us: int,
        *,
        nbytes: int = 0,
        keys: tuple[U64, U64] | None = None,
        replayed: pa.Table | None = None,
        per_row: bool = False,
    ) -> Outcome:
        """Queue one request's events (its rows, or a table of ``schema.EVENTS``) and
        failed events for the next commit, and wait until they are durable.

        ``received_us`` is when the request arrived: until the commit, the
        writer counts it in :meth:`oldest_pending`. ``nbytes`` is what it counts
        towards ``queue_max_bytes`` (the collector gives the request's body size);
        ``keys``: the events' dedupe keys, when the caller computed them (see
        ``collect/workers.py``); ``replayed``: the failed events these events replay,
        marked replayed in the same commit; ``per_row``: the outcome says which events were
        new (a frame of several requests from an accept process splits it by request).
        """
        loop = asyncio.get_running_loop()
        sub = _Submission(
            events, failed, loop, loop.create_future(), nbytes, keys, replayed, per_row
        )
        size = sub.size
        with self._cond:
            if self._closing:
                raise ShuttingDown(
                    "the collector is shutting down; retry against another instance or later",
                    retry_after=self._retry_after,
                )
            if self._queued > 0 and (
                self._queued + size > self._queue_max
                or self._queued_bytes + nbytes > self._queue_max_bytes
            ):
                raise Overloaded(
                    f"the writer has {self._queued} events ({self._queued_bytes} bytes) "
                    "waiting; retry after a pause",
                    retry_after=self._retry_after,
                )
            self._queue.append(sub)
            self._pending[id(sub)] = received_us
            self._queued += size
            self._queued_bytes += nbytes
            self._metrics.queue_depth.set(self._queued)
            self._cond.notify()
        # The commit goes on even if this request is cancelled: the events are
        # then stored but unanswered, and the client's retry is a duplicate.
        return await asyncio.shield(sub.future)

    def commit(
        self, events: pa.Table, received_us: int, *, replayed: pa.Table | None = None
    ) -> Outcome:
        """:meth:`submit` from a thread that runs no event loop (an operation of the control
        socket): queued with the collector's requests, committed in their group."""
        return asyncio.run(
            self.submit(events, [], received_us, nbytes=events.nbytes, replayed=replayed)
        )

    def close(self, timeout: float | None = None) -> None:
        """Refuse new work, commit what is queued, and stop the thread."""
        with self._cond:
            self._closing = True
            self._cond.notify()
        if self._thread.is_alive():
            self._thread.join(timeout)

    # -- the writer thread --------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                if not self._queue and not self._closing:
                    # A pause in the traffic is the time to checkpoint: then no
                    # request waits behind it.
                    self._cond.wait(timeout=_IDLE_SECONDS)
                    idle = not self._queue and not self._closing
                else:
                    idle = False
                if not self._queue and self._closing:
                    return
                taken = self._take()
            if taken:
                self._commit(taken)
            elif idle and self._since_checkpoint >= _CHECKPOINT_AFTER_ROWS:
                self._checkpoint()
            if time.monotonic() - self._last_prune > _PRUNE_EVERY_SECONDS:
                self._prune()

    def _checkpoint(self) -> None:
        self._since_checkpoint = 0
        try:
            self._engine.checkpoint()
        except Exception:
            log.exception("checkpoint failed; the store retries on its own")

    def _take(self) -> list[_Submission]:
        taken, size, nbytes = take_group(self._queue, self._commit_max, self._commit_max_bytes)
        self._queued -= size
        self._queued_bytes -= nbytes
        self._metrics.queue_depth.set(self._queued)
        return taken

    def _commit(self, subs: list[_Submission]) -> None:
        try:
            self._commit_group(subs)
        finally:
            with self._cond:
                for sub in subs:
                    self._pending.pop(id(sub), None)

    def _commit_group(self, subs: list[_Submission]) -> None:
        started = time.perf_counter()
        try:
            self._write(subs)
        except StoreUnavailable as exc:
            self._metrics.commit_failures.inc()
            if len(subs) > 1:
                # One poisoned request must not fail the others: commit each alone.
                for sub in subs:
                    self._commit_group([sub])
                return
            self.healthy = False
            log.error("commit failed: %s", exc.reason)
            _answer(subs, CommitFailed(str(exc), retry_after=self._retry_after))
            return
        except Exception as exc:  # the thread must survive anything a request brings
            log.exception("unexpected error in the writer")
            _answer(subs, CommitFailed(f"unexpected error: {exc}", retry_after=self._retry_after))
            return
        self.healthy = True
        self._metrics.commit_seconds.observe(time.perf_counter() - started)
        _answer(subs, None)

    def _write(self, subs: list[_Submission]) -> None:
        with_events = [sub for sub in subs if sub.count]
        failed = rows_table([row for sub in subs for row in sub.failed], schema.FAILED_EVENTS)
        events, (his, los) = join_events(with_events)
        owner = np.repeat(np.arange(len(with_events)), [sub.count for sub in with_events])
        # Exact dedupe inside the group first (the first of each key is kept); the store
        # dedupes against the window.
        first = _first_of_each(his, los)
        rows = len(owner)
        if first is not None:
            events, his, los = events.filter(pa.array(first)), his[first], los[first]
            owner = owner[first]
        marks = [sub.replayed for sub in subs if sub.replayed is not None]
        batch = IngestBatch(
            events=events,
            failed=failed,
            keys=(pa.array(his), pa.array(los)),
            replayed=pa.concat_tables(marks) if marks else None,
        )
        new = np.asarray(self._engine.ingest(batch), dtype=np.bool_)
        stored = np.bincount(owner[new], minlength=len(with_events))
        for sub in subs:
            sub.new = 0
        if any(sub.per_row for sub in with_events):
            _split_rows(with_events, new, first, rows)
        accepted: dict[str, int] = {}
        for sub, count in zip(with_events, stored.tolist(), strict=True):
            sub.new = count
            source = sub.source
            accepted[source] = accepted.get(source, 0) + count
            if dups := sub.count - count:
                self._metrics.duplicates.labels(source).inc(dups)
        for source, count in accepted.items():
            self._metrics.accepted.labels(source).inc(count)
        if failed.num_rows:
            for (bad_source, code), count in _pairs(subs).items():
                self._metrics.rejected.labels(bad_source or "", code).inc(count)
        self._metrics.commit_events.observe(events.num_rows + failed.num_rows)
        if self.on_commit is not None and events.num_rows:
            try:
                self.on_commit(events, new)
            except Exception:  # a viewer's failure must never fail a commit
                log.exception("the commit hook failed")
        self._since_checkpoint += events.num_rows + failed.num_rows

    def _prune(self) -> None:
        self._last_prune = time.monotonic()
        try:
            removed = self._engine.prune_dedupe(self._clock() - self._window_us)
        except Exception:
            log.exception("could not prune the dedupe window")
            return
        if removed:
            log.info("forgot %d message ids older than the dedupe window", removed)


def rows_table(rows: Sequence[tuple[object, ...]], arrow_schema: pa.Schema) -> pa.Table:
    """Rows (tuples in the schema's column order) as one Arrow table; columns past the
    rows' length are NULL (``first_received_at``, which only a replay sets)."""
    if not rows:
        return arrow_schema.empty_table()
    columns = list(zip(*rows, strict=True))
    arrays = [
        pa.array(column, type=f.type) for column, f in zip(columns, arrow_schema, strict=False)
    ]
    arrays += [pa.nulls(len(rows), f.type) for f in list(arrow_schema)[len(columns) :]]
    return pa.Table.from_arrays(arrays, schema=arrow_schema)


def join_events(subs: Sequence[Queued]) -> tuple[pa.Table, tuple[U64, U64]]:
    """The group's events as one table, in the order of its requests, with their keys.

    Consecutive requests that came as rows become one table together: building a table
    has a fixed cost, paid once per commit rather than once per request.
    """
    tables: list[pa.Table] = []
    his: list[U64] = []
    los: list[U64] = []
    rows: list[EventRow] = []

    def flush() -> None:
        if rows:
            tables.append(rows_table(rows, schema.EVENTS))
            hi, lo = schema.message_keys([r[1] for r in rows], [r[0] for r in rows])
            his.append(hi.to_numpy())
            los.append(lo.to_numpy())
            rows.clear()

    for sub in subs:
        if isinstance(sub.events, pa.Table):
            flush()
            tables.append(sub.events)
            hi, lo = sub.keys or _keys(sub.events)
            his.append(hi)
            los.append(lo)
        else:
            rows.extend(sub.events)
    flush()
    if not tables:
        empty = np.empty(0, np.uint64)
        return schema.EVENTS.empty_table(), (empty, empty)
    table = tables[0] if len(tables) == 1 else pa.concat_tables(tables)
    return table, (np.concatenate(his), np.concatenate(los))


def _keys(events: pa.Table) -> tuple[U64, U64]:
    hi, lo = schema.message_keys(events["source"].to_pylist(), events["message_id"].to_pylist())
    return hi.to_numpy(), lo.to_numpy()


def _first_of_each(hi: U64, lo: U64) -> Mask | None:
    """Which rows hold the first occurrence of their key; ``None`` when every key is once."""
    if len(hi) < 2:
        return None
    keys = np.empty(len(hi), dtype=[("hi", np.uint64), ("lo", np.uint64)])
    keys["hi"], keys["lo"] = hi, lo
    _, first = np.unique(keys, return_index=True)
    if len(first) == len(hi):
        return None
    keep = np.zeros(len(hi), np.bool_)
    keep[first] = True
    return keep


def _split_rows(subs: list[_Submission], new: Mask, first: Mask | None, rows: int) -> None:
    """Give each submission that asked which of its events were new: ``new`` is per row
    left after the group's own duplicates (``first``) were removed from ``rows`` rows."""
    kept = np.flatnonzero(first) if first is not None else np.arange(rows)
    stored = np.zeros(rows, np.bool_)
    stored[kept[new]] = True
    start = 0
    for sub in subs:
        end = start + sub.count
        if sub.per_row:
            sub.new_rows = stored[start:end]
        start = end


def _pairs(subs: list[_Submission]) -> dict[tuple[str | None, str], int]:
    counts: dict[tuple[str | None, str], int] = {}
    for sub in subs:
        for row in sub.failed:
            counts[(row[1], row[3])] = counts.get((row[1], row[3]), 0) + 1
    return counts


def _answer(subs: list[_Submission], error: Exception | None) -> None:
    """Wake each waiting request; one call per event loop, not one per request."""
    by_loop: dict[asyncio.AbstractEventLoop, list[_Submission]] = {}
    for sub in subs:
        by_loop.setdefault(sub.loop, []).append(sub)
    for loop, group in by_loop.items():
        loop.call_soon_threadsafe(_settle, group, error)


def _settle(subs: list[_Submission], error: Exception | None) -> None:
    for sub in subs:
        if sub.future.done():
            continue
        if error is not None:
            sub.future.set_exception(error)
        else:
            duplicates = sub.count - sub.new
            new_rows = sub.new_rows
            if sub.per_row and new_rows is None:  # no events, or none committed
                new_rows = np.zeros(sub.count, np.bool_)
            sub.future.set_result(Outcome(sub.new, duplicates, new_rows))
