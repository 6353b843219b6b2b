"""``Validator.event``: the Segment rules, the limits, and properties over arbitrary payloads.

Whatever bytes arrive, validation ends in a row or in :class:`Invalid` with a
known code: any other exception would be a 500 for the whole request. Valid
events keep what was sent: ids as strings, the type, and ``properties``,
``traits`` and ``context`` as JSON that decodes back to the input.
"""

from __future__ import annotations

import json
import math
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headwater.collect.errors import RequestRefused
from headwater.collect.validate import (
    EVENT_TYPES,
    BatchEnvelope,
    EventRow,
    Invalid,
    Validator,
    decode_batch,
    probe_key,
)
from headwater.core.clock import to_us

Json = dict[str, Any]

#: The event rules of docs/events.md, plus malformed_json for a single event's body.
CODES = frozenset(
    {
        "invalid_type",
        "invalid_value",
        "invalid_utf8",
        "invalid_text",
        "missing_field",
        "invalid_event_type",
        "missing_identity",
        "invalid_timestamp",
        "event_too_large",
        "too_deep",
        "malformed_json",
    }
)
#: Top-level fields an Invalid may name.
FIELDS = frozenset(
    {
        "type",
        "messageId",
        "userId",
        "anonymousId",
        "groupId",
        "previousId",
        "event",
        "name",
        "timestamp",
        "originalTimestamp",
        "sentAt",
        "properties",
        "traits",
        "context",
    }
)
RECEIVED = to_us(datetime(2026, 11, 25, 12, 0, tzinfo=UTC))
FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

(
    MESSAGE_ID, SOURCE, TYPE, EVENT, NAME, USER_ID, ANONYMOUS_ID, GROUP_ID, PREVIOUS_ID,
    TIMESTAMP, ORIGINAL_TIMESTAMP, SENT_AT, RECEIVED_AT, PROPERTIES, TRAITS, CONTEXT,
) = range(16)  # fmt: skip


def _validator(max_event_bytes: int = 32_768, max_depth: int = 64) -> Validator:
    return Validator(max_event_bytes=max_event_bytes, max_depth=max_depth)


def _encode(value: object) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode()


def _validate(
    event: Json | bytes,
    kind: str | None = None,
    *,
    validator: Validator | None = None,
    sent_at: datetime | None = None,
    context: Json | None = None,
) -> EventRow:
    raw = event if isinstance(event, bytes) else _encode(event)
    chosen = validator or _validator()
    batch = chosen.batch(BatchEnvelope(sent_at=sent_at, context=context))
    return chosen.event(raw, kind, "web", RECEIVED, batch)


def _invalid(event: Json | bytes, kind: str | None = None, **kwargs: Any) -> Invalid:
    with pytest.raises(Invalid) as caught:
        _validate(event, kind, **kwargs)
    assert caught.value.code in CODES
    assert caught.value.message.strip()
    return caught.value


def _depth(value: object) -> int:
    """Levels of objects and arrays: 0 for a scalar, 1 for ``{}`` or ``[]``."""
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


def _nest(levels: int, container: str = "object") -> Json | list[Any]:
    """A value ``levels`` deep: objects or arrays."""
    value: Json | list[Any] = {} if container == "object" else []
    for _ in range(levels - 1):
        value = {"k": value} if container == "object" else [value]
    return value


def _same(a: object, b: object) -> bool:
    """Equal and of the same JSON types all the way down (True is not 1, 1.0 is not 1)."""
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_same(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b, strict=True))
    return type(a) is type(b) and a == b


# -- the rules, one by one ------------------------------------------------------


def test_a_track_event_becomes_a_row_in_column_order() -> None:
    row = _validate(
        {
            "type": "track",
            "event": "Signed Up",
            "userId": "u1",
            "anonymousId": "a1",
            "messageId": "m1",
            "properties": {"plan": "pro", "seats": 3},
            "context": {"ip": "10.0.0.1"},
            "integrations": {"All": False},
            "source": "spoofed",
        }
    )
    assert row[:9] == ("m1", "web", "track", "Signed Up", None, "u1", "a1", None, None)
    assert row[TIMESTAMP] == RECEIVED
    assert row[ORIGINAL_TIMESTAMP] is None
    assert row[SENT_AT] is None
    assert row[RECEIVED_AT] == RECEIVED
    assert row[PROPERTIES] is not None
    assert json.loads(row[PROPERTIES]) == {"plan": "pro", "seats": 3}
    assert row[TRAITS] is None
    assert row[CONTEXT] is not None
    assert json.loads(row[CONTEXT]) == {"ip": "10.0.0.1"}
    assert len(row) == 16


def test_the_endpoint_type_wins_over_the_body() -> None:
    row = _validate({"type": "identify", "userId": "u", "event": "E"}, "track")
    assert row[TYPE] == "track"


def test_numeric_ids_become_strings_and_empty_ids_are_missing() -> None:
    row = _validate(
        {"userId": 42, "anonymousId": "", "groupId": -7, "previousId": 2**63, "event": "E"},
        "track",
    )
    assert row[USER_ID] == "42"
    assert row[ANONYMOUS_ID] is None
    assert (row[GROUP_ID], row[PREVIOUS_ID]) == ("-7", str(2**63))


def test_a_missing_or_empty_message_id_gets_a_new_uuid() -> None:
    ids = {
        _validate({"userId": "u", "event": "E"}, "track")[MESSAGE_ID],
        _validate({"userId": "u", "event": "E", "messageId": ""}, "track")[MESSAGE_ID],
        _validate({"userId": "u", "event": "E", "messageId": None}, "track")[MESSAGE_ID],
    }
    assert len(ids) == 3
    for message_id in ids:
        uuid.UUID(message_id)


@pytest.mark.parametrize(
    ("event", "kind", "code", "field"),
    [
        ({"userId": "u", "event": "E"}, None, "missing_field", "type"),
        ({"type": "purchase", "userId": "u"}, None, "invalid_event_type", "type"),
        ({"type": "Track", "userId": "u", "event": "E"}, None, "invalid_event_type", "type"),
        ({"type": 1, "userId": "u"}, None, "invalid_type", "type"),
        ({"event": "E"}, "track", "missing_identity", "userId"),
        ({"event": "E", "userId": "", "anonymousId": ""}, "track", "missing_identity", "userId"),
        ({"traits": {}}, "identify", "missing_identity", "userId"),
        ({"userId": "u"}, "track", "missing_field", "event"),
        ({"userId": "u", "event": ""}, "track", "missing_field", "event"),
        ({"userId": "u", "event": None}, "track", "missing_field", "event"),
        ({"userId": "u"}, "group", "missing_field", "groupId"),
        ({"userId": "u"}, "alias", "missing_field", "previousId"),
        ({"previousId": "p", "anonymousId": "a"}, "alias", "missing_field", "userId"),
        ({"userId": "u", "event": 5}, "track", "invalid_type", "event"),
        ({"userId": {}, "event": "E"}, "track", "invalid_type", "userId"),
        ({"userId": True, "event": "E"}, "track", "invalid_type", "userId"),
        ({"userId": 1.5, "event": "E"}, "track", "invalid_type", "userId"),
        ({"userId": "u", "name": ["x"]}, "page", "invalid_type", "name"),
        ({"userId": "u", "event": "E", "properties": []}, "track", "invalid_type", "properties"),
        ({"userId": "u", "traits": "vip"}, "identify", "invalid_type", "traits"),
        ({"userId": "u", "context": 1}, "screen", "invalid_type", "context"),
        ({"userId": "u", "event": "E", "messageId": 9}, "track", "invalid_type", "messageId"),
        ({"userId": "u", "event": "E", "timestamp": "now"}, "track", "invalid_timestamp",
         "timestamp"),
        ({"userId": "u", "event": "E", "timestamp": "2026-02-30T00:00:00Z"}, "track",
         "invalid_timestamp", "timestamp"),
        ({"userId": "u", "event": "E", "originalTimestamp": "2026-11-25T25:00:00Z"}, "track",
         "invalid_timestamp", "originalTimestamp"),
        ({"userId": "u", "event": "E", "sentAt": ""}, "track", "invalid_timestamp", "sentAt"),
        ({"userId": "u", "event": "E", "timestamp": 1764072000}, "track", "invalid_type",
         "timestamp"),
    ],
)  # fmt: skip
def test_segment_rules(event: Json, kind: str | None, code: str, field: str) -> None:
    invalid = _invalid(event, kind)
    assert (invalid.code, invalid.field) == (code, field)


@pytest.mark.parametrize(
    ("raw", "code", "field"),
    [
        (b'{"userId":"u","event":', "malformed_json", None),
        (b"", "malformed_json", None),
        (b'{"userId":"u","event":"E"} {}', "malformed_json", None),
        (b'{"userId":"u","event":"E","properties":{"x":NaN}}', "malformed_json", None),
        (b'{"userId":"u","event":"E","properties":{"x":Infinity}}', "malformed_json", None),
        (b'{"userId":"u","event":"E","properties":{"x":1e999}}', "invalid_value", "properties"),
        (b'{"userId":"u","event":"E","properties":{"x":"\xff"}}', "invalid_utf8", None),
        (b'{"userId":"\xc3\x28","event":"E"}', "invalid_utf8", None),
        (b"null", "invalid_type", None),
        (b'["track"]', "invalid_type", None),
    ],
)
def test_bodies_that_do_not_decode(raw: bytes, code: str, field: str | None) -> None:
    invalid = _invalid(raw, "track")
    assert (invalid.code, invalid.field) == (code, field)


def test_clock_skew_uses_the_event_or_the_batch_sent_at() -> None:
    original = datetime(2020, 1, 1, 0, 0, 0, 250_000, tzinfo=UTC)
    sent = original + timedelta(seconds=3, microseconds=1)
    skew = to_us(sent) - to_us(original)
    event = {"userId": "u", "event": "E", "originalTimestamp": original.isoformat()}
    own = _validate({**event, "sentAt": sent.isoformat()}, "track")
    assert own[TIMESTAMP] == RECEIVED - skew
    assert (own[ORIGINAL_TIMESTAMP], own[SENT_AT]) == (to_us(original), to_us(sent))
    from_batch = _validate(event, "track", sent_at=sent)
    assert from_batch[TIMESTAMP] == RECEIVED - skew
    # The event's own sentAt wins over the batch's.
    both = _validate({**event, "sentAt": sent.isoformat()}, "track", sent_at=original)
    assert both[TIMESTAMP] == RECEIVED - skew
    # `timestamp` stands in for a missing originalTimestamp.
    ts = _validate({"userId": "u", "event": "E", "timestamp": original.isoformat()}, "track")
    assert (ts[TIMESTAMP], ts[ORIGINAL_TIMESTAMP]) == (to_us(original), to_us(original))
    # An offset is converted to UTC; a naive time is taken as UTC.
    new_year = to_us(datetime(2026, 1, 1, tzinfo=UTC))
    for text in ("2026-01-01T02:00:00+02:00", "2025-12-31T19:00:00-05:00", "2026-01-01T00:00:00"):
        row = _validate({"userId": "u", "event": "E", "timestamp": text}, "track")
        assert row[TIMESTAMP] == new_year, text


def test_the_batch_context_is_merged_under_the_event_context() -> None:
    row = _validate(
        {"userId": "u", "event": "E", "context": {"ip": "1.1.1.1", "page": {"path": "/"}}},
        "track",
        context={"ip": "0.0.0.0", "library": {"name": "analytics-python"}},
    )
    assert row[CONTEXT] is not None
    assert json.loads(row[CONTEXT]) == {
        "ip": "1.1.1.1",
        "library": {"name": "analytics-python"},
        "page": {"path": "/"},
    }


# -- the limits, exactly ----------------------------------------------------------


def _padded(size: int, char: str = "x") -> bytes:
    """A valid track event of exactly ``size`` bytes."""
    base = _encode({"userId": "u", "event": "E", "properties": {"p": ""}})
    fill, rest = divmod(size - len(base), len(char.encode()))
    raw = _encode({"userId": "u", "event": "E", "properties": {"p": char * fill + "x" * rest}})
    assert len(raw) == size
    return raw


@pytest.mark.parametrize("limit", [200, 1_000, 32_768])
def test_the_size_limit_is_exact(limit: int) -> None:
    validator = _validator(max_event_bytes=limit)
    assert _validate(_padded(limit), "track", validator=validator)[EVENT] == "E"
    invalid = _invalid(_padded(limit + 1), "track", validator=validator)
    assert (invalid.code, invalid.field) == ("event_too_large", None)
    assert str(limit) in invalid.message


def test_the_size_limit_counts_bytes_not_characters() -> None:
    raw = _padded(32_770, "é")
    assert len(raw.decode()) < 32_768 < len(raw)
    assert _invalid(raw, "track").code == "event_too_large"


@pytest.mark.parametrize("max_depth", [2, 3, 10, 64])
@pytest.mark.parametrize("where", ["properties", "traits", "context"])
@pytest.mark.parametrize("container", ["object", "array"])
def test_the_depth_limit_is_exact(max_depth: int, where: str, container: str) -> None:
    validator = _validator(max_depth=max_depth)

    def event(levels: int) -> Json:
        # The event object is level 1 and the field's object level 2.
        inside = _nest(levels - 2, container) if levels > 2 else None
        value = {} if inside is None else {"v": inside}
        built = {"userId": "u", "event": "E", where: value}
        assert 1 + _depth(value) == levels
        return built

    row = _validate(event(max_depth), "track", validator=validator)
    column = {"properties": PROPERTIES, "traits": TRAITS, "context": CONTEXT}[where]
    assert row[column] is not None
    assert _depth(json.loads(row[column])) == max_depth - 1
    invalid = _invalid(event(max_depth + 1), "track", validator=validator)
    assert (invalid.code, invalid.field) == ("too_deep", None)
    assert str(max_depth) in invalid.message


def test_brackets_inside_strings_do_not_count_as_depth() -> None:
    row = _validate({"userId": "u", "event": "E", "properties": {"s": "[{" * 500}}, "track")
    assert row[PROPERTIES] is not None
    assert json.loads(row[PROPERTIES]) == {"s": "[{" * 500}


@pytest.mark.parametrize("levels", [1_000, 5_000, 100_000])
def test_extreme_nesting_is_refused_without_crashing(levels: int) -> None:
    raw = b'{"userId":"u","event":"E","properties":{"x":' + b"[" * levels + b"]" * levels + b"}}"
    validator = _validator(max_event_bytes=10 * levels + 100)
    assert _invalid(raw, "track", validator=validator).code == "too_deep"
    # Deep nesting in an ignored field costs nothing but must not crash either.
    ignored = b'{"userId":"u","event":"E","integrations":' + b"[" * levels + b"]" * levels + b"}"
    outcome = _outcome(ignored, "track", validator)
    assert not isinstance(outcome, Invalid) or outcome.code == "too_deep"


# -- properties over arbitrary payloads -------------------------------------------

_keys = st.text(max_size=8)
_scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=16)
)
json_values = st.recursive(
    _scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_keys, children, max_size=4),
    max_leaves=24,
)
json_objects = st.dictionaries(_keys, json_values, max_size=5)
# Anything JSON can hold, including what the validator must refuse.
wild_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=16)
    | st.sampled_from(["track", "identify", "2026-11-25T12:00:00Z", "", "NaN", "0000-00-00"]),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.sampled_from(sorted(FIELDS)) | _keys, children, max_size=6)
    ),
    max_leaves=30,
)
#: Identifiers and names: any text but NUL, which is rejected (invalid_text, tested apart).
_no_nul = st.characters(exclude_characters="\x00", exclude_categories=("Cs",))
_ids = st.text(_no_nul, min_size=1, max_size=12) | st.integers(
    min_value=-(2**63), max_value=2**63 - 1
)
_times = st.datetimes(
    min_value=datetime(1990, 1, 1),
    max_value=datetime(2090, 1, 1),
    timezones=st.sampled_from([UTC, None]),
)


def _iso(value: datetime) -> str:
    return value.isoformat()


@st.composite
def segment_events(draw: st.DrawFn) -> Json:
    """A valid Segment event for a batch (so it carries its type)."""
    kind = draw(st.sampled_from(sorted(EVENT_TYPES)))
    event: Json = {"type": kind}
    identity = draw(st.sampled_from(["user", "anonymous", "both"]))
    if kind == "alias" or identity in ("user", "both"):
        event["userId"] = draw(_ids)
    if kind != "alias" and identity in ("anonymous", "both"):
        event["anonymousId"] = draw(_ids)
    if kind == "alias":
        event["previousId"] = draw(_ids)
    if kind == "track":
        event["event"] = draw(st.text(_no_nul, min_size=1, max_size=20))
    if kind == "group":
        event["groupId"] = draw(_ids)
    if kind in ("page", "screen") and draw(st.booleans()):
        event["name"] = draw(st.text(_no_nul, max_size=20))
    for field in ("properties", "traits", "context"):
        if draw(st.booleans()):
            event[field] = draw(json_objects)
    for field in ("timestamp", "originalTimestamp", "sentAt"):
        if draw(st.booleans()):
            event[field] = _iso(draw(_times))
    if draw(st.booleans()):
        event["messageId"] = draw(st.text(_no_nul, min_size=1, max_size=36))
    if draw(st.booleans()):
        event[draw(_keys.filter(lambda k: k not in FIELDS))] = draw(json_values)
    return event


@st.composite
def mutated_events(draw: st.DrawFn) -> Json:
    """A valid event with one to three random mutations."""
    event = draw(segment_events())
    for _ in range(draw(st.integers(min_value=1, max_value=3))):
        how = draw(st.sampled_from(["drop", "replace", "add", "retype", "time"]))
        if how == "drop" and event:
            del event[draw(st.sampled_from(sorted(event)))]
        elif how == "replace" and event:
            event[draw(st.sampled_from(sorted(event)))] = draw(wild_values)
        elif how == "add":
            event[draw(st.sampled_from(sorted(FIELDS)))] = draw(wild_values)
        elif how == "retype":
            event["type"] = draw(st.text(max_size=10) | st.sampled_from(sorted(EVENT_TYPES)))
        elif how == "time":
            field = draw(st.sampled_from(["timestamp", "originalTimestamp", "sentAt"]))
            event[field] = draw(st.text(max_size=30) | st.just("2026-11-25T12:00:00+25:00"))
    return event


def _outcome(
    raw: bytes, kind: str | None, validator: Validator | None = None
) -> EventRow | Invalid:
    """The row, or the Invalid raised; any other exception propagates and fails the test."""
    try:
        return _validate(raw, kind, validator=validator)
    except Invalid as invalid:
        return invalid


def _check_outcome(raw: bytes, kind: str | None, validator: Validator | None = None) -> None:
    """Validation ends in a row or in Invalid with a known code and field, nothing else."""
    row = _outcome(raw, kind, validator)
    if isinstance(row, Invalid):
        assert row.code in CODES, row.code
        assert row.field is None or row.field in FIELDS, row.field
        assert row.message.strip()
        return
    assert len(row) == 16
    assert row[TYPE] in EVENT_TYPES
    assert isinstance(row[MESSAGE_ID], str)
    assert row[MESSAGE_ID]
    assert row[USER_ID] is not None or row[ANONYMOUS_ID] is not None
    for column in (PROPERTIES, TRAITS, CONTEXT):
        if row[column] is not None:
            assert isinstance(json.loads(str(row[column])), dict)


@FAST
@given(payload=json_values | json_objects | wild_values, kind=st.sampled_from([None, "track"]))
def test_any_json_ends_in_a_row_or_a_known_rejection(payload: object, kind: str | None) -> None:
    _check_outcome(_encode(payload), kind)


@FAST
@given(event=mutated_events(), ascii_only=st.booleans())
def test_mutated_events_end_in_a_row_or_a_known_rejection(event: Json, ascii_only: bool) -> None:
    raw = json.dumps(event, ensure_ascii=ascii_only).encode()
    _check_outcome(raw, None)
    _check_outcome(raw, "identify", _validator(max_event_bytes=512, max_depth=4))


@FAST
@given(raw=st.binary(max_size=200), kind=st.sampled_from([None, "track", "alias"]))
def test_arbitrary_bytes_end_in_a_row_or_a_known_rejection(raw: bytes, kind: str | None) -> None:
    _check_outcome(raw, kind)


@FAST
@given(event=segment_events(), data=st.data())
def test_damaged_bytes_end_in_a_row_or_a_known_rejection(event: Json, data: st.DataObject) -> None:
    raw = bytearray(_encode(event))
    at = data.draw(st.integers(min_value=0, max_value=len(raw) - 1))
    how = data.draw(st.sampled_from(["flip", "cut", "insert"]))
    if how == "flip":
        raw[at] = data.draw(st.integers(min_value=0, max_value=255))
    elif how == "cut":
        del raw[at:]
    else:
        raw[at:at] = data.draw(st.binary(min_size=1, max_size=4))
    _check_outcome(bytes(raw), None)


@FAST
@given(event=segment_events(), sent_at=st.none() | _times, ascii_only=st.booleans())
def test_valid_events_round_trip(event: Json, sent_at: datetime | None, ascii_only: bool) -> None:
    raw = json.dumps(event, ensure_ascii=ascii_only).encode()
    row = _validate(raw, sent_at=sent_at)

    assert row[SOURCE] == "web"
    assert row[TYPE] == event["type"]
    assert row[EVENT] == event.get("event")
    assert row[NAME] == event.get("name")
    for column, key in (
        (USER_ID, "userId"),
        (ANONYMOUS_ID, "anonymousId"),
        (GROUP_ID, "groupId"),
        (PREVIOUS_ID, "previousId"),
    ):
        sent = event.get(key)
        expected = None if sent in (None, "") else str(sent)
        assert row[column] == expected
        assert row[column] is None or isinstance(row[column], str)
    if "messageId" in event:
        assert row[MESSAGE_ID] == event["messageId"]
    else:
        uuid.UUID(row[MESSAGE_ID])
    for column, key in ((PROPERTIES, "properties"), (TRAITS, "traits"), (CONTEXT, "context")):
        if key in event:
            assert row[column] is not None
            assert _same(json.loads(row[column]), event[key]), (row[column], event[key])
        else:
            assert row[column] is None

    original = event.get("originalTimestamp", event.get("timestamp"))
    sent_text = event.get("sentAt")
    sent_us = to_us(datetime.fromisoformat(sent_text)) if sent_text else None
    if sent_us is None and sent_at is not None:
        sent_us = to_us(sent_at)
    original_us = to_us(datetime.fromisoformat(original)) if original else None
    assert row[ORIGINAL_TIMESTAMP] == original_us
    assert row[SENT_AT] == sent_us
    assert row[RECEIVED_AT] == RECEIVED
    if original_us is not None and sent_us is not None:
        assert row[TIMESTAMP] == RECEIVED - (sent_us - original_us)
    else:
        assert row[TIMESTAMP] == (original_us if original_us is not None else RECEIVED)


@FAST
@given(properties=json_objects, max_depth=st.integers(min_value=1, max_value=6))
def test_depth_is_accepted_exactly_up_to_the_limit(properties: Json, max_depth: int) -> None:
    event = {"userId": "u", "event": "E", "properties": properties}
    depth = 1 + _depth(properties)
    validator = _validator(max_depth=max_depth)
    if depth <= max_depth:
        row = _validate(event, "track", validator=validator)
        assert row[PROPERTIES] is not None
        assert _same(json.loads(row[PROPERTIES]), properties)
    else:
        assert _invalid(event, "track", validator=validator).code == "too_deep"


@FAST
@given(event=segment_events(), slack=st.integers(min_value=-3, max_value=3))
def test_size_is_accepted_exactly_up_to_the_limit(event: Json, slack: int) -> None:
    raw = _encode(event)
    limit = max(1, len(raw) + slack)
    validator = _validator(max_event_bytes=limit)
    if len(raw) <= limit:
        assert _validate(raw, validator=validator)[TYPE] == event["type"]
    else:
        assert _invalid(raw, validator=validator).code == "event_too_large"


# -- the batch envelope -------------------------------------------------------------


@FAST
@given(payload=json_values | wild_values | st.binary(max_size=64).map(lambda b: b.hex()))
def test_a_batch_body_parses_or_is_refused_with_400(payload: object) -> None:
    body = payload.encode() if isinstance(payload, str) else _encode(payload)
    for decode in (decode_batch, probe_key):
        refused: RequestRefused | None = None
        try:
            decode(body)
        except RequestRefused as exc:
            refused = exc
        if refused is not None:
            assert refused.status == 400
            assert refused.code in {"malformed_json", "invalid_batch"}
            assert str(refused).strip()


@settings(max_examples=100, deadline=None)
@given(events=st.lists(segment_events() | mutated_events(), min_size=1, max_size=5))
def test_a_batch_splits_into_its_events(events: list[Json]) -> None:
    envelope = decode_batch(_encode({"batch": events, "sentAt": "2026-11-25T12:00:00Z"}))
    assert len(envelope.batch) == len(events)
    for raw, event in zip(envelope.batch, events, strict=True):
        assert isinstance(raw, msgspec.Raw)
        assert _same(json.loads(bytes(raw)), event)
        _check_outcome(bytes(raw), None)
    assert envelope.sent_at == datetime(2026, 11, 25, 12, 0, tzinfo=UTC)


def test_floats_keep_their_value() -> None:
    values = [0.1, -0.0, 1e-320, 1.7976931348623157e308, 123456789.123456789, 5e-324]
    row = _validate({"userId": "u", "event": "E", "properties": {"f": values}}, "track")
    assert row[PROPERTIES] is not None
    back = json.loads(row[PROPERTIES])["f"]
    assert back == values
    assert math.copysign(1.0, back[1]) == -1.0


@pytest.mark.parametrize("field", ["userId", "anonymousId", "event", "messageId", "groupId"])
def test_a_nul_character_in_an_identifier_is_rejected_by_name(field: str) -> None:
    body = {"type": "group", "userId": "u", "event": "E", "groupId": "g", "messageId": "m"}
    body[field] = "a\x00b"
    with pytest.raises(Invalid) as caught:
        Validator(max_event_bytes=32768, max_depth=64).event(
            msgspec.json.encode(body), None, "web", 1_700_000_000_000_000, None
        )
    assert (caught.value.code, caught.value.field) == ("invalid_text", field)


def test_a_lone_surrogate_escape_becomes_a_replacement_character() -> None:
    # JSON.stringify("😀".slice(0, 1)) is "\ud83d": Segment's API reads it as U+FFFD. It
    # must not cost the batch its other events (the decoder refused the whole body).
    good = b'{"type":"track","userId":"u","event":"ok","messageId":"m1"}'
    cut = (
        b'{"type":"track","userId":"u","event":"cut \\ud83d","messageId":"m2",'
        b'"properties":{"low":"\\udc00x","reversed":"\\ude00\\ud83d","pair":"\\ud83d\\ude00",'
        b'"text":"\\\\ud83d","\\ud83d":1}}'
    )
    envelope = decode_batch(b'{"batch":[' + good + b"," + cut + b'],"context":{"c":"\\udbff"}}')
    assert len(envelope.batch) == 2
    assert envelope.context == {"c": "\ufffd"}
    validator = Validator(max_event_bytes=32768, max_depth=64)
    row = validator.event(bytes(envelope.batch[1]), None, "web", 0, None)
    assert row[3] == "cut \ufffd"
    assert row[PROPERTIES] is not None
    assert json.loads(row[PROPERTIES]) == {
        "low": "\ufffdx",
        "reversed": "\ufffd\ufffd",
        "pair": "😀",
        "text": "\\ud83d",
        "\ufffd": 1,
    }
    single = validator.event(b'{"userId":"u","event":"\\uD83D"}', "track", "web", 0, None)
    assert single[3] == "\ufffd"
    assert probe_key(b'{"writeKey":"k\\ud800","event":"e"}') == "k\ufffd"
