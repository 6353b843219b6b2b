"""A pipeline's intervals one by one (``headwater status NAME``, the dashboard's grid).

The same rig as the scheduler's tests: a real DuckDB file, a real SQLite metadata
database, a clock the test moves.
"""

from __future__ import annotations

import json
from datetime import timedelta

import pyarrow as pa
import pytest

from headwater.config.project import load_project
from headwater.core.types import Interval
from headwater.runtime import operations
from headwater.runtime.workspace import Workspace
from tests.conftest import run_cli
from tests.process import test_scheduler
from tests.process.test_scheduler import BROKEN, HOUR, T0, Z_HOURLY, Rig

rig = test_scheduler.rig  # the scheduler tests' rig, as a fixture here too


def _states(grid: dict[str, object]) -> list[tuple[str, str]]:
    cells = grid["cells"]
    assert isinstance(cells, list)
    return [(c["interval"]["start"][11:16], c["state"]) for c in cells]


@pytest.mark.timeout(60)
def test_each_interval_has_its_state_and_the_run_behind_it(rig: Rig) -> None:
    rig.write("z_hourly.sql", Z_HOURLY)
    for h in range(6):
        rig.ingest(T0 + h * HOUR + timedelta(minutes=5), count=h + 1)
    rig.clock.now = T0 + 6 * HOUR + timedelta(minutes=1)
    rig.service.run("z_hourly", T0, T0 + 3 * HOUR)
    # One marked stale, one left running by a process still at it, one failed.
    rig.metadata.runs.mark_stale("z_hourly", [T0 + HOUR], "late events arrived")
    version = rig.service.graph()["z_hourly"].version
    rig.metadata.runs.start_run("z_hourly", version, Interval(T0 + 3 * HOUR, T0 + 4 * HOUR),
                                "manual", 1)  # fmt: skip
    failing = rig.metadata.runs.start_run(
        "z_hourly", version, Interval(T0 + 4 * HOUR, T0 + 5 * HOUR), "schedule", 1
    )
    rig.metadata.runs.fail(failing, "Binder Error: no such column", "terminal")

    grid = operations.call(rig.service, "intervals", {"name": "z_hourly"})
    json.dumps(grid)  # what the control socket and the pages send
    assert _states(grid) == [
        ("00:00", "done"),
        ("01:00", "stale"),
        ("02:00", "done"),
        ("03:00", "running"),
        ("04:00", "failed"),
        ("05:00", "missing"),
    ]
    done, stale, _, running, failed, missing = grid["cells"]
    assert (done["run"]["rows_written"], done["run"]["trigger"]) == (1, "manual")
    assert done["run"]["duration_seconds"] >= 0
    assert done["version"] == version
    assert stale["reason"] == "late events arrived"
    assert (running["run"]["status"], running["run"]["finished_at"]) == ("running", None)
    assert failed["run"]["error"] == "Binder Error: no such column"
    assert missing["run"] is None
    assert grid["counts"] == {"done": 2, "stale": 1, "failed": 1, "missing": 1, "running": 1}

    # The totals are status's numbers for the same moment.
    status = {s["name"]: s for s in operations.call(rig.service, "status", {})}["z_hourly"]
    totals = grid["totals"]
    assert (
        (totals["done"], totals["missing"], totals["stale"], totals["changed"])
        == (
            status["intervals_done"],
            status["intervals_missing"],
            status["intervals_stale"],
            status["intervals_changed"],
        )
        == (2, 3, 1, 0)
    )

    # An edit makes what the old version made stale, as status counts it "changed".
    rig.write("z_hourly.sql", Z_HOURLY.replace("COUNT(*) AS events", "COUNT(*) + 0 AS events"))
    grid = operations.call(rig.service, "intervals", {"name": "z_hourly"})
    assert [c["state"] for c in grid["cells"]][:3] == ["stale"] * 3
    assert grid["cells"][0]["reason"] == "made by an older version of the pipeline"
    assert grid["totals"]["changed"] == 2


@pytest.mark.timeout(60)
def test_a_stale_interval_whose_run_again_failed_is_failed_and_its_error_stays(
    rig: Rig,
) -> None:
    """Late events mark a done interval stale; its run again fails for good (not retried):
    the cell says failed, not stale, and status keeps the error though later intervals
    of the pipeline have run since."""
    rig.write("z_hourly.sql", Z_HOURLY)
    for h in range(4):
        rig.ingest(T0 + h * HOUR + timedelta(minutes=5), count=1)
    rig.clock.now = T0 + 4 * HOUR + timedelta(minutes=1)
    rig.service.run("z_hourly", T0, T0 + 3 * HOUR)
    rig.metadata.runs.mark_stale("z_hourly", [T0 + HOUR], "late events arrived")
    version = rig.service.graph()["z_hourly"].version
    failing = rig.metadata.runs.start_run(
        "z_hourly", version, Interval(T0 + HOUR, T0 + 2 * HOUR), "schedule", 1
    )
    rig.metadata.runs.fail(failing, "Invalid Input Error: boom", "terminal")
    rig.service.run("z_hourly", T0 + 3 * HOUR, T0 + 4 * HOUR)  # later, and fine

    grid = operations.call(rig.service, "intervals", {"name": "z_hourly"})
    assert _states(grid) == [
        ("00:00", "done"),
        ("01:00", "failed"),
        ("02:00", "done"),
        ("03:00", "done"),
    ]
    failed = grid["cells"][1]
    assert failed["run"]["error"] == "Invalid Input Error: boom"
    assert failed["version"] == version  # what readers still get: the older output
    status = {s["name"]: s for s in operations.call(rig.service, "status", {})}["z_hourly"]
    assert status["last_status"] == "succeeded"
    assert status["last_error"] == "Invalid Input Error: boom"

    # Run again by hand and fine: nothing is wrong any more.
    rig.service.run("z_hourly", T0 + HOUR, T0 + 2 * HOUR)
    grid = operations.call(rig.service, "intervals", {"name": "z_hourly"})
    assert [c["state"] for c in grid["cells"]] == ["done"] * 4
    status = {s["name"]: s for s in operations.call(rig.service, "status", {})}["z_hourly"]
    assert status["last_error"] is None


@pytest.mark.timeout(60)
def test_a_span_and_a_limit_choose_the_cells_and_one_interval_lists_its_runs(rig: Rig) -> None:
    rig.write("broken.sql", BROKEN)
    rig.write("z_hourly.sql", Z_HOURLY)
    rig.ingest(T0 + timedelta(minutes=5), count=2)
    rig.clock.now = T0 + 10 * HOUR
    rig.service.run_due()  # broken fails for good at its first interval

    grid = operations.call(rig.service, "intervals", {"name": "z_hourly", "limit": 3})
    assert [c["interval"]["start"][11:16] for c in grid["cells"]] == ["07:00", "08:00", "09:00"]
    assert grid["earlier"] is True
    span = {"name": "z_hourly", "start": "2026-03-02T02:00", "end": "2026-03-02T04:00"}
    grid = operations.call(rig.service, "intervals", span)
    assert _states(grid) == [("02:00", "done"), ("03:00", "done")]
    assert grid["earlier"] is False
    # Before the first interval nothing is missing: the span starts at the first.
    before = {"name": "z_hourly", "start": "2026-03-01T20:00", "end": "2026-03-02T02:00"}
    grid = operations.call(rig.service, "intervals", before)
    assert _states(grid) == [("00:00", "done"), ("01:00", "done")]

    broken = operations.call(rig.service, "intervals", {"name": "broken", "limit": 1000})
    assert broken["cells"][0]["state"] == "failed"
    one = operations.call(rig.service, "interval", {"name": "broken", "at": "2026-03-02T00:30"})
    assert one["cell"]["state"] == "failed"
    assert one["cell"]["interval"]["start"].startswith("2026-03-02T00:00")
    assert [r["status"] for r in one["runs"]] == ["failed"]
    assert "no_such_column" in one["runs"][0]["error"]

    with pytest.raises(Exception, match="no pipeline named 'nope'"):
        operations.call(rig.service, "intervals", {"name": "nope"})


@pytest.mark.timeout(120)
def test_the_command_line_shows_the_same_intervals(rig: Rig) -> None:
    """``headwater status NAME`` prints what the operation answers, on the project's own
    store."""
    rig.write("z_hourly.sql", Z_HOURLY)
    project = rig.project
    run_cli(project, "run", "z_hourly", "--start", "2026-03-02T00:00", "--end", "2026-03-02T02:00")
    args = ("--start", "2026-03-02T00:00", "--end", "2026-03-02T03:00")
    printed = run_cli(project, "status", "z_hourly", *args).stdout
    lines = [line for line in printed.splitlines() if "2026-03-02T0" in line]
    assert [line.split("│")[2].strip() for line in lines] == ["done", "done", "missing"]
    workspace = Workspace.open(load_project(project.root))
    try:
        grid = operations.call(
            workspace,
            "intervals",
            {"name": "z_hourly", "start": "2026-03-02T00:00", "end": "2026-03-02T03:00"},
        )
    finally:
        workspace.close()
    assert [c["state"] for c in grid["cells"]] == ["done", "done", "missing"]
    runs = [str(c["run"]["id"]) for c in grid["cells"][:2]]
    assert [line.split("│")[3].strip() for line in lines[:2]] == runs
    totals = grid["totals"]
    assert f"z_hourly: {totals['done']} done" in printed


BATCHED = """\
/* headwater
schedule = "@hourly"
kind = "incremental"
time = "received_at"
time_column = "hour"
batch_size = 3
*/
SELECT TIMESTAMP_TRUNC(received_at, HOUR) AS hour, COUNT(*) AS events
FROM events
WHERE received_at >= @start AND received_at < @end
GROUP BY hour
"""

FULL_STOPPABLE = """\
from pathlib import Path

import pyarrow as pa

from headwater.process.python import Context, pipeline


@pipeline(schedule="@hourly", kind="full")
def fullstop(ctx: Context) -> pa.Table:
    if (Path(__file__).parent / "stop").exists():
        raise RuntimeError("stopped by hand")
    return ctx.sql("SELECT COUNT(*) AS n FROM events")
"""


@pytest.mark.timeout(120)
def test_a_failure_is_mended_by_runs_of_its_intervals_or_a_full_pipelines_next_run(
    rig: Rig,
) -> None:
    """A failed batch run again one interval at a time, and a full pipeline's failed tick
    followed by good ones: nothing is wrong any more, so status shows no error."""
    rig.write("batched.sql", BATCHED)
    for h in range(3):
        rig.ingest(T0 + h * HOUR + timedelta(minutes=5))
    rig.clock.now = T0 + 3 * HOUR + timedelta(minutes=1)
    version = rig.service.graph()["batched"].version
    failing = rig.metadata.runs.start_run(
        "batched", version, Interval(T0, T0 + 3 * HOUR), "schedule", 1
    )
    rig.metadata.runs.fail(failing, "boom", "terminal")
    for h in range(2):
        rig.service.run("batched", T0 + h * HOUR, T0 + (h + 1) * HOUR)
    status = {s.name: s for s in rig.service.status()}
    assert status["batched"].last_error == "boom"  # its last interval is still not done
    rig.service.run("batched", T0 + 2 * HOUR, T0 + 3 * HOUR)
    assert {s.name: s for s in rig.service.status()}["batched"].last_error is None

    rig.write("fullstop.py", FULL_STOPPABLE)
    stop = rig.project.root / "pipelines" / "stop"
    stop.touch()
    rig.clock.now = T0 + 4 * HOUR + timedelta(minutes=1)
    rig.service.run_due()
    assert {s.name: s for s in rig.service.status()}["fullstop"].last_error is not None
    stop.unlink()
    rig.clock.now = T0 + 5 * HOUR + timedelta(minutes=1)
    rig.service.run_due()
    full = {s.name: s for s in rig.service.status()}["fullstop"]
    assert (full.last_status, full.last_error) == ("succeeded", None)


NAMES_BY_HOUR = """\
import pyarrow as pa

from headwater.process import Context, pipeline


@pipeline(schedule="@hourly", kind="incremental", time_column="hour", inputs=["events"])
def names_by_hour(ctx: Context) -> pa.Table:
    rows = ctx.sql(
        "SELECT user_id, event FROM events WHERE received_at >= @start AND received_at < @end"
    ).to_pylist()
    users = sorted({r["user_id"] for r in rows})
    return pa.table({
        "hour": pa.array([ctx.start] * len(users), pa.timestamp("us", "UTC")),
        "user_id": users,
        "events": [sorted(r["event"] for r in rows if r["user_id"] == u) for u in users],
    })
"""

UNNESTED = """\
/* headwater
schedule = "@hourly"
kind = "incremental"
time_column = "hour"
*/
SELECT hour, user_id, e FROM names_by_hour, UNNEST(events) AS e
WHERE hour >= @start AND hour < @end
"""


@pytest.mark.timeout(60)
def test_a_python_output_first_empty_takes_its_types_from_the_first_rows(rig: Rig) -> None:
    """An empty first interval built from Python lists is all of Arrow's null type: the
    table made from it must take the types of the rows that come later, not refuse them."""
    rig.write("names_by_hour.py", NAMES_BY_HOUR)
    rig.write("unnested.sql", UNNESTED)
    rig.ingest(T0 + timedelta(minutes=5))  # the earliest event: its hour is the first
    rig.clock.now = T0 + HOUR + timedelta(minutes=1)
    rig.engine.execute("DELETE FROM events")  # ... and then it is gone: an empty hour
    rig.service.backfill("names_by_hour", T0, T0 + HOUR)
    rig.ingest(T0 + HOUR + timedelta(minutes=5), count=2, user_id="u1", event="Clicked")
    rig.clock.now = T0 + 2 * HOUR + timedelta(minutes=1)
    done = rig.service.backfill("unnested", T0, T0 + 2 * HOUR)
    assert [r.rows_written for r in done if r.pipeline == "unnested"] == [0, 2]
    made = rig.engine.query("SELECT user_id, events FROM names_by_hour")
    assert made.to_pylist() == [{"user_id": "u1", "events": ["Clicked", "Clicked"]}]
    assert made.schema.field("events").type == pa.list_(pa.string())
