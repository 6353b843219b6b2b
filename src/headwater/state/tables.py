"""The metadata schema. Changes go through a new Alembic revision in ``migrations/versions``."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from typing import Any, TypeVar

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Dialect,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
)
from sqlalchemy.engine import RowMapping

from headwater.core.types import Interval

T = TypeVar("T")


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes on every database (SQLite keeps no zone of its own)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        value = value.astimezone(UTC)
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


metadata = MetaData()

#: Each version a pipeline has had (hash of what it runs).
versions = Table(
    "pipeline_versions",
    metadata,
    Column("pipeline", String(200), primary_key=True),
    Column("version", String(32), primary_key=True),
    Column("first_seen", UTCDateTime(), nullable=False),
)

#: One row per interval of a pipeline that has been published.
intervals = Table(
    "intervals",
    metadata,
    Column("pipeline", String(200), primary_key=True),
    Column("start", UTCDateTime(), primary_key=True),
    Column("end", UTCDateTime(), nullable=False),
    Column("version", String(32), nullable=False),
    Column("status", String(16), nullable=False),  # done | stale
    Column("run_id", Integer, nullable=False),
    Column("done_at", UTCDateTime(), nullable=False),
    Column("reason", Text),  # why it is stale
)

#: Every attempt at an interval (or at a full refresh).
runs = Table(
    "runs",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("pipeline", String(200), nullable=False, index=True),
    Column("version", String(32), nullable=False),
    Column("interval_start", UTCDateTime(), nullable=False),
    Column("interval_end", UTCDateTime(), nullable=False),
    Column("trigger", String(16), nullable=False),  # schedule | backfill | manual
    Column("status", String(16), nullable=False),  # running | succeeded | failed
    Column("attempt", Integer, nullable=False),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("finished_at", UTCDateTime()),
    Column("rows_read", BigInteger),
    Column("rows_written", BigInteger),
    Column("error", Text),
    Column("error_kind", String(16)),  # transient | terminal
)

#: Event-time pipelines: arrivals up to ``arrival_mark`` have been checked for late events.
watermarks = Table(
    "watermarks",
    metadata,
    Column("pipeline", String(200), primary_key=True),
    Column("arrival_mark", UTCDateTime(), nullable=False),
)

#: One holder per name (a pipeline's runs, a pipeline and sink's deliveries) at a time, across
#: processes: a lease that expires. ``token`` grows with every new holder and fences its writes.
leases = Table(
    "leases",
    metadata,
    Column("pipeline", String(200), primary_key=True),  # the lease's name
    Column("owner", String(100), nullable=False),
    Column("expires_at", UTCDateTime(), nullable=False),
    Column("token", BigInteger, nullable=False, server_default="0"),
)

#: One row per interval of a pipeline and sink it goes to: the state of that delivery.
deliveries = Table(
    "deliveries",
    metadata,
    Column("pipeline", String(200), primary_key=True),
    Column("sink", String(200), primary_key=True),
    Column("interval_start", UTCDateTime(), primary_key=True),
    Column("interval_end", UTCDateTime(), nullable=False),
    Column("run_id", Integer, nullable=False),  # the run whose output is delivered
    Column("status", String(16), nullable=False),  # pending | failed | delivered | dead
    Column("attempts", Integer, nullable=False),  # failed attempts at the current batch
    Column("batches_done", Integer, nullable=False),
    Column("rows_delivered", BigInteger, nullable=False),
    # A webhook delivery's rows per batch, fixed before its first POST: a resumed delivery
    # sends the same batches under the same keys whatever the sink's batch_rows is now.
    Column("batch_rows", Integer),
    Column("next_attempt_at", UTCDateTime(), nullable=False),
    Column("last_error", Text),
    Column("updated_at", UTCDateTime(), nullable=False),
    Index("deliveries_due", "status", "next_attempt_at"),
)

#: What could not be delivered after every attempt, kept for ``headwater replay``.
dead_letters = Table(
    "dead_letters",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("pipeline", String(200), nullable=False),
    Column("sink", String(200), nullable=False),
    Column("interval_start", UTCDateTime(), nullable=False),
    Column("interval_end", UTCDateTime(), nullable=False),
    Column("run_id", Integer, nullable=False),
    Column("batch", Integer),  # webhooks: the batch; None: the whole interval
    Column("idempotency_key", String(80)),
    Column("body", LargeBinary),  # webhooks: the exact body, sent again by replay
    Column("rows", Integer, nullable=False),
    Column("reason", Text, nullable=False),
    Column("attempts", Integer, nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
    Column("replayed_at", UTCDateTime()),
    Index("dead_letters_open", "replayed_at", "pipeline", "sink"),
)


#: The spans of arrival time moved from the hot store into the warehouse. They tile time
#: from the first offload on without gaps or overlaps; a span with no events was not loaded.
offloads = Table(
    "offloads",
    metadata,
    Column("interval_start", UTCDateTime(), primary_key=True),
    Column("interval_end", UTCDateTime(), nullable=False),
    Column("events", BigInteger, nullable=False),
    Column("failed_events", BigInteger, nullable=False),
    Column("bytes", BigInteger, nullable=False),  # the Parquet loaded, both tables
    Column("done_at", UTCDateTime(), nullable=False),
)


#: Retention, per table (``events``, ``failed_events``, an output): the horizon its last pass
#: dropped rows before, when, how many, and whether it left none older.
retention = Table(
    "retention",
    metadata,
    Column("table_name", String(200), primary_key=True),
    Column("horizon", UTCDateTime(), nullable=False),
    Column("last_pass_at", UTCDateTime(), nullable=False),
    Column("last_dropped", BigInteger, nullable=False),
    Column("dropped_total", BigInteger, nullable=False),
    Column("caught_up", Boolean, nullable=False),
)


#: Every ``headwater apply``: who, when, from which commit, the plan it carried out.
applies = Table(
    "applies",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("commit", String(64)),  # the git commit applied; None outside a repository
    Column("dirty", Integer, nullable=False),  # 1: the tree had uncommitted changes
    Column("applied_by", String(200), nullable=False),
    Column("started_at", UTCDateTime(), nullable=False),
    Column("finished_at", UTCDateTime()),
    Column("status", String(16), nullable=False),  # running | done | failed | interrupted
    Column("plan", Text, nullable=False),  # the plan as JSON
    Column("error", Text),
)

#: What the environment has applied: each pipeline (its version, header and columns), source,
#: consumer and sink, as the last apply left it. ``spec`` is JSON.
applied = Table(
    "applied",
    metadata,
    Column("kind", String(16), primary_key=True),  # pipeline | source | consumer | sink
    Column("name", String(200), primary_key=True),
    Column("version", String(32)),
    Column("spec", Text, nullable=False),
    Column("apply_id", Integer, nullable=False),
)

#: Every version of every model seen: the hash of its bytes, their size, where they came
#: from, and when a run first scored with it.
model_versions = Table(
    "model_versions",
    metadata,
    Column("model", String(200), primary_key=True),
    Column("version", String(32), primary_key=True),
    Column("sha256", String(64), nullable=False),
    Column("size", BigInteger, nullable=False),
    Column("source", Text, nullable=False),
    Column("first_used", UTCDateTime(), nullable=False),
)

#: Which model versions each pipeline version scores with (``shadow``: 1 for the shadow):
#: the intervals a model version scored are the intervals made by those pipeline versions.
model_uses = Table(
    "model_uses",
    metadata,
    Column("pipeline", String(200), primary_key=True),
    Column("pipeline_version", String(32), primary_key=True),
    Column("model", String(200), primary_key=True),
    Column("model_version", String(32), primary_key=True),
    Column("shadow", Integer, nullable=False),
)


#: One erasure of people's data: who asked, when, and (until every place is done) the ids.
erasures = Table(
    "erasures",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("requested_by", String(200), nullable=False),
    Column("requested_at", UTCDateTime(), nullable=False),
    Column("status", String(16), nullable=False),  # pending | done
    Column("ids", Text),  # JSON {"user_id": [...], "anonymous_id": [...]}; NULL once done
    Column("hashes", Text, nullable=False),  # JSON, the same shape, SHA-256 of each id
    Column("finished_at", UTCDateTime()),
)

#: Each place an erasure deletes from (a table, a recomputation, a sink), planned before
#: anything is deleted and marked done as it finishes: a re-run resumes at the first not done.
erasure_places = Table(
    "erasure_places",
    metadata,
    Column("erasure_id", Integer, primary_key=True),
    Column("place", String(400), primary_key=True),
    Column("seq", Integer, nullable=False),
    Column("kind", String(16), nullable=False),  # table | failed | recompute | files | ...
    Column("detail", Text, nullable=False),  # JSON: what the place needs to be done
    Column("status", String(16), nullable=False),  # pending | done
    Column("rows", BigInteger),
    Column("attempts", Integer, nullable=False),
    Column("next_attempt_at", UTCDateTime(), nullable=False),
    Column("last_error", Text),
    Column("done_at", UTCDateTime()),
    Index("erasure_places_open", "status", "next_attempt_at"),
)

#: Ids whose new events are dropped at ingest, by hash (the raw id is not kept here).
suppressions = Table(
    "suppressions",
    metadata,
    Column("hash", String(64), primary_key=True),
    Column("kind", String(16), nullable=False),  # user_id | anonymous_id
    Column("erasure_id", Integer),
    Column("added_by", String(200), nullable=False),
    Column("added_at", UTCDateTime(), nullable=False),
    Column("lifted_at", UTCDateTime()),
    Column("lifted_by", String(200)),
    Column("dropped", BigInteger, nullable=False, server_default="0"),
    Column("last_dropped_at", UTCDateTime()),
)


def record(cls: type[T], row: RowMapping, **values: Any) -> T:
    """A dataclass ``cls`` from a row: each field from the column of its name, except those
    given in ``values``; a row with ``interval_start`` and ``interval_end`` gives ``interval``."""
    if "interval_start" in row and "interval" not in values:
        values["interval"] = Interval(row["interval_start"], row["interval_end"])
    names = [f.name for f in dataclasses.fields(cls) if f.name not in values]  # type: ignore[arg-type]
    return cls(**{name: row[name] for name in names}, **values)


#: Every action an admin took from the dashboard: who, what (the operation and its JSON
#: arguments), when, and how it went (``ok``, ``failed``, ``refused``).
admin_actions = Table(
    "admin_actions",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("admin", String(200), nullable=False),
    Column("action", String(100), nullable=False),
    Column("arguments", Text, nullable=False),
    Column("at", UTCDateTime(), nullable=False),
    Column("outcome", String(20), nullable=False),
    Column("detail", Text),
    Index("admin_actions_at", "at"),
)

#: The secret the dashboard's session cookies are signed with (one row, ``id`` 1), made at
#: first use and shared by every process of the environment; a new one signs everyone out.
dashboard_secret = Table(
    "dashboard_secret",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("secret", String(64), nullable=False),
    Column("created_at", UTCDateTime(), nullable=False),
)
