"""BigQuery SQL as people write it, transpiled to DuckDB: golden files, and the SQL runs.

Each idiom is a pair in ``tests/golden/transpile/``: ``NAME.bigquery.sql`` is the
input, ``NAME.duckdb.sql`` the expected output of
``render(parse(input, "bigquery", path), "duckdb", pretty=True)`` plus a final
newline. To accept new output after a deliberate change (a sqlglot upgrade, a
change to ``headwater.process.sql``), rewrite the golden files and review the
diff::

    HEADWATER_UPDATE_GOLDEN=1 .venv/bin/pytest tests/process/test_transpile.py -q
    git diff tests/golden/

Matching the golden file is not enough: every rendered query also runs on a
real DuckDB store (``DuckDBEngine``, filled through ``ingest``) and, where the
idiom has one clear answer, its result is compared with the same answer
computed in Python from the same events, following BigQuery's semantics.
"""

from __future__ import annotations

import json
import os
import re
from collections import Counter, defaultdict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from headwater.cli.scaffold import EXAMPLE_PIPELINES
from headwater.process.audits import run_audits
from headwater.process.definition import load_file
from headwater.process.errors import PipelineError
from headwater.process.sql import parse, render
from headwater.store import schema
from headwater.store.duckdb import DuckDBEngine
from headwater.store.engine import IngestBatch

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "transpile"
UPDATE = os.environ.get("HEADWATER_UPDATE_GOLDEN") == "1"
NAMES = sorted(p.name.removesuffix(".bigquery.sql") for p in GOLDEN.glob("*.bigquery.sql"))

Row = dict[str, object]
JSONValue = object


def at(month: int, day: int, hour: int, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, second, tzinfo=UTC)


@dataclass(frozen=True)
class Event:
    message_id: str
    source: str
    type: str
    timestamp: datetime
    late: timedelta
    event: str | None = None
    name: str | None = None
    user_id: str | None = None
    anonymous_id: str | None = None
    properties: dict[str, JSONValue] | None = None
    context: dict[str, JSONValue] | None = None

    @property
    def received_at(self) -> datetime:
        return self.timestamp + self.late

    @property
    def person(self) -> str | None:
        return self.user_id if self.user_id is not None else self.anonymous_id

    def row(self) -> Row:
        return {
            "message_id": self.message_id,
            "source": self.source,
            "type": self.type,
            "event": self.event,
            "name": self.name,
            "user_id": self.user_id,
            "anonymous_id": self.anonymous_id,
            "timestamp": self.timestamp,
            "original_timestamp": self.timestamp,
            "received_at": self.received_at,
            "properties": None if self.properties is None else json.dumps(self.properties),
            "context": None if self.context is None else json.dumps(self.context),
        }


S = timedelta(seconds=1)

# 2026-11-01 is a Sunday. Lateness is chosen so that some events cross an hour
# (or minute) boundary between their event time and their arrival.
EVENTS = [
    Event("e01", "web", "track", at(10, 31, 23, 50), 15 * 60 * S, event="Signed Up",
          user_id="u1", anonymous_id="a1",
          properties={"plan": "pro", "price": "9.5", "quantity": "3"},
          context={"page": {"path": "/signup"}}),
    Event("e02", "web", "page", at(11, 1, 0, 10, 30), 45 * S, name="Home", anonymous_id="a2",
          properties={"plan": "free"}, context={"page": {"path": "/"}}),
    Event("e03", "web", "track", at(11, 1, 0, 20, 59), 62 * S, event="Order Completed",
          user_id="u1", anonymous_id="a1",
          properties={"plan": "pro", "price": 12, "quantity": "2.5",
                      "items": [{"sku": "B2"}, {"sku": "A1"}]}),
    Event("e04", "app", "track", at(11, 1, 0, 59, 30), 40 * S, event="Order Completed",
          user_id="u2", anonymous_id="a3",
          properties={"plan": {"tier": "gold"}, "price": "free", "quantity": 7,
                      "items": [{"sku": "C3"}]}),
    Event("e05", "app", "identify", at(11, 1, 1, 15), 2 * S, user_id="u2", anonymous_id="a3",
          properties={"plan": True}),
    Event("e06", "web", "track", at(11, 1, 1, 30), 5 * S, event="Clicked", anonymous_id="a2",
          properties={"plan": "free", "quantity": "abc", "items": []},
          context={"page": {"path": "/pricing"}}),
    Event("e07", "web", "page", at(11, 1, 2, 45), 20 * 60 * S, name="Pricing", user_id="u3",
          anonymous_id="a4", properties={"plan": 3},
          context={"page": {"path": {"raw": "/p"}}}),
    Event("e08", "app", "track", at(11, 1, 23, 30), 10 * S, event="Clicked", user_id="u4",
          anonymous_id="a5", properties={"quantity": "-4"}),
    Event("e09", "web", "track", at(11, 2, 0, 30), 1 * S, event="Clicked", user_id="u1",
          anonymous_id="a6"),
    Event("e10", "app", "alias", at(11, 1, 3), 1 * S, user_id="u2", anonymous_id="a3"),
    Event("e11", "web", "track", at(12, 1, 0), 30 * S, event="Order Completed", user_id="u3",
          anonymous_id="a4",
          properties={"plan": "pro", "items": [{"sku": "A1"}, {"sku": "D4"}, {"sku": "A1"}]}),
    Event("e12", "web", "identify", at(11, 28, 12), 3 * S, user_id="u5"),
    Event("e13", "app", "track", at(11, 29, 9), 4 * S, event="Clicked", anonymous_id="a7"),
]  # fmt: skip

DAY_START, DAY_END = at(11, 1, 0), at(11, 2, 0)


@pytest.fixture(scope="module")
def engine(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DuckDBEngine]:
    opened = DuckDBEngine.open(tmp_path_factory.mktemp("transpile") / "events.duckdb")
    table = pa.Table.from_pylist([e.row() for e in EVENTS], schema=schema.EVENTS)
    stored = opened.ingest(IngestBatch(table, schema.FAILED_EVENTS.empty_table())).to_pylist()
    assert stored == [True] * len(EVENTS)
    yield opened
    opened.close()


# -- BigQuery semantics, in Python -------------------------------------------------


def json_value(document: dict[str, JSONValue] | None, *path: str) -> str | None:
    """BigQuery's JSON_VALUE: a scalar as text; an object, array, null or absence is NULL."""
    value: JSONValue = document
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    if value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def safe_int64(text: str | None) -> int | None:
    """BigQuery's SAFE_CAST(STRING AS INT64): only an integer literal converts."""
    if text is None or not re.fullmatch(r"[+-]?[0-9]+", text.strip()):
        return None
    return int(text)


def safe_float64(text: str | None) -> float | None:
    if text is None:
        return None
    try:
        return float(text)
    except ValueError:
        return None


def sunday_week(day: date) -> date:
    return day - timedelta(days=(day.weekday() + 1) % 7)


def in_day(moment: datetime) -> bool:
    return DAY_START <= moment < DAY_END


def by_time(events: list[Event]) -> list[Event]:
    return sorted(events, key=lambda e: e.timestamp)


# -- expected results, one function per golden pair ----------------------------------


def expect_timestamp_trunc() -> list[Row]:
    hours = Counter(
        e.received_at.replace(minute=0, second=0, microsecond=0)
        for e in EVENTS
        if in_day(e.received_at)
    )
    return [{"hour": hour, "events": n} for hour, n in sorted(hours.items())]


def expect_date_trunc_month() -> list[Row]:
    months = Counter(e.timestamp.date().replace(day=1) for e in EVENTS)
    return [{"month": month, "events": n} for month, n in sorted(months.items())]


def expect_date_trunc_week() -> list[Row]:
    weeks = Counter(sunday_week(e.timestamp.date()) for e in EVENTS)
    return [{"week": week, "events": n} for week, n in sorted(weeks.items())]


def expect_json_value() -> list[Row]:
    return [
        {
            "message_id": e.message_id,
            "plan": json_value(e.properties, "plan"),
            "page_path": json_value(e.context, "page", "path"),
        }
        for e in sorted(EVENTS, key=lambda e: e.message_id)
    ]


def expect_json_extract_scalar() -> list[Row]:
    plans = Counter(json_value(e.properties, "plan") or "unknown" for e in EVENTS)
    return [{"plan": plan, "events": n} for plan, n in sorted(plans.items())]


def expect_count_distinct() -> list[Row]:
    rows: list[Row] = []
    for source in sorted({e.source for e in EVENTS}):
        mine = [e for e in EVENTS if e.source == source]
        rows.append(
            {
                "source": source,
                "events": len(mine),
                "users": len({e.user_id for e in mine if e.user_id is not None}),
                "people": len({e.person for e in mine if e.person is not None}),
            }
        )
    return rows


def expect_safe_cast() -> list[Row]:
    return [
        {
            "message_id": e.message_id,
            "price": safe_float64(json_value(e.properties, "price")),
            "quantity": safe_int64(json_value(e.properties, "quantity")),
        }
        for e in sorted(EVENTS, key=lambda e: e.message_id)
    ]


def expect_unnest_json_array() -> list[Row]:
    rows: list[tuple[str, str | None]] = []
    for e in EVENTS:
        items = (e.properties or {}).get("items")
        if isinstance(items, list):
            rows.extend((e.message_id, json_value(item, "sku")) for item in items)
    return [{"message_id": m, "sku": sku} for m, sku in sorted(rows, key=str)]


def expect_unnest_array_literal() -> list[Row]:
    kinds = ["track", "page", "identify", "screen"]
    return [{"kind": kind, "events": sum(e.type == kind for e in EVENTS)} for kind in sorted(kinds)]


def expect_qualify() -> list[Row]:
    latest: dict[str, Event] = {}
    for e in EVENTS:
        if e.type == "alias" or e.person is None:
            continue
        known = latest.get(e.person)
        if known is None or (e.timestamp, e.message_id) > (known.timestamp, known.message_id):
            latest[e.person] = e
    return [
        {"person": person, "message_id": e.message_id, "timestamp": e.timestamp}
        for person, e in sorted(latest.items())
    ]


def expect_window_functions() -> list[Row]:
    by_person: dict[str | None, list[Event]] = defaultdict(list)
    by_source: dict[str, list[Event]] = defaultdict(list)
    for e in EVENTS:
        by_person[e.person].append(e)
        by_source[e.source].append(e)
    first_by_event = {
        source: min(mine, key=lambda e: (e.event is not None, e.event or "", e.message_id))
        for source, mine in by_source.items()
    }
    rows: list[Row] = []
    for e in sorted(EVENTS, key=lambda e: e.message_id):
        mine = by_time(by_person[e.person])
        nth = mine.index(e)
        rows.append(
            {
                "message_id": e.message_id,
                "person": e.person,
                "nth": nth + 1,
                "previous_event": mine[nth - 1].event if nth else None,
                "running_events": by_time(by_source[e.source]).index(e) + 1,
                "first_by_event": first_by_event[e.source].message_id,
            }
        )
    return rows


DATE_SUB_END = at(11, 1, 1)


def expect_date_sub_timestamp_sub() -> list[Row]:
    previous_day = DATE_SUB_END.date() - timedelta(days=1)
    return [
        {
            "message_id": e.message_id,
            "previous_day": previous_day,
            "on_previous_day": e.timestamp.date() == previous_day,
        }
        for e in sorted(EVENTS, key=lambda e: e.message_id)
        if DATE_SUB_END - timedelta(hours=2) <= e.timestamp < DATE_SUB_END
    ]


def expect_timestamp_diff() -> list[Row]:
    # TIMESTAMP_DIFF counts whole units elapsed: 62 s is 1 minute, 40 s is 0.
    return [
        {"message_id": e.message_id, "minutes_late": int(e.late.total_seconds() // 60)}
        for e in sorted(EVENTS, key=lambda e: e.message_id)
    ]


def expect_qualified_table_params() -> list[Row]:
    rows: list[Row] = []
    for source in sorted({e.source for e in EVENTS}):
        mine = [e.received_at for e in EVENTS if e.source == source and in_day(e.received_at)]
        rows.append({"source": source, "events": len(mine), "first_received_at": min(mine)})
    return rows


def check_approx_count_distinct(rows: list[Row]) -> None:
    # HyperLogLog: close to the exact count, not necessarily equal to it.
    exact = {
        "anonymous_ids": len({e.anonymous_id for e in EVENTS if e.anonymous_id is not None}),
        "people": len({e.person for e in EVENTS if e.person is not None}),
    }
    assert len(rows) == 1
    for column, count in exact.items():
        value = rows[0][column]
        assert isinstance(value, int)
        assert abs(value - count) <= max(1, count // 10), (column, value, count)


@dataclass(frozen=True)
class Case:
    """How to run one golden query, and what it must return."""

    expected: Callable[[], list[Row]] | None = None
    check: Callable[[list[Row]], None] | None = None
    params: dict[str, datetime] = field(
        default_factory=lambda: {"start": DAY_START, "end": DAY_END}
    )


CASES: dict[str, Case] = {
    "approx_count_distinct": Case(check=check_approx_count_distinct),
    "count_distinct": Case(expect_count_distinct),
    "date_sub_timestamp_sub": Case(expect_date_sub_timestamp_sub, params={"end": DATE_SUB_END}),
    "date_trunc_month": Case(expect_date_trunc_month),
    "date_trunc_week": Case(expect_date_trunc_week),
    "json_extract_scalar": Case(expect_json_extract_scalar),
    "json_value": Case(expect_json_value),
    "qualified_table_params": Case(expect_qualified_table_params),
    "qualify": Case(expect_qualify),
    "safe_cast": Case(expect_safe_cast),
    "timestamp_diff": Case(expect_timestamp_diff),
    "timestamp_trunc": Case(expect_timestamp_trunc),
    "unnest_array_literal": Case(expect_unnest_array_literal),
    "unnest_json_array": Case(expect_unnest_json_array),
    "window_functions": Case(expect_window_functions),
}


def rendered(name: str) -> str:
    path = GOLDEN / f"{name}.bigquery.sql"
    return render(parse(path.read_text("utf-8"), "bigquery", str(path)), "duckdb", pretty=True)


# -- (a) golden files -----------------------------------------------------------------


def test_every_golden_pair_is_complete_and_has_a_run_check() -> None:
    outputs = sorted(p.name.removesuffix(".duckdb.sql") for p in GOLDEN.glob("*.duckdb.sql"))
    assert len(NAMES) >= 15
    assert outputs == NAMES
    assert sorted(CASES) == NAMES


@pytest.mark.parametrize("name", NAMES)
def test_rendering_matches_the_golden_file(name: str) -> None:
    golden = GOLDEN / f"{name}.duckdb.sql"
    output = rendered(name) + "\n"
    if UPDATE:
        golden.write_text(output, encoding="utf-8")
    assert golden.exists(), f"no {golden.name}: run with HEADWATER_UPDATE_GOLDEN=1 and review"
    assert output == golden.read_text("utf-8")


def test_rendering_strips_project_and_dataset_and_keeps_parameters() -> None:
    path = GOLDEN / "qualified_table_params.bigquery.sql"
    query = parse(path.read_text("utf-8"), "bigquery", str(path))
    assert query.references == frozenset({"events"})
    assert query.parameters == frozenset({"start", "end"})
    output = render(query, "duckdb")
    assert "my-project" not in output
    assert "analytics" not in output
    assert "$start" in output
    assert "$end" in output
    assert "@start" not in output


@pytest.mark.parametrize(
    ("grouped", "expected"),
    [
        # An alias that is also a column of events: BigQuery groups by the alias.
        ("SELECT anonymous_id AS user_id, COUNT(*) AS n FROM proj.ds.events GROUP BY user_id",
         "GROUP BY anonymous_id"),
        ("SELECT LOWER(event) AS event, COUNT(*) AS n FROM events GROUP BY event",
         "GROUP BY LOWER(event)"),
        # A name only the SELECT list has groups alike everywhere: left as written, so the
        # pipelines that group by such an alias keep their version.
        ("SELECT DATE(timestamp) AS day, COUNT(*) AS n FROM events GROUP BY day",
         "GROUP BY day"),
    ],
)  # fmt: skip
def test_group_by_an_alias_that_is_also_a_column_groups_by_the_alias(
    grouped: str, expected: str
) -> None:
    query = parse(grouped, "bigquery", "grouped.sql")
    for dialect in ("duckdb", "postgres", "spark"):
        assert render(query, dialect).endswith(expected), dialect


# -- (b) the rendered SQL runs, and gives BigQuery's answer ---------------------------


@pytest.mark.parametrize("name", NAMES)
def test_rendered_query_runs_and_gives_the_bigquery_answer(name: str, engine: DuckDBEngine) -> None:
    path = GOLDEN / f"{name}.bigquery.sql"
    query = parse(path.read_text("utf-8"), "bigquery", str(path))
    case = CASES[name]
    params = {key: case.params[key] for key in sorted(query.parameters)}
    selected = engine.select(render(query, "duckdb", pretty=True), params)
    rows = selected.table.to_pylist()
    assert rows, f"{name} returned no rows on the test events"
    if case.check is not None:
        case.check(rows)
    if case.expected is not None:
        expected = case.expected()
        assert rows == expected
        # ``datetime`` equals nothing of type ``date``, but be explicit about types too.
        for got, want in zip(rows, expected, strict=True):
            for column, value in want.items():
                assert type(got[column]) is type(value) or (
                    isinstance(value, datetime) and isinstance(got[column], datetime)
                ), (column, got[column], value)


@pytest.mark.parametrize("name", sorted(EXAMPLE_PIPELINES))
def test_example_pipelines_load_run_and_pass_their_audits(
    name: str, engine: DuckDBEngine, tmp_path: Path
) -> None:
    path = tmp_path / name
    path.write_text(EXAMPLE_PIPELINES[name], encoding="utf-8")
    pipeline = load_file(path, "bigquery")
    assert pipeline.query is not None
    assert pipeline.incremental
    assert pipeline.inputs == frozenset({"events"})
    output = engine.select(
        render(pipeline.query, "duckdb"), {"start": DAY_START, "end": DAY_END}
    ).table
    run_audits(pipeline.name, str(path), pipeline.header.audits, output, "bigquery")

    column = pipeline.header.time
    selected = [e for e in EVENTS if in_day(getattr(e, column))]
    groups: dict[tuple[object, ...], list[Event]] = defaultdict(list)
    if name == "hourly_event_counts.sql":
        for e in selected:
            hour = e.received_at.replace(minute=0, second=0, microsecond=0)
            groups[(hour, e.source, e.event if e.event is not None else e.type)].append(e)
        key_columns = ["hour", "source", "event_name"]
        value_columns = ["events", "people"]
    else:
        for e in selected:
            day = e.timestamp.replace(hour=0, minute=0, second=0, microsecond=0)
            groups[(day, json_value(e.properties, "plan") or "unknown")].append(e)
        key_columns = ["day", "plan"]
        value_columns = ["events", "active_users"]
    expected = sorted(
        (*key, len(mine), len({e.person for e in mine})) for key, mine in groups.items()
    )
    got = sorted(tuple(row[c] for c in key_columns + value_columns) for row in output.to_pylist())
    assert got == [tuple(row) for row in expected]


# -- (c) what cannot be transpiled is an error naming the file and line ---------------

UNTRANSLATABLE = {
    "array_agg_limit": (
        "SELECT\n  user_id,\n  -- the first three pages each person saw\n"
        "  ARRAY_AGG(name ORDER BY timestamp LIMIT 3) AS first_pages\n"
        "FROM events\nGROUP BY user_id\n",
        4,
    ),
    "approx_top_count": (
        "SELECT\n  source,\n\n  APPROX_TOP_COUNT(event, 3) AS top_events\n"
        "FROM events\nGROUP BY source\n",
        4,
    ),
}


@pytest.mark.parametrize("name", sorted(UNTRANSLATABLE))
def test_untranslatable_construct_names_file_and_line(name: str) -> None:
    source, line = UNTRANSLATABLE[name]
    path = f"pipelines/{name}.sql"
    query = parse(source, "bigquery", path)  # it parses: only rendering fails
    with pytest.raises(PipelineError) as caught:
        render(query, "duckdb")
    error = caught.value
    assert error.path == path
    assert "cannot translate to duckdb" in str(error)
    assert error.hint is not None
    assert error.line == line, f"expected line {line}, got {error.line}: {error}"
    assert str(error).startswith(f"{path}:{line}: ")


def _cast_to_int64(text: str | None) -> list[tuple[object, ...]]:
    """CAST(JSON_VALUE(...) AS INT64) of ``text`` (a STRING the query types), on DuckDB."""
    import duckdb

    literal = json.dumps({"a": text})  # the test's own values: no quote to escape
    bigquery = (
        f"WITH t AS (SELECT '{literal}' AS p) SELECT CAST(JSON_VALUE(p, '$.a') AS INT64) FROM t"
    )
    return (
        duckdb.connect().execute(render(parse(bigquery, "bigquery", "t.sql"), "duckdb")).fetchall()
    )


@pytest.mark.parametrize(
    ("text", "expected"),
    [("6", 6), (" -12 ", -12), ("0x1F", 31), ("-0x1F", -31), (None, None)],
)
def test_cast_of_text_to_int64_takes_an_integer(text: str | None, expected: int | None) -> None:
    assert _cast_to_int64(text) == [(expected,)]


@pytest.mark.parametrize("text", ["6.7", "6.3", "1e3", "apple", "", "99999999999999999999"])
def test_cast_of_text_to_int64_fails_on_anything_else_as_bigquery_does(text: str) -> None:
    # DuckDB's own cast made '6.7' a 7 and '1e3' a 1000: a number no other engine gives.
    import duckdb

    with pytest.raises(duckdb.Error, match=r"Bad int64 value|Could not convert"):
        _cast_to_int64(text)


@pytest.mark.parametrize("dialect", ["duckdb", "postgres"])
def test_nested_zone_conversions_render_to_a_bounded_query(dialect: str) -> None:
    # Reading a repeated civil time as BigQuery does writes the civil time out eight
    # times; nested conversions multiplied that at each level (six levels: 6 MB, a minute
    # to render at load). A civil time already holding one keeps the engine's reading.
    inner = "c"
    for zone in ["America/New_York", "Europe/Berlin", "Asia/Tokyo", "America/Havana"]:
        inner = f"TIMESTAMP(DATETIME({inner}, 'Europe/Paris'), '{zone}')"
    query = parse(f"SELECT {inner} AS t FROM x", "bigquery", "nested.sql")
    assert len(render(query, dialect)) < 30_000


def test_a_zone_read_several_times_is_translated_alike_everywhere() -> None:
    # The earlier-instant rewrite reads its zone five times; one node shared by all of them
    # was rewritten by a later fix in one place only (PostgreSQL's JSON_VALUE, checked for
    # a scalar in four places and not in the fifth).
    query = parse(
        "SELECT TIMESTAMP(DATETIME '2026-11-01 01:30:00', JSON_VALUE(properties, '$.tz')) AS t "
        "FROM events",
        "bigquery",
        "zone.sql",
    )
    rendered = render(query, "postgres")
    assert rendered.count("JSON_EXTRACT_PATH_TEXT") == rendered.count("JSON_TYPEOF") > 1
