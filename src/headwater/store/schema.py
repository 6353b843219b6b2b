"""The event tables, named once: pipelines are written against these columns.

The Arrow schemas are the interchange shape between the collector and every
engine; each engine derives its own DDL from them.
"""

from __future__ import annotations

import pyarrow as pa

TIMESTAMP = pa.timestamp("us", tz="UTC")

#: Columns holding JSON text; engines store them in their JSON type.
JSON_COLUMNS = frozenset({"properties", "traits", "context", "payload"})

EVENTS = pa.schema(
    [
        pa.field("message_id", pa.string(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("type", pa.string(), nullable=False),
        pa.field("event", pa.string()),
        pa.field("name", pa.string()),
        pa.field("user_id", pa.string()),
        pa.field("anonymous_id", pa.string()),
        pa.field("group_id", pa.string()),
        pa.field("previous_id", pa.string()),
        pa.field("timestamp", TIMESTAMP, nullable=False),
        pa.field("original_timestamp", TIMESTAMP),
        pa.field("sent_at", TIMESTAMP),
        pa.field("received_at", TIMESTAMP, nullable=False),
        pa.field("properties", pa.string()),
        pa.field("traits", pa.string()),
        pa.field("context", pa.string()),
    ]
)

FAILED_EVENTS = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("source", pa.string()),
        pa.field("received_at", TIMESTAMP, nullable=False),
        pa.field("code", pa.string(), nullable=False),
        pa.field("field", pa.string()),
        pa.field("message", pa.string(), nullable=False),
        pa.field("payload", pa.string()),
        pa.field("replayed_at", TIMESTAMP),
    ]
)

#: The dedupe window: one row per ``(source, message_id)`` seen since the window's start.
MESSAGE_IDS = pa.schema(
    [
        pa.field("source", pa.string(), nullable=False),
        pa.field("message_id", pa.string(), nullable=False),
        pa.field("received_at", TIMESTAMP, nullable=False),
    ]
)

TABLES = {"events": EVENTS, "failed_events": FAILED_EVENTS, "message_ids": MESSAGE_IDS}
