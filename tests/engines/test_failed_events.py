"""Failed events replayed on each engine: ``events.first_received_at`` everywhere (added to a
store made before it), the replay's marks in the transaction of its events, and
``headwater failed replay`` on a PostgreSQL store that a running collector writes."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import httpx
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from google.cloud import bigquery

from headwater.store import schema
from headwater.store.bigquery.engine import BigQueryEngine
from headwater.store.duckdb import DuckDBEngine
from headwater.store.engine import Engine, IngestBatch
from headwater.store.errors import QueryError, StoreUnavailable
from headwater.store.postgres import PostgresEngine
from headwater.store.postgres.arrow import columns_ddl
from tests.bigquery_fake import FakeClient
from tests.engines.conftest import PG_SCHEMA
from tests.engines.test_collectors_postgres import SCHEMA, Prod, make_prod
from tests.pg import PostgresServer

T0 = datetime(2026, 11, 2, 9, 30, tzinfo=UTC)
#: The events table as versions before ``first_received_at`` made it.
OLD_EVENTS = pa.schema([f for f in schema.EVENTS if f.name not in schema.ADDED_EVENT_COLUMNS])


def _event(message_id: str, received: datetime, first: datetime | None = None) -> dict[str, Any]:
    return {
        "message_id": message_id, "source": "web", "type": "track", "event": "Signed Up",
        "user_id": "u1", "timestamp": received, "received_at": received,
        "first_received_at": first,
    }  # fmt: skip


def _failed(failed_id: str) -> dict[str, Any]:
    return {
        "id": failed_id, "source": "web", "received_at": T0, "code": "missing_identity",
        "field": "userId", "message": "no identity", "payload": '{"user_id": "u1"}',
    }  # fmt: skip


def _batch(
    events: list[dict[str, Any]],
    failed: list[dict[str, Any]] = (),  # type: ignore[assignment]
    replayed: list[str] = (),  # type: ignore[assignment]
    at: datetime = T0,
) -> IngestBatch:
    marks = pa.Table.from_pylist([{"id": i, "replayed_at": at} for i in replayed], schema.REPLAYED)
    return IngestBatch(
        pa.Table.from_pylist(events, schema.EVENTS),
        pa.Table.from_pylist(list(failed), schema.FAILED_EVENTS),
        replayed=marks if replayed else None,
    )


def _rows(engine: Engine, sql: str) -> list[dict[str, Any]]:
    return engine.query(sql).to_pylist()


def test_first_received_at_is_an_events_column_null_for_collected_events(engine: Engine) -> None:
    later = T0 + timedelta(days=1)
    engine.ingest(_batch([_event("m1", T0), _event("m2", later, first=T0)]))
    found = _rows(engine, "SELECT message_id, first_received_at FROM events ORDER BY message_id")
    assert found == [
        {"message_id": "m1", "first_received_at": None},
        {"message_id": "m2", "first_received_at": T0},
    ]


@pytest.mark.parametrize("engine", ["duckdb", "postgres"], indirect=True)
def test_replay_marks_commit_with_their_events_or_not_at_all(engine: Engine) -> None:
    engine.ingest(_batch([], failed=[_failed("f1"), _failed("f2")]))
    replay = T0 + timedelta(hours=3)

    # A commit that fails (a NULL where events take none) marks nothing.
    broken = _event("r1", replay, first=T0) | {"type": None}
    with pytest.raises((QueryError, StoreUnavailable, pa.ArrowInvalid)):
        engine.ingest(_batch([broken], replayed=["f1"], at=replay))
    assert _rows(engine, "SELECT id FROM failed_events WHERE replayed_at IS NOT NULL") == []
    assert _rows(engine, "SELECT message_id FROM events") == []

    new = engine.ingest(_batch([_event("r1", replay, first=T0)], replayed=["f1"], at=replay))
    assert new.to_pylist() == [True]
    marked = _rows(engine, "SELECT id, replayed_at FROM failed_events ORDER BY id")
    assert marked == [{"id": "f1", "replayed_at": replay}, {"id": "f2", "replayed_at": None}]

    # Marked once: a second replay of the same event neither stores nor moves the mark.
    again = engine.ingest(
        _batch([_event("r1", replay, first=T0)], replayed=["f1"], at=replay + timedelta(hours=1))
    )
    assert again.to_pylist() == [False]
    assert _rows(engine, "SELECT id, replayed_at FROM failed_events ORDER BY id") == marked


@pytest.mark.parametrize("engine", ["spark"], indirect=True)
def test_a_warehouse_refuses_replay_marks_before_writing(engine: Engine) -> None:
    with pytest.raises(QueryError, match="replayed on the store collectors write"):
        engine.ingest(_batch([_event("r1", T0)], replayed=["f1"]))
    assert _rows(engine, "SELECT message_id FROM events") == []


# -- a store made before the column ---------------------------------------------------


def _check_old_and_new(engine: Engine, *, ingest: bool = True) -> None:
    """``engine``, on a store holding an event ``old`` from before the column, takes an event
    with it; ``old`` reads NULL. Closes ``engine``."""
    try:
        if ingest:
            engine.ingest(_batch([_event("new", T0 + timedelta(hours=1), first=T0)]))
        found = _rows(engine, "SELECT message_id, first_received_at FROM events ORDER BY 1")
    finally:
        engine.close()
    assert found == [
        {"message_id": "new", "first_received_at": T0},
        {"message_id": "old", "first_received_at": None},
    ]


def test_duckdb_store_made_before_gets_the_column(tmp_path: Path) -> None:
    path = tmp_path / "events.duckdb"
    con = duckdb.connect(str(path))
    con.execute(
        "CREATE TABLE events (message_id VARCHAR NOT NULL, source VARCHAR NOT NULL, "
        "type VARCHAR NOT NULL, event VARCHAR, name VARCHAR, user_id VARCHAR, "
        "anonymous_id VARCHAR, group_id VARCHAR, previous_id VARCHAR, "
        "timestamp TIMESTAMPTZ NOT NULL, original_timestamp TIMESTAMPTZ, sent_at TIMESTAMPTZ, "
        "received_at TIMESTAMPTZ NOT NULL, properties JSON, traits JSON, context JSON)"
    )
    con.execute("INSERT INTO events (message_id, source, type, timestamp, received_at) "
                "VALUES ('old', 'web', 'track', ?, ?)", [T0, T0])  # fmt: skip
    con.close()
    _check_old_and_new(DuckDBEngine.open(path))


def test_postgres_store_made_before_gets_the_column(pg_url: str) -> None:
    with psycopg.connect(pg_url, autocommit=True) as con:
        con.execute(f"CREATE SCHEMA {PG_SCHEMA}")
        ddl = columns_ddl(OLD_EVENTS, schema.JSON_COLUMNS).as_string(con)
        con.execute(f"CREATE TABLE {PG_SCHEMA}.events ({ddl})")
        con.execute(f"INSERT INTO {PG_SCHEMA}.events (message_id, source, type, timestamp, "
                    "received_at) VALUES ('old', 'web', 'track', %s, %s)", [T0, T0])  # fmt: skip
    _check_old_and_new(PostgresEngine.open(pg_url, PG_SCHEMA))
    # Opened again: the column is found, nothing is added twice.
    _check_old_and_new(PostgresEngine.open(pg_url, PG_SCHEMA), ingest=False)


def test_spark_files_written_before_read_the_column_as_null(tmp_path: Path) -> None:
    from headwater.store.spark import SparkEngine

    warehouse = tmp_path / "warehouse"
    day = warehouse / "events" / f"received_day={T0.date().isoformat()}"
    day.mkdir(parents=True)
    old = pa.Table.from_pylist([_event("old", T0)], OLD_EVENTS)
    pq.write_table(old, day / "part-old.parquet")
    _check_old_and_new(SparkEngine.open(str(warehouse), "local[2]", {}))


class _Made(FakeClient):
    """A dataset whose events table exists with the columns of an older version."""

    def create_table(self, table: Any, exists_ok: bool = False, **_: Any) -> Any:
        super().create_table(table, exists_ok=exists_ok)
        if table.table_id != "events":
            return table
        existing = bigquery.Table(f"{table.project}.{table.dataset_id}.events")
        existing.schema = [f for f in table.schema if f.name not in schema.ADDED_EVENT_COLUMNS]
        existing.time_partitioning = table.time_partitioning
        return existing


def test_bigquery_events_table_made_before_gets_the_column() -> None:
    """BigQuery is the recording fake (tests/bigquery_fake.py): no BigQuery runs here."""
    fake = _Made()
    BigQueryEngine.open(None, "analytics", None, 10**9, client=fake).close()
    [update] = fake.table_calls("update_table")
    assert update.name.endswith(".analytics.events")
    assert update.options == {"fields": ["schema"]}
    names = [f.name for f in update.obj.schema]
    assert names == schema.EVENTS.names
    assert update.obj.schema[-1].mode == "NULLABLE"

    fresh = FakeClient()
    BigQueryEngine.open(None, "analytics", None, 10**9, client=fresh).close()
    assert fresh.table_calls("update_table") == []
    [events] = [c for c in fresh.table_calls("create_table") if c.name.endswith(".events")]
    assert [f.name for f in events.obj.schema] == schema.EVENTS.names


# -- headwater failed replay on PostgreSQL --------------------------------------------


@pytest.fixture
def prod(pg_server: PostgresServer, tmp_path: Path) -> Prod:
    return make_prod(pg_server, tmp_path)


FIX = """REPLACE(payload, '"user_id"', '"userId"')"""


def _cli_json(prod: Prod, *args: str, code: int = 0) -> Any:
    result = prod.cli("--env", "prod", *args, "--json")
    assert result.returncode == code, result.stdout + result.stderr
    return json.loads(result.stdout)


def test_failed_events_replayed_on_postgres_beside_a_running_collector(prod: Prod) -> None:
    [collector] = prod.collectors("c1")
    try:
        body = {"batch": [
            {"type": "track", "event": "Signed Up", "user_id": "u2", "messageId": "pg-1"},
            {"type": "identify", "user_id": "u3"},
            {"type": "track", "user_id": "u4", "messageId": "pg-3"},
        ]}  # fmt: skip
        answer = httpx.post(f"{collector.url}/v1/batch", json=body, auth=(prod.key, ""))
        assert answer.status_code == 200, answer.text
        assert len(answer.json()["rejected"]) == 3

        groups = _cli_json(prod, "failed")
        assert [(g["code"], g["field"], g["events"], g["replayed"]) for g in groups] == [
            ("missing_identity", "userId", 3, 0)
        ]
        preview = _cli_json(prod, "failed", "replay", "--fix", FIX, "--dry-run")
        assert (preview["passed"], preview["stored"]) == (2, 0)
        assert prod.rows(f"SELECT count(*) FROM {SCHEMA}.events") == [(0,)]

        done = _cli_json(prod, "failed", "replay", "--fix", FIX, code=1)
        assert (done["selected"], done["passed"], done["stored"]) == (3, 2, 2)
        [still] = done["still_failing"]
        assert (still["code"], still["field"]) == ("missing_field", "event")

        stored = prod.rows(
            f"SELECT e.user_id, e.first_received_at = f.received_at, "
            f"e.received_at = f.replayed_at, e.received_at > f.received_at "
            f"FROM {SCHEMA}.events e JOIN {SCHEMA}.failed_events f "
            f"ON f.payload::text LIKE '%' || e.user_id || '%' ORDER BY 1"
        )
        assert stored == [("u2", True, True, True), ("u3", True, True, True)]

        again = _cli_json(prod, "failed", "replay", "--fix", FIX, code=1)
        assert (again["selected"], again["stored"]) == (1, 0)
        assert prod.rows(f"SELECT count(*) FROM {SCHEMA}.events") == [(2,)]
        # The replay's arrival floor is gone with it; the collector's stays.
        floors = prod.rows(f"SELECT collector FROM {SCHEMA}.collector_floors")
        assert [f for (f,) in floors if str(f).startswith("replay:")] == []
        assert len(floors) == 1
    finally:
        collector.ensure_dead()


def test_a_replay_id_is_unique_per_failed_event() -> None:
    """Two failed events without messageId replay as two events (ids derived from each)."""
    from headwater.collect.replay import revalidate
    from headwater.collect.validate import Validator

    validator = Validator(max_event_bytes=32_768, max_depth=64)
    payload = '{"type": "identify", "userId": "u"}'
    first = revalidate(validator, str(uuid.uuid4()), "web", 0, payload)
    second = revalidate(validator, str(uuid.uuid4()), "web", 0, payload)
    assert isinstance(first, list)
    assert isinstance(second, list)
    assert first[0][0] != second[0][0]
    batch = '{"batch": [{"type": "identify", "userId": "u"}, {"type": "page", "userId": "u"}]}'
    rows = revalidate(validator, "f9", "web", 0, batch)
    assert isinstance(rows, list)
    assert [row[0] for row in rows] == ["f9:0", "f9:1"]
