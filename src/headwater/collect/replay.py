"""A failed event validated again, by the collector's own rules, to be replayed.

``failed_events.payload`` holds what was refused: one event of a batch, or a
whole request body that was refused before its events were looked at (a batch
envelope, or a body that did not parse, kept as a JSON string of its text).
Each is validated as the collector would have, as of when it first arrived (the
clock-skew correction of ``timestamp`` uses that time), with the type taken from
the payload (the endpoint it was sent to is not kept). An event without a
``messageId`` gets one derived from the failed event's id, so a replay made
twice is a duplicate the store drops.

>>> v = Validator(max_event_bytes=32_768, max_depth=64)
>>> rows = revalidate(v, "f1", "web", 0, '{"type":"track","event":"A","userId":"u"}')
>>> rows[0][0], rows[0][2]
('f1', 'track')
>>> revalidate(v, "f1", "web", 0, '{"type":"track","event":"A","user_id":"u"}').code
'missing_identity'
"""

from __future__ import annotations

from dataclasses import dataclass

from headwater.collect.errors import RequestRefused
from headwater.collect.validate import EventRow, Invalid, Validator, decode_batch
from headwater.core import jsonio


@dataclass(frozen=True, slots=True)
class StillFailing:
    """Why a failed event is refused again: the code, field and message the collector
    would answer."""

    code: str
    field: str | None
    message: str


def revalidate(
    validator: Validator, failed_id: str, source: str | None, received_us: int, payload: str | None
) -> list[EventRow] | StillFailing:
    """The rows of ``payload`` (every event of it valid), or why it is refused again."""
    if source is None:
        return StillFailing(
            "unknown_source", None, "the failed event has no source, so it cannot be stored"
        )
    if payload is None:
        return StillFailing("missing_payload", None, "the payload is NULL; nothing to replay")
    raw = _raw(payload)
    try:
        value = jsonio.loads(raw)
    except (jsonio.JSONDecodeError, UnicodeDecodeError, RecursionError):
        value = None
    try:
        if isinstance(value, dict) and isinstance(value.get("batch"), list):
            envelope = decode_batch(raw)
            if not envelope.batch:
                return StillFailing("empty_batch", "batch", "the batch holds no events")
            batch = validator.batch(envelope)
            return [
                validator.event(
                    bytes(item), None, source, received_us, batch,
                    message_id=f"{failed_id}:{index}",
                )
                for index, item in enumerate(envelope.batch)
            ]  # fmt: skip
        return [validator.event(raw, None, source, received_us, None, message_id=failed_id)]
    except Invalid as bad:
        return StillFailing(bad.code, bad.field, bad.message)
    except RequestRefused as refused:
        return StillFailing(refused.code, refused.field, str(refused))


def _raw(payload: str) -> bytes:
    """The bytes to validate: a body that did not parse was kept as a JSON string of its
    text, which is what is validated again (once fixed)."""
    try:
        value = jsonio.loads(payload)
    except (jsonio.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return payload.encode()
    return value.encode() if isinstance(value, str) else payload.encode()
