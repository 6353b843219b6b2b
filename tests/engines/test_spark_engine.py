"""The Spark engine: Parquet folders in a warehouse, computed by PySpark in local mode.

The module shares one Spark context (starting one takes about ten seconds) and
stops it at the end; each test opens its own engine, which is a new Spark
session over a warehouse folder of its own. What Spark computes is compared
with DuckDB's answer for the same events: the golden BigQuery queries (and
their BigQuery answers, computed in Python by ``tests/process/test_transpile``),
a Python function run by ``map_batches``, and the example pipelines run
through :class:`Workspace`.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator, Sequence
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import pytest
from pyspark.sql import SparkSession

from headwater.cli.scaffold import EXAMPLE_PIPELINES, init_project
from headwater.config.project import load_project
from headwater.core.types import Interval
from headwater.process.sql import parse, render
from headwater.runtime.workspace import Workspace
from headwater.state import StateStore
from headwater.store import schema
from headwater.store.duckdb import DuckDBEngine
from headwater.store.engine import Engine, IngestBatch
from headwater.store.errors import QueryError
from headwater.store.spark import SparkEngine
from tests.process.test_transpile import CASES, GOLDEN, NAMES
from tests.process.test_transpile import EVENTS as GOLDEN_EVENTS

DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
T0 = datetime(2026, 3, 1, tzinfo=UTC)


@pytest.fixture(scope="module")
def spark_context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Start the module's Spark context once; stop it when the module is done."""
    SparkEngine.open(str(tmp_path_factory.mktemp("spark-start")), "local[2]", {}).close()
    yield
    SparkSession.builder.getOrCreate().stop()


def open_spark(folder: Path) -> SparkEngine:
    return SparkEngine.open(str(folder), "local[2]", {})


@pytest.fixture
def store(spark_context: None, tmp_path: Path) -> Iterator[SparkEngine]:
    engine = open_spark(tmp_path / "warehouse")
    yield engine
    engine.close()


@pytest.fixture
def duck(tmp_path: Path) -> Iterator[DuckDBEngine]:
    engine = DuckDBEngine.open(tmp_path / "events.duckdb")
    yield engine
    engine.close()


def event(
    message_id: str, received_at: datetime, source: str = "web", **values: Any
) -> dict[str, Any]:
    return {
        "message_id": message_id,
        "source": source,
        "type": "track",
        "event": "Clicked",
        "timestamp": received_at - timedelta(seconds=3),
        "received_at": received_at,
        **values,
    }


def failure(failure_id: str, received_at: datetime) -> dict[str, Any]:
    return {
        "id": failure_id,
        "received_at": received_at,
        "code": "invalid_json",
        "message": "body is not JSON",
    }


def ingest(
    engine: Engine, rows: Sequence[dict[str, Any]], failed: Sequence[dict[str, Any]] = ()
) -> list[bool]:
    batch = IngestBatch(
        pa.Table.from_pylist(list(rows), schema=schema.EVENTS),
        pa.Table.from_pylist(list(failed), schema=schema.FAILED_EVENTS),
    )
    flags: list[bool] = engine.ingest(batch).to_pylist()
    return flags


def rows_of(engine: Engine, sql: str) -> list[tuple[Any, ...]]:
    """The rows of ``sql``, sorted (NULLs first in each column)."""
    rows = [tuple(row.values()) for row in engine.query(sql).to_pylist()]
    return sorted(
        rows, key=lambda row: tuple((v is not None, v if v is not None else 0) for v in row)
    )


# -- the collector's side -----------------------------------------------------------


def test_ingest_stores_each_message_once_across_batches_and_days(
    store: SparkEngine, tmp_path: Path
) -> None:
    late_evening, next_morning = T0 + 22 * HOUR, T0 + DAY + HOUR
    assert ingest(store, [event("a", late_evening), event("b", late_evening)]) == [True, True]
    again = [
        event("a", late_evening + HOUR),  # again, the same day
        event("b", next_morning),  # again, after midnight
        event("b", next_morning, source="ios"),  # the same id from another source
        event("c", next_morning),
    ]
    assert ingest(store, again, [failure("f-1", late_evening), failure("f-2", next_morning)]) == [
        False,
        False,
        True,
        True,
    ]
    # Another engine on the warehouse (a restart) reads the stored ids from the files.
    restarted = open_spark(tmp_path / "warehouse")
    assert ingest(restarted, [event("c", next_morning + 3 * DAY), event("d", next_morning)]) == [
        False,
        True,
    ]
    assert rows_of(restarted, "SELECT source, message_id, received_at FROM events") == [
        ("ios", "b", next_morning),
        ("web", "a", late_evening),
        ("web", "b", late_evening),
        ("web", "c", next_morning),
        ("web", "d", next_morning),
    ]
    assert rows_of(restarted, "SELECT id FROM failed_events") == [("f-1",), ("f-2",)]
    restarted.close()

    # One folder per day of arrival, hidden from queries; no file left half-written.
    warehouse = tmp_path / "warehouse"
    for table in ("events", "failed_events"):
        days = sorted(p.name for p in (warehouse / table).iterdir())
        assert days == ["received_day=2026-03-01", "received_day=2026-03-02"]
    assert [p.name for p in warehouse.rglob("*") if p.name.startswith(".")] == []
    assert store.query("SELECT * FROM events").column_names == schema.EVENTS.names


def test_prune_dedupe_moves_the_window_start(store: SparkEngine) -> None:
    assert ingest(store, [event("old", T0), event("new", T0 + DAY)]) == [True, True]
    assert store.prune_dedupe(int((T0 + HOUR).timestamp() * 1_000_000)) == 1
    assert ingest(store, [event("old", T0 + 2 * DAY), event("new", T0 + 2 * DAY)]) == [True, False]


def test_select_binds_named_parameters_and_counts_the_rows_it_read(store: SparkEngine) -> None:
    for day in range(3):
        ingest(store, [event(f"m{day}-{k}", T0 + day * DAY + k * HOUR) for k in range(5)])
    query = parse(
        "SELECT COUNT(*) AS n FROM `proj.analytics.events` "
        "WHERE received_at >= @start AND received_at < @end",
        "bigquery",
        "count.sql",
    )
    text = render(query, store.dialect)
    assert ":start" in text
    assert ":end" in text
    selected = store.select(text, {"start": T0 + DAY, "end": T0 + DAY + 3 * HOUR})
    assert selected.table.to_pylist() == [{"n": 3}]
    # Each day is its own file; Parquet statistics skip the other days' files.
    assert selected.rows_scanned == 5


# -- publishing ---------------------------------------------------------------------


def daily(rows: Sequence[tuple[datetime, str, int]]) -> pa.Table:
    return pa.table(
        {
            "day": pa.array([r[0] for r in rows], pa.timestamp("us", tz="UTC")),
            "plan": pa.array([r[1] for r in rows], pa.string()),
            "n": pa.array([r[2] for r in rows], pa.int64()),
        }
    )


def files(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): p.stat().st_mtime_ns for p in folder.rglob("*.parquet")}


def test_replace_interval_touches_only_its_interval(store: SparkEngine, tmp_path: Path) -> None:
    days = [T0 + k * DAY for k in range(4)]
    for k in range(3):
        interval = Interval(days[k], days[k + 1])
        store.replace_interval("daily", "day", interval, daily([(days[k], "free", k)]))
    folder = tmp_path / "warehouse" / "daily"
    before = files(folder)

    second = Interval(days[1], days[2])
    store.replace_interval("daily", "day", second, daily([(days[1], "pro", 7), (days[1], "x", 8)]))
    assert rows_of(store, "SELECT * FROM daily") == [
        (days[0], "free", 0),
        (days[1], "pro", 7),
        (days[1], "x", 8),
        (days[2], "free", 2),
    ]
    after = files(folder)
    untouched = {n: stamp for n, stamp in before.items() if not n.startswith("_interval=20260302")}
    assert {name: after[name] for name in untouched} == untouched
    assert store.query("SELECT * FROM daily").column_names == ["day", "plan", "n"]

    # No rows: the interval is emptied (an overwrite with no rows would replace nothing).
    store.replace_interval("daily", "day", second, daily([]))
    assert rows_of(store, "SELECT * FROM daily") == [(days[0], "free", 0), (days[2], "free", 2)]

    # Intervals that are not the published ones: only the rows inside go.
    across = Interval(days[0] + 12 * HOUR, days[2] + HOUR)
    store.replace_interval("daily", "day", across, daily([(days[1], "y", 9)]))
    assert rows_of(store, "SELECT * FROM daily") == [(days[0], "free", 0), (days[1], "y", 9)]


def test_replace_interval_refuses_other_columns(store: SparkEngine) -> None:
    interval = Interval(T0, T0 + DAY)
    store.replace_interval("daily", "day", interval, daily([(T0, "free", 1)]))
    changed = daily([(T0, "free", 1)]).rename_columns(["day", "plan", "users"])
    with pytest.raises(QueryError, match="columns"):
        store.replace_interval("daily", "day", interval, changed)


def test_replace_table_is_atomic_for_a_reader(store: SparkEngine) -> None:
    """Each version has ``1000 + v`` rows holding ``v``: a reader sees one whole version."""

    def version(v: int) -> pa.Table:
        return pa.table({"v": pa.array([v] * (1000 + v), pa.int64())})

    store.replace_table("versions", version(0))
    seen: list[dict[str, Any]] = []
    failures: list[Exception] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            try:
                seen.extend(
                    store.query(
                        "SELECT COUNT(*) AS n, MIN(v) AS lo, MAX(v) AS hi FROM versions"
                    ).to_pylist()
                )
            except Exception as exc:
                failures.append(exc)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        for v in range(1, 9):
            store.replace_table("versions", version(v))
            time.sleep(0.3)
    finally:
        done.set()
        reader.join()
    assert failures == []
    assert [r for r in seen if not (r["lo"] == r["hi"] and r["n"] == 1000 + r["lo"])] == []
    assert len({r["lo"] for r in seen}) >= 2, "the reader never saw a replacement"
    assert rows_of(store, "SELECT COUNT(*), MIN(v) FROM versions") == [(1008, 8)]


def test_upsert_and_append(store: SparkEngine) -> None:
    store.upsert("scores", ["user_id"], pa.table({"user_id": ["u1", "u2"], "score": [1.0, 2.0]}))
    store.upsert("scores", ["user_id"], pa.table({"user_id": ["u2", "u3"], "score": [5.0, 3.0]}))
    store.append("scores", pa.table({"score": [4.0], "user_id": ["u4"]}))
    assert rows_of(store, "SELECT user_id, score FROM scores") == [
        ("u1", 1.0),
        ("u2", 5.0),
        ("u3", 3.0),
        ("u4", 4.0),
    ]
    assert store.list_tables() == ["events", "failed_events", "scores"]
    assert (store.estimate_cost("SELECT * FROM scores").bytes_scanned or 0) > 0
    with pytest.raises(QueryError, match="collector"):
        store.append("events", pa.table({"x": [1]}))


# -- read-only queries --------------------------------------------------------------

WRITES = [
    "INSERT INTO events (message_id) VALUES ('x')",
    "DELETE FROM events",
    "DROP TABLE events",
    "CREATE TABLE sneaky AS SELECT 1 AS x",
    "CACHE TABLE events",
    "SET spark.sql.ansi.enabled = false",
    "SELECT reflect('java.lang.System', 'setProperty', 'a', 'b')",
    "EXPLAIN ANALYZE SELECT 1",
]


@pytest.mark.parametrize("statement", WRITES, ids=lambda s: " ".join(s.split()[:2]))
def test_query_refuses_writes(store: SparkEngine, statement: str) -> None:
    # ReadOnlyQuery for a statement that is not a read, QueryError for a read that reaches
    # outside the store (reflect calls Java).
    with pytest.raises(QueryError, match=r"not allowed here|reaches outside"):
        store.query(statement)


def test_query_reads(store: SparkEngine) -> None:
    ingest(store, [event("a", T0), event("b", T0, source="ios")])
    assert store.query(
        "SELECT COUNT(*) AS n FROM events WHERE source = ?", ["ios"]
    ).to_pylist() == [{"n": 1}]
    assert store.query(
        'WITH e AS (SELECT * FROM "events") SELECT COUNT(*) AS n FROM e'
    ).to_pylist() == [{"n": 2}]
    assert store.estimate_cost("SELECT * FROM events").bytes_scanned
    columns = store.query("DESCRIBE events")["col_name"].to_pylist()
    assert columns == schema.EVENTS.names
    with pytest.raises(QueryError, match="2 statements where one is expected"):
        store.query("SELECT 1; SELECT 2")


# -- Python on the executors -----------------------------------------------------------


def tag_rows(batch: pa.RecordBatch) -> pa.RecordBatch:
    """Per row: the plan's length, and where the function ran."""
    from pyspark import TaskContext

    task = TaskContext.get()
    plans = pc.utf8_length(pc.coalesce(batch["plan"], pa.scalar("")))
    return pa.record_batch(
        {
            "message_id": batch["message_id"],
            "plan_length": plans,
            "pid": pa.array([os.getpid()] * batch.num_rows, pa.int64()),
            "task": pa.array([task is not None] * batch.num_rows, pa.bool_()),
        }
    )


TAGGED = pa.schema(
    {"message_id": pa.string(), "plan_length": pa.int64(), "pid": pa.int64(), "task": pa.bool_()}
)


def test_map_batches_runs_on_the_executors_and_agrees_with_duckdb(
    store: SparkEngine, duck: DuckDBEngine
) -> None:
    plans = ["pro", "free", None, "team", "エンタープライズ"]
    rows = [
        event(f"m{k}", T0 + k * HOUR, properties=None if p is None else f'{{"plan": "{p}"}}')
        for k, p in enumerate(plans * 20)
    ]
    outputs = {}
    for engine in (store, duck):
        ingest(engine, rows)
        query = parse(
            "SELECT message_id, JSON_VALUE(properties, '$.plan') AS plan FROM events "
            "WHERE received_at >= @start",
            "bigquery",
            "tag.py",
        )
        outputs[engine.name] = engine.map_batches(
            render(query, engine.dialect), {"start": T0}, tag_rows, TAGGED
        )
    on_spark, on_duckdb = outputs["spark"], outputs["duckdb"]
    assert on_spark.schema == TAGGED
    assert set(on_spark["task"].to_pylist()) == {True}
    assert os.getpid() not in set(on_spark["pid"].to_pylist())
    assert set(on_duckdb["pid"].to_pylist()) == {os.getpid()}

    def result(table: pa.Table) -> list[tuple[Any, ...]]:
        return sorted(
            zip(*table.select(["message_id", "plan_length"]).to_pydict().values(), strict=True)
        )

    assert result(on_spark) == result(on_duckdb)
    assert len(result(on_spark)) == len(rows)


def test_a_failing_function_is_the_pipelines_error_not_the_engines(store: SparkEngine) -> None:
    ingest(store, [event("a", T0)])

    def broken(batch: pa.RecordBatch) -> pa.RecordBatch:
        raise RuntimeError("the function broke")

    with pytest.raises(Exception, match="the function broke") as caught:
        store.map_batches("SELECT * FROM events", {}, broken, TAGGED)
    assert not isinstance(caught.value, QueryError)


# -- BigQuery SQL on Spark ---------------------------------------------------------------


@pytest.fixture(scope="module")
def golden_store(
    spark_context: None, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[SparkEngine]:
    engine = open_spark(tmp_path_factory.mktemp("golden"))
    assert ingest(engine, [e.row() for e in GOLDEN_EVENTS]) == [True] * len(GOLDEN_EVENTS)
    yield engine
    engine.close()


@pytest.mark.parametrize("name", NAMES)
def test_golden_query_gives_bigquerys_answer_on_spark(golden_store: SparkEngine, name: str) -> None:
    path = GOLDEN / f"{name}.bigquery.sql"
    query = parse(path.read_text("utf-8"), "bigquery", str(path))
    case = CASES[name]
    params = {key: case.params[key] for key in sorted(query.parameters)}
    rows = golden_store.select(render(query, "spark", pretty=True), params).table.to_pylist()
    assert rows, f"{name} returned no rows"
    if case.check is not None:
        case.check(rows)
    if case.expected is not None:
        expected = case.expected()
        assert rows == expected
        for got, want in zip(rows, expected, strict=True):
            assert [type(got[c]) for c in want if not isinstance(want[c], datetime)] == [
                type(want[c]) for c in want if not isinstance(want[c], datetime)
            ]


def test_json_functions_keep_bigquerys_kinds(golden_store: SparkEngine) -> None:
    query = parse(
        "SELECT JSON_QUERY(properties, '$.plan') AS plan_json, "
        "JSON_VALUE(properties, '$.plan') AS plan_text, "
        "JSON_EXTRACT_ARRAY(properties, '$.plan') AS not_an_array "
        "FROM events WHERE message_id IN ('e01', 'e04', 'e05')",
        "bigquery",
        "json.sql",
    )
    rows = golden_store.select(render(query, "spark"), {}).table.to_pylist()
    assert sorted(rows, key=str) == sorted(
        [
            {"plan_json": '"pro"', "plan_text": "pro", "not_an_array": None},
            {"plan_json": '{"tier":"gold"}', "plan_text": None, "not_an_array": None},
            {"plan_json": "true", "plan_text": "true", "not_an_array": None},
        ],
        key=str,
    )


# -- pipelines through Workspace -------------------------------------------------------

MAPPED_PIPELINE = '''\
"""Events per message id length, computed by a function over the rows."""

from __future__ import annotations

import pyarrow as pa
import pyarrow.compute as pc

from headwater.process import Context, pipeline

OUTPUT = pa.schema({"day": pa.timestamp("us", tz="UTC"), "message_id": pa.string(),
                    "id_length": pa.int64()})


def measure(batch: pa.RecordBatch) -> pa.RecordBatch:
    day = pc.floor_temporal(batch["received_at"], unit="day")
    return pa.record_batch({"day": day, "message_id": batch["message_id"],
                            "id_length": pc.utf8_length(batch["message_id"])})


@pipeline(schedule="@daily", kind="incremental", time="received_at", time_column="day")
def id_lengths(ctx: Context) -> pa.Table:
    return ctx.map_batches(
        "SELECT received_at, message_id FROM events "
        "WHERE received_at >= @start AND received_at < @end", measure, OUTPUT)
'''


def run_pipelines(
    engine: Engine, folder: Path, rows: Sequence[dict[str, Any]]
) -> dict[str, list[Any]]:
    root = folder / "project"
    init_project(root)
    (root / "pipelines" / "id_lengths.py").write_text(MAPPED_PIPELINE, "utf-8")
    metadata = StateStore.in_folder(folder / "metadata")
    service = Workspace(load_project(root), engine, metadata, clock=lambda: T0 + 3 * DAY)
    try:
        ingest(engine, rows)
        names = [*(name.removesuffix(".sql") for name in EXAMPLE_PIPELINES), "id_lengths"]
        for name in names:
            service.backfill(name, T0, T0 + 3 * DAY)
        return {name: rows_of(engine, f'SELECT * FROM "{name}"') for name in names}
    finally:
        metadata.close()


def test_example_pipelines_give_the_same_tables_on_spark_and_duckdb(
    store: SparkEngine, duck: DuckDBEngine, tmp_path: Path
) -> None:
    rows = [
        event(
            f"m{k:03d}",
            T0 + k * 37 * timedelta(minutes=1),
            source=("web", "ios")[k % 2],
            event=(None, "Signed Up", "Clicked")[k % 3],
            type=("track", "page")[k % 5 == 0],
            user_id=None if k % 4 == 0 else f"u{k % 7}",
            anonymous_id=f"a{k % 9}",
            properties=('{"plan": "pro"}', '{"plan": {"tier": 1}}', "{}")[k % 3],
        )
        for k in range(100)
    ]
    on_spark = run_pipelines(store, tmp_path / "spark", rows)
    on_duckdb = run_pipelines(duck, tmp_path / "duckdb", rows)
    assert on_spark == on_duckdb
    assert all(on_spark.values())
    # One interval per day of arrival, each computed by the pipeline's function.
    assert {row[0] for row in on_spark["id_lengths"]} == {T0, T0 + DAY, T0 + 2 * DAY}


def test_a_date_column_keeps_dates(store: SparkEngine) -> None:
    table = pa.table({"day": pa.array([date(2026, 3, 1)], pa.date32()), "n": [1]})
    store.replace_interval("by_date", "day", Interval(T0, T0 + DAY), table)
    assert store.query("SELECT * FROM by_date").to_pylist() == [{"day": date(2026, 3, 1), "n": 1}]


def test_a_datetime_stays_a_civil_time_and_integers_are_int64(store: SparkEngine) -> None:
    # A DATETIME was stored as a TIMESTAMP (read back as an instant in UTC), and Spark's
    # int results (LENGTH, ROW_NUMBER) came out int32 where DuckDB gives int64.
    made = store.select(
        "SELECT TIMESTAMP_NTZ '2026-03-01 10:30:00' AS local, LENGTH('abc') AS n, "
        "ROW_NUMBER() OVER (ORDER BY 1) AS r",
        {},
    ).table
    assert [str(f.type) for f in made.schema] == ["timestamp[us]", "int64", "int64"]
    for write in (
        lambda: store.replace_table("civil_full", made),
        lambda: store.replace_interval("civil_parts", "local", Interval(T0, T0 + DAY), made),
    ):
        write()
    for table in ("civil_full", "civil_parts"):
        back = store.query(f"SELECT * FROM {table}")
        assert back.to_pylist() == [{"local": datetime(2026, 3, 1, 10, 30), "n": 3, "r": 1}]
        assert [str(f.type) for f in back.schema] == ["timestamp[us]", "int64", "int64"]


def test_a_table_an_earlier_release_wrote_takes_new_rows_in_its_own_types(
    store: SparkEngine,
) -> None:
    # A DATETIME written as a TIMESTAMP and an int column: the next interval goes in.
    old = pa.table({
        "local": pa.array([datetime(2026, 3, 1, 9, tzinfo=UTC)], pa.timestamp("us", "UTC")),
        "n": pa.array([2], pa.int32()),
    })  # fmt: skip
    store.replace_interval("earlier", "local", Interval(T0, T0 + DAY), old)
    new = pa.table({"local": [datetime(2026, 3, 2, 9)], "n": pa.array([5], pa.int64())})
    store.replace_interval("earlier", "local", Interval(T0 + DAY, T0 + 2 * DAY), new)
    assert sorted(r["n"] for r in store.query("SELECT * FROM earlier").to_pylist()) == [2, 5]


def test_a_file_gone_is_found_in_the_cause_of_a_wrapped_error() -> None:
    """A scan in a subquery or broadcast fails as "Exception thrown in awaitResult:", the
    missing file named only in its cause: the query is still run again on fresh views."""
    from pyspark.errors import PySparkException

    from headwater.store.spark.engine import _vanished

    gone = PySparkException("[FAILED_READ_FILE.FILE_NOT_EXIST] Encountered error while reading")
    wrapped = PySparkException("Exception thrown in awaitResult:")
    wrapped._cause = gone  # how PySpark keeps the JVM error's cause
    assert _vanished(wrapped)
    chained = PySparkException("Exception thrown in awaitResult:")
    chained.__cause__ = gone
    assert _vanished(chained)
    assert not _vanished(PySparkException("Exception thrown in awaitResult: division by zero"))
