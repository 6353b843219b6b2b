"""What only the PostgreSQL store promises, against a real server.

Several collector processes share one database: each is a ``PostgresEngine`` of
its own here (its own connections), driven from its own thread. The dedupe
must hold across them, a failed commit must leave nothing behind, the arrival
floors they publish must combine, and a reader must never see a table being
replaced half-way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pytest

from headwater.cli.scaffold import init_project
from headwater.config.project import load_project
from headwater.core import jsonio
from headwater.core.clock import to_us
from headwater.core.types import Interval
from headwater.runtime.workspace import Workspace, engine_for, state_for
from headwater.serve.catalog import needs_collate
from headwater.serve.query import Dataset, encode_cursor, rows_query
from headwater.state import StateStore
from headwater.store import schema
from headwater.store.engine import FLOOR_STALE_SECONDS, Fence, IngestBatch
from headwater.store.errors import QueryError, StoreUnavailable
from headwater.store.postgres import PostgresEngine
from tests.engines.conftest import PG_SCHEMA

T0 = datetime(2025, 6, 2, tzinfo=UTC)
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
Row = dict[str, Any]


def _row(message_id: str, source: str = "web", **values: object) -> Row:
    row: Row = {
        "message_id": message_id,
        "source": source,
        "type": "track",
        "event": "Clicked",
        "timestamp": T0,
        "received_at": T0,
        "properties": '{"n": 1}',
    }
    row.update(values)
    return row


def _batch(rows: Sequence[Row], failed: Sequence[Row] = ()) -> IngestBatch:
    return IngestBatch(
        pa.Table.from_pylist(list(rows), schema=schema.EVENTS),
        pa.Table.from_pylist(list(failed), schema=schema.FAILED_EVENTS),
    )


def _failed(failure_id: str, **values: object) -> Row:
    row: Row = {
        "id": failure_id,
        "source": "web",
        "received_at": T0,
        "code": "invalid_json",
        "message": "body is not JSON",
        "payload": None,
    }
    row.update(values)
    return row


@pytest.fixture
def open_store(pg_url: str) -> Iterator[Callable[[], PostgresEngine]]:
    """Open engines on one fresh database, as separate collector processes would."""
    opened: list[PostgresEngine] = []

    def make() -> PostgresEngine:
        engine = PostgresEngine.open(pg_url, PG_SCHEMA)
        opened.append(engine)
        return engine

    yield make
    for engine in opened:
        engine.close()


def _count(engine: PostgresEngine, sql: str) -> int:
    # select, not query: these read Headwater's own bookkeeping, which query refuses.
    return int(engine.select(sql, {}).table["n"][0].as_py())


# -- the dedupe, across processes ---------------------------------------------------------


@pytest.mark.timeout(60)
def test_concurrent_collectors_store_each_message_once(
    open_store: Callable[[], PostgresEngine],
) -> None:
    """Four collectors, overlapping ids, all at once: each id stored once, claimed once."""
    engines = [open_store() for _ in range(4)]
    distinct = 600
    # Collector k sends ids [100k, 100k + 300): each id is sent by one to three collectors.
    plans = [[f"m-{i:04d}" for i in range(100 * k, 100 * k + 300)] for k in range(4)]
    assert len({i for plan in plans for i in plan}) == distinct
    flags: list[list[bool]] = [[] for _ in engines]
    errors: list[BaseException] = []
    start = threading.Barrier(len(engines))

    def collect(k: int) -> None:
        try:
            start.wait(timeout=10)
            for offset in range(0, len(plans[k]), 30):
                rows = [_row(i, event=f"from-{k}") for i in plans[k][offset : offset + 30]]
                flags[k] += engines[k].ingest(_batch(rows)).to_pylist()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=collect, args=(k,)) for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=50)
    assert not errors, errors
    assert [len(f) for f in flags] == [len(plan) for plan in plans]
    assert sum(sum(f) for f in flags) == distinct
    # Each id was claimed by exactly one collector, and stored with that one's row.
    claimed: dict[str, int] = {}
    for k, (plan, mine) in enumerate(zip(plans, flags, strict=True)):
        for message_id, new in zip(plan, mine, strict=True):
            if new:
                assert message_id not in claimed, f"{message_id} claimed twice"
                claimed[message_id] = k
    assert len(claimed) == distinct
    stored = engines[0].query("SELECT message_id, event FROM events").to_pylist()
    assert len(stored) == distinct
    assert {r["message_id"]: r["event"] for r in stored} == {
        message_id: f"from-{k}" for message_id, k in claimed.items()
    }
    assert _count(engines[0], "SELECT count(*) AS n FROM message_ids") == distinct


@pytest.mark.timeout(60)
def test_collectors_claiming_shared_ids_in_opposite_orders_both_commit(
    pg_url: str, open_store: Callable[[], PostgresEngine]
) -> None:
    """Collector A commits [x, a, y] while B commits [y, b, x]: each holds one shared id
    and wants the other's. Claiming in a fixed order lets one wait for the other; in
    the order of the batch they deadlock, and PostgreSQL aborts one of them.

    ``a`` and ``b`` are held (uncommitted) by two other transactions, so that A has
    claimed x and B has claimed y before either goes on: the interleaving is forced.
    """
    first, second = open_store(), open_store()
    ids = f"{PG_SCHEMA}.message_ids"
    holders = [psycopg.connect(pg_url) for _ in range(2)]
    try:
        for holder, held in zip(holders, ("m-a", "m-b"), strict=True):
            holder.execute(
                f"INSERT INTO {ids} (source, message_id, received_at) VALUES ('web', %s, now())",
                [held],
            )
        results: dict[str, list[bool] | BaseException] = {}

        def ingest(name: str, engine: PostgresEngine, order: list[str]) -> None:
            try:
                results[name] = engine.ingest(_batch([_row(i) for i in order])).to_pylist()
            except BaseException as exc:
                results[name] = exc

        threads = [
            threading.Thread(target=ingest, args=("A", first, ["m-x", "m-a", "m-y"])),
            threading.Thread(target=ingest, args=("B", second, ["m-y", "m-b", "m-x"])),
        ]
        for thread in threads:
            thread.start()
        with psycopg.connect(pg_url, autocommit=True) as watcher:
            deadline = time.monotonic() + 20
            waiting = 0
            while time.monotonic() < deadline:
                waiting = watcher.execute(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE datname = current_database() AND wait_event_type = 'Lock'"
                ).fetchone()[0]  # type: ignore[index]
                if waiting == 2:
                    break
                time.sleep(0.02)
            assert waiting == 2, "both collectors should be waiting on the held ids"
        for holder in holders:
            holder.rollback()  # a and b are free: A and B go on
        for thread in threads:
            thread.join(timeout=30)
    finally:
        for holder in holders:
            holder.close()
    failures = {name: r for name, r in results.items() if isinstance(r, BaseException)}
    assert not failures, f"a collector's commit failed: {failures}"
    first_flags, second_flags = results["A"], results["B"]
    assert isinstance(first_flags, list)
    assert isinstance(second_flags, list)
    assert (first_flags[1], second_flags[1]) == (True, True)  # a and b: only theirs
    # x and y: each claimed by exactly one of the two.
    assert first_flags[0] != second_flags[2]
    assert first_flags[2] != second_flags[0]
    assert _count(first, "SELECT count(*) AS n FROM events") == 4


def test_a_failed_ingest_raises_store_unavailable_and_leaves_nothing_behind(
    open_store: Callable[[], PostgresEngine],
) -> None:
    engine = open_store()
    assert engine.ingest(_batch([_row("m-1")])).to_pylist() == [True]
    good = [_row("m-2"), _row("m-3")]

    # The events are claimed and inserted, then the failed events' COPY breaks NOT NULL.
    with pytest.raises(StoreUnavailable) as caught:
        engine.ingest(_batch(good, [_failed("f-1"), _failed("f-2", code=None)]))
    assert caught.value.engine == "postgres"
    assert "null value" in caught.value.reason
    # An event without its type (NOT NULL) after two good ones.
    with pytest.raises(StoreUnavailable):
        engine.ingest(_batch([*good, _row("m-4", type=None)]))

    assert engine.query("SELECT message_id FROM events")["message_id"].to_pylist() == ["m-1"]
    assert _count(engine, "SELECT count(*) AS n FROM message_ids") == 1
    assert _count(engine, "SELECT count(*) AS n FROM failed_events") == 0
    # The same engine commits again (a new connection), and nothing was half-claimed.
    assert engine.ingest(_batch([*good, _row("m-4")], [_failed("f-1")])).to_pylist() == [
        True,
        True,
        True,
    ]
    assert _count(engine, "SELECT count(*) AS n FROM events") == 4
    assert _count(engine, "SELECT count(*) AS n FROM failed_events") == 1


# -- arrival floors ---------------------------------------------------------------------


def _us(moment: datetime) -> int:
    return to_us(moment)


def test_shared_floor_is_the_lowest_live_collectors_floor(
    open_store: Callable[[], PostgresEngine],
) -> None:
    one, two, pipelines = open_store(), open_store(), open_store()
    assert pipelines.floors.lowest(FLOOR_STALE_SECONDS) is None
    one.floors.publish("collector-1", _us(T0 + 2 * HOUR))
    two.floors.publish("collector-2", _us(T0 + HOUR))
    assert pipelines.floors.lowest(FLOOR_STALE_SECONDS) == _us(T0 + HOUR)
    # A collector moves its floor on (the latest publication counts, not the first).
    two.floors.publish("collector-2", _us(T0 + 3 * HOUR))
    assert pipelines.floors.lowest(FLOOR_STALE_SECONDS) == _us(T0 + 2 * HOUR)

    # collector-1 last heard from a minute ago (the database's clock): taken for dead.
    pipelines.execute(
        "UPDATE collector_floors SET seen_at = now() - interval '60 seconds' "
        "WHERE collector = 'collector-1'"
    )
    assert pipelines.floors.lowest(FLOOR_STALE_SECONDS) == _us(T0 + 3 * HOUR)
    assert pipelines.floors.lowest(120) == _us(T0 + 2 * HOUR)  # a longer patience keeps it
    # Publishing again brings it back.
    one.floors.publish("collector-1", _us(T0 + 4 * HOUR))
    assert pipelines.floors.lowest(FLOOR_STALE_SECONDS) == _us(T0 + 3 * HOUR)

    two.floors.retire("collector-2")
    assert pipelines.floors.lowest(FLOOR_STALE_SECONDS) == _us(T0 + 4 * HOUR)
    one.floors.retire("collector-1")
    assert pipelines.floors.lowest(FLOOR_STALE_SECONDS) is None
    one.floors.retire("collector-1")  # retiring twice is harmless


def test_floors_of_another_schema_do_not_count(pg_url: str) -> None:
    here = PostgresEngine.open(pg_url, PG_SCHEMA)
    there = PostgresEngine.open(pg_url, "other")
    try:
        there.floors.publish("collector-1", _us(T0))
        assert here.floors.lowest(FLOOR_STALE_SECONDS) is None
        assert there.floors.lowest(FLOOR_STALE_SECONDS) == _us(T0)
    finally:
        here.close()
        there.close()


HOURLY = """\
/* headwater
schedule = "@hourly"
kind = "incremental"
time = "received_at"
time_column = "hour"
*/
SELECT TIMESTAMP_TRUNC(received_at, HOUR) AS hour, COUNT(*) AS events
FROM events
WHERE received_at >= @start AND received_at < @end
GROUP BY hour
"""


def _project(root: Path, pipelines: dict[str, str]) -> Path:
    init_project(root)
    for path in (root / "pipelines").iterdir():
        path.unlink()
    for name, text in pipelines.items():
        (root / "pipelines" / name).write_text(text, "utf-8")
    return root


def test_a_backfill_stops_at_the_shared_floor(
    tmp_path: Path, open_store: Callable[[], PostgresEngine]
) -> None:
    """Intervals ending after the lowest collector's floor may still receive events."""
    collector, store = open_store(), open_store()
    rows = [_row(f"m-{h}-{i}", received_at=T0 + h * HOUR + i * timedelta(minutes=7))
            for h in range(6) for i in range(h + 1)]  # fmt: skip
    assert all(collector.ingest(_batch(rows)).to_pylist())
    collector.floors.publish("collector-1", _us(T0 + 3 * HOUR + timedelta(minutes=30)))
    root = _project(tmp_path / "project", {"hourly.sql": HOURLY})
    metadata = StateStore.in_folder(tmp_path / "metadata")
    try:
        service = Workspace(load_project(root), store, metadata, clock=lambda: T0 + 8 * HOUR)
        results = service.backfill("hourly", T0, T0 + 8 * HOUR)
        assert [r.interval.start for r in results] == [T0, T0 + HOUR, T0 + 2 * HOUR]
        done = metadata.runs.intervals("hourly")
        assert sorted(done) == [T0, T0 + HOUR, T0 + 2 * HOUR]
    finally:
        metadata.close()
    table = store.query("SELECT hour, events FROM hourly ORDER BY hour").to_pylist()
    assert table == [{"hour": T0 + h * HOUR, "events": h + 1} for h in range(3)]


# -- what readers see ---------------------------------------------------------------------


def test_a_store_made_before_fencing_gets_its_tokens_table_when_opened(
    pg_url: str, open_store: Callable[[], PostgresEngine]
) -> None:
    """A store made by the version before fenced leases has every table but that one; the
    next open adds it, or no fenced publish could ever land."""
    open_store().close()
    with psycopg.connect(pg_url, autocommit=True) as con:
        con.execute(f"DROP TABLE {PG_SCHEMA}._headwater_fences")
    engine = open_store()
    day = datetime(2026, 11, 1, tzinfo=UTC)
    rows = pa.table({"day": pa.array([day], pa.timestamp("us", "UTC")), "n": [1]})
    engine.replace_table("daily", rows, Fence("daily", 7))
    assert engine.select("SELECT n FROM daily", {}).table.to_pylist() == [{"n": 1}]


def test_list_tables_shows_the_tables_pipelines_read_and_nothing_internal(
    pg_url: str, open_store: Callable[[], PostgresEngine]
) -> None:
    engine = open_store()
    engine.floors.publish("collector-1", _us(T0))
    engine.replace_table("daily", pa.table({"n": [1]}))
    with psycopg.connect(pg_url, autocommit=True) as con:
        con.execute("CREATE TABLE public.elsewhere (n int)")
    assert engine.list_tables() == ["daily", "events", "failed_events"]
    # The hidden tables exist all the same.
    assert _count(engine, "SELECT count(*) AS n FROM collector_floors") == 1
    assert _count(engine, "SELECT count(*) AS n FROM message_ids") == 0


@pytest.mark.timeout(60)
def test_replace_table_is_atomic_for_a_concurrent_reader(
    open_store: Callable[[], PostgresEngine],
) -> None:
    writer, reader = open_store(), open_store()
    size = 2_000

    def version(number: int) -> pa.Table:
        return pa.table(
            {"version": pa.array([number] * size, pa.int64()), "row": pa.array(range(size))}
        )

    writer.replace_table("snapshot", version(0))
    seen: list[tuple[int, int, int]] = []
    errors: list[str] = []
    done = threading.Event()

    def read() -> None:
        while not done.is_set():
            try:
                row = reader.query(
                    "SELECT count(*) AS n, min(version) AS lo, max(version) AS hi FROM snapshot"
                ).to_pylist()[0]
            except QueryError as exc:
                errors.append(exc.reason)
                continue
            seen.append((row["n"], row["lo"], row["hi"]))

    thread = threading.Thread(target=read)
    thread.start()
    try:
        for number in range(1, 41):
            writer.replace_table("snapshot", version(number))
    finally:
        done.set()
        thread.join(timeout=30)
    assert not errors, f"{len(errors)} reads failed while the table was replaced: {errors[:3]}"
    assert len(seen) > 10, "the reader hardly ran: nothing was tested"
    torn = [s for s in seen if s[0] != size or s[1] != s[2]]
    assert not torn, f"reads of an empty or mixed table: {torn[:5]}"
    assert len({s[1] for s in seen}) > 1, "the reader never saw a replacement"


# -- JSON columns ----------------------------------------------------------------------------

JSON_VALUES = """\
/* headwater
kind = "full"
*/
SELECT
  message_id,
  JSON_VALUE(properties, '$.plan') AS plan,
  JSON_VALUE(properties, '$.price') AS price,
  JSON_VALUE(context, '$.page.path') AS path,
  JSON_VALUE(traits, '$.name') AS name
FROM events
"""

#: properties, context, traits -> what JSON_VALUE gives (BigQuery's semantics).
SCALARS: list[tuple[str, object, object, object, dict[str, str | None]]] = [
    ("s1", {"plan": "プロ", "price": 9.5}, {"page": {"path": "/注文"}}, {"name": "Zoë"},
     {"plan": "プロ", "price": "9.5", "path": "/注文", "name": "Zoë"}),
    ("s2", {"plan": None, "price": 12}, {"page": {}}, None,
     {"plan": None, "price": "12", "path": None, "name": None}),
    ("s3", {"price": True}, None, {"name": 'quote " and \\ backslash'},
     {"plan": None, "price": "true", "path": None, "name": 'quote " and \\ backslash'}),
    ("s4", None, {"page": {"path": "/a,b\nc"}}, {"name": ""},
     {"plan": None, "price": None, "path": "/a,b\nc", "name": ""}),
]  # fmt: skip
#: JSON text with escapes, as another client might have written it (read back unescaped).
ESCAPED = ("s5", '{"plan": "\\u00e9co", "price": "1e3"}', {"plan": "éco", "price": "1e3"})
NON_SCALARS: list[tuple[str, object, dict[str, str | None]]] = [
    ("n1", {"plan": {"tier": "gold"}, "price": [1, 2]}, {"plan": None, "price": None}),
    ("n2", {"plan": [], "price": {}}, {"plan": None, "price": None}),
]


def _json(value: object) -> str | None:
    return None if value is None else jsonio.dumps_str(value)


def _json_values(tmp_path: Path, engine: PostgresEngine) -> dict[str, dict[str, str | None]]:
    root = _project(tmp_path / "project", {"json_values.sql": JSON_VALUES})
    metadata = StateStore.in_folder(tmp_path / "metadata")
    try:
        service = Workspace(load_project(root), engine, metadata, clock=lambda: T0)
        service.backfill("json_values", T0 - timedelta(days=1), T0)
    finally:
        metadata.close()
    rows = engine.query("SELECT * FROM json_values").to_pylist()
    return {row.pop("message_id"): row for row in rows}


def test_json_columns_are_json_and_json_value_reads_their_scalars(
    tmp_path: Path, open_store: Callable[[], PostgresEngine]
) -> None:
    engine = open_store()
    rows = [
        _row(m, properties=_json(p), context=_json(c), traits=_json(t)) for m, p, c, t, _ in SCALARS
    ]
    rows.append(_row(ESCAPED[0], properties=ESCAPED[1]))
    failed = [_failed("f-1", payload='{"type": "track", "name": "Ünï"}')]
    assert all(engine.ingest(_batch(rows, failed)).to_pylist())

    types = engine.query(
        "SELECT table_name || '.' || column_name AS c, data_type AS t "
        "FROM information_schema.columns WHERE table_schema = 'headwater' "
        "AND column_name IN ('properties', 'traits', 'context', 'payload')"
    ).to_pylist()
    assert {r["c"]: r["t"] for r in types} == {
        "events.properties": "json",
        "events.traits": "json",
        "events.context": "json",
        "failed_events.payload": "json",
    }
    got = _json_values(tmp_path, engine)
    want = {m: expected for m, *_, expected in SCALARS}
    want[ESCAPED[0]] = {"plan": "éco", "price": "1e3", "path": None, "name": None}
    assert got == want


def test_json_value_of_an_object_or_array_is_null_as_in_bigquery(
    tmp_path: Path, open_store: Callable[[], PostgresEngine]
) -> None:
    engine = open_store()
    rows = [_row(m, properties=_json(p)) for m, p, _ in NON_SCALARS]
    assert all(engine.ingest(_batch(rows)).to_pylist())
    got = _json_values(tmp_path, engine)
    want = {m: {**expected, "path": None, "name": None} for m, _, expected in NON_SCALARS}
    assert got == want


def test_a_nul_in_a_json_value_stops_no_reader_of_the_document(
    tmp_path: Path, open_store: Callable[[], PostgresEngine]
) -> None:
    # PostgreSQL's text cannot hold NUL, and its JSON functions refused the whole document
    # ("unsupported Unicode escape sequence") whichever key a pipeline read: one event
    # failed every interval over it. The store keeps U+FFFD in its place.
    engine = open_store()
    nul = jsonio.dumps_str({"plan": "a\x00b", "price": 7})
    assert "\\u0000" in nul
    rows = [
        _row("z1", properties=nul, traits=jsonio.dumps_str({"name": "\x00"})),
        _row("z2", properties='{"plan": "\\\\u0000", "price": 8}'),  # a backslash, then text
    ]
    failed = [_failed("f-nul", payload=nul)]
    assert all(engine.ingest(_batch(rows, failed)).to_pylist())
    got = _json_values(tmp_path, engine)
    assert got == {
        "z1": {"plan": "a\ufffdb", "price": "7", "path": None, "name": "\ufffd"},
        "z2": {"plan": "\\u0000", "price": "8", "path": None, "name": None},
    }
    [payload] = (
        engine.query("SELECT JSON_EXTRACT_PATH_TEXT(payload, 'price') AS p FROM failed_events")
        .column("p")
        .to_pylist()
    )
    assert payload == "7"


# -- the environment that names the store ------------------------------------------------------


def test_an_environment_opens_its_postgres_store_and_keeps_metadata_beside_it(
    tmp_path: Path, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _project(tmp_path / "project", {"hourly.sql": HOURLY})
    with (root / "headwater.toml").open("a", encoding="utf-8") as config:
        config.write(
            '\n[environments.shared.store]\nengine = "postgres"\n'
            'url = "${HEADWATER_TEST_STORE_URL}"\nschema = "analytics"\n'
        )
    monkeypatch.setenv("HEADWATER_TEST_STORE_URL", pg_url)
    project = load_project(root, "shared")
    engine = engine_for(project)
    metadata = state_for(project)
    try:
        assert isinstance(engine, PostgresEngine)
        assert (engine.name, engine.schema, engine.shared) == ("postgres", "analytics", True)
        rows = [_row(f"m-{i}", received_at=T0 + i * timedelta(minutes=25)) for i in range(6)]
        assert all(engine.ingest(_batch(rows)).to_pylist())
        service = Workspace(project, engine, metadata, clock=lambda: T0 + 4 * HOUR)
        assert len(service.backfill("hourly", T0, T0 + 3 * HOUR)) == 3
    finally:
        metadata.close()
        engine.close()
    with psycopg.connect(pg_url, autocommit=True) as con:
        hourly = con.execute("SELECT hour, events FROM analytics.hourly ORDER BY hour").fetchall()
        runs = con.execute(
            "SELECT count(*) FROM analytics_metadata.runs WHERE pipeline = 'hourly'"
        ).fetchone()
        public = con.execute(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'"
        ).fetchone()
    assert [(h, n) for h, n in hourly] == [(T0, 3), (T0 + HOUR, 2), (T0 + 2 * HOUR, 1)]
    assert runs == (3,)
    assert public == (0,)
    assert not (root / ".headwater" / "shared" / "metadata.sqlite").exists()


def test_a_floor_keeps_its_microseconds(open_store: Callable[[], PostgresEngine]) -> None:
    engine = open_store()
    moment = datetime(2025, 6, 2, 3, 4, 5, 678_901, tzinfo=UTC)
    engine.floors.publish("collector-1", _us(moment))
    assert engine.floors.lowest(FLOOR_STALE_SECONDS) == _us(moment)
    row = engine.select("SELECT floor FROM collector_floors", {}).table.to_pylist()[0]
    assert row["floor"] == moment


def test_a_database_that_does_not_compare_text_byte_by_byte_is_warned_of(
    pg_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    # The tests' server is made with C.UTF-8: byte order, no warning. A database made with an
    # ICU locale (as a language's collation) orders 'a' before 'B': warned, once.
    byte_order = PostgresEngine.open(pg_server.create_database("hw_collate_c"))
    byte_order.close()
    assert "collation" not in caplog.text
    with psycopg.connect(pg_server.url(), autocommit=True) as con:
        con.execute("DROP DATABASE IF EXISTS hw_collate_icu")
        con.execute(
            "CREATE DATABASE hw_collate_icu TEMPLATE template0 LOCALE_PROVIDER icu "
            "ICU_LOCALE 'en-US' LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8'"
        )
    for _ in range(2):
        PostgresEngine.open(pg_server.url("hw_collate_icu")).close()
    warnings = [r for r in caplog.records if "collation" in r.getMessage()]
    assert len(warnings) == 1, caplog.text
    assert "'en-US'" in warnings[0].getMessage()
    assert "LC_COLLATE 'C'" in warnings[0].getMessage()
    assert "character type" not in caplog.text
    # Byte order, but the C character type: LOWER('ÜBER') is 'Über' there. Warned, once.
    with psycopg.connect(pg_server.url(), autocommit=True) as con:
        con.execute("DROP DATABASE IF EXISTS hw_ctype_c")
        con.execute("CREATE DATABASE hw_ctype_c TEMPLATE template0 LC_COLLATE 'C' LC_CTYPE 'C'")
    for _ in range(2):
        engine = PostgresEngine.open(pg_server.url("hw_ctype_c"))
        assert engine.query("SELECT LOWER('ÜBER') AS l").to_pylist() == [{"l": "Über"}]
        engine.close()
    cased = [r for r in caplog.records if "character type" in r.getMessage()]
    assert len(cased) == 1, caplog.text
    assert "LC_CTYPE 'C.UTF-8'" in cased[0].getMessage()
    assert len([r for r in caplog.records if "collation" in r.getMessage()]) == 1


def test_a_dataset_read_from_a_language_collated_database_orders_text_byte_by_byte(
    pg_server: Any,
) -> None:
    # A sink's database is the user's: under en-US 'a' sorts before 'B', so a served
    # dataset's pages, ranges and cursors differed from the store's. Text is compared as
    # BigQuery and DuckDB compare it there too.
    with psycopg.connect(pg_server.url(), autocommit=True) as con:
        con.execute("DROP DATABASE IF EXISTS hw_served_icu")
        con.execute(
            "CREATE DATABASE hw_served_icu TEMPLATE template0 LOCALE_PROVIDER icu "
            "ICU_LOCALE 'en-US' LC_COLLATE 'C.UTF-8' LC_CTYPE 'C.UTF-8'"
        )
    ids = ["Zed", "alice", "Bob", "a-c", "ab", "_x", "B2", "b1", "Éa", "e"]
    url = pg_server.url("hw_served_icu")
    with psycopg.connect(url, autocommit=True) as con:
        con.execute("CREATE TABLE served (user_id text PRIMARY KEY, n bigint)")
        for n, user in enumerate(ids):
            con.execute("INSERT INTO served VALUES (%s, %s)", [user, n])
    reader = PostgresEngine.open(url)
    try:
        dataset = Dataset(
            "served", ("user_id",), reader.select("SELECT * FROM served", {}).table.schema,
            reader, ("public", "served"), collate=needs_collate(reader),
        )  # fmt: skip
        assert dataset.collate  # en-US: byte order only by COLLATE "C"

        def page(args: dict[str, str]) -> list[str]:
            select, _, _ = rows_query(dataset, args, page_size=100, max_page_size=100)
            found = reader.select(select.query.sql(reader.dialect), select.params).table
            return [str(u) for u in found.column("user_id").to_pylist()]

        in_bytes = sorted(ids, key=lambda u: u.encode())
        assert page({}) == in_bytes
        assert page({"order_by": "-user_id"}) == in_bytes[::-1]
        assert page({"user_id__lt": "b"}) == [u for u in in_bytes if u.encode() < b"b"]
        walked: list[str] = []
        cursor: str | None = None
        while True:
            args = {"limit": "3", **({"cursor": cursor} if cursor else {})}
            select, order, limit = rows_query(dataset, args, page_size=3, max_page_size=100)
            rows = reader.select(select.query.sql(reader.dialect), select.params).table
            walked += [str(u) for u in rows.column("user_id").to_pylist()[:limit]]
            if rows.num_rows <= limit:
                break
            cursor = encode_cursor(rows.slice(limit - 1, 1).to_pylist()[0], order)
        assert walked == in_bytes
    finally:
        reader.close()
    byte_order = PostgresEngine.open(pg_server.create_database("hw_served_c"))
    try:
        assert not needs_collate(byte_order)  # C.UTF-8: the plain column, ordered by its index
    finally:
        byte_order.close()


# -- arrays --------------------------------------------------------------------------------

NAMES_PER_USER = """/* headwater
kind = "incremental"
schedule = "@daily"
time_column = "day"
*/
SELECT DATE(received_at) AS day, user_id,
  ARRAY_AGG(event ORDER BY event) AS names,
  ARRAY_AGG(DISTINCT EXTRACT(HOUR FROM received_at) ORDER BY EXTRACT(HOUR FROM received_at))
    AS hours
FROM events
WHERE received_at >= @start AND received_at < @end
GROUP BY day, user_id
"""

NAMES_READER = """/* headwater
kind = "incremental"
schedule = "@daily"
time_column = "day"
*/
SELECT day, user_id, name, ARRAY_LENGTH(names) AS distinct_names, hours[OFFSET(0)] AS first_hour
FROM names_per_user, UNNEST(names) AS name
WHERE day >= DATE(@start) AND day < DATE(@end)
"""


def test_an_array_a_pipeline_makes_stays_an_array_for_its_readers(
    tmp_path: Path, open_store: Callable[[], PostgresEngine]
) -> None:
    """ARRAY_AGG's output is a PostgreSQL array in the table (it was text, '{a,b}', which
    UNNEST refused), and comes back as a list, as from the embedded store."""
    engine = open_store()
    rows = [
        _row("m1", user_id="u1", event='say "hi"', received_at=T0 + 2 * HOUR),
        _row("m2", user_id="u1", event="a,b {c}", received_at=T0 + 5 * HOUR),
        _row("m3", user_id="u2", event="back\\slash", received_at=T0 + 7 * HOUR),
    ]
    assert all(engine.ingest(_batch(rows)).to_pylist())
    root = _project(
        tmp_path / "project",
        {"names_per_user.sql": NAMES_PER_USER, "names_reader.sql": NAMES_READER},
    )
    metadata = StateStore.in_folder(tmp_path / "metadata")
    try:
        service = Workspace(load_project(root), engine, metadata, clock=lambda: T0 + 2 * DAY)
        for name in ("names_per_user", "names_reader"):
            assert [r.rows_written for r in service.backfill(name, T0, T0 + DAY)] == [
                2 if name == "names_per_user" else 3
            ]
    finally:
        metadata.close()
    types = engine.query(
        "SELECT column_name AS c, udt_name AS t FROM information_schema.columns "
        "WHERE table_schema = 'headwater' AND table_name = 'names_per_user'"
    ).to_pylist()
    assert {r["c"]: r["t"] for r in types}["names"] == "_text"
    made = engine.query("SELECT user_id, names, hours FROM names_per_user ORDER BY user_id")
    assert made.schema.field("names").type == pa.list_(pa.string())
    assert made.to_pylist() == [
        {"user_id": "u1", "names": ["a,b {c}", 'say "hi"'], "hours": [2, 5]},
        {"user_id": "u2", "names": ["back\\slash"], "hours": [7]},
    ]
    read = engine.query(
        "SELECT user_id, name, distinct_names, first_hour FROM names_reader ORDER BY name"
    ).to_pylist()
    assert read == [
        {"user_id": "u1", "name": "a,b {c}", "distinct_names": 2, "first_hour": 2},
        {"user_id": "u2", "name": "back\\slash", "distinct_names": 1, "first_hour": 7},
        {"user_id": "u1", "name": 'say "hi"', "distinct_names": 2, "first_hour": 2},
    ]


ARRAYS = pa.table(
    {
        "day": pa.array([T0, T0, T0], pa.timestamp("us", "UTC")),
        "words": pa.array(
            [['quote "q"', "back\\slash", None, "", "NULL", "ünï {,}"], [], None],
            pa.list_(pa.string()),
        ),
        "scores": pa.array([[1.5, float("inf"), None], [-0.0], [2e-300]], pa.list_(pa.float64())),
        "seen": pa.array([[T0, T0 + HOUR], None, []], pa.list_(pa.timestamp("us", "UTC"))),
        "flags": pa.array([[True, False], [None], []], pa.list_(pa.bool_())),
        "pairs": pa.array([[{"k": "a"}], None, []], pa.list_(pa.struct([("k", pa.string())]))),
    }
)


def test_lists_published_from_arrow_come_back_as_they_went_in(
    open_store: Callable[[], PostgresEngine],
) -> None:
    """A Python pipeline's list columns: arrays of their items' type (a list of records
    stays JSON), every awkward item intact through COPY."""
    engine = open_store()
    engine.replace_interval("py_lists", "day", Interval(T0, T0 + DAY), ARRAYS)
    back = engine.query("SELECT * FROM py_lists").to_pylist()
    for row in back:  # jsonb: JSON text, as every nested value a list of scalars is not
        row["pairs"] = None if row["pairs"] is None else jsonio.loads(row["pairs"])
    assert back == ARRAYS.to_pylist()
    engine.replace_table("py_lists_full", ARRAYS)
    engine.upsert("py_lists_full", ["day"], ARRAYS.slice(0, 1))
    assert engine.query("SELECT words FROM py_lists_full").to_pylist() == [
        {"words": ARRAYS["words"][0].as_py()}
    ]


def test_a_table_made_before_arrays_keeps_taking_lists_as_json(
    pg_url: str,
    open_store: Callable[[], PostgresEngine],
) -> None:
    """A Python pipeline's list column in a table an older version made (``jsonb``): the
    next publish writes JSON into it, as then, instead of failing on an array literal."""
    engine = open_store()
    with psycopg.connect(pg_url, autocommit=True) as con:
        con.execute(
            "CREATE TABLE headwater.old_lists (day timestamptz, words jsonb, scores jsonb,"
            " seen jsonb, flags jsonb, pairs jsonb)"
        )
    engine.replace_interval("old_lists", "day", Interval(T0, T0 + DAY), ARRAYS)
    back = engine.query("SELECT words FROM old_lists ORDER BY words").to_pylist()
    assert sorted(jsonio.loads(r["words"]) for r in back if r["words"] is not None) == [
        [],
        ['quote "q"', "back\\slash", None, "", "NULL", "ünï {,}"],
    ]


def test_a_python_output_first_empty_takes_its_types_from_the_first_rows(
    open_store: Callable[[], PostgresEngine],
) -> None:
    """An empty first interval built from Python lists is Arrow's null type (a text
    column here): the rows that come later give it their type, arrays included."""
    engine = open_store()
    empty = pa.table(
        {
            "day": pa.array([], pa.timestamp("us", "UTC")),
            "user_id": pa.array([]),
            "names": pa.array([], pa.list_(pa.null())),
            "n": pa.array([]),
        }
    )
    engine.replace_interval("py_first_empty", "day", Interval(T0, T0 + DAY), empty)
    rows = pa.table(
        {
            "day": pa.array([T0 + DAY], pa.timestamp("us", "UTC")),
            "user_id": ["u1"],
            "names": [["a", "b"]],
            "n": [3],
        }
    )
    engine.replace_interval("py_first_empty", "day", Interval(T0 + DAY, T0 + 2 * DAY), rows)
    back = engine.query("SELECT user_id, names, n FROM py_first_empty")
    assert back.to_pylist() == [{"user_id": "u1", "names": ["a", "b"], "n": 3}]
    assert back.schema.field("names").type == pa.list_(pa.string())
    assert back.schema.field("n").type == pa.int64()


def _drop_other_backends(url: str) -> int:
    """What a server restart or failover does to every open connection of a pool."""
    with psycopg.connect(url, autocommit=True) as con:
        dropped = con.execute(
            "SELECT count(*) FILTER (WHERE pg_terminate_backend(pid)) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND backend_type = 'client backend'"
        ).fetchone()
    return int(dropped[0]) if dropped else 0


def _fill_pool(read: Callable[[], object], size: int) -> None:
    """Make the pool open ``size`` connections: reads held open at once."""
    barrier = threading.Barrier(size, timeout=20)

    def hold() -> None:
        read()
        barrier.wait()

    threads = [threading.Thread(target=hold) for _ in range(size)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)


def test_reads_survive_a_server_that_dropped_every_pooled_connection(
    open_store: Callable[[], PostgresEngine], pg_url: str
) -> None:
    """After a restart each dead pooled connection cost a request its answer (a 503 of
    the read API): the first read that meets one now checks the pool and runs again."""
    from headwater.store.postgres.reader import PostgresReader

    engine = open_store()
    assert all(engine.ingest(_batch([_row("m-1"), _row("m-2")])).to_pylist())
    reader = PostgresReader("sink", pg_url, pool_size=4)
    try:
        reads: dict[str, Callable[[], object]] = {
            "query": lambda: engine.query("SELECT count(*) AS n FROM events"),
            "select": lambda: engine.select("SELECT count(*) AS n FROM events", {}),
            "reader": lambda: reader.select(f"SELECT count(*) AS n FROM {PG_SCHEMA}.events", {}),
        }
        for read in reads.values():
            _fill_pool(read, 4)
        assert _drop_other_backends(pg_url) >= 4
        for name, read in reads.items():
            for attempt in range(6):
                found = read()
                table = found if isinstance(found, pa.Table) else found.table  # type: ignore[attr-defined]
                assert table.column("n").to_pylist() == [2], (name, attempt)
        # A query that is wrong is still wrong: not run again, and not transient.
        with pytest.raises(QueryError):
            engine.query("SELECT nope FROM events")
    finally:
        reader.close()


def test_every_integer_result_is_int64_as_on_duckdb(
    open_store: Callable[[], PostgresEngine],
) -> None:
    """PostgreSQL's LENGTH, STRPOS and ARRAY_LENGTH are ``integer``: read as INT64, as
    DuckDB gives the same SQL's results and BigQuery types every integer."""
    engine = open_store()
    found = engine.query(
        "SELECT LENGTH('abc') AS n, STRPOS('abc', 'c') AS p, CAST(7 AS smallint) AS s, "
        "ARRAY_LENGTH(ARRAY[1, 2], 1) AS m, ARRAY[CAST(1 AS integer), NULL] AS a"
    )
    assert found.schema == pa.schema(
        [("n", pa.int64()), ("p", pa.int64()), ("s", pa.int64()), ("m", pa.int64()),
         ("a", pa.list_(pa.int64()))]
    )  # fmt: skip
    assert found.to_pylist() == [{"n": 3, "p": 3, "s": 7, "m": 2, "a": [1, None]}]
