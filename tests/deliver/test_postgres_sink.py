"""The PostgreSQL sink end to end: real ``headwater`` processes, a real PostgreSQL 15
server (tests/pg.py), a real DuckDB store.

Events go straight into the project's store with ``DuckDBEngine.ingest``: with
arrival times in the past for the history, with arrival time now for late events
that re-open a day. Pipelines run through the ``headwater`` command, which
delivers what its runs owe before it returns, or in a ``headwater up`` child.
What PostgreSQL holds is always read here with psycopg and compared with what the
DuckDB store holds, read separately; delivery state is read from the metadata
database (opened read-only) and from what ``headwater status`` prints.
"""

from __future__ import annotations

import json
import os
import random
import re
import signal
import socket
import sqlite3
import subprocess
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import closing, contextmanager
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psycopg
import pyarrow as pa
import pyarrow.ipc
import pytest
from psycopg import sql

from headwater.store import schema
from headwater.store.duckdb import DuckDBEngine
from headwater.store.engine import IngestBatch
from tests.conftest import HEADWATER, Project, Server, run_cli, wait_for

DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
SINK = "recs"
TOKEN = re.compile(r"hw_ct_[A-Za-z0-9_-]+")

Row = tuple[Any, ...]
Table = tuple[str, str]  # (schema, table) in PostgreSQL


# -- helpers: the command, the project ------------------------------------------------


def _today() -> datetime:
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _only_pipelines(project: Project, files: dict[str, str]) -> None:
    """Replace the example pipelines of ``headwater init`` with these files."""
    folder = project.root / "pipelines"
    for path in folder.iterdir():
        path.unlink()
    for name, text in files.items():
        (folder / name).write_text(text)


def _configure_sink(project: Project, url: str = "${RECS_URL}", **options: object) -> None:
    """Append ``[sinks.recs]`` of type postgres to headwater.toml."""
    lines = [f"[sinks.{SINK}]", 'type = "postgres"', f"url = {json.dumps(url)}"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in options.items()]
    project.configure("\n".join(lines) + "\n")


def _set_tick(project: Project, seconds: float) -> None:
    path = project.root / "headwater.toml"
    text, count = re.subn(r"(?m)^tick_seconds = \S+", f"tick_seconds = {seconds}", path.read_text())
    assert count == 1
    path.write_text(text)


def _rich_tables(output: str) -> list[list[dict[str, str]]]:
    """Every rich table the CLI printed: its rows by column title."""
    tables: list[list[dict[str, str]]] = []
    titles: list[str] = []
    for line in output.splitlines():
        line = line.strip()
        if line.startswith("┃"):
            titles = [cell.strip() for cell in line.strip("┃").split("┃")]
            tables.append([])
        elif line.startswith("│") and tables:
            cells = [cell.strip() for cell in line.strip("│").split("│")]
            tables[-1].append(dict(zip(titles, cells, strict=True)))
    return tables


def _status_deliveries(project: Project) -> tuple[dict[str, str], str]:
    """The one row of the Deliveries table of ``headwater status``, and all it printed."""
    out = run_cli(project, "status").stdout
    assert "Deliveries" in out, out
    found = [
        row for table in _rich_tables(out) for row in table if "sink" in row and row["sink"] == SINK
    ]
    assert len(found) == 1, out
    return found[0], out


# -- helpers: events and the DuckDB store ------------------------------------------------


def _event(
    message_id: str,
    user_id: str | None,
    at: datetime,
    received_at: datetime,
    event: str = "Page Viewed",
    **properties: object,
) -> dict[str, Any]:
    """A row of ``events`` as the collector would commit it."""
    return {
        "message_id": message_id,
        "source": "web",
        "type": "track",
        "event": event,
        "user_id": user_id,
        "anonymous_id": None if user_id is not None else f"anon-{message_id}",
        "timestamp": at,
        "original_timestamp": at,
        "received_at": received_at,
        "properties": json.dumps(properties),
    }


def _ingest(project: Project, rows: Sequence[dict[str, Any]]) -> None:
    """Commit rows straight into the project's store; no server may hold it."""
    engine = DuckDBEngine.open(project.data_dir / "events.duckdb")
    try:
        events = pa.Table.from_pylist(list(rows), schema=schema.EVENTS)
        engine.ingest(IngestBatch(events, schema.FAILED_EVENTS.empty_table()))
    finally:
        engine.close()


def _norm(value: object) -> object:
    return value.astimezone(UTC) if isinstance(value, datetime) else value


def _duck(project: Project, table: str) -> tuple[list[str], list[Row]]:
    """A table of the DuckDB store: its column names and rows."""
    result = project.query(f'SELECT * FROM "{table}"')
    rows = [tuple(_norm(v) for v in row.values()) for row in result.to_pylist()]
    return result.column_names, rows


# -- helpers: PostgreSQL -----------------------------------------------------------------


@contextmanager
def _pg(url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(url, autocommit=True, options="-c TimeZone=UTC") as con:
        yield con


def _pg_rows(url: str, table: Table, columns: Sequence[str]) -> list[Row]:
    query = sql.SQL("SELECT {} FROM {}").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in columns), sql.Identifier(*table)
    )
    with _pg(url) as con:
        return [tuple(_norm(v) for v in row) for row in con.execute(query)]


def _pg_versions(url: str, table: Table, columns: Sequence[str], key: int) -> dict[Row, Any]:
    """Each row by its first ``key`` columns: (the row version ``xmin``, the row)."""
    query = sql.SQL("SELECT xmin::text, {} FROM {}").format(
        sql.SQL(", ").join(sql.Identifier(c) for c in columns), sql.Identifier(*table)
    )
    with _pg(url) as con:
        rows = [(row[0], tuple(_norm(v) for v in row[1:])) for row in con.execute(query)]
    return {row[:key]: (xmin, row) for xmin, row in rows}


def _pg_count(url: str, table: Table) -> int:
    """Rows in the table; -1 while it does not exist."""
    with _pg(url) as con:
        found = con.execute("SELECT to_regclass(%s)", [f'"{table[0]}"."{table[1]}"']).fetchone()
        if found is None or found[0] is None:
            return -1
        counted = con.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier(*table)))
        return int(counted.fetchone()[0])  # type: ignore[index]


def _pg_tables(url: str) -> set[Table]:
    with _pg(url) as con:
        rows = con.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
    return {(s, t) for s, t in rows}


def _pg_columns(url: str, table: Table) -> dict[str, str]:
    with _pg(url) as con:
        rows = con.execute(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = %s AND table_name = %s ORDER BY ordinal_position",
            list(table),
        ).fetchall()
    return dict(rows)


def _primary_key(url: str, table: Table) -> list[str]:
    """The primary key's columns in order, from pg_index."""
    with _pg(url) as con:
        rows = con.execute(
            "SELECT a.attname FROM pg_index i "
            "CROSS JOIN LATERAL unnest(i.indkey) WITH ORDINALITY AS k(attnum, position) "
            "JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = k.attnum "
            "WHERE i.indrelid = to_regclass(%s) AND i.indisprimary ORDER BY k.position",
            [f'"{table[0]}"."{table[1]}"'],
        ).fetchall()
    return [name for (name,) in rows]


def _assert_same(pg: Sequence[Row], duck: Sequence[Row]) -> None:
    """The same rows, as multisets, with a readable difference when not."""
    ours, theirs = Counter(pg), Counter(duck)
    if ours != theirs:
        only_pg = list((ours - theirs).elements())[:10]
        only_duck = list((theirs - ours).elements())[:10]
        raise AssertionError(
            f"PostgreSQL has {len(pg)} rows, DuckDB {len(duck)}\n"
            f"only in PostgreSQL (first 10): {only_pg}\nonly in DuckDB (first 10): {only_duck}"
        )


# -- helpers: the metadata database, read-only ---------------------------------------------


def _utc(text: str | None) -> datetime | None:
    if text is None:
        return None
    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _metadata(project: Project, query: str) -> list[dict[str, Any]]:
    path = project.data_dir / "metadata.sqlite"
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        db.row_factory = sqlite3.Row
        rows = [dict(row) for row in db.execute(query)]
    for row in rows:
        for name, value in row.items():
            if name.endswith(("_start", "_end", "_at")) and isinstance(value, str):
                row[name] = _utc(value)
    return rows


def _owed(project: Project) -> dict[datetime, dict[str, Any]]:
    """The ``deliveries`` rows of the sink, by interval start."""
    rows = _metadata(project, f"SELECT * FROM deliveries WHERE sink = '{SINK}'")
    return {row["interval_start"]: row for row in rows}


def _dead_letters(project: Project) -> list[dict[str, Any]]:
    return _metadata(project, "SELECT * FROM dead_letters WHERE replayed_at IS NULL ORDER BY id")


# == 1. an incremental event-time pipeline upserted by key ===================================

USER_DAYS = """\
/* headwater
description = "Per user and day of event time; no row for a user who opted out that day."
schedule = "@daily"
kind = "incremental"
time = "timestamp"
time_column = "day"
key = ["day", "user_id"]
sinks = ["recs"]
*/
SELECT
  TIMESTAMP_TRUNC(timestamp, DAY) AS day,
  user_id,
  COUNT(*) AS events,
  MAX(JSON_VALUE(properties, '$.plan')) AS plan,
  AVG(SAFE_CAST(JSON_VALUE(properties, '$.score') AS INT64)) AS mean_score,
  MIN(timestamp) AS first_seen,
  LOGICAL_OR(event = 'Order Completed') AS ordered
FROM events
WHERE timestamp >= @start AND timestamp < @end AND user_id IS NOT NULL
GROUP BY day, user_id
HAVING COUNTIF(event = 'Opted Out') = 0
"""
USER_DAYS_TYPES = {
    "day": "timestamp with time zone",
    "user_id": "text",
    "events": "bigint",
    "plan": "text",
    "mean_score": "double precision",
    "first_seen": "timestamp with time zone",
    "ordered": "boolean",
}
#: Ids CSV must quote or escape to keep: commas and quotes, a newline, a tab, COPY's
#: text-format NULL marker, non-ASCII, and the empty string (not NULL: it is in the key).
ODD_USERS = ['o\'brien, "the" one', "line\nbreak", "tab\there", "\\N", "zoë ☕", ""]


def _user_day_events(days: Sequence[datetime], received_at: datetime) -> list[dict[str, Any]]:
    """Events of named users over ``days``: plans (one user only "", one none), scores,
    orders, anonymous visitors; ``quitter`` opts out on the first day."""
    rng = random.Random(20261125)
    users = ["u1", "u2", "u3", "quitter", *ODD_USERS]
    rows = []
    for d, day in enumerate(days):
        for u, user in enumerate(users):
            for k in range(1 + (u + d) % 3):
                properties: dict[str, object] = {}
                if user == "zoë ☕":
                    properties["plan"] = ""
                elif user != "\\N":
                    properties["plan"] = rng.choice(["free", "pro", "team"])
                if (u + k) % 2 == 0:
                    properties["score"] = rng.randint(-5, 40)
                at = day + timedelta(hours=1 + 5 * k, minutes=u, seconds=rng.randrange(60))
                name = rng.choice(["Page Viewed", "Order Completed"])
                rows.append(_event(f"e-{d}-{u}-{k}", user, at, received_at, name, **properties))
        rows.append(_event(f"anon-{d}", None, day + 2 * HOUR, received_at))
    rows.append(_event("opt-out", "quitter", days[0] + 20 * HOUR, received_at, "Opted Out"))
    return rows


def _expected_user_days(events: Sequence[dict[str, Any]]) -> dict[tuple[datetime, str], int]:
    """(day, user) -> events, computed here: named users, none who opted out that day."""
    counts: Counter[tuple[datetime, str]] = Counter()
    opted_out = set()
    for event in events:
        if event["user_id"] is None:
            continue
        day = event["timestamp"].replace(hour=0, minute=0, second=0, microsecond=0)
        counts[(day, event["user_id"])] += 1
        if event["event"] == "Opted Out":
            opted_out.add((day, event["user_id"]))
    return {key: n for key, n in counts.items() if key not in opted_out}


@pytest.mark.timeout(90)
def test_incremental_pipeline_lands_in_postgres_by_key_and_late_events_redeliver_their_day(
    project: Project, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECS_URL", pg_url)
    _only_pipelines(project, {"user_days.sql": USER_DAYS})
    _configure_sink(project, schema="analytics", table_prefix="hw_")
    target = ("analytics", "hw_user_days")
    today = _today()
    days = [today - 3 * DAY, today - 2 * DAY, today - DAY]
    events = _user_day_events(days, received_at=datetime.now(UTC) - 2 * HOUR)
    _ingest(project, events)
    expected = _expected_user_days(events)
    assert (days[0], "quitter") not in expected
    assert (days[1], "quitter") in expected

    out = run_cli(project, "run", "--due").stdout
    assert "Ran 3 intervals" in out, out
    assert f"Delivered user_days to {SINK}: 3 intervals, {len(expected)} rows." in out, out

    columns, duck = _duck(project, "user_days")
    assert columns == list(USER_DAYS_TYPES)
    assert {(r[0], r[1]): r[2] for r in duck} == expected  # the store is right to begin with
    pg = _pg_rows(pg_url, target, columns)
    _assert_same(pg, duck)
    # NULL and "" stay apart: "\\N" never had a plan, "zoë ☕" only an empty one.
    plans = {(r[0], r[1]): r[3] for r in pg}
    assert {plans[(d, "\\N")] for d in days} == {None}
    assert {plans[(d, "zoë ☕")] for d in days} == {""}
    assert any(r[4] is not None and r[4] != int(r[4]) for r in pg)  # fractions survive
    # The table: in the configured schema, with the prefix, typed, keyed; nothing else made.
    assert _pg_tables(pg_url) == {target}
    assert _pg_columns(pg_url, target) == USER_DAYS_TYPES
    assert _primary_key(pg_url, target) == ["day", "user_id"]
    owed = _owed(project)
    assert {start: row["status"] for start, row in owed.items()} == dict.fromkeys(days, "delivered")
    per_day = Counter(day for day, _ in expected)
    assert {start: row["rows_delivered"] for start, row in owed.items()} == per_day

    # Nothing is due: nothing runs, nothing is delivered, no row version changes.
    before = _pg_versions(pg_url, target, columns, key=2)
    out = run_cli(project, "run", "--due").stdout
    assert "Nothing is due" in out, out
    assert "Delivered" not in out, out
    assert _pg_versions(pg_url, target, columns, key=2) == before

    # The middle day run again: delivered again, the same rows; the other days untouched.
    out = run_cli(
        project, "run", "user_days", "--start", _iso(days[1]), "--end", _iso(days[2])
    ).stdout
    assert f"Delivered user_days to {SINK}: 1 interval, {per_day[days[1]]} rows." in out, out
    again = _pg_versions(pg_url, target, columns, key=2)
    assert {k: row for k, (_, row) in again.items()} == {k: row for k, (_, row) in before.items()}
    assert {k: v for k, v in again.items() if k[0] != days[1]} == {
        k: v for k, v in before.items() if k[0] != days[1]
    }
    assert _owed(project)[days[1]]["run_id"] != owed[days[1]]["run_id"]

    # Late events for the middle day: u1 has more, u2 opts out (its row of that day
    # goes), a new user appears. Arrival time now: above the arrival mark.
    now = datetime.now(UTC)
    late = [
        *(_event(f"late-u1-{i}", "u1", days[1] + (9 + i) * HOUR, now) for i in range(3)),
        _event("late-u2", "u2", days[1] + 23 * HOUR, now, "Opted Out"),
        _event("late-new", "newcomer", days[1] + 12 * HOUR, now, "Order Completed", plan="pro"),
    ]
    _ingest(project, late)
    expected = _expected_user_days([*events, *late])
    middle_rows = sum(1 for day, _ in expected if day == days[1])
    out = run_cli(project, "run", "--due").stdout
    assert "Ran 1 interval;" in out, out
    assert f"Delivered user_days to {SINK}: 1 interval, {middle_rows} rows." in out, out

    columns, duck = _duck(project, "user_days")
    assert {(r[0], r[1]): r[2] for r in duck} == expected
    after = _pg_versions(pg_url, target, columns, key=2)
    _assert_same([row for _, row in after.values()], duck)
    middle = {k[1] for k in after if k[0] == days[1]}
    assert middle == {k[1] for k in before if k[0] == days[1]} - {"u2"} | {"newcomer"}
    assert after[(days[1], "u1")][1][2] == before[(days[1], "u1")][1][2] + 3
    assert (days[0], "u2") in after, "only u2's row of the middle day goes"
    assert (days[2], "u2") in after, "only u2's row of the middle day goes"
    assert {k: v for k, v in after.items() if k[0] != days[1]} == {
        k: v for k, v in before.items() if k[0] != days[1]
    }
    assert {s: r["status"] for s, r in _owed(project).items()} == dict.fromkeys(days, "delivered")


# == 2. a delivery killed in the middle of its COPY, then resumed ============================

BIG_DAYS = '''\
"""A thousand rows per event: an interval big enough that its COPY takes a moment."""

from __future__ import annotations

import pyarrow as pa

from headwater.process.python import Context, pipeline


@pipeline(
    schedule="@daily",
    kind="incremental",
    time="timestamp",
    time_column="day",
    key=["day", "n"],
    sinks=["recs"],
)
def big_days(ctx: Context) -> pa.Table:
    found = ctx.sql(
        "SELECT COUNT(*) AS events FROM events WHERE timestamp >= @start AND timestamp < @end"
    )
    count = found.column("events")[0].as_py() * 1000
    numbers = range(count)
    return pa.table(
        {
            "day": pa.array([ctx.start] * count, pa.timestamp("us", tz="UTC")),
            "n": pa.array(numbers, pa.int64()),
            "label": pa.array([f"row {i:07d} of {ctx.start:%Y-%m-%d}" for i in numbers]),
            "weight": pa.array([i / 7 for i in numbers], pa.float64()),
        }
    )
'''
#: Events of the big day: a thousand rows each.
BIG = 120
COPYING = """
SELECT a.pid FROM pg_stat_activity AS a JOIN pg_stat_progress_copy AS p ON p.pid = a.pid
WHERE a.datname = current_database() AND a.query LIKE 'COPY "headwater_stage"%'
  AND p.tuples_processed > 0
"""


@contextmanager
def _while_copying(
    project: Project, url: str, *args: str
) -> Iterator[tuple[subprocess.Popen[bytes], int, Path]]:
    """Start ``headwater ARGS``; once its COPY to PostgreSQL is under way, give the
    process, the PostgreSQL session that copies, and the process's log."""
    log = project.root / "copying.log"
    with log.open("wb") as out, _pg(url) as watch:
        process = subprocess.Popen(
            [*HEADWATER, "--project", str(project.root), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "COLUMNS": "3000"},
        )
        try:
            deadline = time.monotonic() + 60
            while True:
                assert process.poll() is None, (
                    f"headwater {' '.join(args)} ended before its COPY was seen:\n{log.read_text()}"
                )
                assert time.monotonic() < deadline, f"no COPY within 60s:\n{log.read_text()}"
                found = watch.execute(COPYING).fetchone()
                if found is not None:
                    break
                time.sleep(0.002)
            yield process, int(found[0]), log
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)


def _session_alive(url: str, pid: int) -> bool:
    with _pg(url) as con:
        return (
            con.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()
            is not None
        )


@pytest.mark.timeout(90)
def test_delivery_killed_during_copy_leaves_nothing_and_is_resumed_by_the_next_run(
    project: Project, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECS_URL", pg_url)
    _only_pipelines(project, {"big_days.py": BIG_DAYS})
    _configure_sink(project)
    target = ("public", "big_days")
    today = _today()
    small, big, empty = today - 3 * DAY, today - 2 * DAY, today - DAY
    received = datetime.now(UTC) - HOUR
    _ingest(
        project,
        [_event(f"s{i}", "u", small + i * HOUR, received) for i in range(2)]
        + [_event(f"b{i}", "u", big + timedelta(seconds=i), received) for i in range(BIG)],
    )

    out = run_cli(project, "run", "big_days", "--start", _iso(small), "--end", _iso(big)).stdout
    assert f"Delivered big_days to {SINK}: 1 interval, 2000 rows." in out, out
    columns, first = _duck(project, "big_days")
    _assert_same(_pg_rows(pg_url, target, columns), first)

    # The pass runs the big day (120,000 rows) and the empty one, then delivers them,
    # oldest first; it dies while the big day's rows are being copied.
    with _while_copying(project, pg_url, "run", "--due") as (process, backend, _):
        process.send_signal(signal.SIGKILL)
        assert process.wait(timeout=10) == -signal.SIGKILL
    wait_for(
        "end of the killed delivery's session", lambda: not _session_alive(pg_url, backend), 30
    )
    _, published = _duck(project, "big_days")
    assert len(published) == 2000 + BIG * 1000  # both runs were published to the store...
    _assert_same(_pg_rows(pg_url, target, columns), first)  # ...and nothing of them here
    owed = _owed(project)
    assert owed[small]["status"] == "delivered"
    for start in (big, empty):
        assert owed[start]["status"] in ("pending", "failed"), owed[start]
        assert owed[start]["rows_delivered"] == 0
    row, _ = _status_deliveries(project)
    assert (row["delivered"], int(row["pending"]) + int(row["failed"])) == ("1", 2), row

    out = run_cli(project, "run", "--due").stdout
    assert "Nothing is due" in out, out
    assert f"Delivered big_days to {SINK}: 2 intervals, {BIG * 1000} rows." in out, out
    _, published = _duck(project, "big_days")
    _assert_same(_pg_rows(pg_url, target, columns), published)
    assert {s: r["status"] for s, r in _owed(project).items()} == dict.fromkeys(
        (small, big, empty), "delivered"
    )
    row, _ = _status_deliveries(project)
    assert (row["delivered"], row["pending"], row["failed"]) == ("3", "0", "0"), row


def _read_without_waiting(url: str, target: Table) -> Counter[datetime] | str:
    """Rows per day of the target, read by another session that waits for no lock."""
    with _pg(url) as con:
        con.execute("SET lock_timeout = '100ms'")
        try:
            rows = con.execute(
                sql.SQL("SELECT day, count(*) FROM {} GROUP BY day").format(sql.Identifier(*target))
            ).fetchall()
        except psycopg.errors.LockNotAvailable as exc:
            return f"blocked: {exc}".splitlines()[0]
    return Counter({_norm(day): n for day, n in rows})


@pytest.mark.timeout(90)
def test_readers_of_the_target_see_the_old_rows_while_an_interval_is_copied(
    project: Project, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """What the read API relies on with serve = true: during a delivery PostgreSQL still
    answers, with the rows before it (never a part of the new interval)."""
    monkeypatch.setenv("RECS_URL", pg_url)
    _only_pipelines(project, {"big_days.py": BIG_DAYS})
    _configure_sink(project)
    target = ("public", "big_days")
    today = _today()
    small, big = today - 3 * DAY, today - 2 * DAY
    received = datetime.now(UTC) - HOUR
    _ingest(
        project,
        [_event(f"s{i}", "u", small + i * HOUR, received) for i in range(2)]
        + [_event(f"b{i}", "u", big + timedelta(seconds=i), received) for i in range(BIG)],
    )
    run_cli(project, "run", "big_days", "--start", _iso(small), "--end", _iso(big))
    assert _read_without_waiting(pg_url, target) == Counter({small: 2000})

    with _while_copying(project, pg_url, "run", "--due") as (process, _, log):
        during = _read_without_waiting(pg_url, target)
        assert process.wait(timeout=60) == 0, log.read_text()
    said = log.read_text()
    assert f"Delivered big_days to {SINK}: 2 intervals, {BIG * 1000} rows." in said, said
    columns, published = _duck(project, "big_days")
    _assert_same(_pg_rows(pg_url, target, columns), published)
    assert during == Counter({small: 2000}), (
        "while the big day was being copied, another session reading the target table "
        f"got: {during}"
    )


# == 3. PostgreSQL unreachable: retried, then a dead letter, then replayed ===================


def _closed_port() -> socket.socket:
    """A loopback port bound but not listening: connections to it are refused, and no
    other process can take it while the socket is open."""
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.mark.timeout(90)
def test_unreachable_postgres_is_retried_then_a_dead_letter_then_replayed_once_fixed(
    project: Project, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECS_URL", pg_url)
    _only_pipelines(project, {"user_days.sql": USER_DAYS})
    day = _today() - DAY
    with closing(_closed_port()) as closed:
        port = closed.getsockname()[1]
        broken = f"postgresql://headwater@127.0.0.1:{port}/recs"
        # A long backoff capped short: the cap is what makes the next attempt due soon.
        _configure_sink(
            project, url=broken, max_attempts=2, backoff_seconds=30, max_backoff_seconds=0.3
        )
        events = [
            _event(f"e{i}", f"u{i % 4}", day + i * HOUR, datetime.now(UTC) - HOUR, plan="pro")
            for i in range(10)
        ]
        _ingest(project, events)

        first = run_cli(project, "run", "--due", check=False)
        said = first.stdout + first.stderr
        assert first.returncode == 1, said  # the delivery failed: cron sees it
        assert "Ran 1 interval;" in first.stdout, said
        assert f"Delivery of user_days {_iso(day)[:16]} to {SINK} failed" in said, said
        assert "Connection refused" in said, said
        assert "Delivered" not in said, said
        [owed] = _owed(project).values()
        assert (owed["status"], owed["attempts"]) == ("failed", 1), owed
        assert "Connection refused" in owed["last_error"]
        assert owed["next_attempt_at"] <= owed["updated_at"] + timedelta(seconds=0.3), owed
        row, out = _status_deliveries(project)
        assert (row["delivered"], row["pending"], row["failed"], row["dead letters"]) == (
            "0", "0", "1", "0",
        ), out  # fmt: skip
        assert "Connection refused" in row["last error"], out

        # The second attempt, once due, is the last: a dead letter.
        next_attempt = owed["next_attempt_at"]
        wait_for("next attempt time", lambda: datetime.now(UTC) > next_attempt, 5)
        second = run_cli(project, "run", "--due", check=False)
        said = second.stdout + second.stderr
        assert second.returncode == 1, said  # a dead letter
        assert f"Dead letter for user_days {_iso(day)[:16]} to {SINK}" in said, said
        assert "Connection refused" in said, said
        assert "after 2 attempts" in said, said
        [owed] = _owed(project).values()
        assert owed["status"] == "dead", owed
        [letter] = _dead_letters(project)
        assert (letter["pipeline"], letter["sink"], letter["batch"]) == ("user_days", SINK, None)
        assert letter["attempts"] == 2, letter
        assert "Connection refused" in letter["reason"], letter
        row, out = _status_deliveries(project)
        assert (row["failed"], row["dead letters"]) == ("0", "1"), out
        assert "headwater replay" in out, out
        listed = run_cli(project, "replay", "--list").stdout
        [shown] = [r for t in _rich_tables(listed) for r in t]
        assert (shown["pipeline"], shown["sink"], shown["batch"]) == ("user_days", SINK, "all")
        assert _pg_tables(pg_url) == set()

    # Fixed: the URL (with its password) now comes from the environment.
    path = project.root / "headwater.toml"
    text = path.read_text()
    assert text.count(json.dumps(broken)) == 1
    path.write_text(text.replace(json.dumps(broken), '"${RECS_URL}"'))
    out = run_cli(project, "replay").stdout
    assert "Replayed: 1 delivered" in out, out
    columns, duck = _duck(project, "user_days")
    assert len(duck) == 4
    _assert_same(_pg_rows(pg_url, ("public", "user_days"), columns), duck)
    [owed] = _owed(project).values()
    assert (owed["status"], owed["rows_delivered"]) == ("delivered", 4), owed
    assert _dead_letters(project) == []
    row, out = _status_deliveries(project)
    assert (row["delivered"], row["failed"], row["dead letters"]) == ("1", "0", "0"), out


# == 4. the read API serves a dataset from PostgreSQL ===========================================

PROFILES = """\
/* headwater
description = "One row per user: events, greatest plan, best and mean score, first seen."
kind = "full"
key = ["user_id"]
{sinks}
*/
SELECT
  user_id,
  COUNT(*) AS events,
  MAX(JSON_VALUE(properties, '$.plan')) AS plan,
  MAX(SAFE_CAST(JSON_VALUE(properties, '$.score') AS INT64)) AS score,
  AVG(SAFE_CAST(JSON_VALUE(properties, '$.score') AS INT64)) AS mean_score,
  MIN(timestamp) AS first_seen,
  -- NUMERIC(38, 9), NULL for users without a score: PostgreSQL's NUMERIC has no scale.
  SUM(CAST(SAFE_CAST(JSON_VALUE(properties, '$.score') AS INT64) AS NUMERIC) / 8) AS eighths,
  ARRAY_AGG(DISTINCT JSON_VALUE(properties, '$.plan') IGNORE NULLS
            ORDER BY JSON_VALUE(properties, '$.plan')) AS plans,
  -- NULL on every row: a list column PostgreSQL is given no list of.
  ARRAY_AGG(JSON_VALUE(properties, '$.nothing') IGNORE NULLS) AS nothing,
  -- Decimals, which JSON keeps as text, served as decimals.
  ARRAY_AGG(DISTINCT CAST(SAFE_CAST(JSON_VALUE(properties, '$.score') AS INT64) AS NUMERIC)
            IGNORE NULLS
            ORDER BY CAST(SAFE_CAST(JSON_VALUE(properties, '$.score') AS INT64) AS NUMERIC))
    AS scores
FROM events
WHERE user_id IS NOT NULL
GROUP BY user_id
"""
#: Ids a careless API would splice into SQL or a path; ordinary data here.
API_USERS = ["o'brien; DROP TABLE events;--", 'say "hi"', "zoë", "a b", "tenant/42"]


def _profile_events(received_at: datetime) -> list[dict[str, Any]]:
    rng = random.Random(42)
    base = _today() - 4 * DAY
    users = [f"u{n:02d}" for n in range(14)] + API_USERS
    rows = []
    for u, user in enumerate(users):
        for k in range(1 + u % 4):
            properties: dict[str, object] = {"plan": rng.choice(["free", "pro", "team"])}
            if (u + k) % 3:
                properties["score"] = rng.randint(-9, 40)
            at = base + timedelta(hours=rng.randrange(0, 72, 6))  # ties in first_seen
            rows.append(_event(f"p-{u}-{k}", user, at, received_at, **properties))
    return rows


@pytest.mark.timeout(90)
def test_read_api_serves_a_postgres_sink_dataset_live_from_postgres(
    project: Project, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECS_URL", pg_url)
    _only_pipelines(
        project,
        {
            "profiles.sql": PROFILES.format(sinks='sinks = ["recs"]'),
            # The same rows served from the DuckDB store, to compare answers with.
            "profiles_local.sql": PROFILES.format(sinks=""),
        },
    )
    _configure_sink(project, table_prefix="hw_", serve=True)
    project.configure("[delivery]\npoll_seconds = 0.2\n")
    _set_tick(project, 3600)  # the start-up pass only
    target = ("public", "hw_profiles")
    events = _profile_events(datetime.now(UTC) - HOUR)
    _ingest(project, events)
    users = sorted({e["user_id"] for e in events})
    added = run_cli(
        project, "consumers", "add", "recs_reader", "--datasets", "profiles,profiles_local"
    )
    [token] = TOKEN.findall(added.stdout)

    server = Server(project).start()
    try:
        # The scheduler's start-up pass runs both; the deliverer's loop fills PostgreSQL.
        wait_for(
            "delivery by headwater up",
            lambda: _pg_count(pg_url, target) == len(users),
            30,
            detail=lambda: server.log.read_text(),
        )
        with httpx.Client(base_url=server.url, timeout=30) as http:
            _check_served(http, token, pg_url, target, users, project, server)
    finally:
        code = server.stop()
    assert code == 0, server.log.read_text()


def _check_served(
    http: httpx.Client,
    token: str,
    url: str,
    target: Table,
    users: list[str],
    project: Project,
    server: Server,
) -> None:
    auth = {"Authorization": f"Bearer {token}"}

    def lookup(dataset: str, user: str) -> httpx.Response:
        return http.get(f"/api/v1/datasets/{dataset}/rows/{quote(user, safe='')}", headers=auth)

    def pages(dataset: str, params: dict[str, Any]) -> list[dict[str, Any]]:
        rows, cursor = [], None
        for _ in range(100):
            answer = http.get(
                f"/api/v1/datasets/{dataset}/rows",
                params={**params, **({"cursor": cursor} if cursor else {})},
                headers=auth,
            )
            assert answer.status_code == 200, answer.text
            body = answer.json()
            rows += body["rows"]
            cursor = body["next_cursor"]
            if cursor is None:
                return rows
        raise AssertionError("more than 100 pages")

    # Without a token, or with a wrong one: 401, before anything else.
    for headers in ({}, {"Authorization": "Bearer hw_ct_not-a-token"}):
        for path in ("/api/v1/datasets/profiles/rows/u01", "/api/v1/datasets/profiles/rows"):
            answer = http.get(path, headers=headers)
            assert answer.status_code == 401, answer.text

    # The same schema and key as the DuckDB-served twin.
    listed = http.get("/api/v1/datasets", headers=auth)
    assert listed.status_code == 200, listed.text
    by_name = {d["name"]: d for d in listed.json()["datasets"]}
    assert by_name["profiles"]["key"] == ["user_id"]
    assert by_name["profiles"]["columns"] == by_name["profiles_local"]["columns"]

    # Every row by key: as the twin answers, and as PostgreSQL holds it.
    columns, _ = _duck(project, "profiles")
    held = {row[0]: row for row in _pg_rows(url, target, columns)}
    for user in users:
        served, local = lookup("profiles", user), lookup("profiles_local", user)
        assert (served.status_code, local.status_code) == (200, 200), (user, served.text)
        assert served.json() == local.json(), user
        row = served.json()["row"]
        row["first_seen"] = _norm(datetime.fromisoformat(row["first_seen"]))
        if row["eighths"] is not None:  # NUMERIC is JSON text, to keep its digits
            row["eighths"] = Decimal(row["eighths"])
        assert tuple(row[c] for c in columns) == held[user]

    # Filtered and paged: the same pages as the twin, the rows PostgreSQL holds.
    some_time = sorted(r[5] for r in held.values())[len(held) // 2]
    for params in (
        {"plan": "pro", "limit": 2},
        {"events__gte": 2, "order_by": "-events,plan", "limit": 3},
        {"first_seen__lt": some_time.isoformat(), "limit": 4},
        {"user_id__in": "u01,zoë,tenant/42,nobody"},
    ):
        served = pages("profiles", params)
        assert served == pages("profiles_local", params), params
        assert served, params
    # A page whose decimals are all NULL has the store's NUMERIC type too.
    scoreless = [u for u, r in held.items() if r[columns.index("eighths")] is None]
    assert scoreless
    for dataset in ("profiles", "profiles_local"):
        page = http.get(
            f"/api/v1/datasets/{dataset}/rows",
            headers=auth,
            params={"user_id__in": ",".join(scoreless), "format": "arrow"},
        )
        assert page.status_code == 200, page.text
        arrow = pa.ipc.open_stream(page.content).read_all()
        assert arrow.num_rows == len(scoreless)
        assert arrow.schema.field("eighths").type == pa.decimal128(38, 9), dataset
        # The types as the catalog lists them, lists' items named alike from every engine.
        typed = [{"name": f.name, "type": str(f.type)} for f in arrow.schema]
        assert typed == by_name[dataset]["columns"], dataset
    pro = pages("profiles", {"plan": "pro", "limit": 2})
    assert [r["user_id"] for r in pro] == sorted(u for u, r in held.items() if r[2] == "pro")

    # Live: what PostgreSQL holds now is what the API answers at once.
    with _pg(url) as con:
        con.execute(
            sql.SQL("UPDATE {} SET events = 424242, plan = 'set in postgres' WHERE user_id = 'u01'")
            .format(sql.Identifier(*target))
        )  # fmt: skip
        con.execute(sql.SQL("DELETE FROM {} WHERE user_id = 'u02'").format(sql.Identifier(*target)))
        con.execute(
            sql.SQL("INSERT INTO {} (user_id, events, plan) VALUES ('only-in-pg', 1, 'x')")
            .format(sql.Identifier(*target))
        )  # fmt: skip
    changed = lookup("profiles", "u01").json()["row"]
    assert (changed["events"], changed["plan"]) == (424242, "set in postgres")
    assert lookup("profiles_local", "u01").json()["row"]["events"] != 424242
    gone = lookup("profiles", "u02")
    assert (gone.status_code, gone.json()["error"]["code"]) == (404, "no_such_row"), gone.text
    assert lookup("profiles", "only-in-pg").status_code == 200
    filtered = pages("profiles", {"plan": "set in postgres"})
    assert [r["user_id"] for r in filtered] == ["u01"]

    # A run of the full pipeline delivers the whole table again: edits undone, the
    # row whose key is not in the output deleted.
    today = _today()
    out = run_cli(project, "run", "profiles", "--start", _iso(today - DAY), "--end", _iso(today))
    assert "Ran 1 interval;" in out.stdout, out.stdout

    def restored() -> bool:
        return {r[0]: r for r in _pg_rows(url, target, columns)} == held

    # Polled: whether the command itself waits for it is the test after this one.
    wait_for("re-delivery of profiles", restored, 30, detail=lambda: server.log.read_text())
    assert lookup("profiles", "u01").json() == lookup("profiles_local", "u01").json()
    assert lookup("profiles", "u02").status_code == 200
    assert lookup("profiles", "only-in-pg").status_code == 404


GATED_DAYS = '''\
"""Events per user and day; the run of the day written in the file GATE waits for GO."""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa

from headwater.process.python import Context, pipeline

ROOT = Path(__file__).resolve().parents[1]


@pipeline(
    schedule="@daily",
    kind="incremental",
    time="timestamp",
    time_column="day",
    key=["day", "user_id"],
    sinks=["recs"],
)
def gated_days(ctx: Context) -> pa.Table:
    rows = ctx.sql(
        "SELECT TIMESTAMP_TRUNC(timestamp, DAY) AS day, user_id, COUNT(*) AS events "
        "FROM events WHERE timestamp >= @start AND timestamp < @end GROUP BY day, user_id"
    )
    gate = ROOT / "GATE"
    if gate.exists() and gate.read_text() == ctx.start.isoformat():
        deadline = time.monotonic() + 60
        while not (ROOT / "GO").exists() and time.monotonic() < deadline:
            time.sleep(0.02)
    return rows
'''


def _lock_waiters(url: str, target: Table) -> int:
    """Sessions waiting for a lock on the target table."""
    with _pg(url) as con:
        found = con.execute(
            "SELECT count(*) FROM pg_locks WHERE relation = to_regclass(%s) AND NOT granted",
            [f'"{target[0]}"."{target[1]}"'],
        ).fetchone()
    return int(found[0]) if found else 0


@pytest.mark.timeout(90)
def test_run_sent_to_headwater_up_returns_only_after_the_deliveries_it_owes(
    project: Project, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`headwater run` while `headwater up` runs: the server's delivery loop, woken by the
    first published interval, takes that delivery; the command must still wait for it
    (and report it) before returning. The delivery is held by a lock on the target table
    taken here, and the second interval's run by the file GO, so the order is fixed."""
    monkeypatch.setenv("RECS_URL", pg_url)
    _only_pipelines(project, {"gated_days.py": GATED_DAYS})
    _configure_sink(project)
    project.configure("[delivery]\npoll_seconds = 0.2\n")
    _set_tick(project, 3600)
    target = ("public", "gated_days")
    today = _today()
    days = [today - 3 * DAY, today - 2 * DAY, today - DAY]
    received = datetime.now(UTC) - HOUR
    _ingest(
        project,
        [
            _event(f"e{d}-{i}", f"u{i % 3}", day + i * HOUR, received)
            for d, day in enumerate(days)
            for i in range(6)
        ],
    )
    out = run_cli(project, "run", "--due").stdout  # no server yet: everything is delivered
    assert f"Delivered gated_days to {SINK}: 3 intervals, 9 rows." in out, out

    delivered_before = _owed(project)
    (project.root / "GATE").write_text(days[2].isoformat())
    log = project.root / "run.log"
    server = Server(project).start()
    process: subprocess.Popen[bytes] | None = None
    try:
        with _pg(pg_url) as holder, holder.transaction():
            holder.execute(
                sql.SQL("LOCK TABLE {} IN ACCESS EXCLUSIVE MODE").format(sql.Identifier(*target))
            )
            with log.open("wb") as output:
                process = subprocess.Popen(
                    [*HEADWATER, "--project", str(project.root), "run", "gated_days",
                     "--start", _iso(days[1]), "--end", _iso(today)],
                    stdout=output, stderr=subprocess.STDOUT, env={**os.environ, "COLUMNS": "3000"},
                )  # fmt: skip
            running = process
            # days[1] is published and its delivery waits for the lock; days[2] waits for GO.
            wait_for(
                "a delivery waiting for the table lock",
                lambda: _lock_waiters(pg_url, target) > 0 or running.poll() is not None,
                30,
                detail=lambda: f"{log.read_text()}\n{server.log.read_text()}",
            )
            assert process.poll() is None, log.read_text()
            (project.root / "GO").write_text("")
            # The command has nothing left to do but the delivery held here: it must not
            # return while that delivery is held.
            deadline = time.monotonic() + 5
            while process.poll() is None and time.monotonic() < deadline:
                time.sleep(0.05)
            assert process.poll() is None, (
                "headwater run returned while a delivery it owes was still held in "
                f"PostgreSQL (rows in the target not yet updated):\n{log.read_text()}"
            )
        assert process.wait(timeout=60) == 0, log.read_text()
        said = log.read_text()
        assert f"Delivered gated_days to {SINK}: 2 intervals, 6 rows." in said, said
        # When it returned, both re-runs' outputs were delivered.
        owed = _owed(project)
        for day in days[1:]:
            assert owed[day]["status"] == "delivered", owed[day]
            assert owed[day]["run_id"] != delivered_before[day]["run_id"], owed[day]
        columns, duck = _duck(project, "gated_days")
        _assert_same(_pg_rows(pg_url, target, columns), duck)
    finally:
        if process is not None and process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        code = server.stop()
    assert code == 0, server.log.read_text()


# == 5. configuration errors, through the command ============================================

NO_KEY = """\
/* headwater
kind = "incremental"
time = "timestamp"
time_column = "day"
sinks = ["recs"]
*/
SELECT TIMESTAMP_TRUNC(timestamp, DAY) AS day, COUNT(*) AS events
FROM events
WHERE timestamp >= @start AND timestamp < @end
GROUP BY day
"""


#: A password in each place a PostgreSQL connection string can hold one.
PLAIN_PASSWORDS = [
    "postgresql://app:s3cret-pw@127.0.0.1:5432/recs",
    "postgresql://app@127.0.0.1:5432/recs?password=s3cret-pw",
    "host=127.0.0.1 user=app password=s3cret-pw dbname=recs",
]


def test_sink_url_with_a_plain_text_password_is_refused(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = project.root / "headwater.toml"
    initial = path.read_text()
    for url in PLAIN_PASSWORDS:
        path.write_text(initial)
        _configure_sink(project, url=url)
        refused = run_cli(project, "status", check=False)
        said = refused.stdout + refused.stderr
        assert refused.returncode != 0, (url, said)
        assert "headwater.toml" in said, (url, said)
        assert f"[sinks.{SINK}] url holds a password in plain text" in said, (url, said)
        assert '"${NAME}"' in said, (url, said)  # the fix: an environment reference
        assert "s3cret-pw" not in said, (url, said)  # the error does not repeat the secret

    # The same URL from the environment is accepted.
    monkeypatch.setenv("RECS_URL", PLAIN_PASSWORDS[-1])
    path.write_text(path.read_text().replace(json.dumps(PLAIN_PASSWORDS[-1]), '"${RECS_URL}"'))
    run_cli(project, "status")


def test_postgres_sink_without_a_key_is_refused_naming_the_pipeline(
    project: Project, pg_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RECS_URL", pg_url)
    (project.root / "pipelines" / "no_key.sql").write_text(NO_KEY)
    _configure_sink(project)
    refused = run_cli(project, "run", "--due", check=False)
    said = refused.stdout + refused.stderr
    assert refused.returncode != 0, said
    assert str(project.root / "pipelines" / "no_key.sql") in said, said
    assert f"sink '{SINK}' is a PostgreSQL table" in said, said
    assert "declares no key" in said, said
    assert "key = [" in said, said  # the fix
    assert "no_key does not load" in said, said  # set apart: it did not run
    assert _pg_tables(pg_url) == set()


def test_pipeline_naming_an_undeclared_sink_is_refused_listing_the_declared_ones(
    project: Project,
) -> None:
    (project.root / "pipelines" / "to_crm.sql").write_text(
        NO_KEY.replace('sinks = ["recs"]', 'key = ["day"]\nsinks = ["crm"]')
    )
    _configure_sink(project, url="postgresql://app@127.0.0.1:5432/recs")
    refused = run_cli(project, "run", "--due", check=False)
    said = refused.stdout + refused.stderr
    assert refused.returncode != 0, said
    assert str(project.root / "pipelines" / "to_crm.sql") in said, said
    assert "'crm', which is not a [sinks.crm] table" in said, said
    assert f"(declared: files, {SINK})" in said, said
