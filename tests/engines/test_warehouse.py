"""A hot store offloaded into a warehouse, as production runs it.

Collectors write a hot store (PostgreSQL here); whole hours of arrival are offloaded
into a warehouse (Spark, a PostgreSQL schema, a DuckDB file, BigQuery on the recording
client) where the pipelines run. Everything runs in process through :class:`Workspace`
with a fixed clock, except the refusal of collectors on a warehouse engine, which is a
real ``headwater`` child process. What is checked:

1. the pipelines' tables on the warehouse equal those of the same pipelines run on the
   embedded DuckDB store with the same events, and an interval by arrival waits until its
   arrivals are offloaded;
2. retention deletes only offloaded rows, in batches, and never the dedupe keys;
3. ``serve collector`` and ``up`` refuse a BigQuery or Spark store at once, with the fix,
   while ``import`` into one still works;
4. ``status`` of a BigQuery warehouse: the offload's lag and traffic, and the cost table;
5. offload and the example pipelines on a live BigQuery dataset (credentials only).

The configuration rules of ``[warehouse]`` are in ``tests/test_config.py``.
"""

from __future__ import annotations

import io
import json
import os
import re
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import cast

import psycopg
import pyarrow as pa
import pytest
from pyspark.sql import SparkSession

from headwater.cli.scaffold import EXAMPLE_PIPELINES, init_project
from headwater.config.project import load_project
from headwater.runtime import operations
from headwater.runtime.workspace import Workspace, has_warehouse
from headwater.state import StateStore
from headwater.state import offload as offload_module
from headwater.store import costs, schema
from headwater.store.bigquery import BigQueryEngine
from headwater.store.duckdb import DuckDBEngine
from headwater.store.engine import Engine, IngestBatch
from headwater.store.postgres import PostgresEngine
from headwater.store.spark import SparkEngine
from headwater.store.transfer import export_events
from tests.bigquery_fake import FakeClient, QueryCall
from tests.conftest import run_cli

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
T0 = datetime(2026, 3, 1, tzinfo=UTC)
#: The clock of every workspace: every event below has arrived hours before.
NOW = T0 + DAY + 8 * HOUR
#: The clock of a workspace that offloads: the offload keeps a margin back from its clock.
CLOCK = NOW + offload_module.CLOCK_MARGIN
HOT_SCHEMA = "hw_prod"
URL_VARIABLE = "HW_TEST_PROD_URL"

#: Pipelines in BigQuery SQL beyond the examples: JSON_VALUE on properties, COUNTIF,
#: DATE_TRUNC of a DATE, and an event-time pipeline that late events re-open.
PLANS = """\
/* headwater
schedule = "@daily"
kind = "incremental"
time = "received_at"
time_column = "day"
*/
SELECT
  TIMESTAMP_TRUNC(received_at, DAY) AS day,
  DATE_TRUNC(DATE(timestamp), MONTH) AS month,
  COALESCE(JSON_VALUE(properties, '$.plan'), 'none') AS plan,
  COUNTIF(timestamp < TIMESTAMP_TRUNC(received_at, DAY)) AS late_events,
  COUNTIF(user_id IS NULL) AS anonymous_events,
  COUNT(*) AS events
FROM events
WHERE received_at >= @start AND received_at < @end
GROUP BY day, month, plan
"""

LATE = """\
/* headwater
schedule = "@daily"
kind = "incremental"
time = "timestamp"
time_column = "day"
*/
SELECT
  TIMESTAMP_TRUNC(timestamp, DAY) AS day,
  COUNTIF(JSON_VALUE(properties, '$.plan') = 'pro') AS pro_events,
  COUNT(DISTINCT source) AS sources,
  COUNT(*) AS events
FROM events
WHERE timestamp >= @start AND timestamp < @end
GROUP BY day
"""

EXTRA_PIPELINES = {"plans.sql": PLANS, "late_days.sql": LATE}
NAMES = [
    *(name.removesuffix(".sql") for name in EXAMPLE_PIPELINES),
    *(name.removesuffix(".sql") for name in EXTRA_PIPELINES),
]


# -- events -----------------------------------------------------------------------------


def sample_events(count: int = 60) -> pa.Table:
    """Events arriving every 12 minutes over twelve hours across midnight, every seventh
    late by a day of event time, with plans in properties (a string, an object, none)."""
    rows = []
    for k in range(count):
        received = T0 + 18 * HOUR + k * timedelta(minutes=12) + timedelta(seconds=k % 13)
        late = k % 7 == 3
        rows.append(
            {
                "message_id": f"m{k:03d}",
                "source": ("web", "ios")[k % 2],
                "type": ("track", "page")[k % 5 == 0],
                "event": (None, "Signed Up", "Clicked")[k % 3],
                "user_id": None if k % 4 == 0 else f"u{k % 7}",
                "anonymous_id": f"a{k % 9}",
                "timestamp": received - (DAY + 2 * HOUR if late else timedelta(seconds=3)),
                "received_at": received,
                "properties": ('{"plan": "pro"}', '{"plan": {"tier": 1}}', "{}")[k % 3],
            }
        )
    return pa.Table.from_pylist(rows, schema=schema.EVENTS)


def sample_failed(count: int = 8) -> pa.Table:
    rows = [
        {
            "id": f"f{k}",
            "source": "web",
            "received_at": T0 + 17 * HOUR + k * 2 * HOUR + timedelta(minutes=5),
            "code": "missing_identity",
            "message": "the event has neither userId nor anonymousId",
            "payload": json.dumps({"n": k}),
        }
        for k in range(count)
    ]
    return pa.Table.from_pylist(rows, schema=schema.FAILED_EVENTS)


def ingest(engine: Engine, events: pa.Table, failed: pa.Table | None = None) -> list[bool]:
    empty = schema.FAILED_EVENTS.empty_table()
    return list(engine.ingest(IngestBatch(events, empty if failed is None else failed)).to_pylist())


def _value(value: object) -> object:
    return value.astimezone(UTC) if isinstance(value, datetime) else value


def rows_of(engine: Engine, table: str) -> list[tuple[object, ...]]:
    """Every row of ``table``, timestamps in UTC, sorted."""
    rows = [
        tuple(_value(v) for v in row.values())
        for row in engine.query(f"SELECT * FROM {table}").to_pylist()
    ]
    return sorted(rows, key=repr)


def tables_of(engine: Engine) -> dict[str, list[tuple[object, ...]]]:
    return {name: rows_of(engine, name) for name in NAMES}


# -- projects ---------------------------------------------------------------------------


def make_project(root: Path, warehouse: str | None = None, *, extra: str = "") -> Path:
    """A ``headwater init`` project with the extra pipelines, and, with ``warehouse`` (the
    body of a table), a ``prod`` environment whose PostgreSQL store is offloaded into it."""
    init_project(root)
    for name, text in EXTRA_PIPELINES.items():
        (root / "pipelines" / name).write_text(text, encoding="utf-8")
    if warehouse is not None:
        config = root / "headwater.toml"
        config.write_text(
            config.read_text() + extra + "\n[environments.prod.store]\n"
            'engine = "postgres"\n'
            f'url = "${{{URL_VARIABLE}}}"\n'
            f'schema = "{HOT_SCHEMA}"\n'
            "\n[environments.prod.warehouse]\n" + warehouse
        )
    return root


@pytest.fixture(scope="module")
def spark_context(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """The module's Spark context, started once (about 8 s) and stopped at the end."""
    SparkEngine.open(str(tmp_path_factory.mktemp("spark-start")), "local[2]", {}).close()
    yield
    SparkSession.builder.getOrCreate().stop()


@pytest.fixture(scope="module")
def on_duckdb(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[tuple[object, ...]]]:
    """The reference: the sample events ingested into the embedded DuckDB store, and the
    pipelines run on it by one scheduler pass at ``NOW``."""
    folder = tmp_path_factory.mktemp("duckdb")
    root = make_project(folder / "project")
    engine = DuckDBEngine.open(folder / "events.duckdb")
    state = StateStore.in_folder(folder / "metadata")
    try:
        ingest(engine, sample_events(), sample_failed())
        workspace = Workspace(load_project(root), engine, state, clock=lambda: NOW)
        answer = operations.call(workspace, "due", {})
        assert answer["offload"] is None  # pipelines run on the store itself
        assert not answer["broken"]
        tables = tables_of(engine)
    finally:
        state.close()
        engine.close()
    assert all(tables.values()), tables
    return tables


class Floor:
    """The collectors' arrival floor, as the test holds it."""

    def __init__(self, at: datetime) -> None:
        self.at = at

    def __call__(self) -> datetime:
        return self.at


def open_warehouse(kind: str, folder: Path, pg_url: str) -> tuple[Engine, str]:
    """A warehouse of engine ``kind`` and the ``[environments.prod.warehouse]`` body for it."""
    if kind == "spark":
        place = str(folder / "warehouse")
        return SparkEngine.open(place, "local[2]", {}), f'engine = "spark"\nwarehouse = "{place}"\n'
    if kind == "postgres":
        engine = PostgresEngine.open(pg_url, "hw_warehouse")
        body = f'engine = "postgres"\nurl = "${{{URL_VARIABLE}}}"\nschema = "hw_warehouse"\n'
        return engine, body
    path = folder / "warehouse.duckdb"
    return DuckDBEngine.open(path), f'engine = "duckdb"\npath = "{path}"\n'


# == 1. the pipelines on a warehouse ======================================================


@pytest.mark.parametrize("kind", ["spark", "postgres", "duckdb"])
def test_pipelines_on_an_offloaded_warehouse_equal_those_on_duckdb(
    kind: str,
    request: pytest.FixtureRequest,
    on_duckdb: dict[str, list[tuple[object, ...]]],
    pg_url: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    if kind == "spark":
        request.getfixturevalue("spark_context")
    monkeypatch.setenv(URL_VARIABLE, pg_url)
    warehouse, body = open_warehouse(kind, tmp_path, pg_url)
    root = make_project(tmp_path / "project", body)
    project = load_project(root, "prod")
    assert has_warehouse(project)
    hot = PostgresEngine.open(pg_url, HOT_SCHEMA)
    state = StateStore.in_folder(tmp_path / "metadata")
    # The collectors' floor held back: only what arrived before day 1 is whole.
    held = T0 + DAY + timedelta(minutes=30)
    floor = Floor(held)
    try:
        ingest(hot, sample_events(), sample_failed())
        workspace = Workspace(
            project, warehouse, state, store=hot, floor=floor, clock=lambda: CLOCK
        )

        first = operations.call(workspace, "due", {})
        assert not first["broken"]
        done = first["offload"]
        progress = T0 + DAY  # whole hours below the floor only
        assert datetime.fromisoformat(done["progress"]) == progress
        assert done["deleted"] == 0  # nothing is older than the 7 days kept
        events = sample_events()
        below = [r for r in events.to_pylist() if r["received_at"] < progress]
        assert sum(span["events"] for span in done["offloaded"]) == len(below)
        assert rows_of(warehouse, "events") == rows_of_table(
            pa.Table.from_pylist(below, schema.EVENTS)
        )
        # An interval by arrival ran only where the warehouse has every arrival: the hours
        # from the first arrival to the offload's progress, none after it.
        report = {r["name"]: r for r in operations.call(workspace, "status", {})}
        assert report["hourly_event_counts"]["intervals_done"] == 6  # 18:00 to midnight
        assert report["hourly_event_counts"]["intervals_missing"] == 0
        hours = {cast(datetime, row[0]) for row in rows_of(warehouse, "hourly_event_counts")}
        assert max(hours) == max(r["received_at"] for r in below).replace(minute=0, second=0)
        assert {row[0] for row in rows_of(warehouse, "plans")} == {T0}  # day 1 is not whole yet
        assert [row for row in rows_of(warehouse, "plans")] == [
            row for row in on_duckdb["plans"] if row[0] == T0
        ]

        # Nothing changed: a second pass offloads nothing and runs nothing by arrival.
        again = operations.call(workspace, "due", {})
        assert again["offload"]["offloaded"] == []
        assert {row[0] for row in rows_of(warehouse, "hourly_event_counts")} == hours

        # The collectors move on: the rest is offloaded and every pipeline catches up.
        floor.at = NOW
        last = operations.call(workspace, "due", {})
        assert not last["broken"]
        assert datetime.fromisoformat(last["offload"]["progress"]) == NOW
        assert rows_of(warehouse, "failed_events") == rows_of_table(sample_failed())
        assert tables_of(warehouse) == on_duckdb
    finally:
        state.close()
        hot.close()
        warehouse.close()


def rows_of_table(table: pa.Table) -> list[tuple[object, ...]]:
    return sorted((tuple(_value(v) for v in r.values()) for r in table.to_pylist()), key=repr)


# == 2. retention ============================================================================


def message_ids(url: str) -> int:
    with psycopg.connect(url) as con:
        row = con.execute(f"SELECT COUNT(*) FROM {HOT_SCHEMA}.message_ids").fetchone()
    assert row is not None
    return int(row[0])


def test_retention_deletes_only_offloaded_rows_in_batches_and_keeps_the_dedupe_keys(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(URL_VARIABLE, pg_url)
    monkeypatch.setattr(offload_module, "RETENTION_BATCH", 4)
    root = make_project(
        tmp_path / "project", f'engine = "duckdb"\npath = "{tmp_path / "w.duckdb"}"\n'
    )
    config = root / "headwater.toml"
    text = config.read_text().replace('dedupe_window = "7d"', 'dedupe_window = "1h"')
    config.write_text(
        text.replace(f'schema = "{HOT_SCHEMA}"', f'schema = "{HOT_SCHEMA}"\nretain = "2h"')
    )
    project = load_project(root, "prod")
    assert project.settings.store.retain == "2h"
    hot = PostgresEngine.open(pg_url, HOT_SCHEMA)
    warehouse = DuckDBEngine.open(tmp_path / "w.duckdb")
    state = StateStore.in_folder(tmp_path / "metadata")
    deletes: list[tuple[str, int]] = []
    delete_arrivals = hot.delete_arrivals

    def counted(table: str, before: datetime, limit: int) -> int:
        deleted = delete_arrivals(table, before, limit)
        deletes.append((table, deleted))
        return deleted

    monkeypatch.setattr(hot, "delete_arrivals", counted)
    events, failed = sample_events(), sample_failed()
    # Every event is older than retain (2 h before NOW); the floor holds half of them back.
    assert max(events["received_at"].to_pylist()) < NOW - 2 * HOUR
    floor = Floor(T0 + DAY + timedelta(minutes=30))
    try:
        assert ingest(hot, events, failed) == [True] * 60
        workspace = Workspace(
            project, warehouse, state, store=hot, floor=floor, clock=lambda: CLOCK
        )
        result = workspace.offload()
        assert result is not None
        assert result.progress == T0 + DAY
        offloaded = [r["message_id"] for r in events.to_pylist() if r["received_at"] < T0 + DAY]
        kept = [r["message_id"] for r in events.to_pylist() if r["received_at"] >= T0 + DAY]
        failed_before = sum(1 for t in failed["received_at"].to_pylist() if t < T0 + DAY)
        assert offloaded
        assert kept
        assert 0 < failed_before < failed.num_rows
        # Old rows above the offload's progress stay; those below it are gone.
        hot_ids = sorted(hot.query("SELECT message_id FROM events")["message_id"].to_pylist())
        assert hot_ids == kept
        hot_failed = hot.query("SELECT COUNT(*) AS n FROM failed_events")["n"][0].as_py()
        assert hot_failed == failed.num_rows - failed_before
        assert result.deleted == len(offloaded) + failed_before
        # In batches of at most RETENTION_BATCH rows, until a batch comes back short.
        by_table = {t: [n for name, n in deletes if name == t] for t in ("events", "failed_events")}
        assert by_table["events"] == [4] * (len(offloaded) // 4) + [len(offloaded) % 4]
        assert len(by_table["events"]) > 2
        assert by_table["failed_events"] == [4] * (failed_before // 4) + [failed_before % 4]
        # The warehouse has them; the dedupe keys are untouched, so a resent event is refused.
        stored = sorted(warehouse.query("SELECT message_id FROM events")["message_id"].to_pylist())
        assert stored == offloaded
        assert message_ids(pg_url) == 60
        assert ingest(hot, events.slice(0, 3)) == [False] * 3
        assert hot.query("SELECT COUNT(*) AS n FROM events")["n"][0].as_py() == len(kept)

        # An event newer than retain stays in the hot store even once offloaded.
        fresh = pa.Table.from_pylist(
            [
                {
                    **events.slice(0, 1).to_pylist()[0],
                    "message_id": "fresh",
                    "received_at": NOW - HOUR,
                }
            ],
            schema=schema.EVENTS,
        )
        assert ingest(hot, fresh) == [True]
        floor.at = NOW
        deletes.clear()
        second = workspace.offload()
        assert second is not None
        assert second.progress == NOW
        recent = [t for t in failed["received_at"].to_pylist() if t >= NOW - 2 * HOUR]
        assert len(recent) == 1
        assert second.deleted == len(kept) + failed.num_rows - failed_before - len(recent)
        assert hot.query("SELECT message_id FROM events")["message_id"].to_pylist() == ["fresh"]
        hot_failed = hot.query("SELECT received_at FROM failed_events")["received_at"].to_pylist()
        assert hot_failed == recent
        assert warehouse.query("SELECT COUNT(*) AS n FROM events")["n"][0].as_py() == 61
        assert message_ids(pg_url) == 61
        assert ingest(hot, events.slice(40, 2)) == [False] * 2
    finally:
        state.close()
        hot.close()
        warehouse.close()


# == 3. collectors refused on a warehouse engine ================================================

WAREHOUSE_STORES = {
    "bigquery": 'engine = "bigquery"\nproject = "hw-test-project"\ndataset = "hw_prod"\n',
    "spark": 'engine = "spark"\nwarehouse = "{folder}"\n',
}


def warehouse_store_project(root: Path, engine: str, folder: Path) -> Path:
    init_project(root)
    config = root / "headwater.toml"
    body = WAREHOUSE_STORES[engine].format(folder=folder)
    config.write_text(config.read_text() + "\n[environments.prod.store]\n" + body)
    return root


@pytest.mark.parametrize("command", [("serve", "collector"), ("up",)], ids=["serve", "up"])
@pytest.mark.parametrize("engine", sorted(WAREHOUSE_STORES))
def test_collectors_on_a_warehouse_store_are_refused_at_once_with_the_hot_store_setup(
    engine: str, command: tuple[str, ...], tmp_path: Path
) -> None:
    folder = tmp_path / "spark-warehouse"
    root = warehouse_store_project(tmp_path / "project", engine, folder)
    started = time.monotonic()
    result = run_cli(root, "--env", "prod", *command, "--port", "0", check=False)
    elapsed = time.monotonic() - started
    output = result.stdout + result.stderr
    assert result.returncode != 0, output
    assert f"collectors cannot write a {engine} store" in output
    assert f'[environments.prod.store] engine = "{engine}"' in output
    hint = output[output.index("[environments.prod.store]\n") :]
    assert 'engine = "postgres"' in hint
    assert "[environments.prod.warehouse]" in hint
    assert f'engine = "{engine}"' in hint.split("[environments.prod.warehouse]", 1)[1]
    # Nothing was opened: no Spark session (about 8 s to start), no warehouse folder, no
    # connection to BigQuery (none could be made here).
    assert elapsed < 6, f"took {elapsed:.1f}s"
    assert not folder.exists()
    assert "Traceback" not in output


def test_import_into_a_spark_store_still_works(spark_context: None, tmp_path: Path) -> None:
    source = DuckDBEngine.open(tmp_path / "source.duckdb")
    try:
        ingest(source, sample_events(), sample_failed())
        exported = export_events(source, tmp_path / "export")
    finally:
        source.close()
    assert sum(d.rows for d in exported) == 68
    folder = tmp_path / "spark-warehouse"
    root = warehouse_store_project(tmp_path / "project", "spark", folder)
    result = run_cli(root, "--env", "prod", "import", str(tmp_path / "export"))
    assert "Imported events: 2 days, 60 rows." in result.stdout, result.stdout
    assert "Imported failed_events: 2 days, 8 rows." in result.stdout, result.stdout
    store = SparkEngine.open(str(folder), "local[2]", {})
    try:
        assert rows_of(store, "events") == rows_of_table(sample_events())
        assert store.query("SELECT COUNT(*) AS n FROM failed_events")["n"][0].as_py() == 8
    finally:
        store.close()


# == 4. status of a BigQuery warehouse =======================================================


def test_status_of_a_bigquery_warehouse_shows_the_offload_and_what_a_day_bills(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from rich.console import Console

    from headwater.cli import pipelines as cli

    monkeypatch.setenv(URL_VARIABLE, pg_url)
    body = 'engine = "bigquery"\ndataset = "hw_warehouse"\noffload_interval = "1h"\n'
    project = load_project(make_project(tmp_path / "project", body), "prod")
    fake = FakeClient()
    # What the planner asks the warehouse: the first arrival and the first event time.
    fake.answers += [
        ("MIN(received_at)", pa.table({"t": pa.array([T0 + 18 * HOUR], schema.TIMESTAMP)})),
        ("MIN(timestamp)", pa.table({"t": pa.array([T0 - 8 * HOUR], schema.TIMESTAMP)})),
    ]
    fake.bytes_for += [("event_name", 50 * 1024**2)]
    warehouse = BigQueryEngine.open(
        None, "hw_warehouse", None, 10**9, partition="HOUR", client=fake
    )
    hot = PostgresEngine.open(pg_url, HOT_SCHEMA)
    state = StateStore.in_folder(tmp_path / "metadata")
    now = NOW + timedelta(minutes=25)
    try:
        ingest(hot, sample_events(), sample_failed())
        workspace = Workspace(
            project, warehouse, state, store=hot, floor=Floor(now), clock=lambda: now
        )
        before = len(fake.calls)
        result = workspace.offload()
        assert result is not None
        assert result.progress == NOW
        # The offload is load jobs into hourly partitions and no query at all.
        jobs = fake.calls[before:]
        loads = fake.loads
        assert [c for c in jobs if isinstance(c, QueryCall)] == []
        assert loads
        assert all(
            re.fullmatch(r".*\.(events|failed_events)\$\d{10}", c.destination) for c in loads
        )
        loaded = sum(c.table.num_rows for c in loads if ".events$" in c.destination)
        assert loaded == 60

        offload = operations.call(workspace, "offload", {})
        assert offload["store"] == "postgres"
        assert offload["warehouse"] == "bigquery"
        assert offload["lag_seconds"] == 25 * 60
        assert offload["every_seconds"] == 3600
        assert offload["last_day"] == {
            "events": 60,
            "failed_events": 8,
            "load_jobs": len(loads),
            "bytes": sum(len(c.parquet) for c in loads),
        }
        report = operations.call(workspace, "status", {})
        captured = Console(file=io.StringIO(), width=300, soft_wrap=True)
        monkeypatch.setattr(cli, "console", captured)
        cli._print_offload(offload, report)
    finally:
        state.close()
        hot.close()
        warehouse.close()
    text = captured.file.getvalue()  # type: ignore[attr-defined]
    assert f"Offload postgres -> bigquery: 25m 00s behind (at {NOW:%Y-%m-%dT%H:%M})" in text
    assert f"60 events and 8 failed events in {len(loads)} load jobs" in text

    def row(label: str) -> list[str]:
        [line] = [line for line in text.splitlines() if re.search(rf"\b{re.escape(label)}\s", line)]
        return re.findall(r"\d[\d,.]*", line.split(label, 1)[1])

    # Per day: the offload bills no query, one load job per table and hour.
    assert row("offload") == ["0", "48", "0", "0.00"]
    direct = costs.direct_path(60, commits_per_day=86_400)
    assert row("direct ingest instead (for comparison)") == [
        f"{direct.queries:,}",
        f"{direct.load_jobs:,}",
        f"{direct.bytes_billed:,}",
        f"{direct.dollars:,.2f}",
    ]
    assert (direct.queries, direct.load_jobs) == (120, 60)
    runs = {r["name"]: r for r in report if r.get("bytes_per_run") is not None}
    assert set(runs) == set(NAMES)
    assert runs["hourly_event_counts"]["bytes_per_run"] == 50 * 1024**2
    hourly = costs.pipeline_runs(
        "hourly_event_counts", 24, runs["hourly_event_counts"]["bytes_per_run"]
    )
    assert row("hourly_event_counts") == [
        f"{hourly.queries:,}",
        f"{hourly.load_jobs:,}",
        f"{hourly.bytes_billed:,}",
        f"{hourly.dollars:,.2f}",
    ]


# == 5. live BigQuery ========================================================================

LIVE_SKIP = (
    "no BigQuery credentials on this machine "
    "(set GOOGLE_APPLICATION_CREDENTIALS and HEADWATER_BIGQUERY_PROJECT)"
)


def _live_project() -> str | None:
    """The project to test in, when credentials for it are configured."""
    project = os.environ.get("HEADWATER_BIGQUERY_PROJECT")
    key_file = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    if project and key_file and Path(key_file).is_file():
        return project
    return None


@pytest.mark.filterwarnings("ignore:BigQuery Storage module not found:UserWarning")
def test_live_offload_and_example_pipelines_on_bigquery(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    project_id = _live_project()
    if project_id is None:
        pytest.skip(LIVE_SKIP)
    on_duckdb: dict[str, list[tuple[object, ...]]] = request.getfixturevalue("on_duckdb")
    pg_url: str = request.getfixturevalue("pg_url")
    monkeypatch.setenv(URL_VARIABLE, pg_url)
    dataset = f"hw_test_{uuid.uuid4().hex[:12]}"
    location = os.environ.get("HEADWATER_BIGQUERY_LOCATION")
    body = f'engine = "bigquery"\nproject = "{project_id}"\ndataset = "{dataset}"\n'
    project = load_project(make_project(tmp_path / "project", body), "prod")
    warehouse = BigQueryEngine.open(project_id, dataset, location, 1024**3, partition="HOUR")
    hot = PostgresEngine.open(pg_url, HOT_SCHEMA)
    state = StateStore.in_folder(tmp_path / "metadata")
    try:
        ingest(hot, sample_events(), sample_failed())
        workspace = Workspace(
            project, warehouse, state, store=hot, floor=lambda: NOW, clock=lambda: CLOCK
        )
        answer = operations.call(workspace, "due", {})
        assert not answer["broken"]
        assert datetime.fromisoformat(answer["offload"]["progress"]) == NOW
        ids = warehouse.query("SELECT message_id FROM events")["message_id"].to_pylist()
        assert sorted(ids) == sample_events()["message_id"].to_pylist()
        assert tables_of(warehouse) == on_duckdb
    finally:
        state.close()
        hot.close()
        warehouse.client.delete_dataset(warehouse.dataset, delete_contents=True, not_found_ok=True)
        warehouse.close()
