"""Decode and validate Segment events, one at a time, into rows of ``events``.

A batch is split into raw events first, so that one bad event is rejected on
its own and the others are kept. Each event is decoded by msgspec, which checks
JSON syntax, UTF-8, number ranges and field types in C; the rules of the
Segment spec (identity, event name, timestamps) are checked here.

>>> v = Validator(max_event_bytes=32_768, max_depth=64)
>>> row = v.event(b'{"type":"track","event":"Signed Up","userId":"u1"}', None, "web", 0, None)
>>> row[1:4], row[5]
(('web', 'track', 'Signed Up'), 'u1')
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import msgspec

from headwater.collect import split
from headwater.collect.errors import RequestRefused
from headwater.collect.pii import Redactor
from headwater.core import jsonio
from headwater.core.clock import to_us

EVENT_TYPES = frozenset({"track", "identify", "page", "screen", "group", "alias"})
_TYPES = ", ".join(sorted(EVENT_TYPES))
# Stored timestamps stay inside what every engine and Python's datetime can hold.
_MIN_US = to_us(datetime(1, 1, 2, tzinfo=UTC))
_MAX_US = to_us(datetime(9999, 12, 30, tzinfo=UTC))

#: A row of ``events`` in the column order of :data:`headwater.store.schema.EVENTS`.
EventRow = tuple[
    str, str, str, str | None, str | None, str | None, str | None, str | None, str | None,
    int, int | None, int | None, int, str | None, str | None, str | None,
]  # fmt: skip


class SegmentEvent(msgspec.Struct, rename="camel", kw_only=True):
    """The fields of a Segment event that Headwater keeps; others are ignored."""

    type: str | None = None
    message_id: str | None = None
    user_id: str | int | None = None
    anonymous_id: str | int | None = None
    group_id: str | int | None = None
    previous_id: str | int | None = None
    event: str | None = None
    name: str | None = None
    timestamp: datetime | None = None
    original_timestamp: datetime | None = None
    sent_at: datetime | None = None
    properties: dict[str, Any] | None = None
    traits: dict[str, Any] | None = None
    context: dict[str, Any] | None = None


class BatchEnvelope(msgspec.Struct, rename="camel", kw_only=True):
    """The body of ``/v1/batch``: events kept raw until each is validated alone."""

    batch: list[msgspec.Raw] = msgspec.field(default_factory=list)
    sent_at: datetime | None = None
    context: dict[str, Any] | None = None
    write_key: str | None = None


class KeyProbe(msgspec.Struct, rename="camel"):
    """Just the body's write key, for a caller without Basic auth."""

    write_key: str | None = None


class Invalid(Exception):
    """One event breaks a rule; becomes a :class:`~headwater.collect.errors.Rejection`."""

    def __init__(self, code: str, field: str | None, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.field = field
        self.message = message


_AT = re.compile(r" - at `\$\.?(?P<path>[^`]*)`$")
_event_decoder = msgspec.json.Decoder(SegmentEvent)
_batch_decoder = msgspec.json.Decoder(BatchEnvelope)
_probe_decoder = msgspec.json.Decoder(KeyProbe)
#: The envelope's fields, as a body spells them.
_ENVELOPE_FIELDS = ("batch", "sentAt", "context", "writeKey")
_REPEATABLE = tuple(f'"{name}"'.encode() for name in _ENVELOPE_FIELDS[1:])
# A member name spelled with a \u escape: it may be one of the envelope's names in
# disguise ("b\u0061tch"), which a decoder takes as that name.
_ESCAPED_KEY = re.compile(rb'"(?:[^"\\]|\\.)*\\u[0-9a-fA-F]{4}(?:[^"\\]|\\.)*"\s*:')


# A \u escape of a UTF-16 surrogate, and of a low one (the second of a pair).
_SURROGATE = re.compile(rb"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_LOW = re.compile(rb"\\u[dD][c-fC-F][0-9a-fA-F]{2}")


def mend_surrogates(body: bytes) -> bytes:
    r"""``body`` with each lone surrogate escape (``"\ud83d"``) made U+FFFD, as Segment's
    API (and Go's JSON decoder) reads it. JavaScript writes one for a string cut in the
    middle of an emoji (``JSON.stringify("😀".slice(0, 1))``); the decoder refuses the
    whole body for it, and a batch would lose every event. The same length, so the
    bytes of each event stay where they were.

    >>> mend_surrogates(rb'{"t": "cut \ud83d", "ok": "\ud83d\ude00", "text": "\\ud83d"}')
    b'{"t": "cut \\ufffd", "ok": "\\ud83d\\ude00", "text": "\\\\ud83d"}'
    """
    found = _SURROGATE.search(body)
    if found is None:  # the usual case: one scan in C
        return body
    mended = bytearray(body)
    while found is not None:
        at = found.start()
        if _escaped(body, at):  # an escaped backslash, then the text "ud83d"
            found = _SURROGATE.search(body, at + 1)
            continue
        if body[at + 2 : at + 4].upper() < b"DC" and _LOW.match(body, at + 6):
            found = _SURROGATE.search(body, at + 12)  # a pair: one character
            continue
        mended[at + 2 : at + 6] = b"fffd"
        found = _SURROGATE.search(body, at + 6)
    return bytes(mended)


def _escaped(body: bytes, at: int) -> bool:
    """Whether the backslash at ``at`` is itself escaped (an odd run of them before it)."""
    run = 0
    while at - run > 0 and body[at - run - 1] == 0x5C:
        run += 1
    return run % 2 == 1


def decode_batch(body: bytes) -> BatchEnvelope:
    """Split a ``/v1/batch`` body; a body that does not parse is refused with 400.

    An event nested too deeply for the fast decoder is split out by
    :mod:`~headwater.collect.split` and refused alone; a key the envelope holds twice
    is refused, since a decoder would keep the last and drop the first's events.
    """
    body = mend_surrogates(body)
    if body.count(b'"batch"') > 1 or (b"\\u" in body and _ESCAPED_KEY.search(body)):
        _check_unique(body)
    try:
        envelope = _batch_decoder.decode(body)
    except msgspec.ValidationError as exc:
        message, field = _split(exc)
        raise RequestRefused(400, "invalid_batch", f"{message}", field=field) from None
    except RecursionError:
        _check_unique(body)
        return _split_slowly(body)
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise _malformed(exc) from None
    # Events hold these names too (each its own context): counted outside the events'
    # bytes, a name seen twice may be the envelope's twice, which the scanner tells.
    start, end = _events_span(body, envelope.batch)
    if any(body.count(name, 0, start) + body.count(name, end) > 1 for name in _REPEATABLE):
        _check_unique(body)
    return envelope


def _events_span(body: bytes, events: list[msgspec.Raw]) -> tuple[int, int]:
    """Where the batch's events lie in ``body``: from the first's first byte to the last's
    last (an empty span when the batch is empty or its events cannot be placed)."""
    if not events:
        return 0, 0
    first, last = bytes(events[0]), bytes(events[-1])
    start = body.find(first)
    end = body.rfind(last)
    if start < 0 or end < start:
        return 0, 0
    return start, end + len(last)


def _check_unique(body: bytes) -> None:
    try:
        fields = split.top_level(body)
    except (split.NotAnObject, jsonio.JSONDecodeError, UnicodeDecodeError):
        return  # the decoder says what is wrong with it
    keys = [key for key, _ in fields]
    for key in _ENVELOPE_FIELDS:
        if keys.count(key) > 1:
            raise RequestRefused(
                400,
                "duplicate_key",
                f"the body holds {key} {keys.count(key)} times; a JSON decoder keeps only the "
                "last, which would drop the others' events: send it once",
                field=key,
            )


def _split_slowly(body: bytes) -> BatchEnvelope:
    """The envelope of a body whose events the fast decoder cannot skip over."""
    try:
        fields = dict(split.top_level(body))
        raws = split.elements(fields["batch"]) if "batch" in fields else []
    except (split.NotAnObject, jsonio.JSONDecodeError, UnicodeDecodeError) as exc:
        raise _malformed(exc) from None
    values: dict[str, Any] = {}
    for key in _ENVELOPE_FIELDS:
        if key != "batch" and key in fields:
            try:
                values[key] = msgspec.json.decode(fields[key])
            except RecursionError:
                raise RequestRefused(
                    400,
                    "too_deep",
                    f"the batch's {key} is nested too deeply; flatten it",
                    field=key,
                ) from None
            except (msgspec.DecodeError, UnicodeDecodeError) as exc:
                raise _malformed(exc) from None
    try:
        return msgspec.convert(
            {**values, "batch": [msgspec.Raw(raw) for raw in raws]}, BatchEnvelope
        )
    except msgspec.ValidationError as exc:
        message, field = _split(exc)
        raise RequestRefused(400, "invalid_batch", f"{message}", field=field) from None


def probe_key(body: bytes) -> str | None:
    """The ``writeKey`` in a body, or ``None``; a body that does not parse is refused."""
    body = mend_surrogates(body)
    try:
        return _probe_decoder.decode(body).write_key
    except msgspec.ValidationError:
        return None
    except RecursionError:
        # An event nested too deeply: its key still says whose it is (it is refused alone).
        try:
            key = dict(split.top_level(body)).get("writeKey")
            return msgspec.json.decode(key, type=str | None) if key is not None else None
        except (split.NotAnObject, msgspec.DecodeError, msgspec.ValidationError) as exc:
            raise _malformed(exc) from None
    except (msgspec.DecodeError, UnicodeDecodeError) as exc:
        raise _malformed(exc) from None


def _malformed(exc: BaseException) -> RequestRefused:
    if isinstance(exc, UnicodeDecodeError) or "UTF-8" in str(exc):
        reason = "it is not valid UTF-8"
    elif isinstance(exc, RecursionError):
        reason = "it is nested too deeply"
    else:
        reason = str(exc).replace("JSON is malformed: ", "")
    return RequestRefused(
        400, "malformed_json", f"the body is not valid JSON ({reason}); send UTF-8 JSON"
    )


@dataclass(frozen=True, slots=True)
class Batch:
    """What a batch gives each of its events, checked once: its ``sentAt``, and the
    ``context`` merged into each event (which counts towards each event's size)."""

    sent_at: datetime | None = None
    context: dict[str, Any] | None = None
    context_bytes: int = 0


class Validator:
    """Turns one raw event into an :data:`EventRow`, or raises :class:`Invalid`."""

    def __init__(self, *, max_event_bytes: int, max_depth: int) -> None:
        self.max_event_bytes = max_event_bytes
        self.max_depth = max_depth

    def batch(self, envelope: BatchEnvelope) -> Batch:
        """The batch's shared fields, checked once for the whole request."""
        context = envelope.context
        if not context:
            return Batch(envelope.sent_at)
        if _too_deep((context,), self.max_depth):
            raise RequestRefused(
                400,
                "too_deep",
                f"the batch's context is nested more than {self.max_depth} levels deep "
                "(in each event it is merged into); flatten it",
                field="context",
            )
        return Batch(envelope.sent_at, context, len(jsonio.dumps(context)))

    def event(
        self,
        raw: bytes,
        kind: str | None,
        source: str,
        received_us: int,
        batch: Batch | None,
        rules: Redactor | None = None,
        *,
        message_id: str | None = None,
    ) -> EventRow:
        """Validate one event; ``kind`` is the type the endpoint implies (``None`` for batch).

        A batch's ``context`` is merged into each event, so it counts towards
        each event's size. ``rules``: the source's PII rules, applied to the row.
        ``message_id`` is the id of an event that has none (default: a new UUID); a
        replay gives one derived from the failed event, so that replaying it again is a
        duplicate.
        """
        batch = batch or _SINGLE
        size = len(raw) + batch.context_bytes
        if size > self.max_event_bytes:
            raise Invalid(
                "event_too_large",
                None,
                f"the event is {size} bytes, over the limit of {self.max_event_bytes}; "
                "send less in properties, traits or context",
            )
        event = self._decode(raw)
        return _row(
            event, kind, source, received_us, batch.sent_at, batch.context, rules, message_id
        )

    def _decode(self, raw: bytes) -> SegmentEvent:
        try:
            event = _event_decoder.decode(mend_surrogates(raw))
        except msgspec.ValidationError as exc:
            message, field = _split(exc)
            if message.startswith("Invalid RFC3339"):
                raise Invalid(
                    "invalid_timestamp",
                    field,
                    f"{field} is not an ISO-8601 timestamp; send e.g. 2026-11-25T12:00:00Z",
                ) from None
            code = "invalid_value" if "out of range" in message else "invalid_type"
            raise Invalid(code, field, f"{message} at {field or 'the event'}") from None
        except UnicodeDecodeError:
            raise Invalid(
                "invalid_utf8", None, "the event holds bytes that are not UTF-8"
            ) from None
        except RecursionError:
            raise self._too_deep() from None
        except msgspec.DecodeError as exc:
            if "UTF-8" in str(exc):
                raise Invalid(
                    "invalid_utf8", None, "the event holds bytes that are not UTF-8"
                ) from None
            raise Invalid("malformed_json", None, str(_malformed(exc))) from None
        # The bracket count bounds the depth from above and costs nothing in C;
        # only events with many containers are walked.
        if raw.count(b"{") + raw.count(b"[") > self.max_depth and _too_deep(
            (event.properties, event.traits, event.context), self.max_depth
        ):
            raise self._too_deep()
        return event

    def _too_deep(self) -> Invalid:
        return Invalid(
            "too_deep",
            None,
            f"the event is nested more than {self.max_depth} levels deep; flatten it",
        )


_SINGLE = Batch()


def _row(
    event: SegmentEvent,
    kind: str | None,
    source: str,
    received_us: int,
    batch_sent_at: datetime | None,
    batch_context: dict[str, Any] | None,
    rules: Redactor | None = None,
    default_id: str | None = None,
) -> EventRow:
    kind = kind or event.type
    if kind is None:
        message = f"the event has no type; set type to one of {_TYPES}"
        raise Invalid("missing_field", "type", message)
    if kind not in EVENT_TYPES:
        message = f"type {kind!r} is not a Segment event type; use one of {_TYPES}"
        raise Invalid("invalid_event_type", "type", message)
    user_id = _id(event.user_id)
    anonymous_id = _id(event.anonymous_id)
    group_id = _id(event.group_id)
    previous_id = _id(event.previous_id)
    if kind == "alias":
        if previous_id is None or user_id is None:
            missing = "previousId" if previous_id is None else "userId"
            message = f"an alias needs previousId and userId; {missing} is missing"
            raise Invalid("missing_field", missing, message)
    elif user_id is None and anonymous_id is None:
        message = "the event has neither userId nor anonymousId; set at least one"
        raise Invalid("missing_identity", "userId", message)
    if kind == "track" and not event.event:
        raise Invalid("missing_field", "event", "a track event needs an event name; set event")
    if kind == "group" and group_id is None:
        raise Invalid("missing_field", "groupId", "a group event needs groupId")

    original_field = "originalTimestamp" if event.original_timestamp else "timestamp"
    original = event.original_timestamp or event.timestamp
    sent = event.sent_at or batch_sent_at
    original_us = _in_range(original, original_field)
    sent_us = _in_range(sent, "sentAt")
    if original_us is not None and sent_us is not None:
        # Segment's clock-skew correction: the client's clock may be wrong, but
        # the time between the event and its sending is right.
        timestamp_us = received_us - (sent_us - original_us)
        if not _MIN_US <= timestamp_us <= _MAX_US:
            message = "sentAt and the event's timestamp are further apart than any clock skew"
            raise Invalid("invalid_timestamp", "sentAt", message)
    elif original_us is not None:
        timestamp_us = original_us
    else:
        timestamp_us = received_us

    message_id = event.message_id or default_id or str(uuid.uuid4())
    for field, text in (
        ("messageId", message_id), ("event", event.event), ("name", event.name),
        ("userId", user_id), ("anonymousId", anonymous_id), ("groupId", group_id),
        ("previousId", previous_id),
    ):  # fmt: skip
        if text is not None and "\x00" in text:
            message = f"{field} holds a NUL character (\\u0000), which no store keeps in text"
            raise Invalid("invalid_text", field, message)

    properties, traits, context = event.properties, event.traits, event.context
    if batch_context:
        context = {**batch_context, **(context or {})}
    if rules is not None:
        # After the batch's context is merged in: what is stored is what the rules saw.
        properties, traits, context = rules.event(properties, traits, context)
    return (
        message_id,
        source,
        kind,
        event.event,
        event.name,
        user_id,
        anonymous_id,
        group_id,
        previous_id,
        timestamp_us,
        original_us,
        sent_us,
        received_us,
        _json(properties),
        _json(traits),
        _json(context),
    )


def _in_range(value: datetime | None, field: str) -> int | None:
    if value is None:
        return None
    micros = to_us(value)
    if not _MIN_US <= micros <= _MAX_US:
        message = f"{field} is outside 0001-01-02 to 9999-12-30 (UTC), what every engine holds"
        raise Invalid("invalid_timestamp", field, message)
    return micros


def _id(value: str | int | None) -> str | None:
    if value is None or value == "":
        return None
    return value if isinstance(value, str) else str(value)


def _json(value: dict[str, Any] | None) -> str | None:
    return None if value is None else jsonio.dumps_str(value)


def _split(exc: msgspec.ValidationError) -> tuple[str, str | None]:
    """msgspec's message without its ``- at `$.x``` tail, and the top-level field."""
    text = str(exc)
    match = _AT.search(text)
    if match is None:
        return text, None
    path = match.group("path")
    field = re.split(r"[.\[]", path, maxsplit=1)[0] or None
    return text[: match.start()], field


def _too_deep(values: tuple[object, ...], limit: int) -> bool:
    # The event object is level 1, so its properties' members start at level 2.
    stack: list[tuple[object, int]] = [(v, 2) for v in values if v is not None]
    while stack:
        value, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(value, dict):
            stack.extend((v, depth + 1) for v in value.values() if isinstance(v, dict | list))
        elif isinstance(value, list):
            stack.extend((v, depth + 1) for v in value if isinstance(v, dict | list))
    return False
