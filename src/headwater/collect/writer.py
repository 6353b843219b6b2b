"""Group commit: many requests, one transaction, then every answer.

Request handlers hand their validated rows to :meth:`Writer.submit` and wait.
One thread takes everything queued since its last commit, builds one Arrow
table, and commits it with the dedupe in a single transaction; only then are
the waiting requests answered. Under load the batches grow by themselves: the
longer a commit takes, the more arrives for the next one.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import pyarrow as pa

from headwater.collect.errors import CommitFailed, Overloaded, ShuttingDown
from headwater.collect.metrics import CollectorMetrics
from headwater.collect.validate import EventRow
from headwater.core.clock import now_us
from headwater.store import schema
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


@dataclass(slots=True)
class _Submission:
    events: list[EventRow]
    failed: list[FailedRow]
    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[Outcome]
    new: int = field(default=0)


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
        clock: Callable[[], int] = now_us,
    ) -> None:
        self._engine = engine
        self._metrics = metrics
        self._window_us = dedupe_window_us
        self._queue_max = queue_max_events
        self._commit_max = commit_max_events
        self._retry_after = retry_after
        self._clock = clock
        self._queue: deque[_Submission] = deque()
        self._queued = 0
        self._cond = threading.Condition()
        self._closing = False
        self._thread = threading.Thread(target=self._run, name="headwater-writer", daemon=True)
        self._last_prune = 0.0
        self._pending: dict[int, int] = {}
        self._since_checkpoint = 0
        self.healthy = True

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

    @property
    def accepting(self) -> bool:
        return not self._closing and self._thread.is_alive()

    async def submit(
        self, events: list[EventRow], failed: list[FailedRow], received_us: int
    ) -> Outcome:
        """Queue rows for the next commit and wait until they are durable.

        ``received_us`` is when the request arrived: until the commit, the
        writer counts it in :meth:`oldest_pending`.
        """
        loop = asyncio.get_running_loop()
        size = len(events) + len(failed)
        sub = _Submission(events, failed, loop, loop.create_future())
        with self._cond:
            if self._closing:
                raise ShuttingDown(
                    "the collector is shutting down; retry against another instance or later",
                    retry_after=self._retry_after,
                )
            if self._queued + size > self._queue_max and self._queued > 0:
                raise Overloaded(
                    f"the writer has {self._queued} events waiting; retry after a pause",
                    retry_after=self._retry_after,
                )
            self._queue.append(sub)
            self._pending[id(sub)] = received_us
            self._queued += size
            self._metrics.queue_depth.set(self._queued)
            self._cond.notify()
        # The commit goes on even if this request is cancelled: the events are
        # then stored but unanswered, and the client's retry is a duplicate.
        return await asyncio.shield(sub.future)

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
        taken: list[_Submission] = []
        size = 0
        while self._queue and (not taken or size < self._commit_max):
            sub = self._queue.popleft()
            taken.append(sub)
            size += len(sub.events) + len(sub.failed)
        self._queued -= size
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
        # Exact dedupe inside the group first; the store dedupes against the window.
        seen: set[tuple[str, str]] = set()
        rows: list[EventRow] = []
        owners: list[_Submission] = []
        failed: list[FailedRow] = []
        for sub in subs:
            sub.new = 0
            failed.extend(sub.failed)
            for row in sub.events:
                key = (row[1], row[0])
                if key not in seen:
                    seen.add(key)
                    rows.append(row)
                    owners.append(sub)
        batch = IngestBatch(
            events=_table(rows, schema.EVENTS), failed=_table(failed, schema.FAILED_EVENTS)
        )
        new = self._engine.ingest(batch).to_pylist()
        counts: dict[str, int] = {}
        for owner, row, is_new in zip(owners, rows, new, strict=True):
            if is_new:
                owner.new += 1
                counts[row[1]] = counts.get(row[1], 0) + 1
        for source, count in counts.items():
            self._metrics.accepted.labels(source).inc(count)
        for sub in subs:
            if dups := len(sub.events) - sub.new:
                self._metrics.duplicates.labels(sub.events[0][1]).inc(dups)
            for bad in sub.failed:
                self._metrics.rejected.labels(bad[1] or "", bad[3]).inc()
        self._metrics.commit_events.observe(len(rows) + len(failed))
        self._since_checkpoint += len(rows) + len(failed)

    def _prune(self) -> None:
        self._last_prune = time.monotonic()
        try:
            removed = self._engine.prune_dedupe(self._clock() - self._window_us)
        except Exception:
            log.exception("could not prune the dedupe window")
            return
        if removed:
            log.info("forgot %d message ids older than the dedupe window", removed)


def _table(rows: Sequence[tuple[object, ...]], arrow_schema: pa.Schema) -> pa.Table:
    if not rows:
        return arrow_schema.empty_table()
    columns = list(zip(*rows, strict=True))
    arrays = [
        pa.array(column, type=f.type) for column, f in zip(columns, arrow_schema, strict=True)
    ]
    return pa.Table.from_arrays(arrays, schema=arrow_schema)


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
            sub.future.set_result(Outcome(stored=sub.new, duplicates=len(sub.events) - sub.new))
