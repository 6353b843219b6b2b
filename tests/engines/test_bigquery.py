"""BigQuery: pipelines compiled to BigQuery SQL, and the engine driven through a fake client.

BigQuery is mocked here because it cannot run on this machine. What can be checked
without it is checked for real:

1. every example pipeline, every golden BigQuery query and the SQL pipelines written
   in ``tests/process`` compile (``parse`` then ``render(query, "bigquery")``) to one
   SELECT that sqlglot's BigQuery dialect parses again, with ``@start``/``@end`` still
   named parameters, unqualified table names, and the same tree as the source;
2. :class:`BigQueryEngine` on :class:`FakeClient`, which records every call (query jobs
   with their config, load jobs with their Parquet bytes, tables created and dropped)
   and answers dry runs and results as a test configures it;
3. the pipeline service on that engine: render, cost, status and a run over budget;
4. a live test against a real project, which runs only when credentials are set.
"""

from __future__ import annotations

import ast
import os
import re
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
import sqlglot
from google.api_core import exceptions as google_errors
from google.cloud import bigquery
from sqlglot import exp

from headwater.cli.scaffold import EXAMPLE_PIPELINES, init_project
from headwater.config.project import load_project
from headwater.core.errors import ConfigError
from headwater.core.types import Interval
from headwater.process.errors import PipelineError
from headwater.process.header import split_header
from headwater.process.sql import parse, render
from headwater.runtime.workspace import Workspace
from headwater.state import StateStore
from headwater.store import schema
from headwater.store.bigquery import BigQueryEngine, BudgetExceeded, bq_schema
from headwater.store.engine import Fence, IngestBatch
from headwater.store.errors import Fenced, QueryError, ReadOnlyQuery, StoreUnavailable
from tests.bigquery_fake import FakeClient, QueryCall, TableCall

TESTS = Path(__file__).resolve().parent.parent
GOLDEN = TESTS / "golden" / "transpile"
PROJECT = "hw-test"
DATASET = "headwater"
FULL_DATASET = f"{PROJECT}.{DATASET}"
BUDGET = 1_000_000
T0 = datetime(2026, 3, 2, 12, tzinfo=UTC)
HOUR = timedelta(hours=1)
INTERVAL = Interval(T0 - 3 * HOUR, T0 - 2 * HOUR)

# == 1. compiling pipelines to BigQuery SQL ==================================================


@dataclass(frozen=True)
class Source:
    """One pipeline query as written: its SQL body (header blanked) and where it comes from."""

    id: str
    sql: str
    path: str


def _example_sources() -> list[Source]:
    found = []
    for name, text in EXAMPLE_PIPELINES.items():
        if name.endswith(".sql"):
            _, body = split_header(text, name)
            found.append(Source(f"example:{name}", body, name))
    return found


def _golden_sources() -> list[Source]:
    return [
        Source(f"golden:{path.name}", path.read_text(encoding="utf-8"), str(path))
        for path in sorted(GOLDEN.glob("*.bigquery.sql"))
    ]


def _process_sources() -> list[Source]:
    """The pipelines ``tests/process`` writes as module constants: SQL files (a header,
    then the query) and the literal queries Python pipelines pass to ``ctx.sql``."""
    found = []
    for path in sorted((TESTS / "process").glob("*.py")):
        for node in ast.parse(path.read_text(encoding="utf-8")).body:
            if not (isinstance(node, ast.Assign) and isinstance(node.value, ast.Constant)):
                continue
            text, names = node.value.value, [t.id for t in node.targets if isinstance(t, ast.Name)]
            if not isinstance(text, str) or not names:
                continue
            where = f"{path.name}:{names[0]}"
            if "@pipeline(" in text:
                for call in ast.walk(ast.parse(textwrap.dedent(text))):
                    if (
                        isinstance(call, ast.Call)
                        and isinstance(call.func, ast.Attribute)
                        and call.func.attr == "sql"
                        and call.args
                        and isinstance(call.args[0], ast.Constant)
                        and isinstance(call.args[0].value, str)
                    ):
                        found.append(Source(f"process:{where}.sql", call.args[0].value, where))
            elif "/* headwater" in text and "SELECT" in text:
                try:  # (the files some tests break on purpose are left out)
                    _, body = split_header(text, where)
                    parse(body, "bigquery", where)
                except PipelineError:
                    continue
                found.append(Source(f"process:{where}", body, where))
    return found


SOURCES = _example_sources() + _golden_sources() + _process_sources()

#: A date or time written into the SQL as text: what a pasted parameter would look like.
_PASTED_TIME = re.compile(r"\d{4}-\d{2}-\d{2}")


def test_sources_cover_the_examples_the_golden_files_and_the_process_tests() -> None:
    ids = {s.id for s in SOURCES}
    assert {f"example:{n}" for n in EXAMPLE_PIPELINES if n.endswith(".sql")} <= ids
    assert {f"golden:{p.name}" for p in GOLDEN.glob("*.bigquery.sql")} <= ids
    process = [s for s in SOURCES if s.id.startswith("process:")]
    # VALID, USER_DAYS, PLAN_VALUES, Z_HOURLY, A_ROLLUP, DAILY_USERS, DAY_SUMMARY, BROKEN,
    # AUDITED, and the ctx.sql queries of PLAN_SHARE, SLOW_COUNTS and SLOW.
    assert len([s for s in process if not s.id.endswith(".sql")]) >= 9, process
    assert len([s for s in process if s.id.endswith(".sql")]) >= 3, process


def _unqualified(tree: exp.Expression) -> exp.Expression:
    tree = tree.copy()
    for table in tree.find_all(exp.Table):
        table.set("db", None)
        table.set("catalog", None)
    return tree


@pytest.mark.parametrize("source", SOURCES, ids=lambda s: s.id)
def test_pipeline_compiles_to_one_bigquery_select(source: Source) -> None:
    query = parse(source.sql, "bigquery", source.path)
    rendered = render(query, "bigquery")

    statements = [s for s in sqlglot.parse(rendered, read="bigquery") if s is not None]
    assert len(statements) == 1, rendered
    [tree] = statements
    assert isinstance(tree, exp.Query), rendered
    changes = (exp.Insert, exp.Update, exp.Delete, exp.Merge, exp.Create, exp.Drop, exp.Command)
    assert not list(tree.find_all(*changes)), rendered

    # @start/@end stay BigQuery named parameters: bound by the job, never pasted in.
    named = {p.name for p in tree.find_all(exp.Parameter)}
    assert named == set(query.parameters), rendered
    assert not list(tree.find_all(exp.Placeholder)), rendered
    for name in query.parameters:
        assert re.search(rf"@{name}\b", rendered), rendered
    pasted = [
        lit.this
        for lit in tree.find_all(exp.Literal)
        if lit.is_string and _PASTED_TIME.search(lit.this)
    ]
    assert pasted == [], rendered

    # Table names are bare, so the job's default dataset resolves them.
    tables = [t for t in tree.find_all(exp.Table) if isinstance(t.this, exp.Identifier)]
    assert all(not t.args.get("db") and not t.args.get("catalog") for t in tables), rendered
    ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    assert {t.name for t in tables} - ctes == set(query.references), rendered

    # The same query as written, but for the dataset qualifiers.
    [written] = [s for s in sqlglot.parse(source.sql, read="bigquery") if s is not None]
    assert tree == _unqualified(written), f"{source.sql}\n->\n{rendered}"
    # Rendering is stable: what runs renders to itself.
    assert render(parse(rendered, "bigquery", source.path), "bigquery") == rendered


@pytest.mark.parametrize("source", SOURCES, ids=lambda s: s.id)
def test_compiled_pipeline_runs_in_the_default_dataset_with_typed_bounds(source: Source) -> None:
    query = parse(source.sql, "bigquery", source.path)
    rendered = render(query, "bigquery")
    fake = FakeClient()
    engine = BigQueryEngine(fake, DATASET, BUDGET)
    bounds = {"start": INTERVAL.start, "end": INTERVAL.end}
    engine.select(rendered, {n: bounds[n] for n in query.parameters})

    dry, real = fake.queries
    assert_dry_run_then_run(dry, real)
    assert real.sql == rendered
    assert real.default_dataset == FULL_DATASET
    assert real.params == {n: ("TIMESTAMP", bounds[n]) for n in query.parameters}


# == 2. the engine on a fake client ===========================================================


def assert_dry_run_then_run(dry: QueryCall, real: QueryCall) -> None:
    """``real`` ran what ``dry`` planned, with BigQuery's own byte limit set."""
    assert dry.dry
    assert not real.dry
    assert dry.sql == real.sql
    assert dry.api_params == real.api_params
    assert dry.config.use_query_cache is False
    assert dry.default_dataset == real.default_dataset == FULL_DATASET
    assert real.config.maximum_bytes_billed == BUDGET


def assert_every_job_dry_run_first(fake: FakeClient) -> None:
    queries = fake.queries
    for index, call in enumerate(queries):
        if not call.dry:
            assert index > 0, call.sql
            assert_dry_run_then_run(queries[index - 1], call)


@pytest.fixture
def fake() -> FakeClient:
    return FakeClient()


@pytest.fixture
def bq(fake: FakeClient) -> Iterator[BigQueryEngine]:
    engine = BigQueryEngine.open(None, DATASET, None, BUDGET, client=fake)
    del fake.calls[:]  # what open() does is the first test's business
    yield engine
    assert_every_job_dry_run_first(fake)


def events(*ids: tuple[str, str], received_at: datetime = T0) -> pa.Table:
    rows = [
        {
            "message_id": message_id,
            "source": source,
            "type": "track",
            "event": "Page Viewed",
            "user_id": f"u-{message_id}",
            "timestamp": received_at - timedelta(minutes=5),
            "received_at": received_at + timedelta(seconds=i),
            "properties": '{"plan": "pro"}',
        }
        for i, (source, message_id) in enumerate(ids)
    ]
    return pa.Table.from_pylist(rows, schema=schema.EVENTS)


def failed_events() -> pa.Table:
    row = {
        "id": "f1",
        "source": "web",
        "received_at": T0,
        "code": "invalid_json",
        "message": "not JSON",
        "payload": "{",
    }
    return pa.Table.from_pylist([row], schema=schema.FAILED_EVENTS)


def hourly_output(interval: Interval = INTERVAL) -> pa.Table:
    return pa.table(
        {
            "hour": pa.array([interval.start, interval.start], pa.timestamp("us", "UTC")),
            "source": ["app", "web"],
            "event_name": ["identify", "Page Viewed"],
            "events": pa.array([1, 3], pa.int64()),
            "people": pa.array([1, 2], pa.int64()),
        }
    )


def one(sql: str) -> exp.Expression:
    [tree] = [s for s in sqlglot.parse(sql, read="bigquery") if s is not None]
    return tree


# -- opening -----------------------------------------------------------------------------


def test_open_creates_the_dataset_and_partitioned_clustered_event_tables(fake: FakeClient) -> None:
    engine = BigQueryEngine.open(None, DATASET, "EU", BUDGET, client=fake)
    assert engine.dataset == FULL_DATASET
    assert fake.jobs == []

    [made] = fake.table_calls("create_dataset")
    assert (made.obj.project, made.obj.dataset_id, made.obj.location) == (PROJECT, DATASET, "EU")
    assert made.options == {"exists_ok": True}

    tables = {c.name: c for c in fake.table_calls("create_table")}
    fences = f"{FULL_DATASET}._headwater_fences"  # fencing tokens: see the fence tests
    assert set(tables) == {f"{FULL_DATASET}.events", f"{FULL_DATASET}.failed_events", fences}
    assert [f.name for f in tables.pop(fences).obj.schema] == ["name", "token"]
    for name, arrow in (("events", schema.EVENTS), ("failed_events", schema.FAILED_EVENTS)):
        call = tables[f"{FULL_DATASET}.{name}"]
        table = call.obj
        assert call.options == {"exists_ok": True}
        assert table.time_partitioning.type_ == bigquery.TimePartitioningType.DAY
        assert table.time_partitioning.field == "received_at"
        columns = [(f.name, f.field_type, f.mode) for f in table.schema]
        assert [c[0] for c in columns] == arrow.names
        for (column, kind, mode), arrow_field in zip(columns, arrow, strict=True):
            assert mode == ("NULLABLE" if arrow_field.nullable else "REQUIRED"), column
            expected = "TIMESTAMP" if pa.types.is_timestamp(arrow_field.type) else "STRING"
            assert kind == expected, column
    assert tables[f"{FULL_DATASET}.events"].obj.clustering_fields == ["source", "event"]
    assert tables[f"{FULL_DATASET}.failed_events"].obj.clustering_fields is None
    modes = {f.name: f.mode for f in tables[f"{FULL_DATASET}.events"].obj.schema}
    assert modes["message_id"] == modes["received_at"] == "REQUIRED"
    assert modes["event"] == modes["properties"] == "NULLABLE"


class _Existing(FakeClient):
    """A dataset whose event tables exist already, partitioned as ``partitioning`` says:
    ``create_table(exists_ok=True)`` answers the table that is there, as BigQuery does."""

    def __init__(self, partitioning: bigquery.TimePartitioning | None) -> None:
        super().__init__()
        self.partitioning = partitioning

    def create_table(self, table: Any, exists_ok: bool = False, **_: Any) -> Any:
        super().create_table(table, exists_ok=exists_ok)
        if table.table_id in ("events", "failed_events"):
            existing = bigquery.Table(f"{table.project}.{table.dataset_id}.{table.table_id}")
            existing.time_partitioning = self.partitioning
            return existing
        return table


@pytest.mark.parametrize(
    ("partitioning", "problem", "fix"),
    [
        (
            bigquery.TimePartitioning(type_="DAY", field="received_at"),
            "is partitioned by day of received_at",
            'set [warehouse] offload_interval = "1d" to load it as it is',
        ),
        (
            bigquery.TimePartitioning(type_="MONTH", field="received_at"),
            "is partitioned by month of received_at",
            "copy it into a table partitioned by hour of received_at",
        ),
        (
            bigquery.TimePartitioning(type_="HOUR", field="timestamp"),
            "is partitioned by hour of timestamp",
            "copy it into a table partitioned by hour of received_at",
        ),
        (None, "is not partitioned", "copy it into a table partitioned by hour of received_at"),
    ],
)
def test_an_event_table_partitioned_otherwise_is_refused_with_the_fix(
    partitioning: bigquery.TimePartitioning | None, problem: str, fix: str
) -> None:
    """A warehouse offloaded by the hour loads one hourly partition per job: an existing
    table partitioned by another unit or column would take the loads wrongly."""
    with pytest.raises(ConfigError) as caught:
        BigQueryEngine.open(
            None, DATASET, None, BUDGET, partition="HOUR", client=_Existing(partitioning)
        )
    assert f"{FULL_DATASET}.events {problem}" in caught.value.message
    assert caught.value.hint is not None
    assert caught.value.hint.startswith(fix)


def test_bq_schema_maps_every_arrow_type() -> None:
    arrow = pa.schema(
        [
            pa.field("at", pa.timestamp("us", "UTC"), nullable=False),
            pa.field("local", pa.timestamp("us")),
            pa.field("flag", pa.bool_()),
            pa.field("n", pa.int32()),
            pa.field("x", pa.float64()),
            pa.field("d", pa.date32()),
            pa.field("s", pa.string()),
        ]
    )
    got = [(f.name, f.field_type, f.mode) for f in bq_schema(arrow)]
    assert got == [
        ("at", "TIMESTAMP", "REQUIRED"),
        ("local", "DATETIME", "NULLABLE"),
        ("flag", "BOOL", "NULLABLE"),
        ("n", "INT64", "NULLABLE"),
        ("x", "FLOAT64", "NULLABLE"),
        ("d", "DATE", "NULLABLE"),
        ("s", "STRING", "NULLABLE"),
    ]


@pytest.mark.parametrize("dataset", ["my-dataset", "a.b", "x; DROP", ""])
def test_open_refuses_a_dataset_that_is_not_a_name_before_any_call(
    fake: FakeClient, dataset: str
) -> None:
    with pytest.raises(QueryError, match="not a BigQuery dataset name"):
        BigQueryEngine.open(None, dataset, None, BUDGET, client=fake)
    assert fake.calls == []


def test_open_reports_an_unreachable_bigquery_as_store_unavailable(fake: FakeClient) -> None:
    fake.create_error = google_errors.ServiceUnavailable("Backend Error\nmore detail")
    with pytest.raises(StoreUnavailable, match="Backend Error") as caught:
        BigQueryEngine.open(None, DATASET, None, BUDGET, client=fake)
    assert caught.value.engine == "bigquery"
    assert "more detail" not in str(caught.value)


def test_open_reports_missing_permissions_as_terminal_with_the_fix(fake: FakeClient) -> None:
    fake.create_error = google_errors.Forbidden("Access Denied: Project hw-test\nmore detail")
    with pytest.raises(ConfigError, match="Access Denied: Project hw-test") as caught:
        BigQueryEngine.open(None, DATASET, None, BUDGET, client=fake)
    assert "GOOGLE_APPLICATION_CREDENTIALS" in (caught.value.hint or "")
    assert "more detail" not in str(caught.value)


@pytest.mark.parametrize(
    ("error", "transient"),
    [
        (google_errors.TooManyRequests("slow down"), True),
        (google_errors.InternalServerError("oops"), True),
        (google_errors.ServiceUnavailable("down"), True),
        (
            google_errors.Forbidden(
                "Exceeded rate limits", errors=[{"reason": "rateLimitExceeded"}]
            ),
            True,
        ),
        (google_errors.Forbidden("Access Denied", errors=[{"reason": "accessDenied"}]), False),
        (google_errors.BadRequest("Syntax error"), False),
        (google_errors.NotFound("Not found: Table x"), False),
        (ConnectionError("reset by peer"), True),
    ],
)
def test_bigquery_errors_are_transient_or_terminal_by_what_they_are(
    bq: BigQueryEngine, fake: FakeClient, error: Exception, transient: bool
) -> None:
    fake.failures.append(("FROM events", error))
    expected = StoreUnavailable if transient else QueryError
    with pytest.raises(expected):
        bq.select("SELECT 1 AS x FROM events", {})


# -- every query: dry run, budget, parameters ----------------------------------------------


def test_select_query_and_execute_are_dry_run_first_then_run_with_the_budget(
    bq: BigQueryEngine, fake: FakeClient
) -> None:
    answer = pa.table({"n": pa.array([3], pa.int64())})
    fake.answers.append(("COUNT(*) AS n", answer))

    selected = bq.select(
        "SELECT COUNT(*) AS n FROM events WHERE received_at >= @start", {"start": T0}
    )
    assert selected.table.equals(answer)
    assert selected.rows_scanned is None
    assert bq.query("SELECT COUNT(*) AS n FROM events").equals(answer)
    bq.execute("DELETE FROM hourly_event_counts WHERE TRUE")

    calls = fake.queries
    assert [c.dry for c in calls] == [True, False] * 3
    for dry, real in zip(calls[::2], calls[1::2], strict=True):
        assert_dry_run_then_run(dry, real)
    assert calls[1].params == {"start": ("TIMESTAMP", T0)}
    assert [c.sql for c in calls[1::2]] == [
        "SELECT COUNT(*) AS n FROM events WHERE received_at >= @start",
        "SELECT COUNT(*) AS n FROM events",
        "DELETE FROM hourly_event_counts WHERE TRUE",
    ]


@pytest.mark.parametrize(
    "call",
    [
        lambda e: e.select("SELECT * FROM events WHERE received_at >= @start", {"start": T0}),
        lambda e: e.query("SELECT * FROM events"),
        lambda e: e.execute("DELETE FROM events WHERE TRUE"),
        lambda e: e.ingest(IngestBatch(events(("web", "m1")), failed_events().slice(0, 0))),
        lambda e: e.replace_interval("hourly_event_counts", "hour", INTERVAL, hourly_output()),
    ],
    ids=["select", "query", "execute", "ingest", "replace_interval"],
)
def test_a_query_over_budget_is_refused_by_its_dry_run_and_never_submitted(
    bq: BigQueryEngine, fake: FakeClient, call: Callable[[BigQueryEngine], object]
) -> None:
    fake.default_bytes = BUDGET + 1
    with pytest.raises(BudgetExceeded) as caught:
        call(bq)
    assert f"{BUDGET + 1:,} bytes" in str(caught.value)
    assert f"budget of {BUDGET:,}" in str(caught.value)
    assert "max_bytes_billed" in (caught.value.hint or "")
    assert fake.real_queries == []
    assert [c.dry for c in fake.queries] == [True]
    # Whatever was staged for it is gone again.
    staged = {c.destination for c in fake.loads if "._hw_" in c.destination}
    assert staged == {c.name for c in fake.table_calls("delete_table")}


def test_a_query_at_exactly_the_budget_runs(bq: BigQueryEngine, fake: FakeClient) -> None:
    fake.default_bytes = BUDGET
    bq.query("SELECT 1 AS x")
    assert [c.dry for c in fake.queries] == [True, False]


def test_estimate_cost_is_the_dry_run_alone_even_over_budget(
    bq: BigQueryEngine, fake: FakeClient
) -> None:
    fake.bytes_for.append(("FROM events", 5 * BUDGET))
    sql = "SELECT source FROM events WHERE received_at >= @start AND received_at < @end"
    cost = bq.estimate_cost(sql, {"start": INTERVAL.start, "end": INTERVAL.end})
    assert (cost.bytes_scanned, cost.rows_scanned) == (5 * BUDGET, None)
    [dry] = fake.queries
    assert dry.dry
    assert dry.sql == sql
    assert dry.params == {
        "start": ("TIMESTAMP", INTERVAL.start),
        "end": ("TIMESTAMP", INTERVAL.end),
    }


def test_parameters_are_typed_for_bigquery(bq: BigQueryEngine, fake: FakeClient) -> None:
    naive = datetime(2026, 3, 2, 8, 30)
    params: dict[str, object] = {
        "at": T0,
        "naive": naive,
        "name": "web",
        "n": 7,
        "ratio": 0.25,
        "flag": True,
        "off": False,
        "day": date(2026, 3, 2),
    }
    bq.select("SELECT @at, @naive, @name, @n, @ratio, @flag, @off, @day", params)
    dry, real = fake.queries
    assert (
        real.params
        == dry.params
        == {
            "at": ("TIMESTAMP", T0),
            "naive": ("TIMESTAMP", naive.replace(tzinfo=UTC)),  # the client reads naive as UTC
            "name": ("STRING", "web"),
            "n": ("INT64", 7),
            "ratio": ("FLOAT64", 0.25),
            "flag": ("BOOL", True),
            "off": ("BOOL", False),
            "day": ("DATE", date(2026, 3, 2)),
        }
    )
    sent = {p["name"]: p["parameterValue"]["value"] for p in real.api_params}
    assert sent["at"].startswith("2026-03-02")
    assert sent["day"] == "2026-03-02"
    assert sent["flag"] == "true"
    assert sent["n"] == "7"


@pytest.mark.parametrize("value", [None, b"bytes", [1, 2], {"a": 1}])
def test_a_parameter_bigquery_cannot_type_is_refused_before_any_job(
    bq: BigQueryEngine, fake: FakeClient, value: object
) -> None:
    with pytest.raises(QueryError, match="parameter p holds"):
        bq.select("SELECT @p AS p", {"p": value})
    assert fake.calls == []


@pytest.mark.parametrize(
    "sql",
    [
        "DELETE FROM events WHERE TRUE",
        "INSERT INTO events (message_id) VALUES ('x')",
        "UPDATE events SET source = 'x' WHERE TRUE",
        "MERGE events e USING events s ON FALSE WHEN NOT MATCHED THEN INSERT ROW",
        "CREATE TABLE t AS SELECT 1 AS x",
        "DROP TABLE events",
        "TRUNCATE TABLE events",
    ],
)
def test_query_refuses_statements_that_change_data_without_submitting_anything(
    bq: BigQueryEngine, fake: FakeClient, sql: str
) -> None:
    with pytest.raises(ReadOnlyQuery, match="not allowed"):
        bq.query(sql)
    assert fake.jobs == []  # listing the dataset's tables is free; no job was submitted


@pytest.mark.parametrize(
    ("sql", "params", "message"),
    [
        ("SELECT 1 AS x; DROP TABLE events", (), "holds 2 statements where one is expected"),
        ("SELECT FROM WHERE (", (), "Expected"),
        ("SELECT * FROM events WHERE source = ?", ("web",), "positional parameters"),
    ],
)
def test_query_refuses_what_it_cannot_run_without_submitting_anything(
    bq: BigQueryEngine, fake: FakeClient, sql: str, params: tuple[object, ...], message: str
) -> None:
    with pytest.raises(QueryError, match=re.escape(message)):
        bq.query(sql, params)
    assert fake.jobs == []


def test_a_failing_job_is_a_query_error_with_bigquery_s_first_line(
    bq: BigQueryEngine, fake: FakeClient
) -> None:
    fake.failures.append(
        ("no_such", google_errors.BadRequest("Unrecognized name: no_such\nat [1:8]"))
    )
    with pytest.raises(QueryError) as caught:
        bq.query("SELECT no_such FROM events")
    assert caught.value.reason == "400 Unrecognized name: no_such"
    assert not isinstance(caught.value, BudgetExceeded)


def test_an_unbound_parameter_fails_in_the_dry_run(bq: BigQueryEngine, fake: FakeClient) -> None:
    with pytest.raises(QueryError, match="Query parameter 'end' not found"):
        bq.select("SELECT 1 AS x FROM events WHERE received_at < @end", {})
    assert fake.real_queries == []


# -- ingest ---------------------------------------------------------------------------------


def _staging_name(fake: FakeClient) -> str:
    [stage] = [c.destination for c in fake.loads if "._hw_" in c.destination]
    assert re.fullmatch(rf"{re.escape(FULL_DATASET)}\._hw_stage_[0-9a-f]{{12}}", stage), stage
    return stage


def test_ingest_stages_the_batch_and_merges_it_within_the_dedupe_window(
    bq: BigQueryEngine, fake: FakeClient
) -> None:
    batch = events(("web", "m1"), ("web", "m2"), ("app", "m1"))
    fake.answers.append(("JOIN events", pa.table({"source": ["web"], "message_id": ["m1"]})))

    new = bq.ingest(IngestBatch(batch, failed_events()))

    # (web, m1) is known; the same id from another source is not.
    assert new.to_pylist() == [False, True, True]
    stage = _staging_name(fake)
    load, failed = fake.loads
    assert load.destination == stage
    assert load.config.source_format == bigquery.SourceFormat.PARQUET
    assert load.table.equals(batch)
    assert load.table.schema == schema.EVENTS

    since = T0 - timedelta(days=7)
    known, merge = fake.real_queries
    assert known.params == merge.params == {"since": ("TIMESTAMP", since)}
    assert stage in known.sql
    tree = one(merge.sql)
    assert isinstance(tree, exp.Merge)
    assert tree.this.name == "events"
    assert tree.args["using"].name == stage.rsplit(".", 1)[1]
    # The partition filter: only the window's days of events are read.
    on = tree.args["on"]
    window = [
        c
        for c in on.find_all(exp.GTE)
        if c.this.sql("bigquery") == "e.received_at" and isinstance(c.expression, exp.Parameter)
    ]
    assert [c.expression.name for c in window] == ["since"], merge.sql
    keys = {c.sql("bigquery") for c in on.find_all(exp.EQ)}
    assert keys == {"e.source = s.source", "e.message_id = s.message_id"}
    [when] = tree.args["whens"].expressions
    assert when.args["matched"] is False
    insert = when.args["then"]
    assert [c.name for c in insert.this.expressions] == schema.EVENTS.names

    # The staging table is dropped; failed events are appended by their own load.
    assert [c.name for c in fake.table_calls("delete_table")] == [stage]
    assert (failed.destination, failed.config.write_disposition) == (
        f"{FULL_DATASET}.failed_events",
        "WRITE_APPEND",
    )
    assert failed.table.equals(failed_events())


def test_ingest_of_only_failed_events_stages_and_queries_nothing(
    bq: BigQueryEngine, fake: FakeClient
) -> None:
    new = bq.ingest(IngestBatch(events(), failed_events()))
    assert new.to_pylist() == []
    [load] = fake.loads
    assert load.destination == f"{FULL_DATASET}.failed_events"
    assert fake.queries == []


@pytest.mark.parametrize("failing", ["MERGE events", "JOIN events"])
def test_ingest_drops_the_staging_table_when_a_statement_fails(
    bq: BigQueryEngine, fake: FakeClient, failing: str
) -> None:
    fake.failures.append((failing, google_errors.InternalServerError("backend error")))
    fake.answers.append(("JOIN events", pa.table({"source": [], "message_id": []})))
    # A 5xx may pass: transient, so the collector answers 503 and the client sends again.
    with pytest.raises(StoreUnavailable, match="backend error"):
        bq.ingest(IngestBatch(events(("web", "m1")), failed_events()))
    stage = _staging_name(fake)
    assert [c.name for c in fake.table_calls("delete_table")] == [stage]
    assert stage not in fake.tables
    assert [c.destination for c in fake.loads] == [stage]  # failed events wait with the batch


def test_ingest_whose_staging_load_fails_is_store_unavailable(
    bq: BigQueryEngine, fake: FakeClient
) -> None:
    fake.load_error = google_errors.ServiceUnavailable("try again")
    with pytest.raises(StoreUnavailable, match="try again"):
        bq.ingest(IngestBatch(events(("web", "m1")), failed_events()))
    assert fake.queries == []


# -- writing pipeline output ---------------------------------------------------------------


def test_replace_interval_is_one_transaction_from_a_staging_table(
    bq: BigQueryEngine, fake: FakeClient
) -> None:
    data = hourly_output()
    bq.replace_interval("hourly_event_counts", "hour", INTERVAL, data)

    stage = _staging_name(fake)
    target = f"{FULL_DATASET}.hourly_event_counts"
    [load] = fake.loads
    assert load.config.source_format == bigquery.SourceFormat.PARQUET
    assert load.table.equals(data)

    create, script = fake.real_queries
    created = one(create.sql)
    assert isinstance(created, exp.Create)
    assert created.args.get("exists") is True
    assert _table_id_of(created.this) == target
    assert stage in create.sql
    assert "LIMIT 0" in create.sql

    statements = [s for s in sqlglot.parse(script.sql, read="bigquery") if s is not None]
    assert [type(s).__name__ for s in statements] == ["Transaction", "Delete", "Insert", "Commit"]
    assert script.sql.startswith("BEGIN TRANSACTION;")
    assert script.sql.rstrip().endswith("COMMIT TRANSACTION;")
    delete, insert = statements[1], statements[2]
    assert _table_id_of(delete.this) == target
    bounds = {
        (type(c).__name__, c.this.name, c.expression.name)
        for c in delete.args["where"].find_all(exp.GTE, exp.LT)
    }
    assert bounds == {("GTE", "hour", "start"), ("LT", "hour", "end")}
    assert _table_id_of(insert.this) == target
    assert [_table_id_of(t) for t in insert.expression.find_all(exp.Table)] == [stage]
    assert script.params == {
        "start": ("TIMESTAMP", INTERVAL.start),
        "end": ("TIMESTAMP", INTERVAL.end),
    }
    assert [c.name for c in fake.table_calls("delete_table")] == [stage]
    assert fake.calls[-1] == TableCall("delete_table", stage, None, {"not_found_ok": True})


def _table_id_of(table: exp.Expression) -> str:
    if isinstance(table, exp.Schema):  # INSERT INTO t (a, b): the table with its columns
        table = table.this
    assert isinstance(table, exp.Table)
    return ".".join(p.name for p in table.parts)


def _transaction(fake: FakeClient) -> tuple[QueryCall, list[exp.Expression]]:
    [script] = [c for c in fake.real_queries if c.sql.startswith("BEGIN TRANSACTION")]
    return script, [s for s in sqlglot.parse(script.sql, read="bigquery") if s is not None]


def test_replace_interval_inserts_the_columns_by_name(bq: BigQueryEngine, fake: FakeClient) -> None:
    """``INSERT INTO t SELECT *`` fills the table's columns by position: an output whose
    columns come in another order than the table's (an edited SELECT list, a Python
    pipeline building its table from a dict) would put ``people`` into ``events`` without
    an error when the types agree. The DuckDB engine inserts BY NAME."""
    data = hourly_output()
    bq.replace_interval("hourly_event_counts", "hour", INTERVAL, data)
    script, statements = _transaction(fake)
    insert = statements[2]
    assert isinstance(insert, exp.Insert)
    assert isinstance(insert.this, exp.Schema), (
        f"the INSERT fills columns by position: {script.sql}"
    )
    assert [c.name for c in insert.this.expressions] == data.column_names
    assert [c.alias_or_name for c in insert.expression.expressions] == data.column_names


def test_replace_interval_of_a_date_column_compares_dates_with_dates(
    bq: BigQueryEngine, fake: FakeClient
) -> None:
    """The runner accepts a DATE time_column (``DATE_TRUNC(DATE(timestamp), MONTH) AS
    month``), and BigQuery has no DATE >= TIMESTAMP: "No matching signature for operator
    >= for argument types: DATE, TIMESTAMP". The DELETE must compare like with like."""
    month = Interval(datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 4, 1, tzinfo=UTC))
    data = pa.table({"month": pa.array([date(2026, 3, 1)], pa.date32()), "events": [5]})
    bq.replace_interval("monthly_events", "month", month, data)
    script, statements = _transaction(fake)
    comparisons = list(statements[1].args["where"].find_all(exp.GTE, exp.LT))
    assert len(comparisons) == 2
    bare = [c for c in comparisons if isinstance(c.this, exp.Column)]
    kinds = {name: kind for name, (kind, _) in script.params.items()}
    assert not bare or kinds == {"start": "DATE", "end": "DATE"}, (
        f"the DATE column month is compared with {kinds} parameters: {script.sql}"
    )


@pytest.mark.parametrize(
    ("column", "values", "partition"),
    [
        ("hour", pa.array([INTERVAL.start], pa.timestamp("us", "UTC")), "TIMESTAMP_TRUNC"),
        ("day", pa.array([INTERVAL.start.date()], pa.date32()), "PARTITION BY `day`"),
    ],
)
def test_an_output_table_is_partitioned_by_its_time_column(
    bq: BigQueryEngine, fake: FakeClient, column: str, values: pa.Array, partition: str
) -> None:
    """Replacing or reading one interval must bill its days, not the whole table."""
    bq.replace_interval("out", column, INTERVAL, pa.table({column: values, "n": [1]}))
    [create] = [q for q in fake.real_queries if q.sql.startswith("CREATE TABLE IF NOT EXISTS")]
    assert "PARTITION BY" in create.sql, create.sql
    assert partition in create.sql, create.sql
    assert sqlglot.parse_one(create.sql, read="bigquery").find(exp.PartitionedByProperty)


@pytest.mark.parametrize("failing", ["BEGIN TRANSACTION", "CREATE TABLE IF NOT EXISTS"])
def test_replace_interval_drops_staging_when_a_statement_fails(
    bq: BigQueryEngine, fake: FakeClient, failing: str
) -> None:
    fake.failures.append((failing, google_errors.BadRequest("Transaction aborted")))
    with pytest.raises(QueryError, match="Transaction aborted"):
        bq.replace_interval("hourly_event_counts", "hour", INTERVAL, hourly_output())
    stage = _staging_name(fake)
    assert [c.name for c in fake.table_calls("delete_table")] == [stage]


def test_replace_table_and_append_are_load_jobs(bq: BigQueryEngine, fake: FakeClient) -> None:
    data = hourly_output()
    bq.replace_table("daily_report", data)
    bq.append("daily_report", data)
    truncate, append = fake.loads
    assert (truncate.destination, truncate.config.write_disposition) == (
        f"{FULL_DATASET}.daily_report",
        "WRITE_TRUNCATE",
    )
    assert (append.destination, append.config.write_disposition) == (
        f"{FULL_DATASET}.daily_report",
        "WRITE_APPEND",
    )
    assert truncate.table.equals(data)
    assert append.table.equals(data)
    assert fake.queries == []


def test_upsert_merges_from_a_staging_table_by_key(bq: BigQueryEngine, fake: FakeClient) -> None:
    data = pa.table({"user_id": ["u1", "u2"], "plan": ["pro", "free"], "events": [3, 4]})
    bq.upsert("profiles", ["user_id"], data)
    stage = _staging_name(fake)
    [load] = fake.loads
    assert load.table.equals(data)
    create, merge = fake.real_queries
    assert isinstance(one(create.sql), exp.Create)
    tree = one(merge.sql)
    assert isinstance(tree, exp.Merge)
    assert _table_id_of(tree.this) == f"{FULL_DATASET}.profiles"
    assert tree.args["on"].sql("bigquery") == "t.`user_id` = s.`user_id`"
    matched, not_matched = tree.args["whens"].expressions
    assert matched.args["matched"] is True
    assert {e.this.name for e in matched.args["then"].expressions} == {"plan", "events"}
    assert not_matched.args["matched"] is False
    assert [c.name for c in fake.table_calls("delete_table")] == [stage]


def test_upsert_of_key_columns_only_inserts_what_is_missing(
    bq: BigQueryEngine, fake: FakeClient
) -> None:
    bq.upsert("seen", ["user_id"], pa.table({"user_id": ["u1"]}))
    _, merge = fake.real_queries
    [when] = one(merge.sql).args["whens"].expressions
    assert when.args["matched"] is False


def test_upsert_without_a_key_is_refused_before_any_job(
    bq: BigQueryEngine, fake: FakeClient
) -> None:
    with pytest.raises(QueryError, match="at least one key"):
        bq.upsert("profiles", [], pa.table({"user_id": ["u1"]}))
    assert fake.calls == []


BAD = "bad name`; DROP TABLE events; --"
OUT = hourly_output()


@pytest.mark.parametrize(
    "call",
    [
        lambda e: e.append(BAD, OUT),
        lambda e: e.replace_table(BAD, OUT),
        lambda e: e.replace_table("proj.ds.t", OUT),
        lambda e: e.replace_interval(BAD, "hour", INTERVAL, OUT),
        lambda e: e.replace_interval("hourly_event_counts", BAD, INTERVAL, OUT),
        lambda e: e.upsert(BAD, ["source"], OUT),
        lambda e: e.upsert("hourly_event_counts", [BAD], OUT),
        lambda e: e.upsert("t", ["source"], OUT.append_column(BAD, pa.array([1, 2]))),
    ],
    ids=[
        "append-table",
        "replace_table-table",
        "replace_table-qualified",
        "replace_interval-table",
        "replace_interval-column",
        "upsert-table",
        "upsert-key",
        "upsert-column",
    ],
)
def test_names_that_are_not_plain_identifiers_are_refused_before_any_job(
    bq: BigQueryEngine, fake: FakeClient, call: Callable[[BigQueryEngine], object]
) -> None:
    with pytest.raises(QueryError, match="not a plain table or column name"):
        call(bq)
    leaked = [t for t in fake.tables if "._hw_" in t]
    assert (fake.jobs, leaked) == ([], []), (
        f"jobs submitted before the name was refused: {fake.jobs}; "
        f"staging tables left behind: {leaked}"
    )


def test_staging_tables_expire_within_a_day(bq: BigQueryEngine, fake: FakeClient) -> None:
    """A process killed between the staging load and its drop must not leave the table
    (and its storage bill) forever: ``_staging`` says it expires within a day."""
    before = datetime.now(UTC)
    bq.replace_interval("hourly_event_counts", "hour", INTERVAL, hourly_output())
    stage = _staging_name(fake)
    settings = [
        c.obj
        for c in fake.table_calls("create_table") + fake.table_calls("update_table")
        if c.name == stage
    ]
    expiries = [t.expires for t in settings if t.expires is not None]
    assert expiries, f"the staging table {stage} was loaded with no expiration"
    assert all(e <= before + timedelta(days=1, minutes=1) for e in expiries), expiries


def test_list_tables_hides_staging_tables(bq: BigQueryEngine, fake: FakeClient) -> None:
    bq.replace_table("zeta", hourly_output())
    fake.tables[f"{FULL_DATASET}._hw_stage_0123456789ab"] = None  # left by a killed process
    fake.tables["other-project.other.alpha"] = None
    assert bq.list_tables() == ["events", "failed_events", "zeta"]
    [listed] = fake.table_calls("list_tables")
    assert listed.name == FULL_DATASET


def test_close_closes_the_client(bq: BigQueryEngine, fake: FakeClient) -> None:
    bq.close()
    assert fake.closed
    assert bq.checkpoint() is None
    assert (bq.prune_dedupe(0), bq.floors) == (0, None)
    assert (bq.name, bq.dialect, bq.shared) == ("bigquery", "bigquery", True)


# == 3. the pipeline service on the fake-client engine ======================================

HOURLY_SQL = "COALESCE(event, type) AS event_name"
DAILY_SQL = "JSON_VALUE(properties, '$.plan')"
PY_PIPELINE = """\
import pyarrow as pa

from headwater.process.python import Context, pipeline


@pipeline(schedule="@hourly", kind="incremental", time_column="hour")
def py_counts(ctx: Context) -> pa.Table:
    return ctx.sql(
        "SELECT TIMESTAMP_TRUNC(received_at, HOUR) AS hour, COUNT(*) AS events FROM events "
        "WHERE received_at >= @start AND received_at < @end GROUP BY hour"
    )
"""


@dataclass
class Service:
    service: Workspace
    fake: FakeClient
    metadata: StateStore


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Service]:
    root = tmp_path / "project"
    init_project(root)
    (root / "pipelines" / "py_counts.py").write_text(PY_PIPELINE, encoding="utf-8")
    fake = FakeClient()
    # The first events arrived five hours before now; event time a little earlier.
    fake.answers += [
        ("MIN(received_at)", pa.table({"t": pa.array([T0 - 5 * HOUR], schema.TIMESTAMP)})),
        ("MIN(timestamp)", pa.table({"t": pa.array([T0 - 30 * HOUR], schema.TIMESTAMP)})),
    ]
    fake.bytes_for += [(HOURLY_SQL, 4_096), (DAILY_SQL, 8_192)]
    engine = BigQueryEngine.open(None, DATASET, None, BUDGET, client=fake)
    del fake.calls[:]
    metadata = StateStore.in_folder(tmp_path / "metadata")
    service = Workspace(load_project(root), engine, metadata, clock=lambda: T0)
    try:
        yield Service(service, fake, metadata)
    finally:
        metadata.close()
        for name in [m for m in sys.modules if m.startswith("headwater_pipelines.")]:
            del sys.modules[name]


def test_a_plan_prices_each_recomputation_from_one_dry_run_of_its_range(
    service: Service,
) -> None:
    from headwater.runtime.plan import make_plan
    from headwater.store import costs

    fake = service.fake
    plan = make_plan(service.service, [])
    hourly = next(r for r in plan.recompute if r.pipeline == "hourly_event_counts")
    assert hourly.intervals == 5  # the first events arrived five hours before now
    assert (hourly.start, hourly.end) == (T0 - 5 * HOUR, T0)
    # BigQuery bills at least 10 MB per table and query: five runs of one table.
    assert hourly.bytes == 5 * costs.MIN_BYTES_PER_TABLE
    assert hourly.dollars == pytest.approx(hourly.bytes / costs.TIB * costs.USD_PER_TIB)
    dry = [q for q in fake.queries if q.dry and HOURLY_SQL in q.sql]
    assert len(dry) == 1
    assert dry[0].params == {"start": ("TIMESTAMP", T0 - 5 * HOUR), "end": ("TIMESTAMP", T0)}
    # Pricing a plan runs no pipeline query: only dry runs, and the first events' times.
    assert all("MIN(" in q.sql for q in fake.real_queries)


def test_service_render_and_cost_are_the_dry_run_of_the_interval(service: Service) -> None:
    fake = service.fake
    text, params = service.service.render("hourly_event_counts", INTERVAL.start, INTERVAL.end)
    assert params == {"start": INTERVAL.start, "end": INTERVAL.end}
    tree = one(text)
    assert isinstance(tree, exp.Select)
    assert {p.name for p in tree.find_all(exp.Parameter)} == {"start", "end"}

    cost = service.service.cost("hourly_event_counts", INTERVAL.start, INTERVAL.end)
    assert cost is not None
    assert cost.bytes_scanned == 4_096
    daily = service.service.cost("daily_active_users", T0 - 24 * HOUR, T0)
    assert daily is not None
    assert daily.bytes_scanned == 8_192
    assert service.service.cost("py_counts", INTERVAL.start, INTERVAL.end) is None

    # Estimates cost nothing: dry runs only, of the SQL render() shows, bounds bound.
    assert fake.real_queries == []
    hourly, dau = fake.queries
    assert one(hourly.sql) == tree
    assert hourly.params == {
        "start": ("TIMESTAMP", INTERVAL.start),
        "end": ("TIMESTAMP", INTERVAL.end),
    }
    # A range is widened to whole days, as a run over it would be: the two days it touches.
    day = (T0 - 24 * HOUR).replace(hour=0)
    assert dau.params == {"start": ("TIMESTAMP", day), "end": ("TIMESTAMP", day + 48 * HOUR)}
    assert hourly.default_dataset == dau.default_dataset == FULL_DATASET


def test_service_status_reports_bytes_per_run_of_sql_pipelines(service: Service) -> None:
    report = {s.name: s for s in service.service.status()}
    assert {n: s.bytes_per_run for n, s in report.items()} == {
        "hourly_event_counts": 4_096,
        "daily_active_users": 8_192,
        "py_counts": None,
    }
    assert report["hourly_event_counts"].intervals_missing == 5
    # bytes_per_run is the dry run of the next interval to run: the first one.
    estimates = [c for c in service.fake.queries if c.dry and HOURLY_SQL in c.sql]
    assert estimates
    assert estimates[-1].params == {
        "start": ("TIMESTAMP", T0 - 5 * HOUR),
        "end": ("TIMESTAMP", T0 - 4 * HOUR),
    }
    assert_every_job_dry_run_first(service.fake)


def _published(fake: FakeClient) -> list[str]:
    return [c.destination for c in fake.loads] + [
        c.sql for c in fake.queries if "TRANSACTION" in c.sql
    ]


def test_service_run_over_budget_fails_naming_the_budget_and_publishes_nothing(
    service: Service,
) -> None:
    fake = service.fake
    fake.bytes_for.insert(0, (HOURLY_SQL, 3 * BUDGET))
    with pytest.raises(PipelineError) as caught:
        service.service.run("hourly_event_counts", INTERVAL.start, INTERVAL.end)
    said = str(caught.value)
    assert "hourly_event_counts.sql" in said
    assert f"would bill {3 * BUDGET:,} bytes, over the budget of {BUDGET:,}" in said

    assert fake.real_queries == []
    assert _published(fake) == []
    assert fake.table_calls("create_table") == []
    assert service.metadata.runs.intervals("hourly_event_counts") == {}
    [run] = service.metadata.runs.runs("hourly_event_counts")
    assert run.status == "failed"
    assert f"over the budget of {BUDGET:,}" in (run.error or "")


def test_service_run_over_budget_keeps_the_fix_in_the_hint(service: Service) -> None:
    """The engine's hint (filter on the partition column, or raise max_bytes_billed) is
    what a person needs next; the CLI prints the hint of the error it gets."""
    service.fake.bytes_for.insert(0, (HOURLY_SQL, 3 * BUDGET))
    with pytest.raises(PipelineError) as caught:
        service.service.run("hourly_event_counts", INTERVAL.start, INTERVAL.end)
    assert "max_bytes_billed" in (caught.value.hint or ""), (
        f"hint {caught.value.hint!r} for: {caught.value}"
    )


def test_service_run_publishes_the_interval_through_one_transaction(service: Service) -> None:
    fake = service.fake
    output = hourly_output()
    fake.answers.insert(0, (HOURLY_SQL, output))
    [result] = service.service.run("hourly_event_counts", INTERVAL.start, INTERVAL.end)
    assert (result.interval, result.rows_written, result.rows_read) == (INTERVAL, 2, None)

    [load] = fake.loads
    assert load.table.equals(output)
    scripts = [c for c in fake.real_queries if c.sql.startswith("BEGIN TRANSACTION")]
    [script] = scripts
    assert f"`{FULL_DATASET}.hourly_event_counts`" in script.sql
    params = dict(script.params)
    token = params.pop("fence_token")
    assert params == {
        "start": ("TIMESTAMP", INTERVAL.start),
        "end": ("TIMESTAMP", INTERVAL.end),
        "fence_name": ("STRING", "hourly_event_counts"),
    }
    # Fenced inside the transaction: refused when a newer run's token was accepted.
    fence = script.sql.index("token > @fence_token) THEN RAISE")
    assert script.sql.index("MERGE `_headwater_fences`") > fence
    assert script.sql.index("DELETE FROM") > fence
    assert token[0] == "INT64"
    assert [c.name for c in fake.table_calls("delete_table")] == [load.destination]
    assert service.metadata.runs.intervals("hourly_event_counts")[INTERVAL.start].status == "done"
    assert_every_job_dry_run_first(fake)


def test_a_fenced_replace_refused_by_its_script_is_fenced(
    bq: BigQueryEngine, fake: FakeClient
) -> None:
    fake.failures.append(
        ("BEGIN TRANSACTION", google_errors.BadRequest("headwater: fenced at [1:200]"))
    )
    with pytest.raises(Fenced) as caught:
        bq.replace_interval("hourly", "hour", INTERVAL, hourly_output(), Fence("hourly", 7))
    assert (caught.value.name, caught.value.token) == ("hourly", 7)
    # Unfenced, the same statements run without the check.
    fake.failures.clear()
    bq.replace_interval("hourly", "hour", INTERVAL, hourly_output())
    assert "_headwater_fences" not in fake.real_queries[-1].sql


# == 4. live, with credentials =================================================================

LIVE_SKIP = (
    "no BigQuery credentials on this machine "
    "(set GOOGLE_APPLICATION_CREDENTIALS and HEADWATER_BIGQUERY_PROJECT)"
)


def _live_project() -> str | None:
    """The project to test in, when credentials for it are configured."""
    project = os.environ.get("HEADWATER_BIGQUERY_PROJECT")
    key_file = os.environ.get("GOOGLE_APPLICATION_CREDENTIALS")
    gcloud = Path(os.environ.get("CLOUDSDK_CONFIG") or Path.home() / ".config" / "gcloud")
    configured = (
        bool(key_file and Path(key_file).is_file())
        or (gcloud / "application_default_credentials.json").is_file()
    )
    return project if project and configured else None


# A large result fetched without google-cloud-bigquery-storage warns and falls back to REST.
@pytest.mark.filterwarnings("ignore:BigQuery Storage module not found:UserWarning")
def test_live_ingest_dedupe_and_hourly_event_counts(tmp_path: Path) -> None:
    project_id = _live_project()
    if project_id is None:
        pytest.skip(LIVE_SKIP)
    dataset = f"hw_test_{uuid.uuid4().hex[:12]}"
    location = os.environ.get("HEADWATER_BIGQUERY_LOCATION")
    engine = BigQueryEngine.open(project_id, dataset, location, 1024**3)
    try:
        hour = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - 3 * HOUR
        rows = [
            ("m1", "web", "track", "Page Viewed", "u1", None),
            ("m2", "web", "track", "Page Viewed", "u1", None),
            ("m3", "web", "track", "Signed Up", None, "a1"),
            ("m4", "app", "identify", None, "u2", None),
        ]
        batch = pa.Table.from_pylist(
            [
                {
                    "message_id": m,
                    "source": s,
                    "type": t,
                    "event": e,
                    "user_id": u,
                    "anonymous_id": a,
                    "timestamp": hour + i * timedelta(minutes=7),
                    "received_at": hour + i * timedelta(minutes=7, seconds=3),
                }
                for i, (m, s, t, e, u, a) in enumerate(rows)
            ],
            schema=schema.EVENTS,
        )
        empty = schema.FAILED_EVENTS.empty_table()
        assert engine.ingest(IngestBatch(batch, empty)).to_pylist() == [True] * 4
        assert engine.ingest(IngestBatch(batch, empty)).to_pylist() == [False] * 4
        stored = engine.query("SELECT COUNT(*) AS n FROM events")["n"][0].as_py()
        assert stored == 4

        root = tmp_path / "project"
        init_project(root)
        metadata = StateStore.in_folder(tmp_path / "metadata")
        try:
            service = Workspace(load_project(root), engine, metadata)
            cost = service.cost("hourly_event_counts", hour, hour + HOUR)
            assert cost is not None
            assert cost.bytes_scanned is not None
            [result] = service.run("hourly_event_counts", hour, hour + HOUR)
            assert result.rows_written == 3
        finally:
            metadata.close()
        got = engine.query(
            "SELECT hour, source, event_name, events, people FROM hourly_event_counts "
            "ORDER BY source, event_name"
        ).to_pylist()
        assert [tuple(r.values()) for r in got] == [
            (hour, "app", "identify", 1, 1),
            (hour, "web", "Page Viewed", 2, 1),
            (hour, "web", "Signed Up", 1, 1),
        ]
        assert engine.list_tables() == ["events", "failed_events", "hourly_event_counts"]
    finally:
        engine.client.delete_dataset(engine.dataset, delete_contents=True, not_found_ok=True)
        engine.close()
