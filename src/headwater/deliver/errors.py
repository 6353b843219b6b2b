"""Errors of delivery: each names the sink, and the pipeline and interval it was delivering.

A :class:`SinkUnavailable` is tried again after a backoff; a
:class:`SinkRefused` cannot be fixed by trying again and becomes a dead letter
at once (``headwater replay`` sends it again once the cause is fixed).
"""

from __future__ import annotations

from headwater.core.errors import HeadwaterError, TerminalError, TransientError
from headwater.core.types import Interval


class DeliveryError(HeadwaterError):
    """A delivery failed; ``reason`` is the sink's words, without the ids around them."""

    def __init__(
        self,
        reason: str,
        *,
        sink: str,
        pipeline: str | None = None,
        interval: Interval | None = None,
        hint: str | None = None,
    ) -> None:
        self.reason = reason
        self.sink = sink
        self.pipeline = pipeline
        self.interval = interval
        if pipeline is None:
            where = f"sink {sink}"
        else:
            span = f" {interval}" if interval is not None else ""
            where = f"delivery of {pipeline}{span} to {sink}"
        super().__init__(f"{where}: {reason}", hint=hint)


class SinkUnavailable(DeliveryError, TransientError):
    """The sink could not take the rows now (down, unreachable, a full disk)."""


class SinkRefused(DeliveryError, TerminalError):
    """The sink refused the rows for good (a schema it cannot hold, permissions, a bad
    setting)."""
