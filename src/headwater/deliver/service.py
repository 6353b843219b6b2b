"""Deliver published intervals to their sinks: at least once, resumed after a crash.

A run that publishes an interval records, in the same metadata transaction,
one owed delivery per sink the pipeline names. :class:`Deliverer` works
through the owed deliveries: it reads the interval's rows back from the
engine's table (so a delivery needs nothing that a crash could lose), in a
stable order (so a resumed webhook delivery cuts the same batches and sends
the same idempotency keys), and hands them to the sink. A failed attempt is
tried again after an exponential backoff with jitter; after the sink's
``max_attempts`` what could not be delivered becomes a dead letter, kept with
its reason until ``headwater replay``.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

import msgspec
import pyarrow as pa
from sqlglot import exp

from headwater.core.clock import utc_now
from headwater.core.errors import HeadwaterError, TransientError
from headwater.core.types import Interval
from headwater.deliver.files import FilesTarget
from headwater.deliver.guard import AddressRefused, Resolver, resolve
from headwater.deliver.postgres import PostgresTarget
from headwater.deliver.settings import DeliverySettings, FilesSink, PostgresSink, Sink, WebhookSink
from headwater.deliver.webhook import WebhookTarget, batches, body, idempotency_key
from headwater.process.definition import Pipeline
from headwater.process.errors import RunInterrupted
from headwater.process.lease import Lease
from headwater.process.metadata import MetadataStore
from headwater.process.metadata.deliveries import DeadLetter, Delivery
from headwater.store.engine import Engine

log = logging.getLogger(__name__)

Target = FilesTarget | PostgresTarget | WebhookTarget


@dataclass(frozen=True)
class DeliveryResult:
    """What one pass did with one delivery."""

    pipeline: str
    sink: str
    interval: Interval
    status: str  # delivered | failed | dead | pending (stopped, or re-published meanwhile)
    rows: int
    error: str | None = None
    next_attempt_at: datetime | None = None


@dataclass(frozen=True)
class ReplayResult:
    id: int
    pipeline: str
    sink: str
    interval: Interval
    batch: int | None
    status: str  # delivered | requeued | superseded | failed
    error: str | None = None


@dataclass(frozen=True)
class Sinks:
    """The sinks as ``headwater.toml`` says now, and where relative paths start."""

    root: Path
    sinks: Mapping[str, Sink]
    settings: DeliverySettings
    #: The environment (empty for the default): part of every idempotency key.
    scope: str = ""


class Deliverer:
    """Works through owed deliveries and dead letters for one project and engine."""

    def __init__(
        self,
        sinks: Callable[[], Sinks],
        engine: Engine,
        metadata: MetadataStore,
        pipelines: Callable[[], Mapping[str, Pipeline]],
        *,
        clock: Callable[[], datetime] = utc_now,
        resolver: Resolver = resolve,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self._sinks = sinks
        self.engine = engine
        self.metadata = metadata
        self.log = metadata.deliveries
        self._pipelines = pipelines
        self._clock = clock
        self._resolver = resolver
        self._jitter = jitter
        self._targets: dict[str, tuple[bytes, Target]] = {}

    # -- owed deliveries -------------------------------------------------------------

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
                for d in self.log.due(self._clock())
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
                with Lease(self.metadata, name):
                    current = self.log.get(
                        delivery.pipeline, delivery.sink, delivery.interval.start
                    )
                    if current is None:
                        return None
                    if current.status in ("pending", "failed") and current.next_attempt_at <= (
                        self._clock()
                    ):
                        return self._deliver(current, should_stop)
                    # Made (or tried) by another process meanwhile: report how it stands.
                    return _as_result(current) if wait else None
            except RunInterrupted:
                if not wait or should_stop():
                    return None  # another process is delivering to this sink now
                time.sleep(_LEASE_POLL_SECONDS)

    def _deliver(self, delivery: Delivery, should_stop: Callable[[], bool]) -> DeliveryResult:
        try:
            return self._attempt(delivery, should_stop)
        except HeadwaterError as exc:
            # The pipelines or headwater.toml do not load now (being edited, say): not the
            # delivery's fault, so no attempt is counted; it waits for the files to load.
            when = self._clock() + timedelta(seconds=_WAIT_FOR_PROJECT_SECONDS)
            self.log.failed(delivery, delivery.attempts, when, _reason(exc))
            return _result(delivery, "failed", 0, _reason(exc), when)
        except Exception as exc:
            # One delivery's surprise must not stop the others (they run oldest first, so
            # it would come first every pass): counted, backed off, then a dead letter.
            log.exception("%s %s to %s", delivery.pipeline, delivery.interval, delivery.sink)
            return self._failed(delivery, _DEFAULT_SINK, f"{type(exc).__name__}: {exc}", None)

    def _attempt(self, delivery: Delivery, should_stop: Callable[[], bool]) -> DeliveryResult:
        config = self._sinks()
        sink = config.sinks.get(delivery.sink)
        pipeline = self._pipelines().get(delivery.pipeline)
        if sink is None or pipeline is None:
            missing = (
                f"sink {delivery.sink} is not in headwater.toml"
                if sink is None
                else f"pipeline {delivery.pipeline} is gone"
            )
            return self._failed(delivery, _DEFAULT_SINK, missing, None)
        try:
            target = self._target(delivery.sink, sink, config)
            table = self._rows(pipeline, delivery.interval)
            if isinstance(target, WebhookTarget):
                assert isinstance(sink, WebhookSink)
                return self._post(delivery, sink, target, table, config.scope, should_stop)
            if isinstance(target, FilesTarget):
                target.write(pipeline.name, _interval_of(pipeline, delivery.interval), table)
            else:
                target.write(
                    pipeline.name,
                    pipeline.header.key,
                    _interval_of(pipeline, delivery.interval),
                    pipeline.header.time_column,
                    table,
                )
        except TransientError as exc:
            return self._failed(delivery, sink, str(exc), None)
        except HeadwaterError as exc:
            return self._dead(delivery, sink, _reason(exc), attempts=delivery.attempts + 1)
        if not self.log.progress(delivery, 1, table.num_rows, finished=True):
            return _result(delivery, "pending", 0)
        log.info("delivered %s %s to %s: %d rows", delivery.pipeline, delivery.interval,
                 delivery.sink, table.num_rows)  # fmt: skip
        return _result(delivery, "delivered", table.num_rows)

    def _post(
        self,
        delivery: Delivery,
        sink: WebhookSink,
        target: WebhookTarget,
        table: pa.Table,
        scope: str,
        should_stop: Callable[[], bool],
    ) -> DeliveryResult:
        parts = batches(table, sink.batch_rows)
        index, rows, attempts = delivery.batches_done, delivery.rows_delivered, delivery.attempts
        sent, dead_reason = 0, None
        while index < len(parts):
            if should_stop():
                return _result(delivery, "pending", sent)
            part = parts[index]
            payload = body(delivery.pipeline, delivery.sink, delivery.interval, delivery.run_id,
                           index, len(parts), part)  # fmt: skip
            key = idempotency_key(delivery.pipeline, delivery.sink, delivery.interval.start,
                                  delivery.run_id, index, scope)  # fmt: skip
            try:
                outcome = target.send(payload, key)
            except AddressRefused as exc:
                return self._dead(delivery, sink, _reason(exc), attempts=attempts + 1)
            finished = index + 1 == len(parts)
            if outcome.delivered:
                index, rows, attempts, sent = (
                    index + 1,
                    rows + part.num_rows,
                    0,
                    sent + part.num_rows,
                )
                if not self.log.progress(delivery, index, rows, finished=finished):
                    return _result(delivery, "pending", sent)
                continue
            reason = outcome.reason or "refused"
            if outcome.retry and attempts + 1 < sink.max_attempts:
                retry = _with(delivery, attempts=attempts)
                return self._failed(retry, sink, reason, outcome.retry_after, sent=sent)
            if not self.log.dead_letter(
                delivery,
                batch=index,
                idempotency_key=key,
                body=payload,
                rows=part.num_rows,
                reason=_after(reason, attempts + 1),
                attempts=attempts + 1,
                finished=finished,
            ):
                return _result(delivery, "pending", sent)
            log.error("%s %s batch %d to %s: dead letter: %s", delivery.pipeline,
                      delivery.interval, index, delivery.sink, reason)  # fmt: skip
            index, attempts, dead_reason = index + 1, 0, f"batch {index}: {reason}"
        latest = self.log.get(delivery.pipeline, delivery.sink, delivery.interval.start)
        status = latest.status if latest is not None else "pending"
        return _result(delivery, status, sent, dead_reason if status == "dead" else None)

    def _failed(
        self,
        delivery: Delivery,
        sink: Sink,
        reason: str,
        retry_after: float | None,
        *,
        sent: int = 0,
    ) -> DeliveryResult:
        attempts = delivery.attempts + 1
        if attempts >= sink.max_attempts:
            return self._dead(delivery, sink, reason, attempts=attempts)
        delay = self._backoff(sink, attempts, retry_after)
        when = self._clock() + timedelta(seconds=delay)
        self.log.failed(delivery, attempts, when, reason)
        log.warning(
            "%s %s to %s failed (attempt %d of %d): %s; next in %.1fs",
            *(delivery.pipeline, delivery.interval, delivery.sink),
            *(attempts, sink.max_attempts, reason, delay),
        )
        return _result(delivery, "failed", sent, reason, when)

    def _dead(
        self, delivery: Delivery, sink: Sink, reason: str, *, attempts: int
    ) -> DeliveryResult:
        """The whole (rest of the) delivery becomes one dead letter; replay delivers it again."""
        text = _after(reason, attempts)
        self.log.dead_letter(delivery, batch=None, idempotency_key=None, body=None, rows=0,
                             reason=text, attempts=attempts, finished=True)  # fmt: skip
        log.error("%s %s to %s: dead letter: %s", delivery.pipeline, delivery.interval,
                  delivery.sink, text)  # fmt: skip
        return _result(delivery, "dead", 0, text)

    def _backoff(self, sink: Sink, attempts: int, retry_after: float | None) -> float:
        """Exponential, capped, with jitter (half fixed, half random); at least Retry-After."""
        base = min(sink.max_backoff_seconds, sink.backoff_seconds * 2.0 ** (attempts - 1))
        delay = base / 2 + self._jitter() * base / 2
        if retry_after is not None:
            delay = max(delay, min(retry_after, sink.max_backoff_seconds))
        return delay

    def _rows(self, pipeline: Pipeline, interval: Interval) -> pa.Table:
        """The interval's rows as published, in a stable order."""
        name = exp.table_(pipeline.name, quoted=True)
        dialect = self.engine.dialect
        shape = self.engine.select(exp.select("*").from_(name).limit(0).sql(dialect), {})
        columns = shape.table.column_names
        order = list(pipeline.header.key) or columns
        query = (
            exp.select("*")
            .from_(name)
            .order_by(
                *[exp.Ordered(this=exp.column(c, quoted=True), nulls_first=True) for c in order]
            )
        )
        params: dict[str, object] = {}
        span = _interval_of(pipeline, interval)
        if span is not None and pipeline.header.time_column is not None:
            column = exp.column(pipeline.header.time_column, quoted=True)
            query = query.where(
                exp.and_(
                    exp.GTE(this=column, expression=exp.Placeholder(this="start")),
                    exp.LT(this=column, expression=exp.Placeholder(this="end")),
                )
            )
            params = {"start": span.start, "end": span.end}
            time_column = pipeline.header.time_column
            if time_column in columns and pa.types.is_date(
                shape.table.schema.field(time_column).type
            ):
                # A DATE column compares with DATE bounds (BigQuery has no implicit cast).
                params = {"start": span.start.date(), "end": span.end.date()}
        return self.engine.select(query.sql(dialect), params).table

    def _target(self, name: str, sink: Sink, config: Sinks) -> Target:
        stamp = msgspec.json.encode(sink) + msgspec.json.encode(config.settings)
        cached = self._targets.get(name)
        if cached is not None and cached[0] == stamp:
            return cached[1]
        if cached is not None and isinstance(cached[1], WebhookTarget):
            cached[1].close()
        target: Target
        if isinstance(sink, FilesSink):
            target = FilesTarget(sink, config.root)
        elif isinstance(sink, PostgresSink):
            target = PostgresTarget(name, sink)
        else:
            target = WebhookTarget(name, sink, config.settings.allow_hosts, resolver=self._resolver)
        self._targets[name] = (stamp, target)
        return target

    # -- dead letters --------------------------------------------------------------------

    def replay(
        self, *, pipeline: str | None = None, sink: str | None = None, ids: list[int] | None = None
    ) -> list[ReplayResult]:
        """Send dead letters again: a webhook batch as it was (same idempotency key), a
        whole interval by owing its delivery again (of the output as it is now)."""
        results = []
        config = self._sinks()
        for letter in self.log.dead_letters(pipeline=pipeline, sink=sink, ids=ids or ()):
            current = self.log.get(letter.pipeline, letter.sink, letter.interval.start)
            if letter.body is None:
                self.log.reopen(letter)
                results.append(_replayed(letter, "requeued"))
            elif current is not None and current.run_id != letter.run_id:
                # The interval was published again since: its newer output is owed instead.
                self.log.replayed(letter)
                results.append(_replayed(letter, "superseded"))
            else:
                results.append(self._resend(letter, config))
        return results

    def _resend(self, letter: DeadLetter, config: Sinks) -> ReplayResult:
        sink = config.sinks.get(letter.sink)
        if not isinstance(sink, WebhookSink) or letter.body is None:
            reason = f"sink {letter.sink} is not a webhook in headwater.toml"
            self.log.replay_failed(letter, reason)
            return _replayed(letter, "failed", reason)
        target = self._target(letter.sink, sink, config)
        assert isinstance(target, WebhookTarget)
        try:
            outcome = target.send(letter.body, letter.idempotency_key or "")
        except AddressRefused as exc:
            self.log.replay_failed(letter, _reason(exc))
            return _replayed(letter, "failed", _reason(exc))
        if outcome.delivered:
            self.log.replayed(letter)
            return _replayed(letter, "delivered")
        reason = outcome.reason or "refused"
        self.log.replay_failed(letter, reason)
        return _replayed(letter, "failed", reason)

    def close(self) -> None:
        for _, target in self._targets.values():
            if isinstance(target, WebhookTarget):
                target.close()
        self._targets.clear()


_DEFAULT_SINK = FilesSink(url=".")


_LEASE_POLL_SECONDS = 0.2
_WAIT_FOR_PROJECT_SECONDS = 30.0


def _as_result(delivery: Delivery) -> DeliveryResult:
    """A delivery as another process's attempt left it."""
    waiting = delivery.next_attempt_at if delivery.status == "failed" else None
    return DeliveryResult(
        delivery.pipeline, delivery.sink, delivery.interval, delivery.status,
        delivery.rows_delivered, delivery.last_error, waiting,
    )  # fmt: skip


def _interval_of(pipeline: Pipeline, interval: Interval) -> Interval | None:
    """The interval a delivery covers; ``None`` for a full pipeline (its whole table)."""
    incremental = pipeline.incremental and pipeline.header.time_column is not None
    return interval if incremental else None


def _with(delivery: Delivery, *, attempts: int) -> Delivery:
    return Delivery(**{**delivery.__dict__, "attempts": attempts})


def _reason(exc: HeadwaterError) -> str:
    return f"{exc.message} ({exc.hint})" if exc.hint else exc.message


def _after(reason: str, attempts: int) -> str:
    return reason if attempts <= 1 else f"{reason} (after {attempts} attempts)"


def _result(
    delivery: Delivery,
    status: str,
    rows: int,
    error: str | None = None,
    next_attempt_at: datetime | None = None,
) -> DeliveryResult:
    return DeliveryResult(
        delivery.pipeline, delivery.sink, delivery.interval, status, rows, error, next_attempt_at
    )


def _replayed(letter: DeadLetter, status: str, error: str | None = None) -> ReplayResult:
    return ReplayResult(
        letter.id, letter.pipeline, letter.sink, letter.interval, letter.batch, status, error
    )


__all__ = ["Deliverer", "DeliveryResult", "ReplayResult", "Sinks"]
