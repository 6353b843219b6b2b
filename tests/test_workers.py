"""A batch validated in a worker process answers as one validated in the server does."""

from __future__ import annotations

import asyncio
import json

from headwater.collect.app import validate_events
from headwater.collect.validate import Validator, decode_batch
from headwater.collect.workers import DecodePool
from headwater.store import schema


def _body() -> bytes:
    events: list[dict[str, object]] = [
        {"type": "track", "event": "Ok", "userId": f"u{i}", "messageId": f"w-{i}"}
        for i in range(50)
    ]
    events[7] = {"type": "track", "event": "No Identity", "messageId": "w-bad"}
    return json.dumps({"batch": events, "context": {"app": "x"}}).encode()


def test_a_worker_validates_as_the_server_does() -> None:
    body = _body()
    pool = DecodePool(1, max_event_bytes=32_768, max_depth=64)
    try:
        validated = asyncio.run(pool.validate(body, None, "web", 1_700_000_000_000_000))
    finally:
        pool.close()

    validator = Validator(max_event_bytes=32_768, max_depth=64)
    envelope = decode_batch(body)
    rows, failed, rejected = validate_events(
        validator, envelope.batch, None, "web", 1_700_000_000_000_000, validator.batch(envelope)
    )
    assert validated.events.schema == schema.EVENTS
    # Every column but the failed rows' random ids is the same; a collected event has no
    # first_received_at (only a replay sets it), the column after the rows' last.
    assert validated.events.to_pylist() == [
        dict(zip(schema.EVENTS.names, (*row, None), strict=True))
        | {
            "timestamp": validated.events.column("timestamp")[i].as_py(),
            "received_at": validated.events.column("received_at")[i].as_py(),
        }
        for i, row in enumerate(rows)
    ]
    assert validated.rejected == rejected
    assert [r.code for r in validated.rejected] == ["missing_identity"]
    assert [row[1:] for row in validated.failed] == [row[1:] for row in failed]
    hi, lo = schema.message_keys(["web"] * len(rows), [row[0] for row in rows])
    assert validated.keys[0].tolist() == hi.to_pylist()
    assert validated.keys[1].tolist() == lo.to_pylist()
