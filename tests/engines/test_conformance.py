"""Conformance: the same pipelines on the same events give the same tables on every engine.

One project (the example pipelines of ``headwater init``, the golden BigQuery
queries of ``tests/golden/transpile`` made pipelines, and pipelines of every
kind: full refresh, event time with late events, a pipeline reading another, a
Python pipeline reading through ``ctx.sql``) runs on each engine of
``conftest.ENGINES`` with :class:`Workspace`, a fixed clock and its own
metadata: first a backfill over the days, then late events and a scheduler
pass. Every output table (and ``events`` and ``failed_events`` themselves) is
then compared with the reference engine's. Only what is representational is
normalised: row order, the time zone a timestamp is expressed in, the width of
an integer type (DuckDB's SUM gives a DECIMAL(38, 0): an integer too), and
floats within 1e-9. Values, NULLs, column names and whether a column holds
integers, floats, text, dates or timestamps must agree.

The reference engine's results are also checked against the same figures
computed here in Python (BigQuery's semantics), so two engines agreeing on a
wrong answer fail too. The engine-level contracts (dedupe, ``replace_interval``,
read-only ``query``) run on every engine through the ``engine`` fixture.
"""

from __future__ import annotations

import math
import random
import textwrap
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from headwater.cli.scaffold import EXAMPLE_PIPELINES, init_project
from headwater.config.project import load_project
from headwater.core import jsonio
from headwater.core.types import Interval
from headwater.process.service import Progress
from headwater.runtime.workspace import Workspace
from headwater.state import StateStore
from headwater.store import schema
from headwater.store.engine import Engine, Fence, IngestBatch
from headwater.store.errors import Fenced, QueryError, ReadOnlyQuery, StoreUnavailable
from tests.engines.conftest import ENGINE_NAMES, REFERENCE, open_engine

DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
Row = dict[str, Any]

# Thursday 27 February to Sunday 2 March 2025: the days cross a month boundary and
# the start of a BigQuery week (Sunday).
DAYS = [datetime(2025, 2, 27, tzinfo=UTC) + k * DAY for k in range(4)]
#: The clock of the backfill: every event of DAYS has arrived by then.
FIRST_PASS = datetime(2025, 3, 3, 6, tzinfo=UTC)
#: The clock of the scheduler pass after the late events, which arrive in between.
SECOND_PASS = datetime(2025, 3, 3, 12, tzinfo=UTC)
FLOAT_TOLERANCE = 1e-9


# -- the events ---------------------------------------------------------------------

MISSING = object()
#: Event names as sent: unicode, emoji, and what CSV and COPY must keep apart
#: (quotes, commas, a newline, a tab, a backslash and the text "\N").
EVENT_NAMES = (
    "Page Viewed",
    "Order Completed",
    "Añadido al carrito",
    "注文完了 🎉",
    'Said "hi", then left',
    "multi\nline\tname \\N",
)
PAGE_NAMES: tuple[str | None, ...] = ("Home", "Pricing", "", None, "Ñandú")
PLANS: tuple[object, ...] = (
    "free", "free", "pro", "team", "プロ", "éco", None, MISSING, MISSING, 3, True,
    {"tier": "gold"},
)  # fmt: skip
PRICES: tuple[object, ...] = (12, 9.5, "9.5", "free", MISSING)
QUANTITIES: tuple[object, ...] = ("3", "2.5", 7, "abc", "-4", MISSING)
ITEMS: tuple[object, ...] = (
    [{"sku": "A1"}, {"sku": "Ü2"}],
    [],
    MISSING,
    [{"sku": "C3"}, {"sku": None}],
)
CONTEXTS: tuple[object, ...] = (
    {"page": {"path": "/pricing"}},
    {"page": {"path": {"raw": "/p"}}},
    {"locale": "ja-JP", "page": {"path": "/注文"}},
    None,
)


def _json(document: object) -> str | None:
    """JSON text as the collector stores it (compact UTF-8, through ``jsonio``)."""
    return None if document is None else jsonio.dumps_str(document)


def _properties(rng: random.Random) -> dict[str, object]:
    properties: dict[str, object] = {}
    for key, choices in (("plan", PLANS), ("price", PRICES), ("quantity", QUANTITIES)):
        value = rng.choice(choices)
        if value is not MISSING:
            properties[key] = value
    items = rng.choice(ITEMS)
    if items is not MISSING:
        properties["items"] = items
    return properties


def _event(rng: random.Random, message_id: str, moment: datetime, received_at: datetime) -> Row:
    kind = rng.choices(("track", "page", "identify", "alias", "screen"), (12, 4, 2, 1, 1))[0]
    person = rng.randrange(12)
    who = rng.random()
    user = ("usuário-ß" if person == 0 else f"user-{person}") if who < 0.75 else None
    anonymous = f"anon-{person}" if who >= 0.5 or user is None else None
    properties = None if kind in ("identify", "alias") else _properties(rng)
    return {
        "message_id": message_id,
        "source": rng.choice(("web", "web", "ios")),
        "type": kind,
        "event": rng.choice(EVENT_NAMES) if kind == "track" else None,
        "name": rng.choice(PAGE_NAMES) if kind in ("page", "screen") else None,
        "user_id": user,
        "anonymous_id": anonymous,
        "timestamp": moment,
        "original_timestamp": moment,
        "sent_at": moment if rng.random() < 0.5 else None,
        "received_at": received_at,
        "properties": _json(properties),
        "traits": _json({"email": f"{user}@example.com", "名前": "テスト"})
        if kind == "identify" and user
        else None,
        "context": _json(rng.choice(CONTEXTS)),
    }


def _unique_moment(rng: random.Random, day: datetime, used: set[datetime]) -> datetime:
    """A time in ``day`` no other event has: window functions then have one order."""
    while True:
        moment = day + timedelta(
            seconds=rng.randrange(86_400), microseconds=rng.randrange(1_000_000)
        )
        if moment not in used:
            used.add(moment)
            return moment


def make_events() -> tuple[list[Row], list[Row]]:
    """The events of DAYS (arrived before FIRST_PASS) and the late ones (before
    SECOND_PASS, of the first two days), deterministic."""
    rng = random.Random(20250227)
    used: set[datetime] = set()
    lateness = (0.25, 3.0, 45.0, 150.0, 1200.0, 7200.0)  # seconds; some cross an hour
    events = []
    for index in range(168):
        moment = _unique_moment(rng, DAYS[index % len(DAYS)], used)
        late = timedelta(seconds=rng.choice(lateness))
        events.append(_event(rng, f"m-{index:03d}", moment, moment + late))
    # The two hours before the last day ends (golden date_sub_timestamp_sub reads them).
    for index, minute in enumerate((5, 95)):
        moment = DAYS[3] + 22 * HOUR + timedelta(minutes=minute, microseconds=123_456)
        used.add(moment)
        events.append(_event(rng, f"edge-{index}", moment, moment + timedelta(seconds=2)))
    late_events = []
    for index in range(14):
        moment = _unique_moment(rng, DAYS[index % 2], used)
        received = FIRST_PASS + timedelta(minutes=7 + 19 * index, microseconds=index)
        late_events.append(_event(rng, f"late-{index:02d}", moment, received))
    # Someone new, with a plan nobody had, and a message sent again (already stored).
    newcomer = _event(rng, "late-new", DAYS[0] + 5 * HOUR, FIRST_PASS + 3 * HOUR)
    newcomer.update(user_id="user-nouveau", type="track", event="Signed Up",
                    properties=_json({"plan": "scale"}))  # fmt: skip
    late_events.append(newcomer)
    late_events.append(dict(events[5], received_at=FIRST_PASS + 4 * HOUR))
    return events, late_events


EVENTS, LATE_EVENTS = make_events()
FAILED = [
    {
        "id": f"f-{index}",
        "source": source,
        "received_at": DAYS[index % 4] + timedelta(hours=3 + index, microseconds=index),
        "code": code,
        "field": field_name,
        "message": message,
        "payload": payload,
        "replayed_at": None,
    }
    for index, (source, code, field_name, message, payload) in enumerate(
        [
            ("web", "invalid_json", None, "body is not JSON", None),
            ("web", "missing_field", "type", "type is required", '{"event":"Ünïcode"}'),
            ("ios", "missing_field", "messageId", "messageId is required", '{"type":"track"}'),
            (None, "unknown_source", None, 'no source for key "wk_…"', '{"type":"page"}'),
            ("ios", "too_large", "properties", "event is 40000 bytes, over 32768", None),
        ]
    )
]


def events_table(rows: Sequence[Row]) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=schema.EVENTS)


def failed_table(rows: Sequence[Row]) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=schema.FAILED_EVENTS)


def ingest(engine: Engine, rows: Sequence[Row], failed: Sequence[Row] = ()) -> list[bool]:
    flags: list[bool] = engine.ingest(
        IngestBatch(events_table(rows), failed_table(failed))
    ).to_pylist()
    return flags


# -- the pipelines --------------------------------------------------------------------

GOLDEN = Path(__file__).resolve().parent.parent / "golden" / "transpile"
GOLDEN_NAMES = sorted(p.name.removesuffix(".bigquery.sql") for p in GOLDEN.glob("*.bigquery.sql"))
#: Golden queries that read one interval: (time, time_column) of their header.
GOLDEN_INCREMENTAL = {
    "timestamp_trunc": ("received_at", "hour"),
    "qualified_table_params": ("received_at", "first_received_at"),
}


def golden_pipeline(name: str) -> str:
    if name in GOLDEN_INCREMENTAL:
        time, column = GOLDEN_INCREMENTAL[name]
        header = (
            f'schedule = "@daily"\nkind = "incremental"\ntime = "{time}"\n'
            f'time_column = "{column}"\n'
        )
    else:
        header = 'schedule = "@daily"\nkind = "full"\n'
    return f"/* headwater\n{header}*/\n" + (GOLDEN / f"{name}.bigquery.sql").read_text("utf-8")


EXTRA_PIPELINES = {
    # Event time, no JSON: the late-event path on its own.
    "people_by_type.sql": """\
        /* headwater
        description = "Events and people per type and day of event time."
        schedule = "@daily"
        kind = "incremental"
        time = "timestamp"
        time_column = "day"
        key = ["day", "type"]
        audits = [ { unique = ["day", "type"] }, { not_null = ["people"] } ]
        */
        SELECT
          TIMESTAMP_TRUNC(timestamp, DAY) AS day,
          type,
          COUNT(*) AS events,
          COUNT(DISTINCT COALESCE(user_id, anonymous_id)) AS people,
          MIN(timestamp) AS first_at,
          MAX(received_at) AS last_received_at
        FROM events
        WHERE timestamp >= @start AND timestamp < @end
        GROUP BY day, type
        """,
    # A full refresh: the whole table each run.
    "event_summary.sql": """\
        /* headwater
        description = "All time, per source and what happened."
        schedule = "@daily"
        kind = "full"
        */
        SELECT
          source,
          COALESCE(event, name, type) AS what,
          COUNT(*) AS events,
          COUNT(DISTINCT user_id) AS users,
          COUNT(DISTINCT COALESCE(user_id, anonymous_id)) / COUNT(*) AS people_per_event,
          AVG(LENGTH(COALESCE(user_id, anonymous_id))) AS mean_person_length,
          MIN(timestamp) AS first_at,
          MAX(received_at) AS last_received_at,
          LOGICAL_OR(properties IS NULL) AS some_without_properties
        FROM events
        GROUP BY source, what
        """,
    # A pipeline reading another pipeline.
    "daily_totals.sql": """\
        /* headwater
        description = "Per day of arrival and source, from hourly_event_counts."
        schedule = "@daily"
        kind = "incremental"
        time = "received_at"
        time_column = "day"
        audits = [ { unique = ["day", "source"] } ]
        */
        SELECT
          TIMESTAMP_TRUNC(hour, DAY) AS day,
          source,
          SUM(events) AS events,
          MAX(people) AS busiest_hour_people,
          COUNT(*) AS rows_read,
          COUNT(DISTINCT event_name) AS names
        FROM hourly_event_counts
        WHERE hour >= @start AND hour < @end
        GROUP BY day, source
        """,
    # The built-in table of refused events.
    "failures.sql": """\
        /* headwater
        schedule = "@daily"
        kind = "full"
        */
        SELECT
          code,
          COUNT(*) AS failures,
          COUNT(DISTINCT source) AS sources,
          MIN(received_at) AS first_at,
          MIN(JSON_VALUE(payload, '$.type')) AS some_type
        FROM failed_events
        GROUP BY code
        """,
    # Python, reading a pipeline through ctx.sql (event time: re-run after late events).
    "type_share.py": '''\
        """Each type's share of the day's people and events."""

        from __future__ import annotations

        import pyarrow as pa

        from headwater.process import Context, pipeline


        @pipeline(
            schedule="@daily",
            kind="incremental",
            time="timestamp",
            time_column="day",
            inputs=["people_by_type"],
            audits=[{"unique": ["day", "type"]}],
        )
        def type_share(ctx: Context) -> pa.Table:
            rows = ctx.sql(
                "SELECT day, type, people, events FROM people_by_type "
                "WHERE day >= @start AND day < @end ORDER BY type"
            ).to_pylist()
            people = sum(row["people"] for row in rows)
            events = sum(row["events"] for row in rows)
            return pa.table(
                {
                    "day": pa.array([row["day"] for row in rows], pa.timestamp("us", tz="UTC")),
                    "type": pa.array([row["type"] for row in rows], pa.string()),
                    "people_share": pa.array([r["people"] / people for r in rows], pa.float64()),
                    "events_share": pa.array([r["events"] / events for r in rows], pa.float64()),
                    "rank": pa.array(list(range(1, len(rows) + 1)), pa.int64()),
                }
            )
        ''',
    # Python, reading events through ctx.sql: the values an engine hands back to Python.
    "lateness.py": '''\
        """How late events arrive, per day of arrival."""

        from __future__ import annotations

        import statistics

        import pyarrow as pa

        from headwater.process import Context, pipeline


        @pipeline(schedule="@daily", kind="incremental", time="received_at", time_column="day")
        def lateness(ctx: Context) -> pa.Table:
            rows = ctx.sql(
                "SELECT received_at, timestamp, source FROM events "
                "WHERE received_at >= @start AND received_at < @end"
            ).to_pylist()
            by_source: dict[str, list[float]] = {}
            for row in rows:
                late = (row["received_at"] - row["timestamp"]).total_seconds()
                by_source.setdefault(row["source"], []).append(late)
            sources = sorted(by_source)
            return pa.table(
                {
                    "day": pa.array([ctx.start] * len(sources), pa.timestamp("us", tz="UTC")),
                    "source": pa.array(sources, pa.string()),
                    "events": pa.array([len(by_source[s]) for s in sources], pa.int64()),
                    "median_seconds": pa.array(
                        [statistics.median(by_source[s]) for s in sources], pa.float64()
                    ),
                    "max_seconds": pa.array([max(by_source[s]) for s in sources], pa.float64()),
                }
            )
        ''',
}

EXAMPLES = sorted(name.removesuffix(".sql") for name in EXAMPLE_PIPELINES)
PIPELINES = sorted(
    [*EXAMPLES, *(f"golden_{n}" for n in GOLDEN_NAMES), *(Path(f).stem for f in EXTRA_PIPELINES)]
)
TABLES = ["events", "failed_events", *PIPELINES]


def write_project(root: Path) -> None:
    """``headwater init``, plus the golden and extra pipelines."""
    init_project(root)
    config = root / "headwater.toml"
    text = config.read_text("utf-8")
    assert text.count("[pipelines]\n") == 1
    config.write_text(text.replace("[pipelines]\n", "[pipelines]\nmax_catchup = 1000\n"), "utf-8")
    folder = root / "pipelines"
    for name in GOLDEN_NAMES:
        (folder / f"golden_{name}.sql").write_text(golden_pipeline(name), "utf-8")
    for name, text in EXTRA_PIPELINES.items():
        (folder / name).write_text(textwrap.dedent(text), "utf-8")


# -- one engine's run of the whole project -------------------------------------------------


@dataclass
class Outcome:
    """What one engine made of the project."""

    engine: str
    flags: list[bool] = field(default_factory=list)
    late_flags: list[bool] = field(default_factory=list)
    #: pipeline -> the error of its backfill
    errors: dict[str, str] = field(default_factory=dict)
    #: table -> its rows after the backfill
    tables: dict[str, pa.Table] = field(default_factory=dict)
    #: pipeline -> interval start -> (status, rows written) after the backfill
    intervals: dict[str, dict[datetime, tuple[str, int | None]]] = field(default_factory=dict)
    #: errors of the scheduler pass after the late events ("pipeline: error")
    late_errors: list[str] = field(default_factory=list)
    late_tables: dict[str, pa.Table] = field(default_factory=dict)


def _snapshot(engine: Engine) -> dict[str, pa.Table]:
    present = set(engine.list_tables())
    return {name: engine.query(f'SELECT * FROM "{name}"') for name in TABLES if name in present}


def _intervals(metadata: StateStore) -> dict[str, dict[datetime, tuple[str, int | None]]]:
    result: dict[str, dict[datetime, tuple[str, int | None]]] = {}
    for name in PIPELINES:
        written = {
            run.interval.start: run.rows_written for run in metadata.runs.runs(name, limit=1000)
        }
        result[name] = {
            start: (state.status, written.get(start))
            for start, state in metadata.runs.intervals(name).items()
        }
    return result


def run_project(name: str, request: pytest.FixtureRequest, folder: Path) -> Outcome:
    """Ingest, backfill every pipeline, ingest late events, one scheduler pass."""
    root = folder / "project"
    write_project(root)
    engine = open_engine(name, request, folder / "store")
    metadata = StateStore.in_folder(folder / "metadata")
    now = [FIRST_PASS]
    service = Workspace(
        load_project(root), engine, metadata, clock=lambda: now[0], sleep=lambda _: None
    )
    outcome = Outcome(name)
    try:
        for offset in range(0, len(EVENTS), 50):
            failed = FAILED if offset == 0 else []
            outcome.flags += ingest(engine, EVENTS[offset : offset + 50], failed)
        for pipeline in service.graph():
            try:
                service.backfill(pipeline.name, DAYS[0], FIRST_PASS)
            except Exception as exc:  # recorded; the tests say which engine failed how
                outcome.errors[pipeline.name] = f"{type(exc).__name__}: {exc}"
        outcome.tables = _snapshot(engine)
        outcome.intervals = _intervals(metadata)

        outcome.late_flags = ingest(engine, LATE_EVENTS)
        now[0] = SECOND_PASS

        def progress(step: Progress) -> None:
            if step.error is not None:
                when = f"{step.interval.start:%Y-%m-%d %H:%M}"
                outcome.late_errors.append(f"{step.pipeline} {when}: {step.error}")

        try:
            service.run_due(progress)
        except Exception as exc:
            outcome.late_errors.append(f"the scheduler pass: {type(exc).__name__}: {exc}")
        outcome.late_tables = _snapshot(engine)
    finally:
        metadata.close()
        engine.close()
    return outcome


class Runs:
    """Each engine's outcome, computed on first use and kept for the module."""

    def __init__(self, request: pytest.FixtureRequest, folder: Path) -> None:
        self._request = request
        self._folder = folder
        self._outcomes: dict[str, Outcome] = {}

    def __getitem__(self, name: str) -> Outcome:
        if name not in self._outcomes:
            self._outcomes[name] = run_project(name, self._request, self._folder / name)
        return self._outcomes[name]


@pytest.fixture(scope="module")
def runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Runs:
    return Runs(request, tmp_path_factory.mktemp("conformance"))


# -- comparing tables -------------------------------------------------------------------


def _family(kind: pa.DataType) -> str:
    """What a column holds, without its representation (integer width, time zone)."""
    if pa.types.is_boolean(kind):
        return "boolean"
    if pa.types.is_integer(kind):
        return "integer"
    if pa.types.is_decimal(kind):
        return "integer" if kind.scale == 0 else f"decimal(scale {kind.scale})"
    if pa.types.is_floating(kind):
        return "float"
    if pa.types.is_string(kind) or pa.types.is_large_string(kind):
        return "text"
    if pa.types.is_date(kind):
        return "date"
    if pa.types.is_timestamp(kind):
        return "timestamp"
    return str(kind)


def _value(value: object) -> object:
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    if isinstance(value, Decimal) and value == value.to_integral_value():
        return int(value)
    return value


def _sort_key(row: tuple[object, ...]) -> tuple[object, ...]:
    key: list[object] = []
    for value in row:
        if value is None:
            key.append((0,))
        elif isinstance(value, bool):
            key.append((1, "b", value))
        elif isinstance(value, int | float | Decimal):
            key.append((1, "n", round(float(value), 6)))
        elif isinstance(value, datetime | date):
            key.append((1, type(value).__name__, value))
        else:
            key.append((1, type(value).__name__, str(value)))
    return tuple(key)


def normalised(table: pa.Table) -> tuple[list[tuple[str, str]], list[tuple[object, ...]]]:
    """(column, family) pairs and the rows, in one order."""
    columns = [(f.name, _family(f.type)) for f in table.schema]
    rows = [tuple(_value(v) for v in row.values()) for row in table.to_pylist()]
    return columns, sorted(rows, key=_sort_key)


def _same(a: object, b: object) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    if isinstance(a, float | int | Decimal) and isinstance(b, float | int | Decimal):
        if isinstance(a, float) or isinstance(b, float):
            return math.isclose(a, b, rel_tol=FLOAT_TOLERANCE, abs_tol=FLOAT_TOLERANCE)
        return a == b
    return type(a) is type(b) and a == b


#: Tables of approximate aggregates (HyperLogLog on Spark): counts may differ by this much.
APPROXIMATE = {"golden_approx_count_distinct": 0.05}


def _close(a: object, b: object, rel: float) -> bool:
    if rel and isinstance(a, int | float) and isinstance(b, int | float):
        return math.isclose(a, b, rel_tol=rel)
    return _same(a, b)


def differences(
    reference: pa.Table, other: pa.Table, names: tuple[str, str], rel: float = 0.0
) -> list[str]:
    """What differs between two tables once normalised; empty when they agree (numbers
    within ``rel`` of each other for an approximate table)."""
    ref_columns, ref_rows = normalised(reference)
    other_columns, other_rows = normalised(other)
    if ref_columns != other_columns:
        return [f"columns: {names[0]} {ref_columns}", f"columns: {names[1]} {other_columns}"]
    found = []
    if len(ref_rows) != len(other_rows):
        found.append(f"{len(ref_rows)} rows on {names[0]}, {len(other_rows)} on {names[1]}")
    for ref_row, other_row in zip(ref_rows, other_rows, strict=False):
        if not all(_close(a, b, rel) for a, b in zip(ref_row, other_row, strict=True)):
            found.append(f"{names[0]}: {ref_row}\n  {names[1]}: {other_row}")
    if found and len(ref_rows) != len(other_rows):
        only_ref = [r for r in ref_rows if r not in other_rows]
        only_other = [r for r in other_rows if r not in ref_rows]
        found = [
            found[0],
            f"only on {names[0]}: {only_ref[:5]}",
            f"only on {names[1]}: {only_other[:5]}",
        ]
    return found


def assert_same_table(
    outcome_tables: tuple[dict[str, pa.Table], dict[str, pa.Table]],
    errors: tuple[dict[str, str], dict[str, str]],
    engines: tuple[str, str],
    table: str,
) -> None:
    for tables, errs, engine in zip(outcome_tables, errors, engines, strict=True):
        if table in errs:
            pytest.fail(f"{table} failed on {engine}: {errs[table]}")
        assert table in tables, f"{table} was never published on {engine}"
    found = differences(
        outcome_tables[0][table], outcome_tables[1][table], engines, APPROXIMATE.get(table, 0.0)
    )
    assert not found, f"{table} differs between {engines[0]} and {engines[1]}:\n" + "\n".join(
        found[:12]
    )


# -- BigQuery's answers, computed here -------------------------------------------------------


def json_value(text: str | None, *path: str) -> str | None:
    """BigQuery's JSON_VALUE: a scalar as text; objects, arrays, null and absence are NULL."""
    value: object = None if text is None else jsonio.loads(text)
    for key in path:
        if not isinstance(value, dict) or key not in value:
            return None
        value = value[key]
    if value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _stored(rows: Sequence[Row]) -> list[Row]:
    """The rows the store keeps: the first of each (source, message_id)."""
    kept: dict[tuple[str, str], Row] = {}
    for row in rows:
        kept.setdefault((row["source"], row["message_id"]), row)
    return list(kept.values())


def _person(row: Row) -> str | None:
    person = row["user_id"] if row["user_id"] is not None else row["anonymous_id"]
    return person if isinstance(person, str) else None


def _truncate(moment: datetime, unit: timedelta) -> datetime:
    seconds = int(unit.total_seconds())
    return datetime.fromtimestamp(int(moment.timestamp()) // seconds * seconds, UTC)


def expect_daily_active_users(
    rows: Sequence[Row], days: Sequence[datetime]
) -> set[tuple[Any, ...]]:
    people: defaultdict[tuple[datetime, str], set[str | None]] = defaultdict(set)
    counts: Counter[tuple[datetime, str]] = Counter()
    for row in rows:
        day = _truncate(row["timestamp"], DAY)
        if day in days:
            key = (day, json_value(row["properties"], "plan") or "unknown")
            people[key].add(_person(row))
            counts[key] += 1
    return {(*k, len(people[k] - {None}), n) for k, n in counts.items()}


def expect_hourly_event_counts(rows: Sequence[Row], until: datetime) -> set[tuple[Any, ...]]:
    people: defaultdict[tuple[datetime, str, str], set[str | None]] = defaultdict(set)
    counts: Counter[tuple[datetime, str, str]] = Counter()
    for row in rows:
        if row["received_at"] < until:
            what = row["event"] if row["event"] is not None else row["type"]
            key = (_truncate(row["received_at"], HOUR), row["source"], what)
            people[key].add(_person(row))
            counts[key] += 1
    return {(*k, n, len(people[k] - {None})) for k, n in counts.items()}


def expect_people_by_type(rows: Sequence[Row]) -> set[tuple[Any, ...]]:
    groups: defaultdict[tuple[datetime, str], list[Row]] = defaultdict(list)
    for row in rows:
        groups[(_truncate(row["timestamp"], DAY), row["type"])].append(row)
    return {
        (
            *key,
            len(mine),
            len({_person(r) for r in mine} - {None}),
            min(r["timestamp"] for r in mine),
            max(r["received_at"] for r in mine),
        )
        for key, mine in groups.items()
    }


def _rows(table: pa.Table, columns: Sequence[str]) -> set[tuple[Any, ...]]:
    return {tuple(_value(row[c]) for c in columns) for row in table.to_pylist()}


# -- 1. the pipelines: every table the same on every engine ---------------------------------

OTHERS = [name for name in ENGINE_NAMES if name != REFERENCE]


def test_the_project_has_every_kind_of_pipeline() -> None:
    assert len(GOLDEN_NAMES) >= 15
    assert {"hourly_event_counts", "daily_active_users"} <= set(PIPELINES)
    assert len(PIPELINES) == len(set(PIPELINES)) == 2 + len(GOLDEN_NAMES) + len(EXTRA_PIPELINES)


@pytest.mark.parametrize("engine_name", ENGINE_NAMES)
def test_every_event_is_ingested_once_and_the_resent_one_is_refused(
    runs: Runs, engine_name: str
) -> None:
    outcome = runs[engine_name]
    assert outcome.flags == [True] * len(EVENTS)
    assert outcome.late_flags == [True] * (len(LATE_EVENTS) - 1) + [False]
    assert outcome.tables["events"].num_rows == len(EVENTS)
    assert outcome.late_tables["events"].num_rows == len(EVENTS) + len(LATE_EVENTS) - 1
    assert outcome.tables["failed_events"].num_rows == len(FAILED)


@pytest.mark.parametrize("engine_name", ENGINE_NAMES)
def test_ingested_rows_come_back_as_they_were_sent(runs: Runs, engine_name: str) -> None:
    """Every column of every event: unicode, quotes, newlines, "" apart from NULL, µs."""
    expected = events_table(EVENTS).sort_by("message_id")
    stored = runs[engine_name].tables["events"].select(schema.EVENTS.names)
    found = differences(expected, stored.sort_by("message_id"), ("sent", engine_name))
    assert not found, "\n".join(found[:12])
    failed = runs[engine_name].tables["failed_events"].select(schema.FAILED_EVENTS.names)
    found = differences(failed_table(FAILED), failed, ("sent", engine_name))
    assert not found, "\n".join(found[:12])


@pytest.mark.parametrize("engine_name", ENGINE_NAMES)
def test_example_pipelines_give_bigquerys_answers(runs: Runs, engine_name: str) -> None:
    outcome = runs[engine_name]
    for name in EXAMPLES:
        assert name not in outcome.errors, outcome.errors[name]
    hourly = outcome.tables["hourly_event_counts"]
    columns = ["hour", "source", "event_name", "events", "people"]
    assert _rows(hourly, columns) == expect_hourly_event_counts(EVENTS, FIRST_PASS)
    dau = outcome.tables["daily_active_users"]
    got = _rows(dau, ["day", "plan", "active_users", "events"])
    want = expect_daily_active_users(EVENTS, DAYS)
    assert got == want, f"only {engine_name}: {got - want}\nonly BigQuery: {want - got}"


@pytest.mark.parametrize("engine_name", OTHERS)
@pytest.mark.parametrize("table", TABLES)
def test_after_the_backfill_each_table_is_the_same_as_on_the_reference_engine(
    runs: Runs, engine_name: str, table: str
) -> None:
    reference, other = runs[REFERENCE], runs[engine_name]
    assert_same_table(
        (reference.tables, other.tables),
        (reference.errors, other.errors),
        (REFERENCE, engine_name),
        table,
    )
    if table in PIPELINES:
        # The same intervals ran, each writing as many rows.
        assert other.intervals[table] == reference.intervals[table]
        assert reference.intervals[table], f"{table} recorded no interval"
        assert reference.tables[table].num_rows > 0, f"{table} is empty: nothing is compared"


#: What the late events change, and what computes it.
LATE_PIPELINES = ("people_by_type", "daily_active_users", "type_share", "hourly_event_counts")


@pytest.mark.parametrize("engine_name", ENGINE_NAMES)
def test_late_events_reopen_their_days_and_the_pass_reruns_them(
    runs: Runs, engine_name: str
) -> None:
    outcome = runs[engine_name]
    watched = ("the scheduler pass", *LATE_PIPELINES)
    assert [e for e in outcome.late_errors if e.startswith(watched)] == []
    everything = _stored([*EVENTS, *LATE_EVENTS])
    columns = ["day", "type", "events", "people", "first_at", "last_received_at"]
    before = _rows(outcome.tables["people_by_type"], columns)
    after = _rows(outcome.late_tables["people_by_type"], columns)
    assert before == expect_people_by_type(EVENTS)
    assert after == expect_people_by_type(everything)
    changed = {row[0] for row in after ^ before}
    assert changed == {DAYS[0], DAYS[1]}  # the days of the late events, and only those
    # The example event-time pipeline was re-run for the same days (its values, JSON_VALUE
    # included, are checked against BigQuery's above and across engines below).
    dau = ["day", "plan", "active_users", "events"]
    dau_before = _rows(outcome.tables["daily_active_users"], dau)
    dau_after = _rows(outcome.late_tables["daily_active_users"], dau)
    assert {row[0] for row in dau_after ^ dau_before} == {DAYS[0], DAYS[1]}
    # The Python pipeline downstream was re-run from the re-published input.
    shares = outcome.late_tables["type_share"].to_pylist()
    for day in DAYS:
        people = {r[1]: r[3] for r in after if r[0] == day}
        total = sum(people.values())
        mine = {r["type"]: r["people_share"] for r in shares if _value(r["day"]) == day}
        assert mine.keys() == people.keys()
        for kind, share in mine.items():
            assert math.isclose(share, people[kind] / total, rel_tol=1e-12)
    # Arrivals after the backfill: the hours of the late events were run by the pass.
    hourly = _rows(
        outcome.late_tables["hourly_event_counts"],
        ["hour", "source", "event_name", "events", "people"],
    )
    assert hourly == expect_hourly_event_counts(everything, SECOND_PASS)


@pytest.mark.parametrize("engine_name", OTHERS)
def test_after_the_late_events_every_table_is_the_same_as_on_the_reference_engine(
    runs: Runs, engine_name: str
) -> None:
    reference, other = runs[REFERENCE], runs[engine_name]
    assert reference.late_errors == []
    problems = [f"on {engine_name}: {error}" for error in other.late_errors]
    for table in TABLES:
        if (table in reference.late_tables) != (table in other.late_tables):
            problems.append(f"{table}: published on one engine only")
        elif table in reference.late_tables:
            found = differences(
                reference.late_tables[table],
                other.late_tables[table],
                (REFERENCE, engine_name),
                APPROXIMATE.get(table, 0.0),
            )
            if found:
                problems.append(f"{table}:\n" + "\n".join(found[:4]))
    assert not problems, "\n".join(problems)


# -- 2. engine contracts, on every engine ------------------------------------------------

T0 = datetime(2025, 6, 1, tzinfo=UTC)


def _row(source: str, message_id: str, event: str, received_at: datetime = T0) -> Row:
    return {
        "message_id": message_id,
        "source": source,
        "type": "track",
        "event": event,
        "timestamp": received_at,
        "received_at": received_at,
        "properties": '{"n": 1}',
    }


def _stored_events(engine: Engine) -> list[tuple[str, str, str]]:
    rows = engine.query("SELECT source, message_id, event FROM events").to_pylist()
    return sorted((r["source"], r["message_id"], r["event"]) for r in rows)


def test_the_same_message_twice_is_stored_once(engine: Engine) -> None:
    assert ingest(engine, [_row("web", "a", "first"), _row("web", "b", "first")]) == [True, True]
    # The same pair again (with other content), the same id from another source, a new id.
    again = [_row("web", "a", "second"), _row("ios", "a", "second"), _row("web", "c", "second")]
    assert ingest(engine, again) == [False, True, True]
    assert ingest(engine, [_row("web", "b", "third"), _row("web", "a", "third")]) == [False, False]
    assert _stored_events(engine) == [
        ("ios", "a", "second"),
        ("web", "a", "first"),
        ("web", "b", "first"),
        ("web", "c", "second"),
    ]


def test_a_refused_duplicate_still_commits_the_failed_events_of_its_batch(engine: Engine) -> None:
    assert ingest(engine, [_row("web", "a", "first")]) == [True]
    assert ingest(engine, [_row("web", "a", "again")], FAILED[:2]) == [False]
    ids = engine.query("SELECT id FROM failed_events")["id"].to_pylist()
    assert sorted(ids) == ["f-0", "f-1"]
    assert _stored_events(engine) == [("web", "a", "first")]


def test_prune_dedupe_forgets_only_ids_received_before_the_cut(engine: Engine) -> None:
    old, new = T0, T0 + DAY
    rows = [_row("web", "old", "x", old), _row("web", "new", "x", new)]
    assert ingest(engine, rows) == [True, True]
    cut = int((T0 + HOUR).timestamp()) * 1_000_000
    assert engine.prune_dedupe(cut) == 1
    # Outside the window the old id is new again; the recent one is still known.
    assert ingest(engine, rows) == [True, False]


def _daily(rows: Sequence[tuple[datetime, str, int]]) -> pa.Table:
    return pa.table(
        {
            "day": pa.array([r[0] for r in rows], pa.timestamp("us", tz="UTC")),
            "plan": pa.array([r[1] for r in rows], pa.string()),
            "n": pa.array([r[2] for r in rows], pa.int64()),
        }
    )


def _content(engine: Engine, table: str) -> list[tuple[Any, ...]]:
    rows = engine.query(f'SELECT * FROM "{table}"').to_pylist()
    return sorted(tuple(_value(v) for v in row.values()) for row in rows)


def test_replace_interval_touches_only_its_interval(engine: Engine) -> None:
    d0, d1, d2, d3 = (T0 + k * DAY for k in range(4))
    engine.replace_interval("daily", "day", Interval(d0, d1), _daily([(d0, "a", 1)]))
    first = [(d1, "a", 2), (d1 + 23 * HOUR, "b", 3), (d1 + 2 * HOUR, "c", 4)]
    engine.replace_interval("daily", "day", Interval(d1, d2), _daily(first))
    engine.replace_interval("daily", "day", Interval(d2, d3), _daily([(d2, "a", 5)]))
    assert _content(engine, "daily") == sorted([(d0, "a", 1), *first, (d2, "a", 5)])

    # The day again: its rows go, the rows at the previous day and at the next start stay.
    engine.replace_interval("daily", "day", Interval(d1, d2), _daily([(d1, "z", 9)]))
    assert _content(engine, "daily") == [(d0, "a", 1), (d1, "z", 9), (d2, "a", 5)]

    # Two hours inside a day: only them.
    engine.replace_interval("daily", "day", Interval(d1, d1 + 2 * HOUR), _daily([]))
    assert _content(engine, "daily") == [(d0, "a", 1), (d2, "a", 5)]
    engine.replace_interval(
        "daily", "day", Interval(d2 - HOUR, d2 + HOUR), _daily([(d2 - HOUR, "y", 8)])
    )
    assert _content(engine, "daily") == [(d0, "a", 1), (d2 - HOUR, "y", 8)]


def test_replace_interval_on_a_date_column(engine: Engine) -> None:
    def table(rows: list[tuple[date, int]]) -> pa.Table:
        days = pa.array([r[0] for r in rows], pa.date32())
        return pa.table({"day": days, "n": pa.array([r[1] for r in rows], pa.int64())})

    d = [(T0 + k * DAY).date() for k in range(3)]
    t = [T0 + k * DAY for k in range(4)]
    engine.replace_interval("by_date", "day", Interval(t[0], t[2]), table([(d[0], 1), (d[1], 2)]))
    engine.replace_interval("by_date", "day", Interval(t[2], t[3]), table([(d[2], 3)]))
    # One day of the two: the other keeps its row.
    engine.replace_interval("by_date", "day", Interval(t[1], t[2]), table([(d[1], 7)]))
    assert _content(engine, "by_date") == [(d[0], 1), (d[1], 7), (d[2], 3)]


def test_replace_table_and_upsert(engine: Engine) -> None:
    engine.replace_table("scores", pa.table({"user_id": ["u1", "u2"], "score": [1.5, 2.0]}))
    engine.replace_table("scores", pa.table({"user_id": ["u3"], "score": [3.25]}))
    assert _content(engine, "scores") == [("u3", 3.25)]
    engine.upsert("scores", ["user_id"], pa.table({"user_id": ["u3", "u4"], "score": [4.0, 5.0]}))
    assert _content(engine, "scores") == [("u3", 4.0), ("u4", 5.0)]


def test_a_fenced_write_with_an_older_token_is_refused_and_changes_nothing(
    engine: Engine,
) -> None:
    """The fencing contract: per name, a write carrying a token smaller than one already
    accepted is refused, in the write's own transaction; equal or larger tokens publish."""
    d0, d1 = T0, T0 + DAY
    engine.replace_interval(
        "daily", "day", Interval(d0, d1), _daily([(d0, "a", 1)]), Fence("daily", 5)
    )
    with pytest.raises(Fenced):
        engine.replace_interval(
            "daily", "day", Interval(d0, d1), _daily([(d0, "stale", 0)]), Fence("daily", 4)
        )
    assert _content(engine, "daily") == [(d0, "a", 1)]
    # The same holder again (a backfill's next interval), then a newer holder.
    engine.replace_interval(
        "daily", "day", Interval(d0, d1), _daily([(d0, "b", 2)]), Fence("daily", 5)
    )
    engine.replace_interval(
        "daily", "day", Interval(d0, d1), _daily([(d0, "c", 3)]), Fence("daily", 9)
    )
    assert _content(engine, "daily") == [(d0, "c", 3)]
    with pytest.raises(Fenced):
        engine.replace_interval("daily", "day", Interval(d0, d1), _daily([]), Fence("daily", 8))
    assert _content(engine, "daily") == [(d0, "c", 3)]

    # Whole tables too, and each name has its own tokens.
    engine.replace_table(
        "scores", pa.table({"user_id": ["u1"], "score": [1.0]}), Fence("scores", 3)
    )
    with pytest.raises(Fenced):
        engine.replace_table(
            "scores", pa.table({"user_id": ["stale"], "score": [0.0]}), Fence("scores", 2)
        )
    assert _content(engine, "scores") == [("u1", 1.0)]
    assert "_headwater_fences" not in engine.list_tables()


WRITES = [
    "INSERT INTO events (message_id, source, type, timestamp, received_at) "
    "VALUES ('x', 'web', 'track', now(), now())",
    "UPDATE events SET event = 'changed'",
    "DELETE FROM events",
    "DROP TABLE events",
    "CREATE TABLE sneaky AS SELECT 1 AS x",
    "EXPLAIN ANALYZE DELETE FROM events",
]


@pytest.mark.parametrize("statement", WRITES, ids=lambda s: " ".join(s.split()[:2]))
def test_query_refuses_writes(engine: Engine, statement: str) -> None:
    assert ingest(engine, [_row("web", "a", "kept")]) == [True]
    tables = engine.list_tables()
    with pytest.raises(ReadOnlyQuery):
        engine.query(statement)
    assert _stored_events(engine) == [("web", "a", "kept")]
    assert engine.list_tables() == tables


def test_query_cannot_be_talked_out_of_read_only(engine: Engine) -> None:
    """A second statement after the transaction's end would run outside READ ONLY."""
    assert ingest(engine, [_row("web", "a", "kept")]) == [True]
    with pytest.raises(QueryError):
        engine.query("COMMIT; DELETE FROM events")
    assert _stored_events(engine) == [("web", "a", "kept")]


def test_query_runs_exactly_one_statement(engine: Engine) -> None:
    with pytest.raises(QueryError):
        engine.query("SELECT 1 AS x; SELECT 2 AS x")


def test_query_binds_question_mark_parameters(engine: Engine) -> None:
    """The control API hands ``query`` the client's ``?`` parameters as they are
    (``runtime/client.py``: "params bind to its ``?``"; ``runtime/control.py``)."""
    ingest(engine, [_row("web", "a", "x"), _row("ios", "b", "x"), _row("web", "c", "x")])
    table = engine.query("SELECT count(*) AS n FROM events WHERE source = ?", ["web"])
    assert table["n"].to_pylist() == [2]


def test_a_json_column_reads_back_exactly_as_it_was_written(engine: Engine) -> None:
    """JSON text from another writer (an import, another client): spaces, escapes, 1.10,
    a number beyond 64 bits. The store keeps the text; a read must not re-encode it."""
    text = '{"plan": "\\u00e9co", "price": 1.10, "big": 123456789012345678901234567890}'
    assert ingest(engine, [dict(_row("web", "a", "x"), properties=text)]) == [True]
    assert engine.query("SELECT properties FROM events")["properties"].to_pylist() == [text]
    selected = engine.select("SELECT properties FROM events", {}).table
    assert selected["properties"].to_pylist() == [text]


def test_a_failed_ingest_raises_store_unavailable_and_writes_nothing(engine: Engine) -> None:
    assert ingest(engine, [_row("web", "a", "x")]) == [True]
    good = [_row("web", "b", "x"), _row("web", "c", "x")]
    # Events fine, a failed event without its code (NOT NULL): the whole batch goes.
    broken = dict(FAILED[0], code=None)
    with pytest.raises(StoreUnavailable):
        ingest(engine, good, [broken])
    # An event without its type (NOT NULL), after a good one.
    with pytest.raises(StoreUnavailable):
        ingest(engine, [*good, dict(_row("web", "d", "x"), type=None)])
    assert _stored_events(engine) == [("web", "a", "x")]
    assert engine.query("SELECT count(*) AS n FROM failed_events")["n"].to_pylist() == [0]
    # Nothing was claimed either: the same events are new when sent again.
    assert ingest(engine, good, [FAILED[0]]) == [True, True]
    assert [e[1] for e in _stored_events(engine)] == ["a", "b", "c"]
