"""The collector's commit into a PostgreSQL store: exact dedupe across processes.

The batch is staged with ``COPY`` into a temporary table; one statement then
claims each ``(source, message_id)`` in ``message_ids`` (``ON CONFLICT DO
NOTHING``) and inserts exactly the claimed events. Two collectors that receive
the same message at once both try to claim it; the unique index makes one wait
for the other's commit and then skip it, so an event is stored once however
many processes see it.
"""

from __future__ import annotations

from typing import Any

import psycopg
import pyarrow as pa
from psycopg import sql

from headwater.store import schema
from headwater.store.engine import IngestBatch
from headwater.store.postgres.arrow import copy_in, names, without_nul
from headwater.store.postgres.floors import PostgresFloors


def ingest(
    con: psycopg.Connection[Any], store: str, batch: IngestBatch, floors: PostgresFloors
) -> pa.Array:
    """Commit ``batch`` on ``con`` (a connection of the store's schema ``store``); return,
    per event, whether it was new."""
    events = without_nul(batch.events, schema.JSON_COLUMNS)
    columns = names(schema.EVENTS.names)
    with con.transaction():
        new = pa.array([True] * events.num_rows, pa.bool_())
        if events.num_rows:
            con.execute(
                sql.SQL(
                    "CREATE TEMP TABLE IF NOT EXISTS hw_stage (LIKE {} INCLUDING DEFAULTS) "
                    "ON COMMIT DELETE ROWS"
                ).format(sql.Identifier(store, "events"))
            )
            copy_in(con, sql.Identifier("hw_stage"), events)
            claimed = con.execute(
                sql.SQL(
                    "WITH claimed AS (INSERT INTO {ids} (source, message_id, received_at) "
                    "SELECT source, message_id, received_at FROM hw_stage "
                    # One order for every collector: two claiming the same ids in
                    # opposite orders would deadlock.
                    "ORDER BY source, message_id "
                    "ON CONFLICT DO NOTHING RETURNING source, message_id) "
                    "INSERT INTO {events} ({columns}) SELECT {staged} FROM hw_stage s "
                    "JOIN claimed c USING (source, message_id) RETURNING source, message_id"
                ).format(
                    ids=sql.Identifier(store, "message_ids"),
                    events=sql.Identifier(store, "events"),
                    columns=columns,
                    staged=sql.SQL(", ").join(sql.Identifier("s", c) for c in schema.EVENTS.names),
                )
            ).fetchall()
            if len(claimed) != events.num_rows:
                fresh = set(claimed)
                pairs = zip(
                    events["source"].to_pylist(), events["message_id"].to_pylist(), strict=True
                )
                new = pa.array([pair in fresh for pair in pairs], pa.bool_())
        failed = without_nul(batch.failed, schema.JSON_COLUMNS)
        copy_in(con, sql.Identifier(store, "failed_events"), failed)
        replayed = batch.replayed
        if replayed is not None and replayed.num_rows:
            con.execute(
                sql.SQL(
                    "UPDATE {} f SET replayed_at = r.replayed_at "
                    "FROM unnest(%s::text[], %s::timestamptz[]) AS r (id, replayed_at) "
                    "WHERE f.id = r.id AND f.replayed_at IS NULL"
                ).format(sql.Identifier(store, "failed_events")),
                [replayed["id"].to_pylist(), replayed["replayed_at"].to_pylist()],
            )
        floors.fence(con)
    return new
