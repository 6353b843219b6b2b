"""Dead letters sent again, once what made them fail is fixed.

A webhook batch goes again as it was, with its idempotency key, so a receiver
that did take it the first time drops the repeat. A whole-interval dead letter
(a file or a PostgreSQL delivery) is owed again, and delivered from the
interval's output as it is now. A batch of an interval published again since
is superseded: the newer output is owed instead.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from headwater.core.errors import HeadwaterError
from headwater.core.types import Interval
from headwater.deliver.settings import WebhookSink
from headwater.deliver.targets import Sinks, Targets
from headwater.state.deliveries import DeadLetter, DeliveryLog

#: ``requeued``: a whole interval owed again (and, when delivered at once, how that went:
#: ``delivered``, ``failed``, ``dead`` or ``pending``).
ReplayStatus = Literal["delivered", "requeued", "superseded", "failed", "dead", "pending"]


@dataclass(frozen=True)
class ReplayResult:
    id: int
    pipeline: str
    sink: str
    interval: Interval
    batch: int | None
    status: ReplayStatus
    error: str | None = None


def replay(
    log: DeliveryLog,
    config: Sinks,
    targets: Targets,
    *,
    pipeline: str | None = None,
    sink: str | None = None,
    ids: list[int] | None = None,
) -> list[ReplayResult]:
    """Send the dead letters chosen by ``pipeline``, ``sink`` and ``ids`` (all when none)."""
    results = []
    for letter in log.dead_letters(pipeline=pipeline, sink=sink, ids=ids or ()):
        current = log.get(letter.pipeline, letter.sink, letter.interval.start)
        if letter.body is None:
            log.reopen(letter)
            results.append(_replayed(letter, "requeued"))
        elif current is not None and current.run_id != letter.run_id:
            log.replayed(letter)
            results.append(_replayed(letter, "superseded"))
        else:
            results.append(_resend(log, letter, config, targets))
    return results


def _resend(log: DeliveryLog, letter: DeadLetter, config: Sinks, targets: Targets) -> ReplayResult:
    sink = config.sinks.get(letter.sink)
    if not isinstance(sink, WebhookSink) or letter.body is None:
        reason = f"sink {letter.sink} is not a webhook in headwater.toml"
        log.replay_failed(letter, reason)
        return _replayed(letter, "failed", reason)
    from headwater.deliver.webhook import WebhookTarget

    try:
        target = targets.get(letter.sink, sink, config)
        assert isinstance(target, WebhookTarget)
        outcome = target.send(letter.body, letter.idempotency_key or "")
    except HeadwaterError as exc:
        reason = f"{exc.message} ({exc.hint})" if exc.hint else exc.message
        log.replay_failed(letter, reason)
        return _replayed(letter, "failed", reason)
    if outcome.delivered:
        log.replayed(letter)
        return _replayed(letter, "delivered")
    reason = outcome.reason or "refused"
    log.replay_failed(letter, reason)
    return _replayed(letter, "failed", reason)


def _replayed(letter: DeadLetter, status: ReplayStatus, error: str | None = None) -> ReplayResult:
    return ReplayResult(
        letter.id, letter.pipeline, letter.sink, letter.interval, letter.batch, status, error
    )
