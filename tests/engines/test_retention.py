"""Retention: old rows dropped in bounded batches on every engine, and pipelines kept correct.

1. ``Engine.drop_before`` on DuckDB, PostgreSQL and Spark (the ``engine`` fixture): the
   event tables by ``received_at`` and an output by its time column; rows before the
   horizon go, newer ones stay; DuckDB and PostgreSQL delete at most a batch per call,
   Spark drops whole partitions (days of arrival, published intervals); the dedupe of
   what is kept holds.
2. BigQuery, on the recording fake client of ``tests/bigquery_fake.py`` (BigQuery cannot
   run here): one DELETE covering whole partitions, dry-run first.
3. A project on DuckDB and PostgreSQL with :class:`Workspace`: ``[retention]`` and a
   pipeline's ``retain`` drop rows over several bounded passes; intervals whose input or
   rows were dropped are retired: not computed again by the scheduler (even when marked
   stale), a backfill below them refused naming the setting; ``status`` says it; adding
   ``retain`` changes no version and ``plan`` calls it metadata.
4. Settings: a bad duration, events kept less than the dedupe window, ``retain`` on a full
   pipeline are load errors; an environment's own ``[retention]``.
5. ``headwater run --due`` and ``headwater status`` as child processes on a DuckDB project.
"""

from __future__ import annotations

import functools
from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from headwater.cli.scaffold import init_project
from headwater.config.project import load_project
from headwater.core.errors import ConfigError
from headwater.core.types import Interval
from headwater.process.changes import compare, specs
from headwater.process.definition import load_file
from headwater.process.errors import PipelineError
from headwater.runtime.operations import OPERATIONS
from headwater.runtime.workspace import Workspace
from headwater.state import StateStore
from headwater.store import schema
from headwater.store.bigquery import BigQueryEngine
from headwater.store.duckdb import DuckDBEngine
from headwater.store.engine import Engine, IngestBatch, delete_in_batches
from tests.bigquery_fake import FakeClient
from tests.conftest import Project
from tests.engines.conftest import open_engine

DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
D0 = datetime(2026, 3, 1, tzinfo=UTC)
#: Events every six hours of five days: four a day.
PER_DAY = 4


def event_rows(days: range, prefix: str = "m") -> list[dict[str, Any]]:
    rows = []
    for day in days:
        for slot in range(PER_DAY):
            at = D0 + day * DAY + slot * 6 * HOUR
            rows.append(
                {
                    "message_id": f"{prefix}{day:02d}-{slot}",
                    "source": "web",
                    "type": "track",
                    "event": "Viewed",
                    "timestamp": at,
                    "received_at": at,
                }
            )
    return rows


def failed_rows(days: range) -> list[dict[str, Any]]:
    return [
        {
            "id": f"f{day:02d}",
            "source": "web",
            "received_at": D0 + day * DAY + HOUR,
            "code": "invalid",
            "message": "no userId",
        }
        for day in days
    ]


def ingest(
    engine: Engine, events: list[dict[str, Any]], failed: list[dict[str, Any]] | None = None
) -> list[bool]:
    batch = IngestBatch(
        pa.Table.from_pylist(events, schema=schema.EVENTS),
        pa.Table.from_pylist(failed or [], schema=schema.FAILED_EVENTS),
    )
    flags: list[bool] = engine.ingest(batch).to_pylist()
    return flags


def arrivals(engine: Engine, table: str) -> list[datetime]:
    found = engine.query(f"SELECT received_at FROM {table}")["received_at"].to_pylist()
    return sorted(found)


def counted(engine: Engine, calls: list[int], table: str, column: str, before: datetime) -> Any:
    def delete(limit: int) -> int:
        rows = engine.drop_before(table, column, before, limit)
        calls.append(rows)
        return rows

    return delete


# == 1. drop_before on DuckDB, PostgreSQL and Spark =========================================


def test_event_tables_lose_what_arrived_before_the_horizon_in_bounded_batches(
    engine: Engine,
) -> None:
    events = event_rows(range(5))
    assert ingest(engine, events, failed_rows(range(5))) == [True] * len(events)
    horizon = D0 + 3 * DAY
    calls: list[int] = []
    dropped, caught_up = delete_in_batches(
        counted(engine, calls, "events", "received_at", horizon), 5
    )
    assert (dropped, caught_up) == (3 * PER_DAY, True)
    assert arrivals(engine, "events") == sorted(
        e["received_at"] for e in events if e["received_at"] >= horizon
    )
    if engine.name == "spark":
        # Whole days of arrival, as many as make a batch: 2 days (8 rows), then the third.
        assert calls == [2 * PER_DAY, PER_DAY]
    else:
        assert calls == [5, 5, 2]
    failed_calls: list[int] = []
    assert delete_in_batches(
        counted(engine, failed_calls, "failed_events", "received_at", horizon), 2
    ) == (3, True)
    assert arrivals(engine, "failed_events") == [D0 + 3 * DAY + HOUR, D0 + 4 * DAY + HOUR]
    if engine.name != "spark":
        assert failed_calls == [2, 1]
    # The dedupe of what is kept holds: sent again, a kept event is refused; a new one not.
    kept = [e for e in events if e["received_at"] >= horizon][:2]
    assert ingest(engine, kept) == [False, False]
    assert ingest(engine, event_rows(range(5, 6))) == [True] * PER_DAY
    # Nothing older is left: another pass drops nothing.
    assert engine.drop_before("events", "received_at", horizon, 5) == 0


def test_a_partition_that_holds_the_horizon_stays_whole_on_spark_and_is_cut_elsewhere(
    engine: Engine,
) -> None:
    ingest(engine, event_rows(range(2)))
    horizon = D0 + DAY + 12 * HOUR  # inside the second day
    engine.drop_before("events", "received_at", horizon, 100)
    left = arrivals(engine, "events")
    if engine.name == "spark":
        assert left == [D0 + DAY + k * 6 * HOUR for k in range(PER_DAY)]
    else:
        assert left == [D0 + DAY + 12 * HOUR, D0 + DAY + 18 * HOUR]


def daily_rows(day: int) -> pa.Table:
    start = D0 + day * DAY
    return pa.table(
        {
            "day": pa.array(
                [start, start + 6 * HOUR, start + 12 * HOUR], pa.timestamp("us", "UTC")
            ),
            "n": pa.array([day, day, day], pa.int64()),
        }
    )


def test_an_output_loses_its_intervals_before_the_horizon(engine: Engine) -> None:
    for day in range(4):
        engine.replace_interval(
            "daily", "day", Interval(D0 + day * DAY, D0 + (day + 1) * DAY), daily_rows(day)
        )
    calls: list[int] = []
    dropped, caught_up = delete_in_batches(counted(engine, calls, "daily", "day", D0 + 2 * DAY), 2)
    assert (dropped, caught_up) == (6, True)
    kept = engine.query("SELECT n FROM daily")["n"].to_pylist()
    assert sorted(kept) == [2, 2, 2, 3, 3, 3]
    if engine.name == "spark":
        assert calls == [3, 3, 0]  # one published interval each: three rows over the batch
    else:
        assert calls == [2, 2, 2, 0]


# == 2. BigQuery (the recording fake client: BigQuery cannot run here) =======================


@pytest.fixture
def fake() -> FakeClient:
    return FakeClient()


@pytest.fixture
def bq(fake: FakeClient) -> BigQueryEngine:
    engine = BigQueryEngine.open(None, "headwater", None, 1_000_000, client=fake)
    del fake.calls[:]
    return engine


def test_bigquery_drops_whole_partitions_with_one_delete_that_bills_nothing(
    bq: BigQueryEngine, fake: FakeClient
) -> None:
    fake.bytes_for = [("DELETE FROM", 0)]
    fake.dml_rows = [("events` WHERE", 1234)]
    horizon = D0 + 3 * DAY + 7 * HOUR
    assert bq.drop_before("events", "received_at", horizon, 10) == 1234
    dry, real = fake.queries
    assert dry.dry
    assert not real.dry
    assert real.sql == "DELETE FROM `hw-test.headwater.events` WHERE `received_at` < @before"
    # Cut at the start of the day the horizon is in: whole partitions only, so the DELETE is
    # a metadata operation (the dry run says 0 bytes); the partial day stays.
    assert real.params == {"before": ("TIMESTAMP", D0 + 3 * DAY)}
    assert dry.params == real.params


def test_bigquery_hourly_events_and_a_date_output_are_cut_at_their_partitions(
    fake: FakeClient,
) -> None:
    hourly = BigQueryEngine.open(None, "headwater", None, 10, client=fake, partition="HOUR")
    fake.bytes_for = [("DELETE FROM", 0)]
    horizon = D0 + 3 * DAY + 7 * HOUR + timedelta(minutes=30)
    hourly.drop_before("failed_events", "received_at", horizon, 10)
    assert fake.real_queries[-1].params == {"before": ("TIMESTAMP", D0 + 3 * DAY + 7 * HOUR)}
    from google.cloud import bigquery

    fake.tables["hw-test.headwater.daily"] = bigquery.Table(
        "hw-test.headwater.daily",
        schema=[bigquery.SchemaField("day", "DATE"), bigquery.SchemaField("n", "INT64")],
    )
    hourly.drop_before("daily", "day", horizon, 10)
    assert (
        fake.real_queries[-1].sql == "DELETE FROM `hw-test.headwater.daily` WHERE `day` < @before"
    )
    assert fake.real_queries[-1].params == {"before": ("DATE", date(2026, 3, 4))}


def test_bigquery_refuses_event_tables_by_another_column(bq: BigQueryEngine) -> None:
    from headwater.store.errors import QueryError

    with pytest.raises(QueryError, match="partitioned by received_at"):
        bq.drop_before("events", "timestamp", D0, 10)


# == 3. a project: passes, retired intervals, status ========================================

DAILY = """\
/* headwater
schedule = "@daily"
kind = "incremental"
time_column = "day"
start = "2026-03-01"{retain}
*/
SELECT TIMESTAMP_TRUNC(received_at, DAY) AS day, COUNT(*) AS events
FROM events WHERE received_at >= @start AND received_at < @end GROUP BY 1
"""
#: The clock: twenty days of events have arrived.
T1 = D0 + 20 * DAY


def write_project(root: Path, *, retention: str = "", retain: str = "") -> None:
    if not (root / "headwater.toml").exists():
        init_project(root)
        for example in (root / "pipelines").iterdir():
            example.unlink()
    config = root / "headwater.toml"
    text = config.read_text("utf-8").split("\n[retention]\n")[0]
    config.write_text(text + (f"\n[retention]\n{retention}" if retention else ""), "utf-8")
    line = f'\nretain = "{retain}"' if retain else ""
    (root / "pipelines" / "daily.sql").write_text(DAILY.format(retain=line), "utf-8")


@pytest.fixture(params=["duckdb", "postgres"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    opened = open_engine(request.param, request, tmp_path / request.param)
    try:
        yield opened
    finally:
        opened.close()


def days_published(engine: Engine) -> list[datetime]:
    return sorted(engine.query("SELECT day FROM daily")["day"].to_pylist())


def test_retention_drops_in_passes_and_retired_intervals_are_never_computed_again(
    store: Engine, tmp_path: Path
) -> None:
    root = tmp_path / "project"
    write_project(root)
    state = StateStore.in_folder(tmp_path / "metadata")
    clock = [T1]
    events = event_rows(range(20))
    ingest(store, events, failed_rows(range(20)))
    before = Workspace(load_project(root), store, state, clock=lambda: clock[0])
    version = before.graph()["daily"].version
    old_specs = specs(before.graph(), "bigquery")
    assert len(before.run_due()) == 20
    assert days_published(store) == [D0 + k * DAY for k in range(20)]

    # Keep events 10 days, failed events 5, the output 8; batches of 7 rows, 2 a pass.
    write_project(
        root,
        retention='events = "10d"\nfailed_events = "5d"\nbatch_rows = 7\n',
        retain="8d",
    )
    workspace = Workspace(load_project(root), store, state, clock=lambda: clock[0])
    workspace.retainer.batches = 2
    daily = workspace.graph()["daily"]
    # retain is metadata: the version stays, and a plan calls it so.
    assert daily.version == version
    change = compare(
        "daily", old_specs["daily"], specs(workspace.graph(), "bigquery")["daily"], "bigquery"
    )
    assert change is not None
    assert (change.kind, change.breaking, change.rebuild) == ("metadata", False, False)
    assert change.reasons == ["retain changed from none to '8d'"]

    passes = []
    while True:
        result = workspace.retain()
        passes.append({d.table: (d.rows, d.caught_up) for d in result.dropped})
        if all(caught for _, caught in passes[-1].values()):
            break
        assert len(passes) < 10
    # 40 events before the horizon, 14 a pass at most; 15 failed events; 12 output rows.
    assert [p["events"] for p in passes] == [(14, False), (14, False), (12, True)]
    assert passes[0]["failed_events"] == (14, False)
    assert passes[1]["failed_events"] == (1, True)
    assert passes[0]["daily"] == (12, True)
    assert arrivals(store, "events") == sorted(
        e["received_at"] for e in events if e["received_at"] >= T1 - 10 * DAY
    )
    assert len(arrivals(store, "failed_events")) == 5
    assert days_published(store) == [D0 + k * DAY for k in range(12, 20)]
    # Caught up: the next pass within ten minutes does nothing.
    assert workspace.retain().dropped == []

    # Intervals whose rows or input were dropped are retired: marked stale (an input
    # re-published, late events), they are still not computed again, empty.
    retired = [D0 + k * DAY for k in range(3, 12)]
    assert state.runs.mark_stale("daily", retired, "an input was re-published") == 9
    assert workspace.run_due() == []
    assert days_published(store) == [D0 + k * DAY for k in range(12, 20)]
    with pytest.raises(PipelineError) as refused:
        workspace.backfill("daily", D0, T1)
    assert "retired by retention" in str(refused.value)
    assert "[retention]" in (refused.value.hint or "")
    with pytest.raises(PipelineError, match="retired by retention"):
        workspace.run("daily", D0 + 5 * DAY, D0 + 6 * DAY)
    assert days_published(store) == [D0 + k * DAY for k in range(12, 20)]

    # Status: the pipeline's retired intervals are not missing; each table's retention.
    (row,) = workspace.status()
    assert row.retired_before == D0 + 12 * DAY
    assert row.retired_why == 'its output keeps 8d (retain = "8d")'
    assert row.intervals_missing == 0
    assert row.intervals_stale == 0  # marked stale, retired: never run, so not shown stale
    tables = {r["table"]: r for r in OPERATIONS["retention"].call(workspace, {}, None)}
    assert tables["events"]["keep"] == "10d"
    assert tables["events"]["horizon"] == "2026-03-11T00:00:00Z"
    assert (tables["events"]["dropped_total"], tables["events"]["caught_up"]) == (40, True)
    assert tables["failed_events"]["dropped_total"] == 15
    assert (tables["daily"]["column"], tables["daily"]["dropped_total"]) == ("day", 12)

    # A day later: only the new day runs, and retention moves on by a day.
    clock[0] = T1 + DAY
    ingest(store, event_rows(range(20, 21)))
    ran = workspace.run_due()
    assert [r.interval.start for r in ran] == [T1]
    result = workspace.retain()
    assert {d.table: d.rows for d in result.dropped} == {
        "events": PER_DAY,
        "failed_events": 1,
        "daily": 1,
    }
    assert days_published(store) == [D0 + k * DAY for k in range(13, 21)]


def test_events_retention_alone_retires_the_intervals_that_would_read_dropped_events(
    store: Engine, tmp_path: Path
) -> None:
    root = tmp_path / "project"
    write_project(root, retention='events = "10d"\n')
    state = StateStore.in_folder(tmp_path / "metadata")
    ingest(store, event_rows(range(20)))
    workspace = Workspace(load_project(root), store, state, clock=lambda: T1)
    workspace.retain()
    # Declared to start on day 0, it starts where events are whole: an interval whose
    # events expire within the hour is retired already.
    ran = workspace.run_due()
    assert [r.interval.start for r in ran] == [D0 + k * DAY for k in range(11, 20)]
    assert all(r.rows_written == 1 for r in ran)
    (row,) = workspace.status()
    assert row.retired_before == D0 + 11 * DAY
    assert row.retired_why == 'events are kept 10d ([retention] events = "10d")'


def test_an_apply_builds_a_changed_pipeline_from_where_retention_keeps(
    tmp_path: Path,
) -> None:
    from headwater.runtime.apply import apply
    from headwater.runtime.plan import make_plan

    root = tmp_path / "project"
    write_project(root, retention='events = "10d"\n')
    store = DuckDBEngine.open(tmp_path / "store.duckdb")
    state = StateStore.in_folder(tmp_path / "metadata")
    ingest(store, event_rows(range(20)))
    try:
        workspace = Workspace(load_project(root), store, state, clock=lambda: T1)
        workspace.retain()
        assert len(workspace.run_due()) == 9
        apply(workspace, make_plan(workspace, []), commit=None, dirty=False, applied_by="t")
        renamed = DAILY.format(retain="").replace("COUNT(*) AS events", "COUNT(*) AS n")
        (root / "pipelines" / "daily.sql").write_text(renamed, "utf-8")
        workspace = Workspace(load_project(root), store, state, clock=lambda: T1)
        plan = make_plan(workspace, [])
        assert [(c.name, c.breaking) for c in plan.changes] == [("daily", True)]
        apply(workspace, plan, commit=None, dirty=False, applied_by="t")
        rows = store.query("SELECT day, n FROM daily ORDER BY day").to_pylist()
        assert rows == [{"day": D0 + k * DAY, "n": PER_DAY} for k in range(11, 20)]
        assert sorted(state.runs.intervals("daily")) == [D0 + k * DAY for k in range(11, 20)]
    finally:
        store.close()


# == 4. settings ==================================================================================


def test_a_bad_retention_setting_is_a_load_error_with_the_fix(tmp_path: Path) -> None:
    root = tmp_path / "project"
    write_project(root, retention='events = "3d"\n')
    with pytest.raises(ConfigError) as short:
        load_project(root)
    assert "shorter than [collector] dedupe_window" in str(short.value)
    assert "dedupe window" in (short.value.hint or "")
    write_project(root, retention='failed_events = "soon"\n')
    with pytest.raises(ConfigError, match=r"\[retention\] failed_events = 'soon'"):
        load_project(root)
    write_project(root, retention='event = "400d"\n')
    with pytest.raises(ConfigError, match="event"):
        load_project(root)


def test_an_environment_keeps_its_own_retention(tmp_path: Path) -> None:
    root = tmp_path / "project"
    write_project(root, retention='events = "400d"\n')
    config = root / "headwater.toml"
    config.write_text(
        config.read_text("utf-8")
        + '\n[environments.qa.store]\nengine = "duckdb"\npath = "qa.duckdb"\n'
        + '[environments.qa.retention]\nevents = "30d"\n'
        + '[environments.prod.store]\nengine = "duckdb"\npath = "prod.duckdb"\n',
        "utf-8",
    )
    assert load_project(root).settings.retention.events == "400d"
    assert load_project(root, "qa").settings.retention.events == "30d"
    assert load_project(root, "prod").settings.retention.events == "400d"
    text = config.read_text("utf-8").replace('events = "30d"', 'events = "1d"')
    config.write_text(text, "utf-8")
    with pytest.raises(ConfigError, match=r"\[environments\.qa\.retention\] events = '1d'"):
        load_project(root)


def test_retain_is_for_incremental_pipelines_and_a_duration(tmp_path: Path) -> None:
    full = tmp_path / "full.sql"
    full.write_text('/* headwater\nretain = "9d"\n*/\nSELECT 1 AS x', "utf-8")
    with pytest.raises(PipelineError, match="retain is for incremental pipelines"):
        load_file(full, "bigquery")
    wrong = tmp_path / "wrong.sql"
    wrong.write_text(DAILY.format(retain='\nretain = "a while"'), "utf-8")
    with pytest.raises(PipelineError, match="'a while' is not a duration"):
        load_file(wrong, "bigquery")


PYTHON = """\
import pyarrow as pa
from headwater.process import pipeline

@pipeline(
    kind="incremental",
    time_column="day",{retain}
)
def daily(ctx):
    return ctx.sql("SELECT received_at AS day FROM events "
                   "WHERE received_at >= @start AND received_at < @end")
"""


def test_retain_leaves_a_python_pipelines_version_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "daily.py"
    versions = []
    for retain in ("", '\n    retain="90d",', '\n    retain="30d",'):
        path.write_text(PYTHON.format(retain=retain), "utf-8")
        loaded = load_file(path, "bigquery")
        versions.append(loaded.version)
        assert loaded.header.retain == (retain.split('"')[1] if retain else None)
    assert len(set(versions)) == 1
    path.write_text(PYTHON.format(retain="").replace("day", "hour"), "utf-8")
    assert load_file(path, "bigquery").version != versions[0]


def test_delete_in_batches_stops_when_asked() -> None:
    left = [10]

    def delete(limit: int) -> int:
        done = min(limit, left[0])
        left[0] -= done
        return done

    stops = iter([False, True])
    assert delete_in_batches(delete, 3, lambda: next(stops)) == (3, False)
    assert delete_in_batches(functools.partial(delete), 3, max_batches=2) == (6, False)
    assert delete_in_batches(delete, 3) == (1, True)


# == 5. the command line ==========================================================================


def test_run_due_drops_and_status_shows_retention_per_table(project: Project) -> None:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    for example in (project.root / "pipelines").iterdir():
        example.unlink()
    (project.root / "pipelines" / "daily.sql").write_text(
        DAILY.replace('start = "2026-03-01"', f'start = "{today - 20 * DAY:%Y-%m-%d}"').format(
            retain='\nretain = "12d"'
        ),
        "utf-8",
    )
    project.configure('[retention]\nevents = "10d"\n')
    rows = [
        {
            "message_id": f"m{k}",
            "source": "web",
            "type": "track",
            "timestamp": today - k * DAY,
            "received_at": today - k * DAY,
        }
        for k in range(1, 21)
    ]
    engine = DuckDBEngine.open(project.data_dir / "events.duckdb")
    try:
        ingest(engine, rows)
    finally:
        engine.close()

    ran = project.cli("run", "--due").stdout
    # Midnights from the tenth day back on are before the horizon (now - 10 days).
    assert "Retention dropped 11 rows of events older than" in ran
    left = project.query("SELECT min(received_at) AS t FROM events")["t"][0].as_py()
    assert left == today - 9 * DAY
    # Nothing was computed below the horizon: the first interval is where events are whole.
    days = project.query("SELECT day FROM daily ORDER BY day")["day"].to_pylist()
    assert days[0] >= today - 9 * DAY
    assert days[-1] == today - DAY

    shown = project.cli("status").stdout
    assert "Retention" in shown
    events_line = next(line for line in shown.splitlines() if "│ events" in line)
    assert "10d by received_at" in events_line
    assert f"│ {today - 10 * DAY:%Y-%m-%d}T" in events_line
    assert "│ 11 " in events_line
    daily_line = next(
        line for line in shown.splitlines() if "│ daily " in line and "by day" in line
    )
    assert "12d by day" in daily_line
    assert "daily: intervals before" in shown
    assert "retired by retention" in shown
