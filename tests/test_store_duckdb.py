"""The DuckDB engine on a real file: dedupe, interval replace, upsert, read-only queries."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pyarrow as pa
import pytest

from headwater.core.types import Interval
from headwater.store import schema
from headwater.store.duckdb import DuckDBEngine
from headwater.store.engine import IngestBatch
from headwater.store.errors import QueryError, ReadOnlyQuery, StoreLocked

US = 1_000_000
T0 = int(datetime(2026, 11, 1, tzinfo=UTC).timestamp()) * US


def events(*keys: tuple[str, str], received_us: int = T0) -> pa.Table:
    rows = [
        {
            "message_id": message_id,
            "source": source,
            "type": "track",
            "event": "Clicked",
            "timestamp": received_us,
            "received_at": received_us,
            "properties": '{"n": 1}',
        }
        for source, message_id in keys
    ]
    return pa.Table.from_pylist(rows, schema=schema.EVENTS)


def ingest(engine: DuckDBEngine, table: pa.Table) -> list[bool]:
    result: list[bool] = engine.ingest(
        IngestBatch(table, schema.FAILED_EVENTS.empty_table())
    ).to_pylist()
    return result


@pytest.fixture
def engine(tmp_path: Path) -> DuckDBEngine:
    opened = DuckDBEngine.open(tmp_path / "events.duckdb")
    yield opened  # type: ignore[misc]
    opened.close()


def test_ingest_stores_new_events_and_refuses_known_ones(engine: DuckDBEngine) -> None:
    assert ingest(engine, events(("web", "a"), ("web", "b"))) == [True, True]
    # Same id from another source is a different event; same pair is a duplicate.
    assert ingest(engine, events(("web", "a"), ("app", "a"), ("web", "c"))) == [False, True, True]
    stored = engine.query("SELECT source, message_id FROM events ORDER BY 1, 2").to_pylist()
    assert stored == [
        {"source": "app", "message_id": "a"},
        {"source": "web", "message_id": "a"},
        {"source": "web", "message_id": "b"},
        {"source": "web", "message_id": "c"},
    ]


def test_ingest_into_tables_whose_columns_are_in_another_order(tmp_path: Path) -> None:
    """A store whose tables were made with their columns in another order (by hand, or by
    another version) is written by name, each value in its own column."""
    import duckdb

    path = tmp_path / "events.duckdb"
    con = duckdb.connect(str(path))
    for name, arrow in (("events", schema.EVENTS), ("message_ids", schema.MESSAGE_IDS)):
        con.register("_shape", arrow.empty_table())
        columns = ", ".join(f'"{n}"' for n in reversed(arrow.names))
        con.execute(f"CREATE TABLE {name} AS SELECT {columns} FROM _shape")
    con.close()
    engine = DuckDBEngine.open(path)
    try:
        assert ingest(engine, events(("web", "a"), ("app", "b"))) == [True, True]
        assert ingest(engine, events(("web", "a"))) == [False]
        stored = engine.query(
            "SELECT source, message_id, type, properties FROM events ORDER BY 1"
        ).to_pylist()
        keys = engine.query("SELECT source, message_id FROM message_ids ORDER BY 1").to_pylist()
    finally:
        engine.close()
    assert stored == [
        {"source": "app", "message_id": "b", "type": "track", "properties": '{"n": 1}'},
        {"source": "web", "message_id": "a", "type": "track", "properties": '{"n": 1}'},
    ]
    assert keys == [{"source": "app", "message_id": "b"}, {"source": "web", "message_id": "a"}]


def test_prune_forgets_ids_before_the_window(engine: DuckDBEngine) -> None:
    ingest(engine, events(("web", "old"), received_us=T0))
    ingest(engine, events(("web", "new"), received_us=T0 + 10 * US))
    assert engine.prune_dedupe(T0 + 5 * US) == 1
    # Forgotten: the old id is accepted again; the recent one still is not.
    assert ingest(engine, events(("web", "old"), ("web", "new"))) == [True, False]


def test_failed_events_commit_with_the_batch(engine: DuckDBEngine) -> None:
    failed = pa.Table.from_pylist(
        [{"id": "f1", "source": "web", "received_at": T0, "code": "missing_identity",
          "field": "userId", "message": "m", "payload": '{"type": "track"}'}],
        schema=schema.FAILED_EVENTS,
    )  # fmt: skip
    engine.ingest(IngestBatch(events(("web", "x")), failed))
    row = engine.query("SELECT code, field, payload->>'type' AS t FROM failed_events").to_pylist()
    assert row == [{"code": "missing_identity", "field": "userId", "t": "track"}]


def test_replace_interval_touches_only_its_interval(engine: DuckDBEngine) -> None:
    day = lambda d: datetime(2026, 11, d, tzinfo=UTC)  # noqa: E731
    first = pa.table({"day": [day(1), day(2), day(3)], "n": [1, 2, 3]})
    engine.append("daily", first)
    engine.replace_interval(
        "daily", "day", Interval(day(2), day(3)), pa.table({"day": [day(2)], "n": [20]})
    )
    rows = engine.query("SELECT day, n FROM daily ORDER BY day").to_pylist()
    assert [r["n"] for r in rows] == [1, 20, 3]
    # Replacing the same interval again gives the same table: re-runs are idempotent.
    engine.replace_interval(
        "daily", "day", Interval(day(2), day(3)), pa.table({"day": [day(2)], "n": [20]})
    )
    assert engine.query("SELECT day, n FROM daily ORDER BY day").to_pylist() == rows


def test_replace_interval_is_all_or_nothing(engine: DuckDBEngine) -> None:
    day = lambda d: datetime(2026, 11, d, tzinfo=UTC)  # noqa: E731
    engine.append("daily", pa.table({"day": [day(1), day(2)], "n": [1, 2]}))
    wrong = pa.table({"day": [day(2)], "n": ["not a number"]})
    with pytest.raises(QueryError, match=r"Conversion Error.*not a number"):
        engine.replace_interval("daily", "day", Interval(day(2), day(3)), wrong)
    assert [r["n"] for r in engine.query("SELECT n FROM daily ORDER BY day").to_pylist()] == [1, 2]


def test_upsert_replaces_rows_by_key(engine: DuckDBEngine) -> None:
    engine.upsert("scores", ["user_id"], pa.table({"user_id": ["a", "b"], "score": [0.1, 0.2]}))
    engine.upsert("scores", ["user_id"], pa.table({"user_id": ["b", "c"], "score": [0.9, 0.3]}))
    rows = engine.query("SELECT user_id, score FROM scores ORDER BY 1").to_pylist()
    assert rows == [
        {"user_id": "a", "score": 0.1},
        {"user_id": "b", "score": 0.9},
        {"user_id": "c", "score": 0.3},
    ]


def test_query_is_read_only_and_takes_parameters(engine: DuckDBEngine) -> None:
    ingest(engine, events(("web", "a")))
    with pytest.raises(ReadOnlyQuery, match="INSERT"):
        engine.query("INSERT INTO events (message_id) VALUES ('x')")
    with pytest.raises(QueryError, match="2 statements where one is expected"):
        engine.query("SELECT 1; SELECT 2")
    with pytest.raises(QueryError, match="nope"):
        engine.query("SELECT * FROM nope")
    assert (
        engine.query("SELECT count(*) AS n FROM events WHERE source = ?", ["web"])["n"][0].as_py()
        == 1
    )
    # Reads run in UTC: timestamps come back as stored.
    [row] = engine.query("SELECT strftime(received_at, '%z') AS tz FROM events").to_pylist()
    assert row["tz"].startswith("+00")


def test_estimate_cost_and_tables(engine: DuckDBEngine) -> None:
    ingest(engine, events(*[("web", str(i)) for i in range(50)]))
    assert engine.estimate_cost("SELECT * FROM events").rows_scanned == 50
    # Headwater's own bookkeeping (the dedupe window, fencing tokens) is not a table to read.
    assert engine.list_tables() == ["events", "failed_events"]


def test_a_second_process_cannot_open_the_file(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "events.duckdb"
    owner = DuckDBEngine.open(path)
    try:
        script = (
            "from pathlib import Path; from headwater.store.duckdb import DuckDBEngine\n"
            f"DuckDBEngine.open(Path({str(path)!r}), read_only=True)"
        )
        result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
        assert result.returncode != 0
        assert StoreLocked.__name__ in result.stderr
    finally:
        owner.close()


#: A value of every type the staged schema is read from DuckDB's catalog for, and some it
#: asks DuckDB's Arrow export for instead (JSON, lists, structs, intervals, UUID).
EVERY_TYPE = """
SELECT true AS b, 1::TINYINT AS ti, 1::SMALLINT AS si, 1::INTEGER AS i, 1::BIGINT AS bi,
  1::HUGEINT AS hi, 1::UTINYINT AS ut, 1::USMALLINT AS us, 1::UINTEGER AS ui, 1::UBIGINT AS ub,
  1.5::FLOAT AS f, 1.5::DOUBLE AS d, 1.5::DECIMAL(10, 2) AS dec, 1.5::DECIMAL(30, 3) AS wide,
  'a' AS v, 'a'::BLOB AS bl, DATE '2026-11-01' AS dt, TIMESTAMP '2026-11-01 10:00' AS ts,
  TIMESTAMPTZ '2026-11-01 10:00+00' AS tz
"""
OTHER_TYPES = (
    "SELECT '{}'::JSON AS j, [1, 2] AS l, {'a': 1} AS st, INTERVAL 1 DAY AS iv, "
    "TIME '10:00' AS tm, TIMESTAMP_NS '2026-11-01' AS ns, gen_random_uuid() AS u"
)


@pytest.mark.parametrize("query", [EVERY_TYPE, OTHER_TYPES, f"{EVERY_TYPE} UNION ALL {EVERY_TYPE}"])
def test_a_staged_schema_is_what_duckdb_hands_over(engine: DuckDBEngine, query: str) -> None:
    exported = engine.select(query, {}).table.schema
    with engine.stage(query, {}) as staged:
        # A sum's HUGEINT is narrowed to BIGINT in both (as BigQuery's INT64).
        assert staged.schema == exported
        assert staged.rows == (2 if "UNION" in query else 1)


def test_staged_runs_share_profiled_cursors_and_leave_nothing_behind(
    engine: DuckDBEngine,
) -> None:
    day = lambda d: datetime(2026, 11, d, tzinfo=UTC)  # noqa: E731
    ingest(engine, events(("web", "a"), ("web", "b"), received_us=T0))
    query = "SELECT received_at AS day, count(*) AS n FROM events GROUP BY ALL"
    for _ in range(3):  # the same cursor, its temporary table dropped each time
        with engine.stage(query, {}) as staged:
            assert staged.rows_scanned == 2  # the profiler counted the events read
            assert staged.row("SELECT count(*) AS c, max(n) AS m FROM " + staged.table) == {
                "c": 1,
                "m": 2,
            }
            staged.replace_interval("daily", "day", Interval(day(1), day(2)))
    assert len(engine._profiled_idle) == 1
    # Work that raised closes its cursor: an audit failing after the table was staged.
    with pytest.raises(RuntimeError), engine.stage(query, {}):
        raise RuntimeError("audit failed")
    assert engine._profiled_idle == []
    with engine.stage(query, {}) as staged:  # a new cursor: no table left from the last
        assert staged.rows == 1
    assert engine.query("SELECT n FROM daily").to_pylist() == [{"n": 2}]
    # Every cursor starts in UTC, whatever this process's time zone.
    engine.close()
    assert engine._profiled_idle == []


@pytest.mark.parametrize("name", ["schema", "pg_tables", "table", "datetime"])
def test_an_output_named_like_a_system_view_or_a_python_name_is_published(
    engine: DuckDBEngine, name: str
) -> None:
    # Not DuckDB's view of that name, nor a variable of the engine's module or frame.
    day = datetime(2026, 11, 1, tzinfo=UTC)
    query = "SELECT $day::TIMESTAMPTZ AS day, 1 AS n"
    for n in (1, 2):  # made by the first, replaced by the second
        with engine.stage(query, {"day": day}) as staged:
            staged.replace_interval(name, "day", Interval(day, day.replace(day=2)))
        assert engine.select(f'SELECT count(*) AS c FROM main."{name}"', {}).table.to_pylist() == [
            {"c": 1}
        ], n


#: Run in a process whose time zone is New York's: the store's cursors still work in UTC.
IN_NEW_YORK = """
import sys
from datetime import UTC, datetime
from pathlib import Path
from headwater.store.duckdb import DuckDBEngine
engine = DuckDBEngine.open(Path(sys.argv[1]))
late = datetime(2026, 11, 1, 2, 0, tzinfo=UTC)  # still 31 October in New York
query = "SELECT current_setting('TimeZone') AS tz, date_trunc('day', $t::TIMESTAMPTZ) AS day"
with engine.stage(query, {"t": late}) as staged:
    print(staged.schema.field("day").type, staged.row("SELECT * FROM " + staged.table))
print(engine.query("SELECT date_trunc('day', TIMESTAMPTZ '2026-11-01 02:00:00+00') AS d"))
engine.close()
"""


def test_every_cursor_works_in_utc_whatever_the_process_time_zone(tmp_path: Path) -> None:
    import os
    import subprocess
    import sys

    env = {**os.environ, "TZ": "America/New_York"}
    done = subprocess.run(
        [sys.executable, "-c", IN_NEW_YORK, str(tmp_path / "events.duckdb")],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    staged, queried = done.stdout.split("\n", 1)
    assert staged.startswith("timestamp[us, tz=UTC] {'tz': 'UTC', 'day': datetime.datetime(2026")
    assert "2026, 11, 1, 0, 0, tzinfo=" in staged
    assert "2026-11-01 00:00:00" in queried
