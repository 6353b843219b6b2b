"""The event tables, named once: pipelines are written against these columns.

The Arrow schemas are the interchange shape between the collector and every
engine; each engine derives its own DDL from them.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import pyarrow as pa

TIMESTAMP = pa.timestamp("us", tz="UTC")

#: Columns holding JSON text; engines store them in their JSON type.
JSON_COLUMNS = frozenset({"properties", "traits", "context", "payload"})
#: The tables every store has; pipelines and the read API name them.
BUILTIN_TABLES = frozenset({"events", "failed_events"})

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
        # When a replayed failed event first arrived (its received_at is the replay's time,
        # so offloads and pipelines by arrival take it as new); NULL for every other event.
        pa.field("first_received_at", TIMESTAMP),
    ]
)

#: Columns of ``events`` added after stores were first made: each engine adds the missing
#: ones to an existing store when it opens it (nullable, so old rows read NULL).
ADDED_EVENT_COLUMNS = ("first_received_at",)

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

#: ``failed_events`` rows replayed in a commit (``IngestBatch.replayed``): their ids and when.
REPLAYED = pa.schema(
    [
        pa.field("id", pa.string(), nullable=False),
        pa.field("replayed_at", TIMESTAMP, nullable=False),
    ]
)

#: Per name, the largest fencing token an engine has accepted (see ``Engine.replace_interval``).
FENCES = "_headwater_fences"

#: Tables of Headwater's own bookkeeping: not datasets, not listed as the store's tables.
INTERNAL_TABLES = frozenset({"message_ids", "collector_floors", FENCES})
#: Tables Headwater writes beside the datasets (a pipeline's next version while ``headwater
#: apply`` builds it, BigQuery's staging tables) start with this: never listed.
WORK_PREFIX = "_hw_"
#: Where ``headwater apply`` builds a pipeline's next version, swapped in when whole.
BUILD_PREFIX = "_hw_next_"
#: The longest table name every engine takes whole (PostgreSQL's identifiers).
_MAX_NAME = 63


def build_table(name: str) -> str:
    """The table a pipeline's next version is built in, beside ``name``.

    >>> build_table("daily_active_users")
    '_hw_next_daily_active_users'
    """
    candidate = BUILD_PREFIX + name
    if len(candidate) <= _MAX_NAME:
        return candidate
    digest = hashlib.sha256(name.encode()).hexdigest()[:12]
    return f"{BUILD_PREFIX}{name[: _MAX_NAME - len(BUILD_PREFIX) - 13]}_{digest}"


def listed(name: str) -> bool:
    """Whether a table of the store is one of its datasets (or events), not bookkeeping."""
    return name not in INTERNAL_TABLES and not name.startswith(WORK_PREFIX)


def type_name(arrow: pa.DataType) -> str:
    """A column's type as the read API and the catalog name it, the same from every engine:
    a list's items are ``item`` whatever the engine called them.

    >>> type_name(pa.list_(pa.field("l", pa.string())))
    'list<item: string>'
    >>> type_name(pa.struct([pa.field("tags", pa.large_list(pa.field("x", pa.int64())))]))
    'struct<tags: large_list<item: int64>>'
    """
    return str(rebuilt(arrow, lambda leaf: leaf))


def rebuilt(arrow: pa.DataType, leaf: Callable[[pa.DataType], pa.DataType]) -> pa.DataType:
    """``arrow`` with each type that is not a list or struct replaced by ``leaf(type)``,
    and each list's items named ``item``."""
    if pa.types.is_list(arrow):
        return pa.list_(rebuilt(arrow.value_type, leaf))
    if pa.types.is_large_list(arrow):
        return pa.large_list(rebuilt(arrow.value_type, leaf))
    if pa.types.is_struct(arrow):
        return pa.struct([f.with_type(rebuilt(f.type, leaf)) for f in arrow])
    return leaf(arrow)


#: The one of them ``headwater query`` reads too (docs/events.md: whether an id would be
#: taken as a duplicate).
QUERYABLE_INTERNAL = ("message_ids",)

#: The dedupe window: one row per ``(source, message_id)`` seen since the window's start.
#: ``key_hi``/``key_lo`` are the 128-bit BLAKE2b of the pair (see :func:`message_keys`),
#: the primary key: fixed-size integers index several times faster than strings.
MESSAGE_IDS = pa.schema(
    [
        pa.field("key_hi", pa.uint64(), nullable=False),
        pa.field("key_lo", pa.uint64(), nullable=False),
        pa.field("source", pa.string(), nullable=False),
        pa.field("message_id", pa.string(), nullable=False),
        pa.field("received_at", TIMESTAMP, nullable=False),
    ]
)


def message_keys(sources: list[str], message_ids: list[str]) -> tuple[pa.Array, pa.Array]:
    """The dedupe key of each ``(source, message_id)``: BLAKE2b-128, split in two uint64.

    A collision needs about 2**64 distinct ids inside one window, so the dedupe
    is exact for every practical purpose.

    >>> hi, lo = message_keys(["web"], ["m1"])
    >>> hi.type, len(lo)
    (DataType(uint64), 1)
    """
    his: list[int] = []
    los: list[int] = []
    for source, message_id in zip(sources, message_ids, strict=True):
        digest = hashlib.blake2b(
            source.encode() + b"\x00" + message_id.encode(), digest_size=16
        ).digest()
        his.append(int.from_bytes(digest[:8], "little"))
        los.append(int.from_bytes(digest[8:], "little"))
    return pa.array(his, pa.uint64()), pa.array(los, pa.uint64())
