"""Pipelines end to end: real ``headwater`` processes, real HTTP, a real DuckDB file.

Events go through the collector of a ``headwater up`` child process (or, where
the collector is not what is under test, straight into the project's store with
``DuckDBEngine.ingest``); pipelines run through the ``headwater`` command, in
the server when one runs and in the command's own process otherwise. Every
result is compared with the same figure computed here in Python from the
events that were sent.
"""

from __future__ import annotations

import json
import math
import random
import signal
import subprocess
from collections import Counter, defaultdict
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pyarrow as pa
import pytest

from headwater.state import StateStore
from headwater.store import schema
from headwater.store.duckdb import DuckDBEngine
from headwater.store.engine import IngestBatch
from tests.conftest import HEADWATER, Project, Server, run_cli, wait_for

DAY = timedelta(days=1)
HOUR = timedelta(hours=1)
DAU = "daily_active_users"
HOURLY = "hourly_event_counts"

DauKey = tuple[datetime, str]
HourKey = tuple[datetime, str, str]


# -- helpers: time, the command, the project file ---------------------------------


def _today() -> datetime:
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def _iso(moment: datetime) -> str:
    """A time as the CLI takes it (naive ISO is read as UTC)."""
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def _set_pipelines(project: Project, **values: object) -> None:
    """Set keys of the ``[pipelines]`` table written by ``headwater init`` (replacing any)."""
    path = project.root / "headwater.toml"
    text = path.read_text()
    assert text.count("[pipelines]\n") == 1, "expected one [pipelines] table from headwater init"
    head, table, tail = text.partition("[pipelines]\n")
    body, boundary, rest = tail.partition("\n[")
    kept = [line for line in body.splitlines() if line.split("=")[0].strip() not in values]
    lines = [f"{key} = {json.dumps(value)}" for key, value in values.items()]
    path.write_text(head + table + "\n".join(lines + kept) + boundary + rest)


def _table_rows(output: str) -> list[dict[str, str]]:
    """The rows of the rich table the CLI printed, by column title."""
    lines = output.splitlines()
    header = next(line for line in lines if line.startswith("┃"))
    titles = [cell.strip() for cell in header.strip().strip("┃").split("┃")]
    rows = []
    for line in lines:
        if line.startswith("│"):
            cells = [cell.strip() for cell in line.strip().strip("│").split("│")]
            rows.append(dict(zip(titles, cells, strict=True)))
    return rows


def _row_of(output: str, column: str, value: str) -> dict[str, str]:
    found = [row for row in _table_rows(output) if row.get(column) == value]
    assert len(found) == 1, f"expected one row with {column}={value!r} in:\n{output}"
    return found[0]


def _status(project: Project, name: str) -> dict[str, str]:
    return _row_of(run_cli(project, "status").stdout, "pipeline", name)


@contextmanager
def _metadata(project: Project) -> Iterator[StateStore]:
    store = StateStore.in_folder(project.data_dir)
    try:
        yield store
    finally:
        store.close()


@contextmanager
def _running(project: Project) -> Iterator[Server]:
    server = Server(project).start()
    try:
        yield server
    finally:
        if server.process is not None and server.process.poll() is None:
            server.stop()


def _settled(store: StateStore, name: str, since: datetime) -> bool:
    """A scheduler pass checked every arrival up to ``since`` and its re-runs finished."""
    mark = store.runs.watermark(name)
    if mark is None or mark <= since:
        return False
    if any(state.status != "done" for state in store.runs.intervals(name).values()):
        return False
    return all(run.status != "running" for run in store.runs.runs(name, limit=500))


# -- helpers: events --------------------------------------------------------------


@dataclass(frozen=True)
class Sent:
    """One event as sent, and what the pipelines should make of it."""

    message_id: str
    event: str
    timestamp: datetime
    user_id: str | None
    anonymous_id: str | None
    properties: dict[str, Any] = field(hash=False)

    @property
    def person(self) -> str:
        person = self.user_id or self.anonymous_id
        assert person is not None
        return person

    @property
    def plan(self) -> str:
        value = self.properties.get("plan")
        return "unknown" if value is None else str(value)

    @property
    def day(self) -> datetime:
        return self.timestamp.replace(hour=0, minute=0, second=0, microsecond=0)

    def segment(self) -> dict[str, Any]:
        """The Segment track call: explicit timestamp, no sentAt, so event time is exact."""
        body: dict[str, Any] = {
            "type": "track",
            "event": self.event,
            "messageId": self.message_id,
            "timestamp": self.timestamp.isoformat().replace("+00:00", "Z"),
            "properties": self.properties,
        }
        if self.user_id is not None:
            body["userId"] = self.user_id
        if self.anonymous_id is not None:
            body["anonymousId"] = self.anonymous_id
        return body

    def row(self, received_at: datetime) -> dict[str, Any]:
        """The row of ``events`` the collector would commit, for direct ingestion."""
        return {
            "message_id": self.message_id,
            "source": "web",
            "type": "track",
            "event": self.event,
            "user_id": self.user_id,
            "anonymous_id": self.anonymous_id,
            "timestamp": self.timestamp,
            "original_timestamp": self.timestamp,
            "received_at": received_at,
            "properties": json.dumps(self.properties),
        }


NAMES = ("Page Viewed", "Signed Up", "Order Completed")
PLANS: tuple[str | None, ...] = ("free", "free", "pro", "team", None)


def _make_events(rng: random.Random, tag: str, days: Sequence[datetime], count: int) -> list[Sent]:
    """Events spread over ``days``: users, anonymous visitors, both; plans, none, null."""
    sent = []
    for index in range(count):
        day = rng.choice(days)
        person = rng.randrange(30)
        kind = rng.random()
        plan = rng.choice(PLANS)
        if plan is not None:
            properties: dict[str, Any] = {"plan": plan}
        else:
            properties = {"plan": None} if index % 2 else {"path": "/pricing"}
        sent.append(
            Sent(
                message_id=f"{tag}-{index}",
                event=rng.choice(NAMES),
                timestamp=day + timedelta(seconds=rng.randrange(86_400)),
                user_id=f"user-{person}" if kind < 0.8 else None,
                anonymous_id=f"anon-{person}" if kind >= 0.7 else None,
                properties=properties,
            )
        )
    return sent


def _send(server: Server, project: Project, events: Sequence[Sent], size: int = 50) -> None:
    with httpx.Client(base_url=server.url, auth=(project.key, ""), timeout=30) as client:
        for offset in range(0, len(events), size):
            chunk = events[offset : offset + size]
            response = client.post("/v1/batch", json={"batch": [e.segment() for e in chunk]})
            assert response.status_code == 200, response.text
            answer = response.json()
            assert (answer["success"], answer["accepted"]) == (True, len(chunk)), answer


def _ingest(project: Project, rows: Sequence[dict[str, Any]]) -> None:
    """Commit rows straight into the project's store; no server may hold it."""
    engine = DuckDBEngine.open(project.data_dir / "events.duckdb")
    try:
        events = pa.Table.from_pylist(list(rows), schema=schema.EVENTS)
        engine.ingest(IngestBatch(events, schema.FAILED_EVENTS.empty_table()))
    finally:
        engine.close()


def _expected_dau(events: Sequence[Sent]) -> dict[DauKey, tuple[int, int]]:
    people: defaultdict[DauKey, set[str]] = defaultdict(set)
    counts: Counter[DauKey] = Counter()
    for event in events:
        key = (event.day, event.plan)
        people[key].add(event.person)
        counts[key] += 1
    return {key: (len(people[key]), counts[key]) for key in counts}


def _dau(project: Project) -> dict[DauKey, tuple[int, int]]:
    table = project.query(f"SELECT day, plan, active_users, events FROM {DAU}")
    result = {(r["day"], r["plan"]): (r["active_users"], r["events"]) for r in table.to_pylist()}
    assert len(result) == table.num_rows, "two rows for one (day, plan)"
    return result


def _hourly(project: Project) -> dict[HourKey, tuple[int, int]]:
    table = project.query(f"SELECT hour, source, event_name, events, people FROM {HOURLY}")
    rows = table.to_pylist()
    result = {(r["hour"], r["source"], r["event_name"]): (r["events"], r["people"]) for r in rows}
    assert len(result) == table.num_rows, "two rows for one (hour, source, event_name)"
    return result


def _expected_hourly(project: Project) -> dict[HourKey, tuple[int, int]]:
    """Hourly counts computed here from the stored rows' arrival times."""
    raw = project.query(
        "SELECT received_at, source, event, type, user_id, anonymous_id FROM events"
    )
    people: defaultdict[HourKey, set[str]] = defaultdict(set)
    counts: Counter[HourKey] = Counter()
    for row in raw.to_pylist():
        key = (_hour(row["received_at"]), row["source"], row["event"] or row["type"])
        counts[key] += 1
        people[key].add(row["user_id"] or row["anonymous_id"])
    return {key: (counts[key], len(people[key])) for key in counts}


def _snapshot(project: Project, table: str) -> list[tuple[Any, ...]]:
    """The whole table, every column, in a stable order."""
    result = project.query(f"SELECT * FROM {table} ORDER BY ALL")
    return [tuple(row.values()) for row in result.to_pylist()]


# -- 1. through the collector, backfill, late events, the scheduler ---------------------


@pytest.mark.timeout(120)
def test_daily_active_users_from_the_collector_then_late_events_through_the_scheduler(
    project: Project,
) -> None:
    today = _today()
    days = [today - k * DAY for k in (4, 3, 2, 1)]
    rng = random.Random(1125)
    # First the scheduler stays out of the way (one pass at start-up), so the
    # commands below run alone.
    _set_pipelines(project, tick_seconds=3600)
    first = _make_events(rng, "a", days[:3], 240)
    with _running(project) as server, _metadata(project) as store:
        # The start-up pass sets the arrival mark; everything sent from now on is seen.
        wait_for("start-up scheduler pass", lambda: store.runs.watermark(DAU) is not None, 20)
        sending_began = datetime.now(UTC)
        _send(server, project, first)
        out = run_cli(project, "backfill", DAU, "--start", _iso(days[0]), "--end", _iso(days[3]))
        assert "Backfilled 3 intervals" in out.stdout, out.stdout
        assert _dau(project) == _expected_dau(first)

        # Sent later: a new day, and events of a day already computed (days[1]).
        second = _make_events(rng, "b", days[3:], 80) + _make_events(rng, "c", days[1:2], 30)
        _send(server, project, second)
        everything = first + second
        out = run_cli(project, "backfill", DAU, "--start", _iso(days[0]), "--end", _iso(today))
        assert "Backfilled 1 intervals" in out.stdout, out.stdout  # only the new day
        expected = _expected_dau(everything)
        untouched = {k: v for k, v in expected.items() if k[0] != days[1]}
        assert {k: v for k, v in _dau(project).items() if k[0] != days[1]} == untouched

        # By arrival: every hour that received events, counted here from the stored rows.
        last_hour = _hour(datetime.now(UTC)) + HOUR
        run_cli(
            project, "run", HOURLY, "--start", _iso(_hour(sending_began)), "--end", _iso(last_hour)
        )
        hourly = _hourly(project)
        assert hourly == _expected_hourly(project)
        per_name: Counter[str] = Counter()
        for (_, source, name), (count, _) in hourly.items():
            assert source == "web"
            per_name[name] += count
        assert per_name == Counter(event.event for event in everything)
        assert server.stop() == 0

    # Now the scheduler inside `headwater up` does the work.
    _set_pipelines(project, tick_seconds=0.5)
    with _running(project) as server, _metadata(project) as store:
        restarted = datetime.now(UTC)
        log = server.log
        wait_for(
            "scheduler pass",
            lambda: _settled(store, DAU, restarted),
            30,
            detail=lambda: log.read_text(),
        )
        # The events of days[1] that arrived after it was computed re-opened it.
        assert _dau(project) == expected
        before = _dau(project)
        last_run = max(run.id for run in store.runs.runs(DAU, limit=500))

        late = [
            *_make_events(rng, "late", days[:1], 25),
            Sent("late-new", "Signed Up", days[0] + 5 * HOUR, "user-new", None, {"plan": "scale"}),
        ]
        _send(server, project, late)
        sent_late = datetime.now(UTC)
        everything += late
        expected = _expected_dau(everything)
        assert expected != before  # the late events do change days[0]
        wanted_day = {k: v for k, v in expected.items() if k[0] == days[0]}
        wait_for(
            f"re-computation of {days[0]:%Y-%m-%d} by the scheduler",
            lambda: {k: v for k, v in _dau(project).items() if k[0] == days[0]} == wanted_day,
            30,
            detail=lambda: f"{_dau(project)}\n{log.read_text()}",
        )
        wait_for("scheduler pass after late events", lambda: _settled(store, DAU, sent_late), 30)
        after = _dau(project)
        assert after == expected
        assert {k: v for k, v in after.items() if k[0] != days[0]} == {
            k: v for k, v in before.items() if k[0] != days[0]
        }
        reruns = [run for run in store.runs.runs(DAU, limit=500) if run.id > last_run]
        assert {run.interval.start for run in reruns if run.interval.start in days} == {days[0]}
        assert all(run.status == "succeeded" and run.trigger == "schedule" for run in reruns)
        row = _status(project, DAU)
        assert (row["missing"], row["stale"], row["last error"]) == ("0", "0", "")
        assert int(row["done"]) >= len(days)


# -- 2. a Python pipeline among the SQL ones -----------------------------------------------

PLAN_SHARE = '''\
"""Share of each plan among the day's active people."""

from __future__ import annotations

import pyarrow as pa

{import_line}


@pipeline(
    schedule="@daily",
    kind="incremental",
    time="timestamp",
    time_column="day",
    inputs=["daily_active_users"],
    audits=[{"unique": ["day", "plan"]}, {"not_null": ["share"]}],
    description="Share of each plan among the day's active people.",
)
def plan_share(ctx: Context) -> pa.Table:
    dau = ctx.sql(
        "SELECT day, plan, active_users FROM daily_active_users "
        "WHERE day >= @start AND day < @end ORDER BY plan"
    )
    rows = dau.to_pylist()
    total = sum(row["active_users"] for row in rows)
    return pa.table(
        {
            "day": pa.array([row["day"] for row in rows], pa.timestamp("us", tz="UTC")),
            "plan": pa.array([row["plan"] for row in rows], pa.string()),
            "active_users": pa.array([row["active_users"] for row in rows], pa.int64()),
            "share": pa.array([row["active_users"] / total for row in rows], pa.float64()),
        }
    )
'''


DOCUMENTED_IMPORT = "from headwater.process import Context, pipeline"


@pytest.mark.timeout(90)
@pytest.mark.parametrize(
    "import_line",
    [
        pytest.param(DOCUMENTED_IMPORT, id="documented-import"),
        # The same names from their module, so the rest of this test runs even
        # while the package-level import is broken.
        pytest.param("from headwater.process.python import Context, pipeline", id="module-import"),
    ],
)
def test_python_pipeline_backfill_runs_its_sql_input_first(
    project: Project, import_line: str
) -> None:
    source = PLAN_SHARE.replace("{import_line}", import_line)
    (project.root / "pipelines" / "plan_share.py").write_text(source)
    _set_pipelines(project, tick_seconds=3600)
    today = _today()
    days = [today - k * DAY for k in (3, 2, 1)]
    events = _make_events(random.Random(7), "p", days, 200)
    with _running(project) as server:
        _send(server, project, events)
    # The rest runs without the server, whose scheduler could run these intervals first.
    listing = run_cli(project, "pipelines").stdout
    share = _row_of(listing, "pipeline", "plan_share")
    assert (share["language"], share["kind"], share["reads"]) == (
        "python",
        "incremental",
        DAU,
    )
    assert _row_of(listing, "pipeline", DAU)["reads"] == "events"
    assert share["description"] == "Share of each plan among the day's active people."

    out = run_cli(project, "backfill", "plan_share", "--start", _iso(days[0]), "--end", _iso(today))
    assert "Backfilled 6 intervals" in out.stdout, out.stdout
    with _metadata(project) as store:
        dau_runs = store.runs.runs(DAU)
        share_runs = store.runs.runs("plan_share")
    assert sorted(run.interval.start for run in dau_runs) == days
    assert sorted(run.interval.start for run in share_runs) == days
    assert all(r.status == "succeeded" and r.trigger == "backfill" for r in dau_runs + share_runs)
    # Inputs first: every run of daily_active_users before any of plan_share.
    assert max(run.id for run in dau_runs) < min(run.id for run in share_runs)

    dau = _expected_dau(events)
    assert _dau(project) == dau
    totals: Counter[datetime] = Counter()
    for (day, _), (users, _) in dau.items():
        totals[day] += users
    rows = project.query("SELECT day, plan, active_users, share FROM plan_share").to_pylist()
    assert len(rows) == len(dau)
    for row in rows:
        users = dau[(row["day"], row["plan"])][0]
        assert row["active_users"] == users
        assert math.isclose(row["share"], users / totals[row["day"]], rel_tol=1e-12)
    row = _status(project, "plan_share")
    assert (row["done"], row["missing"], row["last error"]) == ("3", "0", "")


# -- 3. idempotence ---------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_running_an_interval_again_gives_an_identical_table(project: Project) -> None:
    today = _today()
    days = [today - k * DAY for k in (3, 2, 1)]
    received = _hour(datetime.now(UTC)) - 5 * HOUR
    events = _make_events(random.Random(3), "i", days, 300)
    _ingest(
        project,
        [e.row(received + (i % 3) * HOUR + timedelta(seconds=i)) for i, e in enumerate(events)],
    )

    def run_all() -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        run_cli(project, "run", DAU, "--start", _iso(days[0]), "--end", _iso(today))
        run_cli(
            project, "run", HOURLY, "--start", _iso(received), "--end", _iso(received + 3 * HOUR)
        )
        return _snapshot(project, DAU), _snapshot(project, HOURLY)

    first = run_all()
    assert _dau(project) == _expected_dau(events)
    assert _hourly(project) == _expected_hourly(project)
    second = run_all()
    assert second == first
    # One interval alone, again: still the same table.
    run_cli(project, "run", DAU, "--start", _iso(days[1]), "--end", _iso(days[2]))
    assert _snapshot(project, DAU) == first[0]
    with _metadata(project) as store:
        runs = store.runs.runs(DAU, limit=100)
        hourly_runs = store.runs.runs(HOURLY, limit=100)
    per_day = Counter(run.interval.start for run in runs)
    assert per_day == {days[0]: 2, days[1]: 3, days[2]: 2}  # every run really ran
    assert all(run.status == "succeeded" for run in runs + hourly_runs)
    assert len(hourly_runs) == 6


# -- 4. a crash in the middle of a run ---------------------------------------------------

SLOW_COUNTS = '''\
"""Events per day of event time; sleeps mid-run while the file SLOW exists in the project."""

from __future__ import annotations

import time
from pathlib import Path

import pyarrow as pa

# Not `from headwater.process import ...`: that import is what the Python
# pipeline test above checks; this test is about crashes.
from headwater.process.python import Context, pipeline

ROOT = Path(__file__).resolve().parents[1]


@pipeline(schedule="@daily", kind="incremental", time="timestamp", time_column="day")
def slow_counts(ctx: Context) -> pa.Table:
    counts = ctx.sql(
        "SELECT TIMESTAMP_TRUNC(timestamp, DAY) AS day, COUNT(*) AS events FROM events "
        "WHERE timestamp >= @start AND timestamp < @end GROUP BY day"
    )
    if (ROOT / "SLOW").exists():
        (ROOT / "STARTED").write_text(ctx.start.isoformat())
        time.sleep(300)
    return counts
'''


def _slow_project(project: Project) -> None:
    folder = project.root / "pipelines"
    for path in folder.iterdir():
        path.unlink()  # only the slow pipeline: nothing else to wait for
    (folder / "slow_counts.py").write_text(SLOW_COUNTS)


def _kill_mid_run(project: Project, *args: str) -> None:
    """Start ``headwater ARGS`` with the pipeline made slow; SIGKILL it inside the run."""
    started = project.root / "STARTED"
    started.unlink(missing_ok=True)
    (project.root / "SLOW").write_text("")
    log = project.root / "killed.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [*HEADWATER, "--project", str(project.root), *args],
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_for(
                "the slow run to start",
                lambda: started.exists() or process.poll() is not None,
                60,
                detail=lambda: log.read_text(),
            )
            assert process.poll() is None, f"the run ended before it was killed:\n{log.read_text()}"
            process.send_signal(signal.SIGKILL)
            assert process.wait(timeout=10) == -signal.SIGKILL
        finally:
            if process.poll() is None:
                process.kill()
                process.wait(timeout=10)
    (project.root / "SLOW").unlink()


def _day_counts(project: Project) -> dict[datetime, int]:
    rows = project.query("SELECT day, events FROM slow_counts").to_pylist()
    return {row["day"]: row["events"] for row in rows}


def _tables(project: Project) -> set[str]:
    names = project.query("SELECT table_name FROM information_schema.tables")["table_name"]
    return {str(name) for name in names.to_pylist()}


@pytest.mark.timeout(60)
def test_run_killed_on_a_new_interval_publishes_nothing_and_the_next_run_completes_it(
    project: Project,
) -> None:
    _slow_project(project)
    today = _today()
    day = today - 2 * DAY
    events = _make_events(random.Random(4), "k", [day], 10)
    _ingest(project, [e.row(datetime.now(UTC)) for e in events])

    _kill_mid_run(project, "run", "slow_counts", "--start", _iso(day), "--end", _iso(today))
    assert "slow_counts" not in _tables(project)  # no partial output
    with _metadata(project) as store:
        assert store.runs.intervals("slow_counts") == {}
        [run] = store.runs.runs("slow_counts")
        assert (run.interval.start, run.status) == (day, "running")
    row = _status(project, "slow_counts")
    assert (row["done"], row["missing"]) == ("0", "2")

    out = run_cli(
        project, "run", "slow_counts", "--start", _iso(day), "--end", _iso(today), check=False
    )
    assert out.returncode == 0, f"the run after the crash failed:\n{out.stdout}\n{out.stderr}"
    assert _day_counts(project) == {day: 10}
    with _metadata(project) as store:
        states = store.runs.intervals("slow_counts").values()
        assert {s.interval.start: s.status for s in states} == {
            day: "done",
            day + DAY: "done",
        }
        killed = next(r for r in store.runs.runs("slow_counts") if r.id == run.id)
        assert killed.status == "failed"
        assert "interrupted" in (killed.error or "")
    row = _status(project, "slow_counts")
    assert (row["done"], row["missing"], row["stale"]) == ("2", "0", "0")


@pytest.mark.timeout(60)
def test_run_killed_on_a_reopened_interval_keeps_the_old_output_until_the_next_run(
    project: Project,
) -> None:
    _slow_project(project)
    today = _today()
    day = today - 2 * DAY
    rng = random.Random(5)
    _ingest(project, [e.row(datetime.now(UTC)) for e in _make_events(rng, "k", [day], 10)])
    run_cli(project, "run", "--due")  # the first pass: sets the arrival mark, runs day and day+1
    assert _day_counts(project) == {day: 10}
    published = _snapshot(project, "slow_counts")

    # Late events re-open the day; the pass that re-runs it is killed mid-run.
    _ingest(project, [e.row(datetime.now(UTC)) for e in _make_events(rng, "late", [day], 7)])
    _kill_mid_run(project, "run", "--due")
    assert _snapshot(project, "slow_counts") == published  # the old output, intact
    with _metadata(project) as store:
        state = store.runs.intervals("slow_counts")[day]
        assert (state.status, state.reason) == ("stale", "late events arrived")
        latest = store.runs.runs("slow_counts", limit=1)[0]
        assert (latest.interval.start, latest.status) == (day, "running")
    row = _status(project, "slow_counts")
    assert (row["done"], row["stale"], row["missing"]) == ("1", "1", "0")

    out = run_cli(project, "run", "--due")
    assert _day_counts(project) == {day: 17}, f"the pass after the crash:\n{out.stdout}"
    with _metadata(project) as store:
        assert store.runs.intervals("slow_counts")[day].status == "done"
        killed = next(r for r in store.runs.runs("slow_counts") if r.id == latest.id)
        assert killed.status == "failed"
    row = _status(project, "slow_counts")
    assert (row["done"], row["stale"], row["missing"]) == ("2", "0", "0")


# -- 5. audits -------------------------------------------------------------------------

USER_DAYS = """\
/* headwater
schedule = "@daily"
kind = "incremental"
time = "timestamp"
time_column = "day"
audits = [ { unique = ["day", "user_id"] } ]
*/
SELECT TIMESTAMP_TRUNC(timestamp, DAY) AS day, user_id, event
FROM events
WHERE timestamp >= @start AND timestamp < @end
"""

PLAN_VALUES = """\
/* headwater
schedule = "@daily"
kind = "incremental"
time = "timestamp"
time_column = "day"
audits = [ { accepted_values = { column = "plan", values = ["free", "pro"] } } ]
*/
SELECT TIMESTAMP_TRUNC(timestamp, DAY) AS day, JSON_VALUE(properties, '$.plan') AS plan,
  COUNT(*) AS events
FROM events
WHERE timestamp >= @start AND timestamp < @end
GROUP BY day, plan
"""


@pytest.mark.timeout(60)
def test_failing_audits_publish_nothing_and_show_in_status(project: Project) -> None:
    (project.root / "pipelines" / "user_days.sql").write_text(USER_DAYS)
    (project.root / "pipelines" / "plan_values.sql").write_text(PLAN_VALUES)
    day = _today() - 2 * DAY
    when = datetime.now(UTC)

    def event(tag: str, user: str, plan: str, hour: int) -> dict[str, Any]:
        return Sent(tag, "Page Viewed", day + hour * HOUR, user, None, {"plan": plan}).row(when)

    _ingest(project, [event("e1", "u1", "free", 1), event("e2", "u2", "pro", 2)])
    window = ("--start", _iso(day), "--end", _iso(day + DAY))
    run_cli(project, "run", "user_days", *window)
    published = _snapshot(project, "user_days")
    assert len(published) == 2

    # Now u1 twice and u3 three times that day: unique(day, user_id) fails on 2 rows.
    _ingest(
        project,
        [event("e3", "u1", "free", 3)] + [event(f"t{i}", "u3", "team", 4 + i) for i in range(3)],
    )
    failed = run_cli(project, "run", "user_days", *window, check=False)
    assert failed.returncode != 0
    said = failed.stdout + failed.stderr
    assert "audit unique(day, user_id) failed on 2 rows" in said, said
    assert "'user_id': 'u3'" in said, said
    assert "'copies': 3" in said, said
    assert f"'day': '{day.date().isoformat()}" in said, said  # a time as people write it
    assert "datetime.datetime(" not in said, said
    assert _snapshot(project, "user_days") == published  # not published

    failed = run_cli(project, "run", "plan_values", *window, check=False)
    assert failed.returncode != 0
    said = failed.stdout + failed.stderr
    assert "audit accepted_values(plan) failed on 1 row" in said, said
    assert "'plan': 'team'" in said, said
    assert "plan_values" not in _tables(project)  # never published at all

    with _metadata(project) as store:
        assert store.runs.intervals("user_days")[day].status == "done"  # still the first run's
        assert store.runs.intervals("plan_values") == {}
        for name in ("user_days", "plan_values"):
            latest = store.runs.runs(name, limit=1)[0]
            assert (latest.status, latest.error_kind) == ("failed", "terminal")
    status = run_cli(project, "status").stdout
    user_days = _row_of(status, "pipeline", "user_days")
    assert user_days["last run"].endswith("failed")
    assert "audit unique(day, user_id) failed on 2 rows" in user_days["last error"]
    plan_values = _row_of(status, "pipeline", "plan_values")
    assert "audit accepted_values(plan) failed on 1 row" in plan_values["last error"]
    assert plan_values["done"] == "0"


# -- 6. cost: an incremental run reads only its interval -------------------------------------


@pytest.mark.timeout(90)
def test_incremental_run_reads_only_the_row_groups_of_its_interval(project: Project) -> None:
    total, hours, commit = 500_000, 48, 50_000
    first = _hour(datetime.now(UTC)) - 72 * HOUR
    span_us = hours * 3_600_000_000
    base_us = int(first.timestamp()) * 1_000_000
    times_us = [base_us + i * span_us // total for i in range(total)]
    names = [NAMES[i % len(NAMES)] for i in range(total)]
    engine = DuckDBEngine.open(project.data_dir / "events.duckdb")
    try:
        for offset in range(0, total, commit):
            size = min(commit, total - offset)
            stamps = pa.array(times_us[offset : offset + size], pa.int64()).cast(schema.TIMESTAMP)
            columns: dict[str, pa.Array] = {
                "message_id": pa.array([f"m{offset + i}" for i in range(size)]),
                "source": pa.array(["web"] * size),
                "type": pa.array(["track"] * size),
                "event": pa.array(names[offset : offset + size]),
                "user_id": pa.array([f"u{(offset + i) % 997}" for i in range(size)]),
                "timestamp": stamps,
                "received_at": stamps,
            }
            arrays = [columns.get(f.name, pa.nulls(size, f.type)) for f in schema.EVENTS]
            batch = pa.Table.from_arrays(arrays, schema=schema.EVENTS)
            engine.ingest(IngestBatch(batch, schema.FAILED_EVENTS.empty_table()))
    finally:
        engine.close()
    assert project.query("SELECT count(*) AS n FROM events")["n"][0].as_py() == total

    hour = first + 30 * HOUR
    low, high = int(hour.timestamp()) * 1_000_000, int((hour + HOUR).timestamp()) * 1_000_000
    in_hour = [i for i, t in enumerate(times_us) if low <= t < high]
    out = run_cli(project, "run", HOURLY, "--start", _iso(hour), "--end", _iso(hour + HOUR))
    assert "Ran 1 interval" in out.stdout, out.stdout

    expected = {
        (hour, "web", name): (count, len({f"u{i % 997}" for i in in_hour if names[i] == name}))
        for name, count in Counter(names[i] for i in in_hour).items()
    }
    assert _hourly(project) == expected
    with _metadata(project) as store:
        [run] = store.runs.runs(HOURLY)
    assert run.status == "succeeded"
    assert run.rows_read is not None
    assert len(in_hour) <= run.rows_read < total // 4, (
        f"an hour of {len(in_hour)} rows read {run.rows_read} of {total}"
    )


def test_status_shows_a_batchs_rows_as_the_runs_not_each_intervals(project: Project) -> None:
    # Six hours computed in one run of 21 rows: no hour holds 21.
    start = _hour(datetime.now(UTC)) - 10 * HOUR
    (project.root / "pipelines" / "batched.sql").write_text(
        '/* headwater\nschedule = "@hourly"\nkind = "incremental"\ntime = "received_at"\n'
        'time_column = "hour"\nbatch_size = 6\n*/\n'
        "SELECT TIMESTAMP_TRUNC(received_at, HOUR) AS hour, message_id FROM events\n"
        "WHERE received_at >= @start AND received_at < @end\n"
    )
    events = _make_events(random.Random(5), "b", [start], 21)
    _ingest(
        project,
        [e.row(start + (i % 6) * HOUR + timedelta(seconds=i)) for i, e in enumerate(events)],
    )
    window = ("--start", _iso(start), "--end", _iso(start + 6 * HOUR))
    run_cli(project, "backfill", "batched", *window)
    shown = run_cli(project, "status", "batched", *window).stdout
    hours = [line for line in shown.splitlines() if line.startswith("│ 20")]
    assert len(hours) == 6, shown
    for line in hours:
        assert "21 (the run's, 6" in line, shown
