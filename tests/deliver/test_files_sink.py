"""The files sink: one file per interval, replaced atomically, delivered by the CLI.

Real parts only: ``headwater`` child processes, the project's DuckDB file (events
committed straight into it with past ``received_at``, as in
``tests/process/test_pipelines_e2e.py``), real files on disk and fsspec's
in-memory filesystem for an object-store-like target. Every file is compared
with the pipeline's table, read from the store with a plain ``duckdb``
connection, not through the code under test.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import threading
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import fsspec
import pyarrow as pa
import pyarrow.csv as pa_csv
import pyarrow.parquet as pq
import pytest

from headwater.core.types import Interval
from headwater.deliver.files import FilesTarget
from headwater.deliver.settings import FilesSink
from headwater.store import schema
from headwater.store.duckdb import DuckDBEngine
from headwater.store.engine import IngestBatch
from tests.conftest import HEADWATER, Project, run_cli

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
STAMP = "%Y%m%dT%H%M%SZ"
HOURLY = "hourly_event_counts"
DAU = "daily_active_users"
FORMATS = ("parquet", "csv", "jsonl")


# -- helpers: the command, the store, the project files ---------------------------------


def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def _today() -> datetime:
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _event(
    message_id: str,
    *,
    received_at: datetime,
    timestamp: datetime | None = None,
    event: str | None = "Page Viewed",
    user_id: str | None = "user-1",
    anonymous_id: str | None = None,
    properties: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """A row of ``events`` as the collector commits it."""
    moment = received_at if timestamp is None else timestamp
    return {
        "message_id": message_id,
        "source": "web",
        "type": "track",
        "event": event,
        "user_id": user_id,
        "anonymous_id": anonymous_id,
        "timestamp": moment,
        "original_timestamp": moment,
        "received_at": received_at,
        "properties": json.dumps(properties or {}),
    }


def _ingest(root: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Commit rows straight into the project's store; no server may hold it."""
    engine = DuckDBEngine.open(root / ".headwater" / "events.duckdb")
    try:
        events = pa.Table.from_pylist(list(rows), schema=schema.EVENTS)
        engine.ingest(IngestBatch(events, schema.FAILED_EVENTS.empty_table()))
    finally:
        engine.close()


def _store(root: Path, sql: str, params: Sequence[object] = ()) -> pa.Table:
    """A query on the project's DuckDB file with a plain, read-only ``duckdb`` connection."""
    con = duckdb.connect(str(root / ".headwater" / "events.duckdb"), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        return con.sql(sql, params=list(params) or None).to_arrow_table()
    finally:
        con.close()


def _canon(rows: Sequence[dict[str, Any]]) -> list[tuple[tuple[str, Any], ...]]:
    """Rows as comparable tuples (times in UTC ISO form), in a canonical order."""

    def norm(value: Any) -> Any:
        return value.astimezone(UTC).isoformat() if isinstance(value, datetime) else value

    return sorted((tuple((k, norm(v)) for k, v in row.items()) for row in rows), key=repr)


def _read(path: Path, fmt: str, like: pa.Schema) -> pa.Table:
    """A delivered file read back with pyarrow (or json), typed as ``like``."""
    data = path.read_bytes()
    return _decode(data, fmt, like)


def _decode(data: bytes, fmt: str, like: pa.Schema) -> pa.Table:
    if fmt == "parquet":
        return pq.read_table(io.BytesIO(data))
    if fmt == "csv":
        options = pa_csv.ConvertOptions(
            column_types=like, strings_can_be_null=True, quoted_strings_can_be_null=False
        )
        table = pa_csv.read_csv(io.BytesIO(data), convert_options=options)
        assert table.column_names == like.names
        return table
    rows = []
    for line in data.splitlines():
        row = json.loads(line)
        assert list(row) == like.names, f"keys {list(row)} are not the columns {like.names}"
        for field in like:
            if pa.types.is_timestamp(field.type) and row[field.name] is not None:
                row[field.name] = datetime.fromisoformat(row[field.name])
        rows.append(row)
    assert data == b"" or data.endswith(b"\n"), "a JSON-lines file ends with a newline"
    return pa.Table.from_pylist(rows, schema=like)


def _replace_in(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert text.count(old) == 1, f"expected one {old!r} in {path}"
    path.write_text(text.replace(old, new))


def _hidden(folder: Path) -> list[Path]:
    """Files or folders whose name starts with a dot (the sink's temporary files)."""
    return [p for p in folder.rglob("*") if p.name.startswith(".")]


def _files(folder: Path) -> dict[str, Path]:
    return {p.name: p for p in sorted(folder.iterdir())}


def _tables(output: str) -> list[list[dict[str, str]]]:
    """Every rich table the CLI printed: its rows, by column title."""
    tables: list[list[dict[str, str]]] = []
    titles: list[str] = []
    for line in output.splitlines():
        if line.startswith("┃"):
            titles = [cell.strip() for cell in line.strip().strip("┃").split("┃")]
            tables.append([])
        elif line.startswith("│") and tables:
            cells = [cell.strip() for cell in line.strip().strip("│").split("│")]
            tables[-1].append(dict(zip(titles, cells, strict=True)))
    return tables


def _deliveries_row(root: Path, pipeline: str, sink: str) -> dict[str, str]:
    """The row of ``headwater status``'s Deliveries table for one pipeline and sink."""
    output = run_cli(root, "status").stdout
    assert "Deliveries" in output, output
    found = [
        row
        for table in _tables(output)
        for row in table
        if row.get("sink") == sink and row.get("pipeline") == pipeline
    ]
    assert len(found) == 1, f"expected one Deliveries row for {pipeline} to {sink}:\n{output}"
    return found[0]


def _delivered_line(pipeline: str, sink: str, intervals: int, rows: int) -> str:
    plural = "s" if intervals != 1 else ""
    return f"Delivered {pipeline} to {sink}: {intervals} interval{plural}, {rows} rows."


# -- 1. the example of `headwater init` ---------------------------------------------------


@pytest.mark.timeout(120)
def test_init_example_delivers_one_parquet_file_per_hour_equal_to_the_table(
    tmp_path: Path,
) -> None:
    root = tmp_path / "analytics"
    made = subprocess.run(
        [*HEADWATER, "init", str(root)], capture_output=True, text=True, timeout=60, check=False
    )
    assert made.returncode == 0, made.stderr
    this_hour = _hour(datetime.now(UTC))
    hours = [this_hour - k * HOUR for k in (3, 2, 1)]
    names = ("Page Viewed", "Signed Up", "Order Completed")
    rows = []
    for h, hour in enumerate(hours):
        for i in range(10 + 4 * h):
            person = i % 4
            rows.append(
                _event(
                    f"h{h}-{i}",
                    received_at=hour + timedelta(minutes=1 + 3 * i, microseconds=i),
                    event=names[(i + h) % 3],
                    user_id=f"user-{person}" if i % 5 else None,
                    anonymous_id=f"anon-{person}" if i % 5 == 0 else None,
                )
            )
    _ingest(root, rows)

    out = run_cli(root, "run", "--due").stdout

    folder = root / "exports" / HOURLY
    files = _files(folder)
    assert _hidden(root / "exports") == []
    expected = {f"{hour:{STAMP}}.parquet" for hour in hours}
    assert expected <= set(files), f"{sorted(files)} lacks some of {sorted(expected)}"
    table = _store(root, f"SELECT * FROM {HOURLY}")
    union: list[dict[str, Any]] = []
    for name, path in files.items():
        delivered = pq.read_table(path)
        assert delivered.schema.names == table.schema.names
        assert [f.type for f in delivered.schema] == [f.type for f in table.schema]
        start = datetime.strptime(name.removesuffix(".parquet"), STAMP).replace(tzinfo=UTC)
        if name not in expected:
            # Only when the clock passed an hour boundary during the test: an hour
            # without events, delivered empty.
            assert start > hours[-1], name
            assert delivered.num_rows == 0, name
        assert {r["hour"] for r in delivered.to_pylist()} <= {start}, name
        union.extend(delivered.to_pylist())
    assert _canon(union) == _canon(table.to_pylist())

    # The table itself, counted here from the events that were committed.
    counts: dict[tuple[datetime, str], list[Any]] = {}
    for row in rows:
        entry = counts.setdefault((_hour(row["received_at"]), row["event"]), [0, set()])
        entry[0] += 1
        entry[1].add(row["user_id"] or row["anonymous_id"])
    assert {
        (r["hour"], r["source"], r["event_name"]): (r["events"], r["people"])
        for r in table.to_pylist()
    } == {(h, "web", e): (n, len(people)) for (h, e), (n, people) in counts.items()}

    assert _delivered_line(HOURLY, "files", len(files), table.num_rows) in out, out


# -- 2. parquet, csv and jsonl hold the rows exactly ---------------------------------------

FORMATS_PIPELINE = """\
/* headwater
description = "Per hour and event: awkward text, nulls, floats, booleans, times."
schedule = "@hourly"
kind = "incremental"
time = "received_at"
time_column = "hour"
key = ["hour", "event_name"]
sinks = ["as_parquet", "as_csv", "as_jsonl"]
*/
SELECT
  TIMESTAMP_TRUNC(received_at, HOUR) AS hour,
  event AS event_name,
  COUNT(*) AS events,
  AVG(CAST(JSON_VALUE(properties, '$.price') AS FLOAT64)) AS avg_price,
  MAX(user_id) AS last_user,
  LOGICAL_OR(anonymous_id IS NOT NULL) AS any_anonymous,
  MIN(timestamp) AS first_seen
FROM events
WHERE received_at >= @start AND received_at < @end
GROUP BY hour, event_name
"""

AWKWARD_NAMES: tuple[str | None, ...] = (
    "plain",
    'comma, and "quotes"',
    "line\nbreak\r\nand tab\t",
    "ünïcødé ✓ 日本語 🚀",
    "",
    None,
    "null",
    "  padded  ",
)
PRICES: tuple[float | None, ...] = (0.1, 0.2, 19.99, 1e-7, 123456789.123, None, 2.5e300)


@pytest.mark.timeout(120)
def test_each_format_round_trips_the_interval_rows_exactly(project: Project) -> None:
    root = project.root
    for example in ("hourly_event_counts.sql", "daily_active_users.sql"):
        (root / "pipelines" / example).unlink()
    (root / "pipelines" / "formats.sql").write_text(FORMATS_PIPELINE)
    project.configure(
        "\n".join(
            f'[sinks.as_{fmt}]\ntype = "files"\nurl = "out/{fmt}"\nformat = "{fmt}"\n'
            for fmt in FORMATS
        )
    )
    this_hour = _hour(datetime.now(UTC))
    hours = [this_hour - 2 * HOUR, this_hour - HOUR]
    rows = []
    for h, hour in enumerate(hours):
        for i in range(40):
            name = AWKWARD_NAMES[(i + h) % len(AWKWARD_NAMES)]
            # No row of the name 'null' has a price: avg_price is NULL there.
            price = None if name == "null" else PRICES[(i * 3 + h) % len(PRICES)]
            received = hour + timedelta(seconds=60 * i + 7, microseconds=123_457 * (i % 7))
            rows.append(
                _event(
                    f"f{h}-{i}",
                    received_at=received,
                    timestamp=received - timedelta(seconds=3, microseconds=456_789 * (i % 3)),
                    event=name,
                    # Every row of the 'plain' name has no user: last_user is NULL there.
                    user_id=None if name == "plain" else f"user-{i % 6}",
                    anonymous_id=f"anon-{i}" if i % 4 == 0 else None,
                    properties={} if price is None else {"price": price},
                )
            )
    _ingest(root, rows)

    out = run_cli(root, "run", "--due").stdout

    table = _store(root, "SELECT * FROM formats")
    assert table.num_rows >= 2 * len(AWKWARD_NAMES)  # every name in both hours
    assert None in table["last_user"].to_pylist()
    # CSV must tell an empty name from a missing one; both are in the table.
    assert {"", None} <= set(table["event_name"].to_pylist())
    assert None in table["avg_price"].to_pylist()
    names: set[str] | None = None
    for fmt in FORMATS:
        folder = root / "out" / fmt / "formats"
        files = _files(folder)
        assert _hidden(folder) == []
        assert all(name.endswith(f".{fmt}") for name in files), sorted(files)
        stems = {name.rsplit(".", 1)[0] for name in files}
        assert {f"{hour:{STAMP}}" for hour in hours} <= stems
        names = stems if names is None else names
        assert stems == names  # the same intervals in every format
        total = 0
        for name, path in files.items():
            start = datetime.strptime(name.rsplit(".", 1)[0], STAMP).replace(tzinfo=UTC)
            expected = _store(
                root,
                "SELECT * FROM formats WHERE hour >= ? AND hour < ?",
                [start, start + HOUR],
            )
            delivered = _read(path, fmt, table.schema)
            assert delivered.num_rows == expected.num_rows, f"{fmt} {name}"
            assert _canon(delivered.to_pylist()) == _canon(expected.to_pylist()), f"{fmt} {name}"
            if fmt == "parquet":
                assert delivered.schema.equals(table.schema, check_metadata=False)
            total += delivered.num_rows
        assert total == table.num_rows
        assert _delivered_line("formats", f"as_{fmt}", len(files), table.num_rows) in out, out


# -- 3. a re-opened interval replaces its file, and only its file ---------------------------


@pytest.mark.timeout(120)
def test_late_events_replace_only_their_day_file_atomically(project: Project) -> None:
    root = project.root
    dau = root / "pipelines" / f"{DAU}.sql"
    _replace_in(dau, 'key = ["day", "plan"]\n', 'key = ["day", "plan"]\nsinks = ["files"]\n')
    today = _today()
    days = [today - k * DAY for k in (3, 2, 1)]
    plans = ("free", "pro", None, "team")
    received = _hour(datetime.now(UTC)) - HOUR + timedelta(minutes=5)
    rows = []
    for d, day in enumerate(days):
        for i in range(24):
            plan = plans[(i + d) % len(plans)]
            rows.append(
                _event(
                    f"d{d}-{i}",
                    received_at=received + timedelta(seconds=i + 30 * d),
                    timestamp=day + timedelta(hours=i % 24, minutes=d),
                    user_id=f"user-{i % 9}",
                    properties={} if plan is None else {"plan": plan},
                )
            )
    _ingest(root, rows)
    first = run_cli(root, "run", "--due").stdout

    folder = root / "exports" / DAU
    before = _files(folder)
    names = {f"{day:{STAMP}}.parquet" for day in days}
    assert names <= set(before), sorted(before)
    assert "Delivered daily_active_users to files: " in first, first
    snapshot = {
        name: (path.read_bytes(), path.stat().st_mtime_ns, path.stat().st_ino)
        for name, path in before.items()
    }
    reopened = f"{days[1]:{STAMP}}.parquet"
    old_rows = pq.read_table(before[reopened]).to_pylist()

    # Late events for days[1]: a new plan and more people on an old one.
    late = [
        _event(
            f"late-{i}",
            received_at=datetime.now(UTC),
            timestamp=days[1] + timedelta(hours=13, minutes=i),
            user_id=f"late-user-{i}",
            properties={"plan": "scale" if i == 0 else "free"},
        )
        for i in range(4)
    ]
    _ingest(root, late)
    second = run_cli(root, "run", "--due").stdout

    day_rows = _store(
        root, f"SELECT * FROM {DAU} WHERE day >= ? AND day < ?", [days[1], days[1] + DAY]
    )
    assert "scale" in day_rows["plan"].to_pylist()  # the late events are in the table
    after = _files(folder)
    assert set(before) <= set(after)
    # One interval re-delivered (and, only if midnight passed meanwhile, an empty new day).
    new_days = len(set(after) - set(before))
    assert _delivered_line(DAU, "files", 1 + new_days, day_rows.num_rows) in second, second
    replaced = after[reopened]
    assert replaced.read_bytes() != snapshot[reopened][0]
    assert replaced.stat().st_ino != snapshot[reopened][2]  # a new file, renamed over the old
    new_rows = pq.read_table(replaced).to_pylist()
    assert _canon(new_rows) == _canon(day_rows.to_pylist())
    assert _canon(new_rows) != _canon(old_rows)
    for name, (data, mtime, inode) in snapshot.items():
        if name == reopened:
            continue
        path = after[name]
        assert path.read_bytes() == data, f"{name} changed"
        assert (path.stat().st_mtime_ns, path.stat().st_ino) == (mtime, inode), name
    assert _hidden(root / "exports") == []


# -- 4. a reader never sees part of a file -----------------------------------------------


def _table(rows: int, seed: int) -> pa.Table:
    """A table of ``rows`` rows whose text does not compress away (a file of some MB)."""
    ids = list(range(seed, seed + rows))
    return pa.table(
        {
            "id": pa.array(ids, pa.int64()),
            "name": [f'{(i * 2654435761) % 2**32:08x}-{i:x},"{seed}"' for i in ids],
            "at": pa.array(
                [datetime(2026, 1, 1, tzinfo=UTC) + timedelta(microseconds=i * 7919) for i in ids],
                pa.timestamp("us", "UTC"),
            ),
            "value": pa.array([None if i % 11 == 0 else i / 7 for i in ids], pa.float64()),
        }
    )


@pytest.mark.timeout(120)
@pytest.mark.parametrize("fmt", FORMATS)
def test_a_reader_never_sees_a_partial_file_while_it_is_replaced(tmp_path: Path, fmt: str) -> None:
    target = FilesTarget("lake", FilesSink(url="lake", format=fmt), tmp_path)
    sizes = (60_000, 3, 20_000, 1) if fmt == "jsonl" else (150_000, 3, 40_000, 1)
    tables = [_table(n, seed) for seed, n in enumerate(sizes)]
    # What each table's complete file holds, written once at its own path.
    complete: dict[bytes, int] = {}
    for index, table in enumerate(tables):
        day = datetime(2025, 1, 1 + index, tzinfo=UTC)
        path = Path(target.write("reference", Interval(day, day + DAY), table))
        data = path.read_bytes()
        assert _decode(data, fmt, table.schema).equals(table), f"{fmt} does not round-trip"
        complete[data] = index
    assert len(complete) == len(tables)

    interval = Interval(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 1, 2, tzinfo=UTC))
    path = Path(target.write("race", interval, tables[0]))
    assert path == tmp_path / "lake" / "race" / f"20260101T000000Z.{fmt}"
    done = threading.Event()
    written: list[int] = []
    seen: list[int] = []
    bad: list[str] = []
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            for k in range(24):
                index = (k + 1) % len(tables)
                assert target.write("race", interval, tables[index]) == str(path)
                written.append(index)
        except BaseException as exc:  # reported by the test, not lost in the thread
            errors.append(exc)
        finally:
            done.set()

    def reader() -> None:
        try:
            while True:
                finished = done.is_set()
                with open(path, "rb") as handle:
                    data = handle.read()
                if data in complete:
                    seen.append(complete[data])
                else:
                    bad.append(f"{len(data)} bytes, starting {data[:40]!r}")
                if finished:
                    return
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=writer), threading.Thread(target=reader)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=100)
    assert not any(thread.is_alive() for thread in threads)
    assert errors == []
    assert bad == [], f"{len(bad)} of {len(bad) + len(seen)} reads saw a partial file: {bad[:3]}"
    assert len(written) == 24
    assert seen
    assert seen[-1] == written[-1]  # the last read came after the last write
    assert complete[path.read_bytes()] == written[-1]
    assert _hidden(tmp_path) == []
    assert sorted(p.name for p in path.parent.iterdir()) == [path.name]


def test_memory_target_writes_one_object_per_interval_at_the_expected_path(
    tmp_path: Path,
) -> None:
    bucket = f"hw-files-{uuid.uuid4().hex[:12]}"
    fs = fsspec.filesystem("memory")
    target = FilesTarget("lake", FilesSink(url=f"memory://{bucket}/exports"), tmp_path)
    hour = datetime(2026, 11, 25, 10, tzinfo=UTC)
    first, second = _table(500, 1), _table(30, 2)
    try:
        path = target.write("hourly", Interval(hour, hour + HOUR), first)
        url = f"memory://{bucket}/exports/hourly/20261125T100000Z.parquet"
        assert fs._strip_protocol(path) == fs._strip_protocol(url)
        assert fs.find(f"/{bucket}") == [fs._strip_protocol(url)]
        assert pq.read_table(io.BytesIO(fs.cat_file(url))).equals(first)

        again = target.write("hourly", Interval(hour, hour + HOUR), second)
        assert again == path
        assert fs.find(f"/{bucket}") == [fs._strip_protocol(url)]
        assert pq.read_table(io.BytesIO(fs.cat_file(url))).equals(second)

        whole = target.write("totals", None, first)
        assert fs._strip_protocol(whole) == f"/{bucket}/exports/totals/totals.parquet"
        assert pq.read_table(io.BytesIO(fs.cat_file(whole))).equals(first)
        assert len(fs.find(f"/{bucket}")) == 2
        assert list(tmp_path.iterdir()) == []  # nothing landed on the local disk
    finally:
        if fs.exists(f"/{bucket}"):
            fs.rm(f"/{bucket}", recursive=True)


# -- 5. a full pipeline: one file, replaced by each run -------------------------------------

FULL_PIPELINE = """\
/* headwater
description = "Events per plan, over all time."
schedule = "@hourly"
kind = "full"
key = ["plan"]
sinks = ["files"]
*/
SELECT
  COALESCE(JSON_VALUE(properties, '$.plan'), 'unknown') AS plan,
  COUNT(*) AS events,
  COUNT(DISTINCT user_id) AS people
FROM events
GROUP BY plan
"""


@pytest.mark.timeout(120)
def test_full_pipeline_delivers_one_file_replaced_each_run(project: Project) -> None:
    root = project.root
    for example in ("hourly_event_counts.sql", "daily_active_users.sql"):
        (root / "pipelines" / example).unlink()
    (root / "pipelines" / "plan_totals.sql").write_text(FULL_PIPELINE)
    past = datetime.now(UTC) - 2 * HOUR
    _ingest(
        root,
        [
            _event(f"a{i}", received_at=past, user_id=f"u{i % 3}", properties={"plan": plan})
            for i, plan in enumerate(["free", "free", "pro"])
        ],
    )

    out = run_cli(root, "run", "plan_totals").stdout
    folder = root / "exports" / "plan_totals"
    path = folder / "plan_totals.parquet"
    table = _store(root, "SELECT * FROM plan_totals")
    assert _canon(pq.read_table(path).to_pylist()) == _canon(table.to_pylist())
    assert _delivered_line("plan_totals", "files", 1, table.num_rows) in out, out
    first_inode = path.stat().st_ino

    _ingest(
        root,
        [
            _event(f"b{i}", received_at=past, user_id=f"u{i}", properties={"plan": plan})
            for i, plan in enumerate(["team", "pro", "pro"])
        ],
    )
    out = run_cli(root, "run", "plan_totals", "--end", datetime.now(UTC).isoformat()).stdout
    table = _store(root, "SELECT * FROM plan_totals")
    assert {r["plan"]: r["events"] for r in table.to_pylist()} == {
        "free": 2,
        "pro": 3,
        "team": 1,
    }
    assert _canon(pq.read_table(path).to_pylist()) == _canon(table.to_pylist())
    assert _delivered_line("plan_totals", "files", 1, table.num_rows) in out, out
    assert path.stat().st_ino != first_inode
    assert sorted(p.name for p in folder.iterdir()) == ["plan_totals.parquet"]
    assert sorted(p.name for p in (root / "exports").iterdir()) == ["plan_totals"]


# -- 6. failures are retried, then kept as dead letters until replayed ---------------------


@pytest.mark.timeout(120)
def test_unwritable_folder_fails_then_dead_letters_then_replays(project: Project) -> None:
    root = project.root
    (root / "pipelines" / "daily_active_users.sql").unlink()
    (root / "blocker").write_text("a regular file, not a folder\n")
    toml = root / "headwater.toml"
    _replace_in(
        toml,
        'url = "exports"',
        'url = "blocker/exports"\nmax_attempts = 2\nbackoff_seconds = 0.001\n'
        "max_backoff_seconds = 0.001",
    )
    this_hour = _hour(datetime.now(UTC))
    hours = [this_hour - 2 * HOUR, this_hour - HOUR]
    _ingest(
        root,
        [
            _event(f"e{h}-{i}", received_at=hour + timedelta(minutes=3 * i), user_id=f"u{i}")
            for h, hour in enumerate(hours)
            for i in range(5)
        ],
    )

    ran = run_cli(root, "run", "--due", check=False)
    assert ran.returncode == 1, ran.stderr  # a delivery failed
    first = ran.stdout
    failures = re.findall(rf"Delivery of {HOURLY} (\S+) to files failed: (.*)", first)
    assert len(failures) >= len(hours), first
    intervals = len(failures)
    assert all("blocker" in error for _, error in failures), first
    assert "Delivered" not in first, first
    assert "Dead letter" not in first, first
    row = _deliveries_row(root, HOURLY, "files")
    assert (row["failed"], row["delivered"], row["dead letters"]) == (str(intervals), "0", "0")
    assert "blocker" in row["last error"]
    assert not (root / "blocker").is_dir()

    ran = run_cli(root, "run", "--due", check=False)
    assert ran.returncode == 1, ran.stderr  # dead letters
    second = ran.stdout
    dead = re.findall(rf"Dead letter for {HOURLY} \S+ to files: (.*)", second)
    assert len(dead) == intervals, second
    assert all("after 2 attempts" in reason for reason in dead), second
    row = _deliveries_row(root, HOURLY, "files")
    assert (row["failed"], row["pending"], row["dead letters"]) == ("0", "0", str(intervals))
    # Nothing reached the sink, so nothing may be counted as delivered.
    assert row["delivered"] == "0", row
    letters = _tables(run_cli(root, "replay", "--list").stdout)[0]
    assert len(letters) == intervals
    for letter in letters:
        assert (letter["pipeline"], letter["sink"], letter["batch"]) == (HOURLY, "files", "all")
        assert letter["attempts"] == "2"
        assert "blocker" in letter["reason"]
        assert "after 2 attempts" in letter["reason"]
    assert {letter["interval"] for letter in letters} >= {f"{h:%Y-%m-%dT%H:%M}" for h in hours}

    # A third pass leaves dead letters alone.
    third = run_cli(root, "run", "--due").stdout
    assert "Dead letter" not in third, third
    assert "Delivered" not in third, third

    _replace_in(toml, 'url = "blocker/exports"', 'url = "exports"')
    replayed = run_cli(root, "replay").stdout
    assert f"Replayed: {intervals} delivered" in replayed, replayed
    files = _files(root / "exports" / HOURLY)
    assert len(files) == intervals
    assert {f"{h:{STAMP}}.parquet" for h in hours} <= set(files)
    table = _store(root, f"SELECT * FROM {HOURLY}")
    union = [row for path in files.values() for row in pq.read_table(path).to_pylist()]
    assert _canon(union) == _canon(table.to_pylist())
    assert sum(r["events"] for r in union) == 5 * len(hours)
    row = _deliveries_row(root, HOURLY, "files")
    assert (row["delivered"], row["failed"], row["dead letters"]) == (str(intervals), "0", "0")
    assert _tables(run_cli(root, "replay", "--list").stdout) == [[]]
    assert "No dead letters to replay." in run_cli(root, "replay").stdout


def test_a_pipeline_whose_time_column_is_a_date_delivers_its_day(tmp_path: Path) -> None:
    """A DATE time column is read back with DATE bounds (the delivery's own query)."""
    from headwater.cli.scaffold import init_project
    from headwater.config.project import load_project
    from headwater.runtime.workspace import Workspace
    from headwater.state import StateStore

    root = tmp_path / "project"
    init_project(root)
    (root / "pipelines" / "daily_dates.sql").write_text(
        "/* headwater\n"
        'schedule = "@daily"\nkind = "incremental"\ntime = "received_at"\n'
        'time_column = "day"\nkey = ["day", "event_name"]\nsinks = ["files"]\n*/\n'
        "SELECT DATE(received_at) AS day, event AS event_name, COUNT(*) AS events\n"
        "FROM events WHERE received_at >= @start AND received_at < @end GROUP BY 1, 2\n"
    )
    first = datetime(2026, 3, 1, tzinfo=UTC)
    rows = [
        {
            "message_id": f"m{day}-{i}",
            "source": "web",
            "type": "track",
            "event": "E",
            "user_id": "u",
            "timestamp": first + timedelta(days=day, hours=i),
            "received_at": first + timedelta(days=day, hours=i),
        }
        for day in range(2)
        for i in range(day + 2)
    ]
    engine = DuckDBEngine.open(root / ".headwater" / "events.duckdb")
    metadata = StateStore.in_folder(root / ".headwater")
    try:
        engine.ingest(
            IngestBatch(
                pa.Table.from_pylist(rows, schema=schema.EVENTS),
                schema.FAILED_EVENTS.empty_table(),
            )
        )
        service = Workspace(load_project(root), engine, metadata)
        ran = service.backfill("daily_dates", first, first + 2 * DAY)
        assert [r.interval.start for r in ran if r.pipeline == "daily_dates"] == [
            first,
            first + DAY,
        ]
        delivered = [d for d in service.deliver() if d.pipeline == "daily_dates"]
        assert [(d.status, d.rows) for d in delivered] == [("delivered", 1), ("delivered", 1)]
        folder = root / "exports" / "daily_dates"
        for offset, count in ((0, 2), (1, 3)):
            day = first + offset * DAY
            table = pq.read_table(folder / f"{day:{STAMP}}.parquet")
            assert table.to_pylist() == [{"day": day.date(), "event_name": "E", "events": count}]
    finally:
        metadata.close()
        engine.close()
