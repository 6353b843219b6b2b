"""The scheduler, in process, with a clock the test controls.

``Workspace`` runs on a real DuckDB file and a real SQLite metadata
database; only time is fake: ``clock`` is a function the test moves forward,
and ``sleep`` (the retry backoff) records its delays instead of waiting. Each
``run_due()`` call is one pass of the scheduler inside ``headwater up``.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

import pyarrow as pa
import pytest

from headwater.config.project import load_project
from headwater.core.types import Interval
from headwater.process.errors import PipelineError
from headwater.process.planner import Planner
from headwater.process.runner import RunResult
from headwater.runtime.workspace import Workspace
from headwater.state import StateStore
from headwater.state.errors import LeaseHeld
from headwater.state.leases import Holder
from headwater.store import schema
from headwater.store.duckdb import DuckDBEngine
from headwater.store.engine import Engine, IngestBatch, Selected, Staged
from headwater.store.errors import StoreUnavailable
from tests.conftest import Project

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
T0 = datetime(2026, 3, 2, tzinfo=UTC)

Z_HOURLY = """\
/* headwater
description = "Events per hour of arrival."
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

# Reads z_hourly: named so that alphabetical order is not dependency order.
A_ROLLUP = """\
/* headwater
schedule = "@hourly"
kind = "incremental"
time_column = "hour"
*/
SELECT hour, SUM(events) AS events, COUNT(*) AS hours
FROM z_hourly
WHERE hour >= @start AND hour < @end
GROUP BY hour
"""

DAILY_USERS = """\
/* headwater
schedule = "@daily"
kind = "incremental"
time = "timestamp"
time_column = "day"
*/
SELECT TIMESTAMP_TRUNC(timestamp, DAY) AS day, COUNT(DISTINCT user_id) AS users,
  COUNT(*) AS events
FROM events
WHERE timestamp >= @start AND timestamp < @end
GROUP BY day
"""

DAY_SUMMARY = """\
/* headwater
schedule = "@daily"
kind = "incremental"
time_column = "day"
*/
SELECT day, users * 1000 + events AS score
FROM daily_users
WHERE day >= @start AND day < @end
"""

BROKEN = """\
/* headwater
schedule = "@hourly"
kind = "incremental"
time_column = "hour"
*/
SELECT TIMESTAMP_TRUNC(received_at, HOUR) AS hour, COUNT(no_such_column) AS events
FROM events
WHERE received_at >= @start AND received_at < @end
GROUP BY hour
"""

AUDITED = """\
/* headwater
schedule = "@hourly"
kind = "incremental"
time_column = "hour"
audits = [ { accepted_values = { column = "event_name", values = ["Page Viewed"] } } ]
*/
SELECT TIMESTAMP_TRUNC(received_at, HOUR) AS hour, event AS event_name, COUNT(*) AS events
FROM events
WHERE received_at >= @start AND received_at < @end
GROUP BY hour, event_name
"""

SLOW = """\
from __future__ import annotations

import time

import pyarrow as pa

from headwater.process.python import Context, pipeline


@pipeline(schedule="@hourly", kind="incremental", time_column="hour")
def slow(ctx: Context) -> pa.Table:
    time.sleep(1.5)
    return ctx.sql(
        "SELECT TIMESTAMP_TRUNC(received_at, HOUR) AS hour, COUNT(*) AS events FROM events "
        "WHERE received_at >= @start AND received_at < @end GROUP BY hour"
    )
"""


# -- the rig ----------------------------------------------------------------------


@dataclass
class FakeClock:
    now: datetime

    def __call__(self) -> datetime:
        return self.now


class FlakyEngine:
    """Fault injection: the real DuckDBEngine, except that the next ``failures``
    pipeline queries (those binding the interval) raise StoreUnavailable, the
    transient error of a busy store."""

    name = "duckdb"
    dialect = "duckdb"

    def __init__(self, inner: DuckDBEngine) -> None:
        self.inner = inner
        self.failures = 0

    def select(self, sql: str, params: Any) -> Selected:
        self._fault(params)
        return self.inner.select(sql, params)

    def stage(self, sql: str, params: Any) -> AbstractContextManager[Staged]:
        """Where a SQL pipeline computes on DuckDB: into the engine."""
        self._fault(params)
        return self.inner.stage(sql, params)

    def _fault(self, params: Any) -> None:
        if self.failures > 0 and params:
            self.failures -= 1
            raise StoreUnavailable(self.name, "injected fault: the store is busy")

    def __getattr__(self, attribute: str) -> Any:
        return getattr(self.inner, attribute)


@dataclass
class Rig:
    project: Project
    engine: FlakyEngine
    metadata: StateStore
    clock: FakeClock
    sleeps: list[float] = field(default_factory=list)
    _count: int = 0

    @property
    def service(self) -> Workspace:
        # A new service per call is fine: the scheduler's state is all in the metadata.
        return Workspace(
            load_project(self.project.root),
            cast(Engine, self.engine),
            self.metadata,
            clock=self.clock,
            sleep=self.sleeps.append,
        )

    def write(self, name: str, text: str) -> None:
        (self.project.root / "pipelines" / name).write_text(text)

    def ingest(
        self,
        received_at: datetime,
        timestamp: datetime | None = None,
        *,
        count: int = 1,
        **extra: str,
    ) -> None:
        rows = []
        for _ in range(count):
            self._count += 1
            rows.append(
                {
                    "message_id": f"m{self._count}",
                    "source": "web",
                    "type": "track",
                    "event": "Page Viewed",
                    "user_id": f"u{self._count}",
                    "timestamp": timestamp or received_at,
                    "received_at": received_at,
                    **extra,
                }
            )
        table = pa.Table.from_pylist(rows, schema=schema.EVENTS)
        self.engine.inner.ingest(IngestBatch(table, schema.FAILED_EVENTS.empty_table()))

    def table(self, name: str, key: str) -> dict[datetime, tuple[Any, ...]]:
        rows = self.engine.inner.query(f"SELECT * FROM {name}").to_pylist()
        return {row.pop(key): tuple(row.values()) for row in rows}

    def runs(self, name: str) -> list[tuple[datetime, int, str, str | None]]:
        """(interval start, attempt, status, error kind) of every run, oldest first."""
        records = reversed(self.metadata.runs.runs(name, limit=1000))
        return [(r.interval.start, r.attempt, r.status, r.error_kind) for r in records]


@pytest.fixture
def rig(project: Project, tmp_path: Path) -> Iterator[Rig]:
    path = project.root / "headwater.toml"
    text = path.read_text()
    assert text.count("[pipelines]\n") == 1
    path.write_text(text.replace("[pipelines]\n", "[pipelines]\nmax_catchup = 4\n", 1))
    for old in (project.root / "pipelines").iterdir():
        old.unlink()
    engine = DuckDBEngine.open(tmp_path / "store.duckdb")
    metadata = StateStore.open(f"sqlite:///{tmp_path / 'metadata.sqlite'}")
    try:
        yield Rig(project, FlakyEngine(engine), metadata, FakeClock(T0))
    finally:
        metadata.close()
        engine.close()


def _three_hours_the_second_failing_the_audit(rig: Rig) -> None:
    """Two events in each of three hours from T0, and in the second one that AUDITED
    refuses; the clock just after the third."""
    for h in range(3):
        rig.ingest(T0 + h * HOUR + timedelta(minutes=5), count=2)
    rig.ingest(T0 + HOUR + timedelta(minutes=9), event="Refund Issued")
    rig.clock.now = T0 + 3 * HOUR + timedelta(minutes=1)


def _done(results: Sequence[RunResult]) -> list[tuple[str, datetime]]:
    return [(result.pipeline, result.interval.start) for result in results]


def _hours(first: int, last: int) -> list[datetime]:
    return [T0 + h * HOUR for h in range(first, last)]


# -- catch-up ---------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_catch_up_after_downtime_runs_oldest_first_bounded_in_dependency_order(rig: Rig) -> None:
    rig.write("z_hourly.sql", Z_HOURLY)
    rig.write("a_rollup.sql", A_ROLLUP)
    assert [p.name for p in rig.service.graph()] == ["z_hourly", "a_rollup"]
    rig.ingest(T0 + 10 * timedelta(minutes=1), count=1)
    rig.clock.now = T0 + HOUR + timedelta(minutes=5)
    assert _done(rig.service.run_due()) == [("z_hourly", T0), ("a_rollup", T0)]

    # Ten hours of downtime; events kept arriving (another collector, say).
    for h in range(1, 11):
        rig.ingest(T0 + h * HOUR + timedelta(minutes=20), count=h + 1)
    rig.clock.now += 10 * HOUR
    passes = [_done(rig.service.run_due()) for _ in range(4)]
    for first, last, result in zip((1, 5, 9), (5, 9, 11), passes, strict=False):
        hours = _hours(first, last)  # max_catchup = 4 per pipeline per pass, oldest first
        assert result == [("z_hourly", h) for h in hours] + [("a_rollup", h) for h in hours]
    assert passes[3] == []  # caught up
    expected = {T0 + h * HOUR: (h + 1,) for h in range(11)}
    assert rig.table("z_hourly", "hour") == expected
    assert rig.table("a_rollup", "hour") == {t: (v[0], 1) for t, v in expected.items()}
    assert rig.sleeps == []
    status = {s.name: s for s in rig.service.status()}
    assert (status["z_hourly"].intervals_done, status["z_hourly"].intervals_missing) == (11, 0)
    assert (status["a_rollup"].intervals_done, status["a_rollup"].intervals_missing) == (11, 0)


@pytest.mark.timeout(60)
def test_a_run_by_hand_without_a_range_runs_all_that_is_lacking(rig: Rig) -> None:
    # max_catchup paces the scheduler's passes; a run by hand stopped at it, exited 0
    # and said nothing of the intervals it left.
    rig.write("z_hourly.sql", Z_HOURLY)
    rig.write("a_rollup.sql", A_ROLLUP)
    for h in range(11):
        rig.ingest(T0 + h * HOUR + timedelta(minutes=20), count=h + 1)
    rig.clock.now = T0 + 11 * HOUR + timedelta(minutes=5)
    hours = _hours(0, 11)  # more than max_catchup = 4
    assert _done(rig.service.run("a_rollup", upstream=True)) == [("z_hourly", h) for h in hours] + [
        ("a_rollup", h) for h in hours
    ]
    assert rig.table("z_hourly", "hour") == {T0 + h * HOUR: (h + 1,) for h in range(11)}
    assert rig.service.run_due() == []


# -- one run per pipeline at a time -----------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_lease_held_by_another_owner_stops_runs_until_released(rig: Rig) -> None:
    rig.write("z_hourly.sql", Z_HOURLY)
    rig.write("a_rollup.sql", A_ROLLUP)
    rig.ingest(T0 + timedelta(minutes=1), count=2)
    rig.clock.now = T0 + 2 * HOUR
    token = rig.metadata.leases.acquire("z_hourly", "elsewhere:1", timedelta(minutes=5))
    assert token is not None

    with pytest.raises(LeaseHeld, match="another run holds it"):
        rig.service.run("z_hourly", T0, T0 + HOUR)
    # The scheduler skips it, and its reader waits for its input: nothing failed (an
    # overlapping `run --due` must not exit 1 for the run it left to the other).
    steps: list[Any] = []
    assert rig.service.run_due(steps.append) == []
    assert [step.error for step in steps] == []
    assert rig.runs("z_hourly") == []
    assert rig.runs("a_rollup") == []

    rig.metadata.leases.release(Holder("z_hourly", "elsewhere:1", token))
    expected = [
        ("z_hourly", T0),
        ("z_hourly", T0 + HOUR),
        ("a_rollup", T0),
        ("a_rollup", T0 + HOUR),
    ]
    assert _done(rig.service.run_due()) == expected

    # A lease whose holder died expires, and is then taken over.
    assert rig.metadata.leases.acquire("z_hourly", "elsewhere:2", timedelta(seconds=-1))
    rig.clock.now += HOUR
    assert _done(rig.service.run_due()) == [
        ("z_hourly", T0 + 2 * HOUR),
        ("a_rollup", T0 + 2 * HOUR),
    ]


@pytest.mark.timeout(60)
def test_a_run_by_hand_waits_its_turn_while_another_process_runs_the_pipeline(
    rig: Rig,
) -> None:
    # The server's scheduler (another owner) holds the lease for a moment: a backfill by
    # hand waits for it instead of failing the interval.
    rig.write("z_hourly.sql", Z_HOURLY)
    rig.ingest(T0 + timedelta(minutes=1), count=2)
    rig.clock.now = T0 + 2 * HOUR
    token = rig.metadata.leases.acquire("z_hourly", "elsewhere:1", timedelta(minutes=5))
    assert token is not None
    waits: list[float] = []

    def other_run_ends(seconds: float) -> None:
        waits.append(seconds)
        if len(waits) == 3:
            rig.metadata.leases.release(Holder("z_hourly", "elsewhere:1", token))

    service = rig.service
    service.pipelines._sleep = other_run_ends  # the backoff's sleep, which the other ends
    assert _done(service.backfill("z_hourly", T0, T0 + 2 * HOUR)) == [
        ("z_hourly", T0),
        ("z_hourly", T0 + HOUR),
    ]
    assert len(waits) == 3
    assert rig.table("z_hourly", "hour")[T0] == (2,)


@pytest.mark.timeout(60)
def test_two_runs_of_one_pipeline_in_one_process_do_not_overlap(rig: Rig) -> None:
    """``headwater up`` runs the scheduler and commands sent over the control socket
    in threads of one process, sharing one Workspace."""
    rig.write("slow.py", SLOW)
    rig.ingest(T0 + timedelta(minutes=1))
    rig.ingest(T0 + HOUR + timedelta(minutes=1))
    rig.clock.now = T0 + 2 * HOUR
    service = rig.service
    errors: list[BaseException] = []

    def scheduled() -> None:
        try:
            service.run("slow", T0, T0 + HOUR)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)

    thread = threading.Thread(target=scheduled)
    thread.start()
    try:
        deadline = time.monotonic() + 20
        while not rig.metadata.runs.runs("slow") and time.monotonic() < deadline:
            time.sleep(0.02)
        assert rig.metadata.runs.runs("slow"), "the first run did not start"
        # The first run holds the pipeline now; a second must be refused (or wait).
        with contextlib.suppress(LeaseHeld):
            service.run("slow", T0 + HOUR, T0 + 2 * HOUR)
    finally:
        thread.join(timeout=30)
    assert not thread.is_alive()
    assert errors == []
    spans = sorted(
        (run.started_at, run.finished_at or datetime.now(UTC))
        for run in rig.metadata.runs.runs("slow")
        if run.status == "succeeded"
    )
    overlaps = [(a, b) for a, b in itertools.pairwise(spans) if b[0] < a[1]]
    assert overlaps == [], f"two runs of one pipeline at once: {overlaps}"


# -- retries -------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_transient_errors_are_retried_with_exponential_backoff(rig: Rig) -> None:
    rig.write("z_hourly.sql", Z_HOURLY)
    rig.ingest(T0 + timedelta(minutes=1), count=3)
    rig.ingest(T0 + HOUR + timedelta(minutes=1), count=2)
    rig.clock.now = T0 + HOUR + timedelta(minutes=5)

    rig.engine.failures = 3  # retries = 3 by default: the fourth attempt succeeds
    assert _done(rig.service.run_due()) == [("z_hourly", T0)]
    assert rig.sleeps == [2.0, 4.0, 8.0]  # retry_backoff_seconds = 2, doubling
    assert rig.runs("z_hourly") == [
        (T0, 1, "failed", "transient"),
        (T0, 2, "failed", "transient"),
        (T0, 3, "failed", "transient"),
        (T0, 4, "succeeded", None),
    ]
    assert "injected fault" in (rig.metadata.runs.runs("z_hourly", limit=2)[1].error or "")
    assert rig.table("z_hourly", "hour") == {T0: (3,)}

    # Retries used up: the pass gives up on it, and the next pass tries again.
    rig.sleeps.clear()
    rig.engine.failures = 100
    rig.clock.now += HOUR
    assert rig.service.run_due() == []
    assert rig.sleeps == [2.0, 4.0, 8.0]
    rig.engine.failures = 0
    assert _done(rig.service.run_due()) == [("z_hourly", T0 + HOUR)]
    assert rig.table("z_hourly", "hour") == {T0: (3,), T0 + HOUR: (2,)}
    assert [r[2] for r in rig.runs("z_hourly") if r[0] == T0 + HOUR] == ["failed"] * 4 + [
        "succeeded"
    ]


@pytest.mark.timeout(60)
def test_terminal_errors_are_not_retried_until_the_pipeline_changes(rig: Rig) -> None:
    rig.write("broken.sql", BROKEN)
    rig.write("audited.sql", AUDITED)
    _three_hours_the_second_failing_the_audit(rig)

    for _ in range(6):
        rig.service.run_due()
    assert rig.sleeps == []  # never retried within a run
    # Each interval was tried once; the failed ones were not tried again by later passes.
    assert rig.runs("broken") == [(t, 1, "failed", "terminal") for t in _hours(0, 3)]
    assert rig.runs("audited") == [
        (T0, 1, "succeeded", None),
        (T0 + HOUR, 1, "failed", "terminal"),
        (T0 + 2 * HOUR, 1, "succeeded", None),
    ]
    assert set(rig.table("audited", "hour")) == {T0, T0 + 2 * HOUR}  # nothing published for h1
    status = {s.name: s for s in rig.service.status()}
    assert "no_such_column" in (status["broken"].last_error or "")
    assert (status["audited"].intervals_done, status["audited"].intervals_missing) == (2, 1)
    audit_error = rig.metadata.runs.runs("audited", limit=3)[1].error or ""
    assert "accepted_values(event_name) failed on 1 row" in audit_error
    assert "Refund Issued" in audit_error

    # New versions of both files: their failed intervals run again, and succeed.
    rig.write("broken.sql", BROKEN.replace("COUNT(no_such_column)", "COUNT(*)"))
    rig.write("audited.sql", AUDITED.replace('["Page Viewed"]', '["Page Viewed", "Refund Issued"]'))
    results = _done(rig.service.run_due())
    assert results == [("audited", T0 + HOUR)] + [("broken", t) for t in _hours(0, 3)]
    assert rig.table("broken", "hour") == {T0: (2,), T0 + HOUR: (3,), T0 + 2 * HOUR: (2,)}
    assert rig.service.run_due() == []
    status = {s.name: s for s in rig.service.status()}
    assert status["audited"].intervals_changed == 2  # the two made by the old version
    assert status["broken"].intervals_changed == 0


# -- event time: late events ------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_late_events_reopen_their_day_and_the_rerun_flows_downstream(rig: Rig) -> None:
    rig.write("daily_users.sql", DAILY_USERS)
    rig.write("day_summary.sql", DAY_SUMMARY)
    today = datetime(2026, 3, 5, tzinfo=UTC)
    days = [today - 3 * DAY, today - 2 * DAY, today - DAY]
    for index, day in enumerate(days):
        rig.ingest(today + timedelta(minutes=10), day + 6 * HOUR, count=index + 2)
    rig.clock.now = today + HOUR
    first = _done(rig.service.run_due())
    assert first == [("daily_users", d) for d in days] + [("day_summary", d) for d in days]
    assert rig.table("daily_users", "day") == {days[0]: (2, 2), days[1]: (3, 3), days[2]: (4, 4)}

    # Two late events for days[1], and one for days[2] that arrives after the next pass.
    rig.ingest(today + 90 * timedelta(minutes=1), days[1] + 15 * HOUR, count=2)
    rig.ingest(today + 150 * timedelta(minutes=1), days[2] + 15 * HOUR)
    rig.clock.now = today + 2 * HOUR
    assert _done(rig.service.run_due()) == [("daily_users", days[1]), ("day_summary", days[1])]
    assert rig.table("daily_users", "day") == {days[0]: (2, 2), days[1]: (5, 5), days[2]: (4, 4)}
    assert rig.table("day_summary", "day") == {
        days[0]: (2002,),
        days[1]: (5005,),
        days[2]: (4004,),
    }
    status = {s.name: s for s in rig.service.status()}
    assert status["daily_users"].intervals_stale == 0
    assert status["day_summary"].intervals_stale == 0

    rig.clock.now = today + 3 * HOUR
    assert _done(rig.service.run_due()) == [("daily_users", days[2]), ("day_summary", days[2])]
    assert rig.table("day_summary", "day")[days[2]] == (5005,)
    assert rig.service.run_due() == []


@pytest.mark.timeout(60)
def test_late_events_for_a_day_backfilled_before_the_first_pass_reopen_it(rig: Rig) -> None:
    rig.write("daily_users.sql", DAILY_USERS)
    today = datetime(2026, 3, 5, tzinfo=UTC)
    day = today - 3 * DAY
    rig.ingest(today + timedelta(minutes=10), day + 6 * HOUR, count=2)
    rig.clock.now = today + HOUR
    assert _done(rig.service.backfill("daily_users", day, day + DAY)) == [("daily_users", day)]

    rig.ingest(today + 90 * timedelta(minutes=1), day + 15 * HOUR)  # late, after the backfill
    rig.clock.now = today + 2 * HOUR
    rig.service.run_due()
    rig.clock.now = today + 3 * HOUR
    rig.service.run_due()
    assert rig.table("daily_users", "day")[day] == (3, 3), "the late event was never counted"


# -- by arrival: intervals that have not ended -------------------------------------------------


@pytest.mark.timeout(60)
def test_a_backfill_past_now_does_not_close_hours_that_have_not_ended(rig: Rig) -> None:
    rig.write("z_hourly.sql", Z_HOURLY)
    rig.ingest(T0 + timedelta(minutes=10), count=2)
    rig.ingest(T0 + HOUR + timedelta(minutes=10), count=3)
    rig.clock.now = T0 + 2 * HOUR + timedelta(minutes=5)
    rig.service.backfill("z_hourly", T0, T0 + 6 * HOUR)  # --end later than now

    rig.ingest(T0 + 3 * HOUR + timedelta(minutes=30), count=4)  # arrives later, as usual
    rig.clock.now = T0 + 6 * HOUR + timedelta(minutes=5)
    rig.service.run_due()
    assert rig.table("z_hourly", "hour") == {T0: (2,), T0 + HOUR: (3,), T0 + 3 * HOUR: (4,)}


@pytest.mark.timeout(60)
def test_a_range_by_hand_begins_no_earlier_than_the_declared_start(rig: Rig) -> None:
    """Intervals before the header's ``start`` are none of the pipeline's: a backfill or
    run by hand from earlier made one that nothing else kept (an apply rebuilt from the
    start, leaving its file in the old schema beside the new ones)."""
    rig.write(
        "z_hourly.sql",
        Z_HOURLY.replace(
            'time_column = "hour"', f'time_column = "hour"\nstart = "{(T0 + 2 * HOUR).isoformat()}"'
        ),
    )
    for h in range(5):
        rig.ingest(T0 + h * HOUR + timedelta(minutes=10), count=h + 1)
    rig.clock.now = T0 + 2 * DAY
    filled = rig.service.backfill("z_hourly", T0, T0 + 4 * HOUR)
    assert _done(filled) == [("z_hourly", T0 + 2 * HOUR), ("z_hourly", T0 + 3 * HOUR)]
    assert rig.service.run("z_hourly", T0, T0 + 2 * HOUR) == []
    ran = rig.service.run("z_hourly", T0 + HOUR, T0 + 5 * HOUR)
    assert [start for _, start in _done(ran)] == [T0 + h * HOUR for h in (2, 3, 4)]
    assert rig.table("z_hourly", "hour") == {T0 + h * HOUR: (h + 1,) for h in (2, 3, 4)}


@pytest.mark.timeout(60)
def test_a_range_by_hand_is_widened_to_whole_intervals(rig: Rig) -> None:
    # docs/pipelines.md: --start and --end are widened to the schedule's boundaries.
    rig.write("z_hourly.sql", Z_HOURLY)
    rig.write("daily_users.sql", DAILY_USERS)
    for h in range(4):
        rig.ingest(T0 + h * HOUR + timedelta(minutes=10), T0 + h * HOUR, count=h + 1)
    rig.clock.now = T0 + 2 * DAY
    ran = rig.service.run("z_hourly", T0 + timedelta(minutes=15), T0 + HOUR + timedelta(minutes=30))
    assert _done(ran) == [("z_hourly", T0), ("z_hourly", T0 + HOUR)]
    # A backfill that starts and ends inside one day fills that day.
    filled = rig.service.backfill("daily_users", T0 + 6 * HOUR, T0 + 12 * HOUR)
    assert _done(filled) == [("daily_users", T0)]
    assert rig.service.backfill("daily_users", T0 + 6 * HOUR, T0 + 7 * HOUR) == []
    assert rig.table("daily_users", "day")[T0] == (10, 10)
    # A reader's widened day has all its input hours, not those up to --end.
    rig.write(
        "z_day.sql",
        '/* headwater\nschedule = "@daily"\nkind = "incremental"\ntime_column = "day"\n*/\n'
        "SELECT TIMESTAMP_TRUNC(hour, DAY) AS day, SUM(events) AS events FROM z_hourly\n"
        "WHERE hour >= @start AND hour < @end GROUP BY day\n",
    )
    for h in range(4, 24):
        rig.ingest(T0 + h * HOUR + timedelta(minutes=10), T0 + h * HOUR)
    assert len(rig.service.backfill("z_day", T0, T0 + 6 * HOUR + timedelta(minutes=30))) == 23
    assert rig.table("z_day", "day") == {T0: (30,)}
    # What render shows for a range is what such a run reads.
    _, params = rig.service.render(
        "z_hourly", T0 + timedelta(minutes=15), T0 + timedelta(minutes=90)
    )
    assert params == {"start": T0, "end": T0 + 2 * HOUR}


Z_DAY = (
    '/* headwater\nschedule = "@daily"\nkind = "incremental"\ntime_column = "day"\n*/\n'
    "SELECT TIMESTAMP_TRUNC(hour, DAY) AS day, SUM(events) AS events FROM z_hourly\n"
    "WHERE hour >= @start AND hour < @end GROUP BY day\n"
)


@pytest.mark.timeout(60)
@pytest.mark.parametrize("how", ["backfill", "run --upstream"])
def test_a_range_starting_mid_day_fills_the_readers_whole_day(rig: Rig, how: str) -> None:
    # --start 05:30 for a daily reader: its day reads hours 00:00-05:00 too, so they are
    # filled first, not left out of a day then recorded done.
    rig.write("z_hourly.sql", Z_HOURLY)
    rig.write("z_day.sql", Z_DAY)
    rig.ingest(T0 + 2 * HOUR + timedelta(minutes=10), T0 + 2 * HOUR, count=3)
    rig.ingest(T0 + 7 * HOUR + timedelta(minutes=10), T0 + 7 * HOUR, count=1)
    rig.clock.now = T0 + 2 * DAY
    start, end = T0 + 5 * HOUR + timedelta(minutes=30), T0 + 7 * HOUR + timedelta(minutes=15)
    if how == "backfill":
        done = rig.service.backfill("z_day", start, end)
    else:
        done = rig.service.run("z_day", start, end, upstream=True)
    assert ("z_hourly", T0 + 2 * HOUR) in _done(done)
    assert rig.table("z_day", "day") == {T0: (4,)}


@pytest.mark.timeout(60)
def test_a_trailing_window_whose_input_is_not_filled_is_not_run_by_hand(rig: Rig) -> None:
    # Three days of z_day read by each day of z_3day: a backfill of the third day alone
    # fills its input from that day only; the two days before are not done, so the day
    # is not run (it would publish one day's total as three's, and record it done).
    rig.write("z_hourly.sql", Z_HOURLY)
    rig.write("z_day.sql", Z_DAY)
    rig.write(
        "z_3day.sql",
        '/* headwater\nschedule = "@daily"\nkind = "incremental"\ntime_column = "day"\n*/\n'
        "SELECT CAST(@start AS TIMESTAMP) AS day, SUM(events) AS events_3d FROM z_day\n"
        "WHERE day >= TIMESTAMP_SUB(@start, INTERVAL 2 DAY) AND day < @end\n",
    )
    for d in range(3):
        rig.ingest(T0 + d * DAY + timedelta(minutes=10), T0 + d * DAY, count=d + 1)
    rig.clock.now = T0 + 4 * DAY
    with pytest.raises(PipelineError) as caught:
        rig.service.backfill("z_3day", T0 + 2 * DAY, T0 + 3 * DAY)
    assert "what it reads of z_day over this interval is not all done" in caught.value.message
    assert rig.metadata.runs.intervals("z_3day") == {}  # nothing recorded done
    # Filled from the start of what it reads, the day is the three days' total.
    rig.service.backfill("z_3day", T0, T0 + 3 * DAY)
    assert rig.table("z_3day", "day")[T0 + 2 * DAY] == (1 + 2 + 3,)


@pytest.mark.timeout(60)
def test_a_run_whose_columns_changed_says_which_and_how_to_rebuild(rig: Rig) -> None:
    rig.write("z_hourly.sql", Z_HOURLY)
    rig.ingest(T0 + timedelta(minutes=5), count=2)
    rig.clock.now = T0 + HOUR + timedelta(minutes=1)
    assert _done(rig.service.run_due()) == [("z_hourly", T0)]
    rig.write("z_hourly.sql", Z_HOURLY.replace("COUNT(*) AS events", "COUNT(*) AS n, 1 AS one"))
    with pytest.raises(PipelineError) as caught:
        rig.service.run("z_hourly", T0, T0 + HOUR)
    assert "n, one added; events removed" in caught.value.message
    assert "headwater apply" in (caught.value.hint or "")
    assert rig.table("z_hourly", "hour") == {T0: (2,)}  # the live table as it was


# -- versions -------------------------------------------------------------------------------


@pytest.mark.timeout(60)
def test_a_changed_pipeline_file_is_reported_as_intervals_changed(rig: Rig) -> None:
    rig.write("z_hourly.sql", Z_HOURLY)
    rig.write("a_rollup.sql", A_ROLLUP)
    for h in range(3):
        rig.ingest(T0 + h * HOUR + timedelta(minutes=1), count=h + 1)
    rig.clock.now = T0 + 3 * HOUR
    assert len(rig.service.run_due()) == 6

    def changed() -> dict[str, int]:
        return {s.name: s.intervals_changed for s in rig.service.status()}

    assert changed() == {"z_hourly": 0, "a_rollup": 0}
    rig.write("z_hourly.sql", Z_HOURLY.replace("Events per hour", "Arrivals per hour"))
    assert changed() == {"z_hourly": 0, "a_rollup": 0}  # a description does not shape output
    rig.write("z_hourly.sql", Z_HOURLY.replace("COUNT(*) AS events", "COUNT(*) * 10 AS events"))
    assert changed() == {"z_hourly": 3, "a_rollup": 0}
    assert rig.service.run_due() == []  # reported, not re-run by the scheduler

    # Rebuilding them makes them current, and the reader re-runs from the new output.
    assert len(rig.service.run("z_hourly", T0, T0 + 3 * HOUR)) == 3
    assert changed() == {"z_hourly": 0, "a_rollup": 0}
    assert _done(rig.service.run_due()) == [("a_rollup", t) for t in _hours(0, 3)]
    assert rig.table("a_rollup", "hour") == {T0 + h * HOUR: ((h + 1) * 10, 1) for h in range(3)}


def test_a_start_in_the_future_is_when_the_first_run_comes(rig: Rig) -> None:
    rig.write("z_hourly.sql", Z_HOURLY.replace("*/", 'start = "2026-04-01"\n*/', 1))
    rig.clock.now = T0 + 5 * HOUR + timedelta(minutes=30)
    [status] = rig.service.status()
    assert status.next_run == datetime(2026, 4, 1, 1, tzinfo=UTC)
    assert status.intervals_missing == 0


def test_fake_clock_drives_status(rig: Rig) -> None:
    """The status report follows the injected clock, not the wall clock."""
    rig.write("z_hourly.sql", Z_HOURLY)
    rig.ingest(T0 + timedelta(minutes=1))
    rig.clock.now = T0 + 5 * HOUR + timedelta(minutes=30)
    [status] = rig.service.status()
    assert (status.intervals_missing, status.next_run) == (5, T0 + 6 * HOUR)


# -- trailing windows -----------------------------------------------------------------

DAILY_COUNTS = """/* headwater
schedule = "@daily"
kind = "incremental"
time = "timestamp"
time_column = "day"
*/
SELECT TIMESTAMP_TRUNC(timestamp, DAY) AS day, COUNT(*) AS events
FROM events WHERE timestamp >= @start AND timestamp < @end
GROUP BY day
"""
#: Seven days of daily_counts, read through a shifted bound.
ROLLING_7D = """/* headwater
schedule = "@daily"
kind = "incremental"
time_column = "day"
*/
SELECT CAST(@start AS TIMESTAMP) AS day, SUM(events) AS events_7d
FROM daily_counts
WHERE day >= TIMESTAMP_SUB(@start, INTERVAL 6 DAY) AND day < @end
"""
#: Seven days of events themselves, by event time.
USERS_7D = """/* headwater
schedule = "@daily"
kind = "incremental"
time = "timestamp"
time_column = "day"
start = "{start}"
*/
SELECT CAST(@start AS TIMESTAMP) AS day, COUNT(DISTINCT user_id) AS users_7d
FROM events
WHERE @start - INTERVAL 6 DAY <= timestamp AND timestamp < @end
"""


@pytest.mark.timeout(120)
def test_a_late_event_re_runs_every_trailing_window_that_reads_its_day(rig: Rig) -> None:
    today = datetime(2026, 3, 20, tzinfo=UTC)
    days = [today - (14 - k) * DAY for k in range(14)]
    rig.write("daily_counts.sql", DAILY_COUNTS)
    rig.write("rolling_7d.sql", ROLLING_7D)
    rig.write("users_7d.sql", USERS_7D.format(start=days[0].date().isoformat()))
    sent: list[datetime] = []  # each event's time, users are one per event
    for index, day in enumerate(days):
        rig.ingest(today + timedelta(minutes=5), day + 6 * HOUR, count=index + 1)
        sent += [day + 6 * HOUR] * (index + 1)
    rig.clock.now = today + HOUR
    for name in ("rolling_7d", "users_7d"):
        rig.service.backfill(name, days[0], today)

    def expected() -> tuple[dict[datetime, tuple[Any, ...]], dict[datetime, tuple[Any, ...]]]:
        """Both windows recomputed from every event sent so far."""
        rolling = {d: (sum(1 for t in sent if d - 6 * DAY <= t < d + DAY),) for d in days}
        return rolling, rolling  # one user per event: distinct users = events

    rolling, users = expected()
    assert rig.table("rolling_7d", "day") == rolling
    assert rig.table("users_7d", "day") == users

    # One late event for days[3]: it belongs to seven windows, days[3] to days[9].
    rig.ingest(today + 2 * HOUR, days[3] + 12 * HOUR)
    sent.append(days[3] + 12 * HOUR)
    rig.clock.now = today + 3 * HOUR
    reran: list[tuple[str, datetime]] = []
    for _ in range(10):
        done = _done(rig.service.run_due())
        if not done:
            break
        reran += done
    affected = days[3:10]
    assert sorted(reran) == sorted(
        [("daily_counts", days[3])]
        + [("rolling_7d", d) for d in affected]
        + [("users_7d", d) for d in affected]
    )
    rolling, users = expected()
    assert rig.table("rolling_7d", "day") == rolling
    assert rig.table("users_7d", "day") == users
    status = {s.name: s for s in rig.service.status()}
    assert all(status[n].intervals_stale == 0 for n in status), status


def test_read_ranges_are_derived_from_the_sql_or_declared(rig: Rig) -> None:
    from headwater.process.graph import load_graph

    rig.write("daily_counts.sql", DAILY_COUNTS)
    rig.write("rolling_7d.sql", ROLLING_7D)
    declared = ROLLING_7D.replace(
        'time_column = "day"\n', 'time_column = "day"\nreads = { daily_counts = ["-2d", "1d"] }\n'
    )  # the header's range wins over the SQL's
    rig.write("declared.sql", declared)
    graph = load_graph(rig.project.root / "pipelines", "bigquery")
    day = Interval(datetime(2026, 3, 10, tzinfo=UTC), datetime(2026, 3, 11, tzinfo=UTC))
    assert graph["rolling_7d"].window("daily_counts", "day", day) == Interval(
        day.start - 6 * DAY, day.end
    )
    assert graph["declared"].window("daily_counts", "day", day) == Interval(
        day.start - 2 * DAY, day.end + DAY
    )
    # A bound on another column says nothing of the input's intervals: all of it is read.
    assert graph["rolling_7d"].window("daily_counts", "hour", day).start.year == 1

    rig.write("declared.sql", declared.replace('"-2d", "1d"', '"-2 days"'))
    broken = load_graph(rig.project.root / "pipelines", "bigquery").broken["declared"]
    assert "reads.daily_counts is ['-2 days']" in str(broken.error), broken.error


# -- running by hand --------------------------------------------------------------------

#: Fails while a file named ``stop`` lies beside the pipelines.
STOPPABLE = """\
from __future__ import annotations

from pathlib import Path

import pyarrow as pa

from headwater.process.python import Context, pipeline


@pipeline(schedule="@hourly", kind="incremental", time_column="hour")
def stoppable(ctx: Context) -> pa.Table:
    if (Path(__file__).parent / "stop").exists():
        raise RuntimeError("stopped by hand")
    return ctx.sql(
        "SELECT TIMESTAMP_TRUNC(received_at, HOUR) AS hour, COUNT(*) AS events FROM events "
        "WHERE received_at >= @start AND received_at < @end GROUP BY hour"
    )
"""

AUDITED_READER = """\
/* headwater
schedule = "@hourly"
kind = "incremental"
time_column = "hour"
*/
SELECT hour, SUM(events) AS events FROM audited WHERE hour >= @start AND hour < @end GROUP BY hour
"""

FULL_COUNT = """\
/* headwater
kind = "full"
*/
SELECT COUNT(*) AS n FROM events
"""

FULL_READER = """\
/* headwater
kind = "full"
*/
SELECT n * 10 AS tens FROM full_count
"""


@pytest.mark.timeout(60)
def test_a_run_by_hand_after_failures_runs_the_intervals_that_failed(rig: Rig) -> None:
    rig.write("stoppable.py", STOPPABLE)
    stop = rig.project.root / "pipelines" / "stop"
    stop.touch()
    for h in range(2):
        rig.ingest(T0 + h * HOUR + timedelta(minutes=5), count=h + 1)
    rig.clock.now = T0 + 2 * HOUR + timedelta(minutes=1)
    rig.service.run_due()
    assert rig.runs("stoppable") == [(t, 1, "failed", "terminal") for t in _hours(0, 2)]
    status = {s.name: s for s in rig.service.status()}["stoppable"]
    assert status.intervals_missing == 2

    stop.unlink()  # fixed outside the pipeline: the scheduler waits for a change...
    assert rig.service.run_due() == []
    # ...and a run by hand runs what is missing.
    assert _done(rig.service.run("stoppable")) == [("stoppable", t) for t in _hours(0, 2)]
    assert rig.table("stoppable", "hour") == {T0: (1,), T0 + HOUR: (2,)}


@pytest.mark.timeout(60)
def test_a_failed_interval_stops_only_the_intervals_that_read_it(rig: Rig) -> None:
    rig.write("audited.sql", AUDITED)
    rig.write("audited_reader.sql", AUDITED_READER)
    _three_hours_the_second_failing_the_audit(rig)
    steps: list[tuple[str, datetime, str | None]] = []

    def progress(step: Any) -> None:
        steps.append((step.pipeline, step.interval.start, step.error))

    with pytest.raises(PipelineError, match="accepted_values"):
        rig.service.backfill("audited_reader", T0, T0 + 3 * HOUR, progress)
    outcome = {(name, start): error for name, start, error in steps}
    assert [k for k, error in outcome.items() if error is None] == [
        ("audited", T0),
        ("audited", T0 + 2 * HOUR),
        ("audited_reader", T0),
        ("audited_reader", T0 + 2 * HOUR),
    ]
    assert "accepted_values" in (outcome[("audited", T0 + HOUR)] or "")
    assert "not run: it reads audited" in (outcome[("audited_reader", T0 + HOUR)] or "")
    assert rig.table("audited_reader", "hour") == {T0: (2,), T0 + 2 * HOUR: (2,)}


@pytest.mark.timeout(60)
def test_a_day_blocked_by_a_failed_hour_does_not_hold_back_the_days_after_it(rig: Rig) -> None:
    # The failed hour is not the day's first: the hours before it are done, and the day
    # is blocked (not waiting), so the scheduler goes on to the next day.
    rig.write("audited.sql", AUDITED)
    rig.write(
        "daily_reader.sql",
        '/* headwater\nschedule = "@daily"\nkind = "incremental"\ntime_column = "day"\n*/\n'
        "SELECT TIMESTAMP_TRUNC(hour, DAY) AS day, SUM(events) AS events FROM audited\n"
        "WHERE hour >= @start AND hour < @end GROUP BY day\n",
    )
    for h in (0, 3, 5, 24, 30):
        rig.ingest(T0 + h * HOUR + timedelta(minutes=5), event="Page Viewed")
    rig.ingest(T0 + 5 * HOUR + timedelta(minutes=9), event="Refund Issued")
    rig.clock.now = T0 + 2 * DAY + timedelta(minutes=1)
    passes = 0
    while rig.service.run_due():  # max_catchup = 4 a pass
        passes += 1
        assert passes < 30
    assert rig.runs("audited")[5] == (T0 + 5 * HOUR, 1, "failed", "terminal")
    assert rig.table("daily_reader", "day") == {T0 + DAY: (2,)}


@pytest.mark.timeout(60)
def test_run_now_refreshes_a_full_pipeline_and_with_upstream_what_it_reads(rig: Rig) -> None:
    rig.write("full_count.sql", FULL_COUNT)
    rig.write("full_reader.sql", FULL_READER)
    rig.ingest(T0 + timedelta(minutes=5), count=2)
    rig.clock.now = T0 + HOUR
    assert sorted(_done(rig.service.run_due())) == [
        ("full_count", T0 - DAY),
        ("full_reader", T0 - DAY),
    ]
    rig.ingest(T0 + timedelta(minutes=30), count=3)
    assert rig.service.run("full_count") == []  # its run of the day is done
    assert rig.table("full_count", "n") == {2: ()}

    assert _done(rig.service.run("full_count", now=True)) == [("full_count", T0 - DAY)]
    assert rig.table("full_count", "n") == {5: ()}
    rig.ingest(T0 + timedelta(minutes=40), count=1)
    refreshed = _done(rig.service.run("full_reader", now=True, upstream=True))
    assert refreshed == [("full_count", T0 - DAY), ("full_reader", T0 - DAY)]
    assert rig.table("full_reader", "tens") == {60: ()}


@pytest.mark.timeout(60)
def test_run_upstream_runs_what_an_incremental_pipeline_reads_then_it(rig: Rig) -> None:
    rig.write("daily_users.sql", DAILY_USERS)
    rig.write("day_summary.sql", DAY_SUMMARY)
    today = datetime(2026, 3, 5, tzinfo=UTC)
    days = [today - 2 * DAY, today - DAY]
    for day in days:
        rig.ingest(today + timedelta(minutes=10), day + 6 * HOUR, count=2)
    rig.clock.now = today + HOUR
    # Alone, the reader waits for what it reads; with --upstream, both run, inputs first.
    assert rig.service.run("day_summary") == []
    ran = _done(rig.service.run("day_summary", upstream=True))
    assert ran == [("daily_users", d) for d in days] + [("day_summary", d) for d in days]
    assert rig.table("day_summary", "day") == {d: (2002,) for d in days}


@pytest.mark.parametrize(
    ("where", "start", "end"),
    [
        ("timestamp >= @start AND timestamp < @end", 0, 1),
        ("timestamp >= TIMESTAMP_SUB(@start, INTERVAL 6 DAY) AND timestamp < @end", -6, 1),
        (
            "DATE(timestamp) >= DATE_SUB(DATE(@start), INTERVAL 6 DAY) "
            "AND DATE(timestamp) < DATE(@end)",
            -6,
            1,
        ),
        ("DATE(timestamp) BETWEEN DATE_SUB(DATE(@start), INTERVAL 1 DAY) AND DATE(@start)", -1, 1),
        ("timestamp BETWEEN @start AND DATE_ADD(@end, INTERVAL 1 MONTH)", 0, 32),
        # A truncation in another zone has other boundaries than UTC's: not a limit.
        ("timestamp >= TIMESTAMP_TRUNC(@start, DAY, 'Asia/Tokyo') AND timestamp < @end", None, 1),
        # An OR is not a limit every row meets: the whole input is read.
        ("(timestamp >= @start OR user_id = 'x') AND timestamp < @end", None, 1),
    ],
)
def test_read_ranges_of_common_filters(where: str, start: int | None, end: int) -> None:
    """Day offsets of the read range from a day's interval, 2026-03-01."""
    from headwater.process import ranges
    from headwater.process.sql import parse

    query = parse(f"SELECT COUNT(*) AS n FROM events WHERE {where}", "bigquery", "x.sql")
    day = Interval(datetime(2026, 3, 1, tzinfo=UTC), datetime(2026, 3, 2, tzinfo=UTC))
    reads = ranges.table_reads(cast(Any, query.expression))
    read = ranges.window(reads["events"], "timestamp", day)
    expected_start = ranges.EARLIEST if start is None else day.start + start * DAY
    assert read.start == expected_start
    # (an inclusive bound reads one microsecond further)
    assert read.end - timedelta(microseconds=read.end.microsecond) == day.start + end * DAY


@pytest.mark.timeout(60)
def test_run_upstream_does_not_run_a_reader_of_an_input_that_failed(rig: Rig) -> None:
    rig.write("full_count.sql", FULL_COUNT.replace("COUNT(*)", "COUNT(no_such_column)"))
    rig.write("full_reader.sql", FULL_READER)
    rig.ingest(T0 + timedelta(minutes=5), count=2)
    rig.clock.now = T0 + HOUR
    steps: list[tuple[str, str | None]] = []
    with pytest.raises(PipelineError, match="no_such_column"):
        rig.service.run(
            "full_reader",
            now=True,
            upstream=True,
            progress=lambda step: steps.append((step.pipeline, step.error)),
        )
    assert [name for name, _ in steps] == ["full_count", "full_reader"]
    assert "not run: it reads full_count" in (steps[1][1] or "")
    assert rig.runs("full_reader") == []


@pytest.mark.timeout(60)
def test_the_scheduler_runs_a_readers_later_intervals_past_one_that_failed_for_good(
    rig: Rig,
) -> None:
    rig.write("audited.sql", AUDITED)
    rig.write("audited_reader.sql", AUDITED_READER)
    _three_hours_the_second_failing_the_audit(rig)
    for _ in range(3):
        rig.service.run_due()
    assert rig.runs("audited") == [
        (T0, 1, "succeeded", None),
        (T0 + HOUR, 1, "failed", "terminal"),
        (T0 + 2 * HOUR, 1, "succeeded", None),
    ]
    # The reader's h1 reads the failed hour and waits; its h2 does not, and runs.
    assert [(start, status) for start, _, status, _ in rig.runs("audited_reader")] == [
        (T0, "succeeded"),
        (T0 + 2 * HOUR, "succeeded"),
    ]
    status = {s.name: s for s in rig.service.status()}["audited_reader"]
    assert status.intervals_missing == 1


def test_the_first_interval_follows_the_earliest_event_imported_or_deleted(rig: Rig) -> None:
    """The planner asks for the earliest event below the one an earlier pass found (a read
    of the oldest blocks only): still exact when older events arrive or the oldest go."""
    rig.write("z_hourly.sql", Z_HOURLY)
    graph = rig.service.graph()
    seen: dict[str, datetime] = {}

    def first() -> datetime | None:
        planner = Planner(graph, cast(Engine, rig.engine), rig.metadata, earliest=seen)
        return planner.start(graph["z_hourly"])

    assert first() is None
    assert seen == {}
    rig.ingest(T0 + 5 * HOUR + timedelta(minutes=10))
    rig.ingest(T0 + 7 * HOUR)
    assert first() == T0 + 5 * HOUR + timedelta(minutes=10)
    assert seen == {"received_at": T0 + 5 * HOUR + timedelta(minutes=10)}
    rig.ingest(T0 + 2 * HOUR)  # older than any before (an import of an earlier day)
    assert first() == T0 + 2 * HOUR
    # The oldest go (an offload): none is at or below the one found, so all are read.
    assert rig.engine.inner.delete_arrivals("events", T0 + 6 * HOUR, 100) == 2
    assert first() == T0 + 7 * HOUR
    assert seen == {"received_at": T0 + 7 * HOUR}
    # A pass that keeps them, through the service, plans from them the same way.
    rig.clock.now = T0 + 8 * HOUR + timedelta(minutes=1)
    assert _done(rig.service.run_due()) == [("z_hourly", T0 + 7 * HOUR)]


@pytest.mark.timeout(60)
def test_a_range_whose_start_is_not_before_its_end_is_an_error(rig: Rig) -> None:
    rig.write("z_hourly.sql", Z_HOURLY)
    rig.clock.now = T0 + 2 * DAY
    for call in (rig.service.backfill, rig.service.run):
        with pytest.raises(PipelineError, match="is not before --end") as caught:
            call("z_hourly", T0 + DAY, T0)
        assert "swapped" in (caught.value.hint or "")


@pytest.mark.timeout(60)
def test_an_apply_leaves_a_readers_interval_whose_live_input_lags_to_the_scheduler(
    rig: Rig,
) -> None:
    # The reader gains a column just after an hour ends, before the scheduler ran its input's
    # hour: the build does not run that hour (a partial number), nor fail the apply; the
    # scheduler runs it once the input's hour is done.
    from headwater.runtime.apply import apply
    from headwater.runtime.plan import make_plan

    rig.write("z_hourly.sql", Z_HOURLY)
    rig.write("a_rollup.sql", A_ROLLUP)
    for h in range(4):
        rig.ingest(T0 + h * HOUR + timedelta(minutes=10))
    rig.clock.now = T0 + 3 * HOUR + timedelta(minutes=5)
    ws = rig.service
    ws.pipelines.run_due()
    apply(ws, make_plan(ws, []), commit=None, dirty=False, applied_by="tests")
    rig.write("a_rollup.sql", A_ROLLUP.replace("COUNT(*) AS hours", "COUNT(*) AS hours, 1 AS v2"))
    rig.clock.now = T0 + 4 * HOUR + timedelta(seconds=30)
    ws = rig.service
    apply(ws, make_plan(ws, []), commit=None, dirty=False, applied_by="tests")
    assert set(rig.table("a_rollup", "hour")) == set(_hours(0, 3))
    assert _done(rig.service.run_due()) == [
        ("z_hourly", T0 + 3 * HOUR),
        ("a_rollup", T0 + 3 * HOUR),
    ]
    assert rig.table("a_rollup", "hour")[T0 + 3 * HOUR] == (1, 1, 1)


@pytest.mark.timeout(60)
def test_a_range_by_hand_widened_back_does_not_run_what_retention_retired(rig: Rig) -> None:
    # q keeps 3 days; t (hourly) reads q and a daily l: --start at q's first kept hour,
    # widened back to the day's start for l, must not run q's retired hours of that day.
    rig.write(
        "q.sql", Z_HOURLY.replace('time_column = "hour"', 'time_column = "hour"\nretain = "3d"')
    )
    rig.write(
        "l.sql",
        '/* headwater\nschedule = "@daily"\nkind = "incremental"\ntime = "received_at"\n'
        'time_column = "day"\n*/\nSELECT TIMESTAMP_TRUNC(received_at, DAY) AS day, COUNT(*) AS n '
        "FROM events\nWHERE received_at >= @start AND received_at < @end GROUP BY day\n",
    )
    rig.write(
        "t.sql",
        '/* headwater\nschedule = "@hourly"\nkind = "incremental"\ntime_column = "hour"\n*/\n'
        "SELECT q.hour, q.events, l.n FROM q JOIN l ON l.day = TIMESTAMP_TRUNC(q.hour, DAY)\n"
        "WHERE q.hour >= @start AND q.hour < @end\n"
        "AND l.day >= TIMESTAMP_TRUNC(@start, DAY) AND l.day < @end\n",
    )
    for h in range(24 * 6):
        rig.ingest(T0 + h * HOUR + timedelta(minutes=10))
    rig.clock.now = T0 + 5 * DAY + 5 * HOUR + timedelta(minutes=30)
    service = rig.service
    planner, _ = service.pipelines.tools(service.graph())
    retired = planner.retired(service.graph()["q"])
    assert retired is not None
    ran = service.run("t", retired.before, retired.before + 3 * HOUR, upstream=True)
    hours_of_q = [r.interval.start for r in ran if r.pipeline == "q"]
    assert hours_of_q
    assert min(hours_of_q) == retired.before


@pytest.mark.timeout(60)
def test_a_backfill_of_a_reader_asks_the_store_for_the_earliest_event_once(rig: Rig) -> None:
    # Whether its inputs are done is asked of the metadata; the store (billed, on a
    # warehouse) is asked once per backfill, not once per interval.
    rig.write("z_hourly.sql", Z_HOURLY)
    rig.write("a_rollup.sql", A_ROLLUP)
    for h in range(48):
        rig.ingest(T0 + h * HOUR + timedelta(minutes=10))
    rig.clock.now = T0 + 2 * DAY + timedelta(minutes=5)
    rig.service.backfill("z_hourly", T0, T0 + 2 * DAY)
    asked: list[str] = []
    select = rig.engine.inner.select

    def counted(sql: str, params: Any) -> Selected:
        asked.append(sql)
        return select(sql, params)

    rig.engine.inner.select = counted  # type: ignore[method-assign]
    done = rig.service.pipelines.backfill("a_rollup", T0, T0 + 2 * DAY, upstream=False)
    assert len(done) == 48
    assert sum("min(" in sql.lower() for sql in asked) <= 1, asked
