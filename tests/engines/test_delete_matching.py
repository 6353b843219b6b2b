"""``Engine.delete_matching``, an erasure's delete, on every engine: DuckDB, PostgreSQL and
Spark for real (the ``engine`` fixture), BigQuery on the recording fake client (a fake:
what it checks is the statement and its bound parameters, not BigQuery's answer).

The ids are bound, never pasted into the SQL: one of them is written to break out of a
quoted string, and must only ever match itself.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pytest
from google.cloud import bigquery

from headwater.core.types import Interval
from headwater.store import schema
from headwater.store.bigquery import BigQueryEngine
from headwater.store.engine import Engine, IngestBatch
from headwater.store.errors import MissingColumn
from tests.bigquery_fake import FakeClient

T0 = datetime(2026, 11, 2, tzinfo=UTC)
HOSTILE = "x' OR '1'='1"


def _events(users: list[str | None]) -> pa.Table:
    rows = [
        {"message_id": f"m{i}", "source": "web", "type": "track", "event": "Viewed",
         "user_id": user, "anonymous_id": f"a{i}", "timestamp": T0 + timedelta(hours=i),
         "received_at": T0 + timedelta(hours=i)}
        for i, user in enumerate(users)
    ]  # fmt: skip
    return pa.Table.from_pylist(rows, schema=schema.EVENTS)


def _users(engine: Engine, table: str) -> list[str | None]:
    found = engine.query(f"SELECT user_id FROM {table}").column("user_id").to_pylist()
    return sorted(found, key=lambda u: (u is None, u or ""))


def test_deletes_the_matching_rows_of_events_and_of_an_output(engine: Engine) -> None:
    users = ["u1", "u2", "u1", None, HOSTILE, "u3"]
    engine.ingest(IngestBatch(_events(users), schema.FAILED_EVENTS.empty_table()))
    output = pa.table({
        "day": pa.array([T0, T0, T0 + timedelta(days=1)], pa.timestamp("us", "UTC")),
        "user_id": ["u1", "u2", "u1"],
        "n": [2, 1, 1],
    })  # fmt: skip
    engine.replace_interval("per_user", "day", Interval(T0, T0 + timedelta(days=2)), output)

    assert engine.delete_matching("events", "user_id", ["u1", "nobody"]) == 2
    assert _users(engine, "events") == [*sorted(["u2", "u3", HOSTILE]), None]
    # Bound, not pasted: the hostile id matches itself only.
    assert engine.delete_matching("events", "user_id", [HOSTILE]) == 1
    assert _users(engine, "events") == ["u2", "u3", None]
    assert engine.delete_matching("events", "anonymous_id", ["a1"]) == 1
    assert _users(engine, "events") == ["u3", None]

    assert engine.delete_matching("per_user", "user_id", ["u1"]) == 2
    assert engine.query("SELECT user_id, n FROM per_user").to_pylist() == [
        {"user_id": "u2", "n": 1}
    ]
    # Idempotent, and nothing to delete where there is no such table.
    assert engine.delete_matching("per_user", "user_id", ["u1"]) == 0
    assert engine.delete_matching("no_such_table", "user_id", ["u1"]) == 0
    assert engine.delete_matching("per_user", "user_id", []) == 0
    # A column the table lacks (a misspelt person column) is refused, never "0 deleted".
    with pytest.raises(MissingColumn, match=r"per_user has no column user_idd") as refused:
        engine.delete_matching("per_user", "user_idd", ["u2"])
    assert "day, n, user_id" in str(refused.value)
    assert refused.value.hint is not None
    assert "person = [...]" in refused.value.hint
    assert engine.query("SELECT count(*) AS n FROM per_user").column("n")[0].as_py() == 1


DATASET = "hw-test.analytics"


def test_bigquery_deletes_with_an_array_parameter_after_a_dry_run() -> None:
    fake = FakeClient()
    engine = BigQueryEngine.open(None, "analytics", None, 10**9, client=fake)
    name = f"{DATASET}.per_user"
    fake.tables[name] = bigquery.Table(name, schema=[bigquery.SchemaField("user_id", "STRING")])
    fake.calls.clear()
    engine.delete_matching("per_user", "user_id", ["u1", HOSTILE])
    dry, real = fake.queries
    assert dry.dry
    assert not real.dry
    assert real.sql == dry.sql
    assert real.sql == (
        f"DELETE FROM `{DATASET}.per_user` WHERE CAST(`user_id` AS STRING) IN UNNEST(@values)"
    )
    assert HOSTILE not in real.sql
    assert real.api_params == [
        {"name": "values", "parameterType": {"type": "ARRAY", "arrayType": {"type": "STRING"}},
         "parameterValue": {"arrayValues": [{"value": "u1"}, {"value": HOSTILE}]}}
    ]  # fmt: skip
    # A table not there: nothing to delete; a column the table lacks: refused. No job.
    fake.calls.clear()
    assert engine.delete_matching("missing", "user_id", ["u1"]) == 0
    with pytest.raises(MissingColumn, match="per_user has no column anonymous_id"):
        engine.delete_matching("per_user", "anonymous_id", ["u1"])
    assert fake.queries == []


@pytest.mark.parametrize("bad", ["per-user; DROP TABLE x", "a`b"])
def test_bigquery_refuses_a_name_that_is_not_plain(bad: str) -> None:
    fake = FakeClient()
    engine = BigQueryEngine.open(None, "analytics", None, 10**9, client=fake)
    fake.tables[f"{DATASET}.{bad}"] = bigquery.Table(f"{DATASET}.x")
    with pytest.raises(Exception, match="not a plain table or column name"):
        engine.delete_matching(bad, "user_id", ["u1"])
