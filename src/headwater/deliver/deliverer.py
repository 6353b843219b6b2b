"""Deliver published intervals to their sinks: at least once, resumed after a crash.

A run that publishes an interval records, in the same metadata transaction,
one owed delivery per sink the pipeline names. :class:`Deliverer` works
through the owed deliveries: it reads the interval's rows back from the
engine's table (see :mod:`headwater.deliver.rows`) and hands them to the
sink. A failed attempt is tried again after an exponential backoff with
jitter; after the sink's ``max_attempts`` what could not be delivered becomes
a dead letter, kept with its reason until ``headwater replay``.

One deliverer per pipeline and sink at a time, across processes, through a
lease (``deliver:<pipeline>:<sink>``). The lease is checked before every
write to the sink, and every record of progress is fenced by it, so a
deliverer that stalled past its lease and lost it to another stops, and its
progress does not land over the other's.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal, cast

from headwater.core.clock import utc_now
from headwater.core.errors import HeadwaterError, TransientError
from headwater.core.logs import fields
from headwater.core.types import Interval, Output
from headwater.deliver.errors import DeliveryError
from headwater.deliver.guard import AddressRefused, Resolver, resolve
from headwater.deliver.rows import interval_rows, span
from headwater.deliver.settings import FilesSink, Sink, WebhookSink
from headwater.deliver.targets import Sinks, Targets
from headwater.state import StateStore
from headwater.state.deliveries import Delivery
from headwater.state.errors import LeaseHeld, LeaseLost
from headwater.state.leases import TTL, Lease
from headwater.store.engine import Engine

# A sink's kind of target is imported when a delivery to one is made (see targets.py).
if TYPE_CHECKING:
    import pyarrow as pa

    from headwater.deliver.files import FilesTarget
    from headwater.deliver.postgres import PostgresTarget
    from headwater.deliver.webhook import WebhookTarget

log = logging.getLogger(__name__)

#: What one pass did with one delivery: ``pending`` when it stopped early (a shutdown, the
#: interval published again meanwhile, its lease taken over).
ResultStatus = Literal["delivered", "failed", "dead", "pending"]


@dataclass(frozen=True)
class DeliveryResult:
    """What one pass did with one delivery."""

    pipeline: str
    sink: str
    interval: Interval
    status: ResultStatus
    rows: int
    error: str | None = None
    next_attempt_at: datetime | None = None


class Deliverer:
    """Works through owed deliveries for one project and engine."""

    def __init__(
        self,
        sinks: Callable[[], Sinks],
        engine: Engine,
        state: StateStore,
        outputs: Callable[[], Mapping[str, Output]],
        *,
        lease_ttl: timedelta = TTL,
        clock: Callable[[], datetime] = utc_now,
        resolver: Resolver = resolve,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.sinks = sinks
        self.engine = engine
        self.state = state
        self.log = state.deliveries
        self.targets = Targets(resolver)
        self.outputs = outputs
        self.clock = clock
        self._lease_ttl = lease_ttl
        self._jitter = jitter
        #: Called with what each attempt made here came to (the runtime counts them).
        self.on_result: Callable[[DeliveryResult], None] = lambda result: None

    def deliver_due(
        self, should_stop: Callable[[], bool] = bool, *, wait: bool = False
    ) -> list[DeliveryResult]:
        """One attempt at every delivery that is due, oldest interval first.

        A delivery another thread or process is making is skipped, or with
        ``wait`` (a command that must say where its rows went) waited for and
        reported as that attempt left it.
        """
        results: list[DeliveryResult] = []
        seen: set[tuple[str, str, datetime]] = set()
        while not should_stop():
            due = [
                d
                for d in self.log.due(self.clock())
                if (d.pipeline, d.sink, d.interval.start) not in seen
            ]
            if not due:
                break
            for delivery in due:
                if should_stop():
                    break
                seen.add((delivery.pipeline, delivery.sink, delivery.interval.start))
                result = self._claimed(delivery, should_stop, wait)
                if result is not None:
                    results.append(result)
        return results

    def _claimed(
        self, delivery: Delivery, should_stop: Callable[[], bool], wait: bool
    ) -> DeliveryResult | None:
        name = f"deliver:{delivery.pipeline}:{delivery.sink}"
        while True:
            try:
                with Lease(self.state.leases, name, self._lease_ttl) as lease:
                    current = self.log.get(
                        delivery.pipeline, delivery.sink, delivery.interval.start
                    )
                    if current is None:
                        return None
                    if current.status in ("pending", "failed") and current.next_attempt_at <= (
                        self.clock()
                    ):
                        started = time.perf_counter()
                        result = _Attempt(self, current, lease, should_stop).run()
                        _log_delivery(result, current, started)
                        self.on_result(result)
                        return result
                    # Made (or tried) by another process meanwhile: report how it stands.
                    return as_result(current) if wait else None
            except LeaseHeld:
                if not wait or should_stop():
                    return None  # another process is delivering to this sink now
                time.sleep(_LEASE_POLL_SECONDS)

    def backoff(self, sink: Sink, attempts: int, retry_after: float | None) -> float:
        """Exponential, capped, with jitter (half fixed, half random); at least Retry-After."""
        base = min(sink.max_backoff_seconds, sink.backoff_seconds * 2.0 ** (attempts - 1))
        delay = base / 2 + self._jitter() * base / 2
        if retry_after is not None:
            delay = max(delay, min(retry_after, sink.max_backoff_seconds))
        return delay

    def close(self) -> None:
        self.targets.close()


class _Attempt:
    """One attempt at one delivery, holding its lease."""

    def __init__(
        self,
        deliverer: Deliverer,
        delivery: Delivery,
        lease: Lease,
        should_stop: Callable[[], bool],
    ) -> None:
        self.deliverer = deliverer
        self.log = deliverer.log
        self.delivery = delivery
        self.lease = lease
        self.should_stop = should_stop

    def run(self) -> DeliveryResult:
        delivery = self.delivery
        try:
            return self._attempt()
        except LeaseLost:
            log.warning("%s %s to %s: stopped; another deliverer took over", delivery.pipeline,
                        delivery.interval, delivery.sink)  # fmt: skip
            return _result(delivery, "pending", 0)
        except HeadwaterError as exc:
            # The pipelines or headwater.toml do not load now (being edited, say): not the
            # delivery's fault, so no attempt is counted; it waits for the files to load.
            when = self.deliverer.clock() + timedelta(seconds=_WAIT_FOR_PROJECT_SECONDS)
            if not self.log.failed(delivery, self.lease.holder, delivery.attempts, when,
                                   _reason(exc)):  # fmt: skip
                return _result(delivery, "pending", 0)
            return _result(delivery, "failed", 0, _reason(exc), when)
        except Exception as exc:
            # One delivery's surprise must not stop the others (they run oldest first, so
            # it would come first every pass): counted, backed off, then a dead letter.
            log.exception("%s %s to %s", delivery.pipeline, delivery.interval, delivery.sink)
            return self._failed(_DEFAULT_SINK, f"{type(exc).__name__}: {exc}", None)

    def _attempt(self) -> DeliveryResult:
        delivery = self.delivery
        config = self.deliverer.sinks()
        sink = config.sinks.get(delivery.sink)
        output = self.deliverer.outputs().get(delivery.pipeline)
        if sink is None or output is None:
            missing = (
                f"sink {delivery.sink} is not in headwater.toml"
                if sink is None
                else f"pipeline {delivery.pipeline} is gone"
            )
            return self._failed(_DEFAULT_SINK, missing, None)
        try:
            target = self.deliverer.targets.get(delivery.sink, sink, config)
            table = interval_rows(self.deliverer.engine, output, delivery.interval)
            # A sink's target is of its kind (Targets.get).
            if isinstance(sink, WebhookSink):
                return self._post(sink, cast("WebhookTarget", target), table, config.scope)
            self.lease.check()
            if isinstance(sink, FilesSink):
                files = cast("FilesTarget", target)
                files.write(output.name, span(output, delivery.interval), table)
            else:
                cast("PostgresTarget", target).write(
                    output.name,
                    output.key,
                    span(output, delivery.interval),
                    output.time_column,
                    table,
                )
        except LeaseLost:
            raise
        except TransientError as exc:
            return self._failed(sink, _reason(exc), None)
        except HeadwaterError as exc:
            return self._dead(sink, _reason(exc), attempts=delivery.attempts + 1)
        if not self.log.progress(delivery, self.lease.holder, 1, table.num_rows, finished=True):
            # Written, but the interval was published again meanwhile: the rows went.
            return _result(delivery, "pending", table.num_rows)
        return _result(delivery, "delivered", table.num_rows)

    def _post(
        self, sink: WebhookSink, target: WebhookTarget, table: pa.Table, scope: str
    ) -> DeliveryResult:
        from headwater.deliver.webhook import batches, body, idempotency_key, made_ahead

        delivery, holder = self.delivery, self.lease.holder
        size = delivery.batch_rows
        if size is None:
            # Cut once: a later attempt (or another process after a crash) sends the same
            # batches under the same keys, even if batch_rows changed meanwhile.
            size = sink.batch_rows
            if not self.log.cut(delivery, holder, size):
                return _result(delivery, "pending", 0)
            delivery = self.delivery = replace(delivery, batch_rows=size)
        parts = batches(table, size)
        index, rows, attempts = delivery.batches_done, delivery.rows_delivered, delivery.attempts
        sent, dead_reason = 0, None
        # Batches sent are recorded every few batches, not after each (a commit of the
        # metadata each would cost more than the POST): after a crash the unrecorded ones
        # go again, with the same idempotency keys, which receivers drop. Every other
        # record (a failure, a dead letter, a stop, the end) comes after them.
        recorded, recorded_at = index, time.monotonic()

        def record(finished: bool = False) -> bool:
            nonlocal recorded, recorded_at
            if index == recorded and not finished:
                return True
            recorded, recorded_at = index, time.monotonic()
            return self.log.progress(delivery, holder, index, rows, finished=finished)

        def make(batch: int) -> bytes:
            return body(delivery.pipeline, delivery.sink, delivery.interval, delivery.run_id,
                        batch, len(parts), parts[batch])  # fmt: skip

        # One body a turn of the loop, in order: each turn moves on one batch, or returns.
        payloads = made_ahead(make, range(index, len(parts)))
        try:
            while index < len(parts):
                if self.should_stop():
                    record()
                    return _result(delivery, "pending", sent)
                part = parts[index]
                payload = next(payloads)
                key = idempotency_key(delivery.pipeline, delivery.sink, delivery.interval.start,
                                      delivery.run_id, index, scope)  # fmt: skip
                self.lease.check()
                posted = time.monotonic()
                try:
                    outcome = target.send(payload, key)
                except AddressRefused as exc:
                    if not record():
                        return _result(delivery, "pending", sent)
                    return self._dead(sink, _reason(exc), attempts=attempts + 1)
                finished = index + 1 == len(parts)
                if outcome.delivered:
                    index, rows, attempts = index + 1, rows + part.num_rows, 0
                    sent += part.num_rows
                    moment = time.monotonic()
                    due = (
                        finished
                        or moment - posted >= _SLOW_POST_SECONDS
                        or index - recorded >= _PROGRESS_BATCHES
                        or moment - recorded_at >= _PROGRESS_SECONDS
                    )
                    if due and not record(finished):
                        return _result(delivery, "pending", sent)
                    continue
                if not record():
                    return _result(delivery, "pending", sent)
                reason = outcome.reason or "refused"
                if outcome.retry and attempts + 1 < sink.max_attempts:
                    self.delivery = replace(delivery, attempts=attempts)
                    return self._failed(sink, reason, outcome.retry_after, sent=sent)
                if not self.log.dead_letter(
                    delivery,
                    holder,
                    batch=index,
                    idempotency_key=key,
                    body=payload,
                    rows=part.num_rows,
                    reason=_after(reason, attempts + 1),
                    attempts=attempts + 1,
                    finished=finished,
                ):
                    return _result(delivery, "pending", sent)
                recorded = index + 1  # the dead letter records its batch as done
                # A line per dead letter (the delivery's own line follows when it ends).
                log.error("%s %s batch %d to %s: dead letter: %s", delivery.pipeline,
                          delivery.interval, index, delivery.sink, reason,
                          extra=fields(sink=delivery.sink, pipeline=delivery.pipeline,
                                       interval_start=delivery.interval.start,
                                       interval_end=delivery.interval.end, batch=index,
                                       rows=part.num_rows, dead_letter=True,
                                       error=reason))  # fmt: skip
                index, attempts, dead_reason = index + 1, 0, f"batch {index}: {reason}"
            latest = self.log.get(delivery.pipeline, delivery.sink, delivery.interval.start)
            status = latest.status if latest is not None else "pending"
            return _result(delivery, status, sent, dead_reason if status == "dead" else None)
        finally:
            payloads.close()

    def _failed(
        self, sink: Sink, reason: str, retry_after: float | None, *, sent: int = 0
    ) -> DeliveryResult:
        delivery = self.delivery
        attempts = delivery.attempts + 1
        if attempts >= sink.max_attempts:
            return self._dead(sink, reason, attempts=attempts)
        delay = self.deliverer.backoff(sink, attempts, retry_after)
        when = self.deliverer.clock() + timedelta(seconds=delay)
        if not self.log.failed(delivery, self.lease.holder, attempts, when, reason):
            return _result(delivery, "pending", sent)  # published again, or taken over
        return _result(delivery, "failed", sent, reason, when)

    def _dead(self, sink: Sink, reason: str, *, attempts: int) -> DeliveryResult:
        """The whole (rest of the) delivery becomes one dead letter; replay delivers it again."""
        delivery = self.delivery
        text = _after(reason, attempts)
        if not self.log.dead_letter(delivery, self.lease.holder, batch=None,
                                    idempotency_key=None, body=None, rows=0, reason=text,
                                    attempts=attempts, finished=True):  # fmt: skip
            return _result(delivery, "pending", 0)  # published again, or taken over
        return _result(delivery, "dead", 0, text)


_DEFAULT_SINK = FilesSink(url=".")
#: Batches sent to a webhook are recorded after this many, or this many seconds since the
#: last record, or after a POST that took this long: a slow receiver has every batch
#: recorded (a commit is small beside its answer), a fast one a commit every 32 batches.
_PROGRESS_BATCHES = 32
_PROGRESS_SECONDS = 1.0
_SLOW_POST_SECONDS = 0.1
_LEASE_POLL_SECONDS = 0.2
_WAIT_FOR_PROJECT_SECONDS = 30.0


def _log_delivery(result: DeliveryResult, delivery: Delivery, started: float) -> None:
    """One line per attempt at a delivery: how it went, the rows it wrote, why it failed."""
    duration_ms = round((time.perf_counter() - started) * 1000, 1)
    values = fields(
        sink=result.sink,
        pipeline=result.pipeline,
        interval_start=result.interval.start,
        interval_end=result.interval.end,
        outcome=result.status,
        rows=result.rows,
        duration_ms=duration_ms,
        run_id=delivery.run_id,
        error=result.error,
        next_attempt_at=result.next_attempt_at,
    )
    where = f"delivery of {result.pipeline} {result.interval} to {result.sink}"
    if result.status == "delivered":
        log.info("%s: %d rows in %.0f ms", where, result.rows, duration_ms, extra=values)
    elif result.status == "failed":
        when = f"{result.next_attempt_at:%Y-%m-%dT%H:%M:%SZ}" if result.next_attempt_at else "later"
        log.warning("%s failed: %s; next attempt at %s", where, result.error, when, extra=values)
    elif result.status == "dead":
        log.error("%s: dead letter: %s", where, result.error, extra=values)
    else:
        log.info("%s: stopped after %d rows (a shutdown, a new run of the interval, or "
                 "another deliverer)", where, result.rows, extra=values)  # fmt: skip


def as_result(delivery: Delivery) -> DeliveryResult:
    """A delivery as another process's attempt left it."""
    waiting = delivery.next_attempt_at if delivery.status == "failed" else None
    return DeliveryResult(
        delivery.pipeline, delivery.sink, delivery.interval, delivery.status,
        delivery.rows_delivered, delivery.last_error, waiting,
    )  # fmt: skip


def _reason(exc: HeadwaterError) -> str:
    """What a delivery record says of ``exc``: the sink's words and the fix, without the ids
    the record already holds."""
    text = exc.reason if isinstance(exc, DeliveryError) else exc.message
    return f"{text} ({exc.hint})" if exc.hint else text


def _after(reason: str, attempts: int) -> str:
    return reason if attempts <= 1 else f"{reason} (after {attempts} attempts)"


def _result(
    delivery: Delivery,
    status: ResultStatus,
    rows: int,
    error: str | None = None,
    next_attempt_at: datetime | None = None,
) -> DeliveryResult:
    return DeliveryResult(
        delivery.pipeline, delivery.sink, delivery.interval, status, rows, error, next_attempt_at
    )


__all__ = ["Deliverer", "DeliveryResult", "as_result"]
