"""``headwater plan`` and ``headwater apply`` on the embedded DuckDB store.

A real project folder (``headwater init``), events committed into its real DuckDB file,
pipelines run by Headwater, and the plan and apply made in-process through the same
operations the command runs, or through the ``headwater`` command itself (exit codes, git,
a server answering the read API while an apply swaps, a process killed mid-apply). Every
table an apply leaves is compared with the same figures computed here from the events.
"""

from __future__ import annotations

import json
import signal
import sqlite3
import subprocess
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest

from headwater.config.project import load_project
from headwater.core.errors import ConfigError
from headwater.runtime.apply import apply
from headwater.runtime.plan import Plan, make_plan
from headwater.runtime.workspace import Workspace
from headwater.store import schema
from headwater.store.duckdb import DuckDBEngine
from headwater.store.engine import IngestBatch
from tests.conftest import HEADWATER, Project, Server, run_cli, wait_for

HOUR = timedelta(hours=1)
NAMES = ("Signed Up", "Page Viewed", "Order Completed")

COUNTS = """\
/* headwater
schedule = "@hourly"
kind = "incremental"
time = "received_at"
time_column = "hour"
key = ["hour", "event"]
*/
SELECT TIMESTAMP_TRUNC(received_at, HOUR) AS hour, event, COUNT(*) AS events
FROM events
WHERE received_at >= @start AND received_at < @end
GROUP BY hour, event
"""

TOTALS = """\
/* headwater
schedule = "@hourly"
kind = "full"
key = ["event"]
*/
SELECT event, SUM(events) AS total FROM counts GROUP BY event
"""


def _start() -> datetime:
    now = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    return now - 30 * HOUR


def _rows(start: datetime, hours: int, per_hour: int, tag: str) -> list[dict[str, Any]]:
    rows = []
    for hour in range(hours):
        for index in range(per_hour):
            when = start + hour * HOUR + timedelta(seconds=index * 7)
            rows.append(
                {
                    "message_id": f"{tag}-{hour}-{index}",
                    "source": "web",
                    "type": "track",
                    "event": NAMES[(hour + index) % len(NAMES)],
                    "user_id": f"user-{index % 5}",
                    "timestamp": when,
                    "received_at": when,
                }
            )
    return rows


def _ingest(project: Project, rows: list[dict[str, Any]]) -> None:
    engine = DuckDBEngine.open(project.data_dir / "events.duckdb")
    try:
        events = pa.Table.from_pylist(rows, schema=schema.EVENTS)
        engine.ingest(IngestBatch(events, schema.FAILED_EVENTS.empty_table()))
    finally:
        engine.close()


def _expected(rows: list[dict[str, Any]]) -> Counter[tuple[datetime, str]]:
    return Counter((r["received_at"].replace(minute=0, second=0), r["event"]) for r in rows)


def _write(project: Project, name: str, text: str) -> None:
    (project.root / "pipelines" / name).write_text(text)


def _consumer(project: Project, datasets: str, name: str = "analytics") -> str:
    out = run_cli(project, "consumers", "add", name, "--datasets", datasets)
    return next(w for w in out.stdout.split() if w.startswith("hw_"))


@pytest.fixture
def counted(project: Project) -> tuple[Project, list[dict[str, Any]]]:
    """The project with only ``counts`` and ``totals``, 30 hours of events, every interval
    run by the scheduler, and a consumer granted ``counts``."""
    for path in (project.root / "pipelines").iterdir():
        path.unlink()
    _write(project, "counts.sql", COUNTS)
    _write(project, "totals.sql", TOTALS)
    rows = _rows(_start(), 30, 6, "a")
    _ingest(project, rows)
    _consumer(project, "counts,totals")
    run_cli(project, "run", "--due")
    return project, rows


class _Open:
    """The project's workspace, opened in this process, closed after."""

    def __init__(self, project: Project) -> None:
        self.ws = Workspace.open(load_project(project.root, None))

    def __enter__(self) -> Workspace:
        return self.ws

    def __exit__(self, *exc: object) -> None:
        self.ws.close()


def _plan(project: Project) -> Plan:
    with _Open(project) as ws:
        return make_plan(ws, [])


def _apply(project: Project) -> Plan:
    with _Open(project) as ws:
        plan = make_plan(ws, [])
        apply(ws, plan, commit=None, dirty=False, applied_by="tests")
        return plan


def _apply_dying_at(project: Project, monkeypatch: pytest.MonkeyPatch, step: str) -> None:
    """An apply whose process dies as it reaches ``ApplyLog.<step>``."""
    from headwater.state.applies import ApplyLog

    def die(*_: object) -> None:
        raise RuntimeError(f"the process died at {step}")

    with monkeypatch.context() as patched:
        patched.setattr(ApplyLog, step, die)
        with pytest.raises(RuntimeError):
            _apply(project)


def _query(project: Project, sql: str) -> list[dict[str, Any]]:
    engine = DuckDBEngine.open(project.data_dir / "events.duckdb", read_only=True)
    try:
        rows: list[dict[str, Any]] = engine.query(sql).to_pylist()
        return rows
    finally:
        engine.close()


def _counts(project: Project, column: str = "events") -> Counter[tuple[datetime, str]]:
    found: Counter[tuple[datetime, str]] = Counter()
    for row in _query(project, f"SELECT hour, event, {column} AS n FROM counts"):
        found[row["hour"], row["event"]] = row["n"]
    return found


def _tables(project: Project) -> set[str]:
    rows = _query(project, "SELECT table_name FROM information_schema.tables")
    return {r["table_name"] for r in rows}


def _metadata(project: Project, sql: str) -> list[tuple[Any, ...]]:
    with sqlite3.connect(project.data_dir / "metadata.sqlite") as db:
        return db.execute(sql).fetchall()


def test_the_first_apply_changes_nothing_built_and_records_what_is_applied(
    counted: tuple[Project, list[dict[str, Any]]],
) -> None:
    project, rows = counted
    plan = _plan(project)
    assert plan.first_apply
    assert plan.changes == []
    run_ids = _metadata(project, "SELECT run_id FROM intervals WHERE pipeline = 'counts'")
    _apply(project)
    assert _metadata(project, "SELECT run_id FROM intervals WHERE pipeline = 'counts'") == run_ids
    applied = dict(_metadata(project, "SELECT name, version FROM applied WHERE kind='pipeline'"))
    assert set(applied) == {"counts", "totals"}
    assert _metadata(project, "SELECT status, applied_by FROM applies") == [("done", "tests")]
    second = _plan(project)
    assert not second.first_apply
    assert second.empty
    assert _counts(project) == _expected(rows)


def test_a_column_added_is_not_breaking_and_its_readers_are_not_computed_again(
    counted: tuple[Project, list[dict[str, Any]]],
) -> None:
    project, rows = counted
    _apply(project)
    totals_runs = _metadata(project, "SELECT run_id FROM intervals WHERE pipeline = 'totals'")
    _write(
        project,
        "counts.sql",
        COUNTS.replace(
            "COUNT(*) AS events", "COUNT(*) AS events, COUNT(DISTINCT user_id) AS users"
        ),
    )
    out = run_cli(project, "plan")
    assert "counts: changed, not breaking: column users added" in out.stdout, out.stdout
    assert "totals" not in out.stdout
    plan = _plan(project)
    assert [(c.name, c.breaking, c.readers) for c in plan.changes] == [("counts", False, False)]
    assert [r.pipeline for r in plan.recompute] == ["counts"]
    read = _metadata(
        project,
        "SELECT sum(r.rows_read) FROM intervals i JOIN runs r ON r.id = i.run_id "
        "WHERE i.pipeline = 'counts'",
    )
    assert plan.recompute[0].intervals == 30
    assert plan.recompute[0].rows == read[0][0]
    _apply(project)
    assert _counts(project) == _expected(rows)
    users = {r["n"] for r in _query(project, "SELECT users AS n FROM counts")}
    assert users
    assert users <= {1, 2, 3, 4, 5}
    assert _metadata(project, "SELECT run_id FROM intervals WHERE pipeline = 'totals'") == (
        totals_runs
    )
    assert not [t for t in _tables(project) if t.startswith("_hw_")]
    assert _plan(project).empty


def test_a_column_renamed_is_breaking_names_the_consumer_and_a_failed_build_changes_nothing(
    counted: tuple[Project, list[dict[str, Any]]],
) -> None:
    project, rows = counted
    _apply(project)
    before = _query(project, "SELECT * FROM totals ORDER BY event")
    _write(project, "counts.sql", COUNTS.replace("COUNT(*) AS events", "COUNT(*) AS n"))
    out = run_cli(project, "plan", check=False)
    assert out.returncode == 3, out.stdout + out.stderr
    assert "counts: changed, breaking: column events removed" in out.stdout, out.stdout
    assert "reaches consumer analytics: loses or retypes events" in out.stdout
    assert "totals: computed again, it reads counts" in out.stdout
    plan = json.loads(run_cli(project, "plan", "--json", check=False).stdout)
    assert plan["breaking"]
    assert plan["affected"][0]["who"] == "consumer analytics"
    # totals still reads counts.events: its build fails, and nothing is swapped.
    failed = run_cli(project, "apply", check=False)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    # Said of the pipeline and its file, with the fix that works (its build is no name a
    # command takes).
    said = failed.stdout + failed.stderr
    assert "_hw_next" not in failed.stdout, failed.stdout
    assert "failed totals" in failed.stdout, failed.stdout
    assert "totals.sql, then `headwater apply` again" in " ".join(said.split()), said
    assert _query(project, "SELECT * FROM totals ORDER BY event") == before
    assert _counts(project) == _expected(rows)
    assert "n" not in _query(project, "SELECT * FROM counts LIMIT 1")[0]
    # Fixed, the apply goes on: the build of counts made by the failed one is kept.
    built = _metadata(project, "SELECT count(*) FROM intervals WHERE pipeline LIKE '_hw_next_%'")
    assert built[0][0] >= 30
    _write(project, "totals.sql", TOTALS.replace("SUM(events)", "SUM(n)"))
    done = run_cli(project, "apply", check=False)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "Swapped in counts (0 intervals run)" in done.stdout, done.stdout
    assert _counts(project, "n") == _expected(rows)
    totals = {r["event"]: r["total"] for r in _query(project, "SELECT * FROM totals")}
    assert totals == dict(Counter(r["event"] for r in rows))
    statuses = _metadata(project, "SELECT status FROM applies ORDER BY id")
    assert statuses == [("done",), ("failed",), ("done",)]


def test_a_key_changed_is_breaking(counted: tuple[Project, list[dict[str, Any]]]) -> None:
    project, _ = counted
    _apply(project)
    _write(project, "totals.sql", TOTALS.replace('key = ["event"]', 'key = ["event", "total"]'))
    plan = _plan(project)
    assert [(c.name, c.kind, c.breaking) for c in plan.changes] == [("totals", "changed", True)]
    assert plan.changes[0].reasons == ["key changed from [event] to [event, total]"]
    assert [a.who for a in plan.affected] == ["consumer analytics"]
    assert plan.recompute == []  # the same rows: only who reads by key notices


def test_a_pipeline_removed_drops_its_table_and_names_its_consumer(
    counted: tuple[Project, list[dict[str, Any]]],
) -> None:
    project, rows = counted
    _apply(project)
    (project.root / "pipelines" / "totals.sql").unlink()
    plan = _plan(project)
    assert [(c.name, c.kind, c.breaking) for c in plan.changes] == [("totals", "removed", True)]
    assert [(a.who, a.why) for a in plan.affected] == [
        ("consumer analytics", "the dataset is removed")
    ]
    _apply(project)
    assert "totals" not in _tables(project)
    assert _metadata(project, "SELECT count(*) FROM intervals WHERE pipeline = 'totals'") == [(0,)]
    assert _counts(project) == _expected(rows)


def test_an_edited_pipeline_waits_for_apply_once_the_environment_has_applied(
    counted: tuple[Project, list[dict[str, Any]]],
) -> None:
    project, _ = counted
    _apply(project)
    _write(project, "counts.sql", COUNTS.replace("COUNT(*) AS events", "COUNT(*) * 2 AS events"))
    _ingest(project, _rows(_start() + 30 * HOUR, 1, 3, "b"))
    before = _metadata(project, "SELECT count(*) FROM intervals WHERE pipeline = 'counts'")
    out = run_cli(project, "run", "--due")
    assert _metadata(project, "SELECT count(*) FROM intervals WHERE pipeline = 'counts'") == before
    assert "not the version applied here" in out.stderr
    status = run_cli(project, "status").stdout
    assert "counts is not run here: its file (version" in status, status
    assert "Last apply: 1, done" in status, status
    refused = run_cli(project, "run", "counts", check=False)
    assert refused.returncode == 1
    assert "headwater apply" in refused.stderr


def _git(folder: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.email=ci@example.com", "-c", "user.name=ci", *args],
        cwd=folder,
        check=True,
        capture_output=True,
    )


def test_protected_refuses_a_dirty_tree_and_a_commit_not_applied_where_it_is_promoted_from(
    counted: tuple[Project, list[dict[str, Any]]],
) -> None:
    project, _ = counted
    with (project.root / "headwater.toml").open("a") as file:
        file.write(
            '\n[environments.qa]\n\n[environments.prod]\nprotected = true\npromote_from = "qa"\n'
        )
    _git(project.root, "init", "-q")
    _git(project.root, "add", "-A")
    _git(project.root, "commit", "-qm", "first")
    run_cli(project, "--env", "prod", "migrate")
    _write(
        project, "counts.sql", COUNTS.replace("COUNT(*) AS events", "COUNT(*) AS events, 1 AS one")
    )
    dirty = run_cli(project, "--env", "prod", "apply", check=False)
    assert dirty.returncode == 1
    assert "protected and the git tree has changes not committed: pipelines/counts.sql" in (
        dirty.stderr
    ), dirty.stderr
    _git(project.root, "commit", "-qam", "one")
    early = run_cli(project, "--env", "prod", "apply", check=False)
    assert early.returncode == 1
    assert "has not been applied to 'qa'" in early.stderr, early.stderr
    run_cli(project, "apply", "--env", "qa")
    done = run_cli(project, "--env", "prod", "apply")
    assert "Applied to environment 'prod'" in done.stdout
    prod = project.data_dir / "prod" / "metadata.sqlite"
    with sqlite3.connect(prod) as db:
        commit, by = db.execute('SELECT "commit", applied_by FROM applies').fetchone()
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=project.root, capture_output=True, text=True, check=True
    ).stdout.strip()
    assert commit == head
    assert by  # git's user.email where set, else the login


def test_the_read_api_answers_from_whole_versions_while_an_apply_swaps(
    counted: tuple[Project, list[dict[str, Any]]],
) -> None:
    project, rows = counted
    token = _consumer(project, "counts", "reader")
    _apply(project)
    _write(project, "counts.sql", COUNTS.replace("COUNT(*) AS events", "COUNT(*) * 10 AS events"))
    total = len(rows)
    seen: list[int] = []
    errors: list[str] = []
    stop = threading.Event()
    server = Server(project).start()
    try:

        def read() -> None:
            with httpx.Client(base_url=server.url, timeout=30) as client:
                while not stop.is_set():
                    answer = client.get(
                        "/api/v1/datasets/counts/rows",
                        params={"limit": 1000},
                        headers={"Authorization": f"Bearer {token}"},
                    )
                    if answer.status_code != 200:
                        errors.append(answer.text)
                        return
                    seen.append(sum(r["events"] for r in answer.json()["rows"]))

        reader = threading.Thread(target=read)
        reader.start()
        wait_for("the reader's first answers", lambda: len(seen) > 3, timeout=30)
        run_cli(project, "apply")
        wait_for("the new version", lambda: seen[-1] == 10 * total or errors, timeout=30)
        stop.set()
        reader.join(30)
    finally:
        stop.set()
        server.stop()
    assert errors == []
    assert set(seen) == {total, 10 * total}, Counter(seen)
    first_new = seen.index(10 * total)
    assert all(s == 10 * total for s in seen[first_new:])


def test_an_apply_killed_mid_build_resumes_where_it_stopped(
    counted: tuple[Project, list[dict[str, Any]]],
) -> None:
    project, rows = counted
    _apply(project)
    slow = COUNTS.replace("COUNT(*) AS events", "COUNT(*) AS events, 2 AS two").replace(
        "FROM events", "FROM events, (SELECT COUNT(*) FROM range(3000000)) AS slow"
    )
    _write(project, "counts.sql", slow)
    child = subprocess.Popen(
        [*HEADWATER, "--project", str(project.root), "apply"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for(
            "three intervals of the build",
            lambda: (
                _metadata(
                    project, "SELECT count(*) FROM intervals WHERE pipeline LIKE '_hw_next_%'"
                )[0][0]
                >= 3
            ),
            timeout=60,
        )
        child.send_signal(signal.SIGKILL)
    finally:
        child.wait(30)
    assert "two" not in _query(project, "SELECT * FROM counts LIMIT 1")[0]
    assert _counts(project) == _expected(rows)
    done = run_cli(project, "apply")
    assert "Swapped in counts" in done.stdout
    assert _counts(project) == _expected(rows)
    assert {r["two"] for r in _query(project, "SELECT two FROM counts")} == {2}
    assert not [t for t in _tables(project) if t.startswith("_hw_")]
    statuses = [s for (s,) in _metadata(project, "SELECT status FROM applies ORDER BY id")]
    assert statuses == ["done", "interrupted", "done"]


def test_a_crash_between_the_swap_and_its_record_is_finished_by_the_next_apply(
    counted: tuple[Project, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    project, rows = counted
    _apply(project)
    _write(
        project,
        "counts.sql",
        COUNTS.replace("COUNT(*) AS events", "COUNT(*) AS events, 3 AS three"),
    )
    _apply_dying_at(project, monkeypatch, "swap")
    # The engine swapped; the intervals are still recorded under the build's name.
    assert {r["three"] for r in _query(project, "SELECT three FROM counts")} == {3}
    assert _metadata(project, "SELECT count(*) FROM intervals WHERE pipeline = 'counts'")[0][0]
    plan = _plan(project)
    assert plan.empty  # what is applied is recorded before the swap
    _apply(project)
    versions = _metadata(project, "SELECT DISTINCT version FROM intervals WHERE pipeline='counts'")
    applied = _metadata(project, "SELECT version FROM applied WHERE name = 'counts'")
    assert versions == applied
    assert _metadata(project, "SELECT count(*) FROM intervals WHERE pipeline LIKE '_hw_%'") == [
        (0,)
    ]
    assert _counts(project) == _expected(rows)


def test_the_readers_of_a_column_added_stay_done_after_the_swap(
    counted: tuple[Project, list[dict[str, Any]]],
) -> None:
    project, rows = counted
    _apply(project)
    totals_runs = _metadata(project, "SELECT run_id FROM intervals WHERE pipeline = 'totals'")
    _write(
        project,
        "counts.sql",
        COUNTS.replace("COUNT(*) AS events", "COUNT(*) AS events, 1 AS one"),
    )
    _apply(project)
    # The scheduler's next pass: counts was built anew, but totals reads the same columns.
    run_cli(project, "run", "--due")
    assert _metadata(project, "SELECT count(*) FROM intervals WHERE status = 'stale'") == [(0,)]
    assert _metadata(project, "SELECT run_id FROM intervals WHERE pipeline = 'totals'") == (
        totals_runs
    )
    totals = {r["event"]: r["total"] for r in _query(project, "SELECT * FROM totals")}
    assert totals == dict(Counter(r["event"] for r in rows))


def test_an_apply_that_stopped_after_the_engine_swapped_loses_nothing_hours_later(
    counted: tuple[Project, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    project, rows = counted
    _apply(project)
    _write(
        project,
        "counts.sql",
        COUNTS.replace("COUNT(*) AS events", "COUNT(*) AS events, 3 AS three"),
    )
    _apply_dying_at(project, monkeypatch, "swap")
    # Two hours later, with their events, the next apply finishes the one that stopped.
    later = _rows(_start() + 30 * HOUR, 2, 4, "b")
    _ingest(project, later)
    with _Open(project) as ws:
        ws.pipelines.clock = lambda: datetime.now(UTC) + 2 * HOUR
        apply(ws, make_plan(ws, []), commit=None, dirty=False, applied_by="tests")
        ws.pipelines.run_due()
    assert _counts(project) == _expected(rows + later)
    assert {r["three"] for r in _query(project, "SELECT three FROM counts")} == {3}
    assert not [t for t in _tables(project) if t.startswith("_hw_")]


def test_a_second_apply_is_refused_while_one_runs(
    counted: tuple[Project, list[dict[str, Any]]],
) -> None:
    project, rows = counted
    _apply(project)
    _write(project, "counts.sql", COUNTS.replace("COUNT(*) AS events", "COUNT(*) * 2 AS events"))
    refused: list[BaseException] = []
    with _Open(project) as ws:
        plan = make_plan(ws, [])

        def meanwhile(_: object) -> None:
            if refused:
                return
            try:
                apply(ws, make_plan(ws, []), commit=None, dirty=False, applied_by="other")
            except BaseException as exc:  # what the second apply says
                refused.append(exc)
            else:
                refused.append(AssertionError("the second apply ran"))

        apply(ws, plan, commit=None, dirty=False, applied_by="tests", progress=meanwhile)
    assert len(refused) == 1
    assert "another apply is running" in str(refused[0]), refused[0]
    assert "tests" in str(refused[0])
    assert _counts(project) == Counter({k: 2 * n for k, n in _expected(rows).items()})
    statuses = _metadata(project, "SELECT status, applied_by FROM applies ORDER BY id")
    assert statuses == [("done", "tests"), ("done", "tests")]


def test_promote_from_takes_only_a_commit_applied_without_changes_where_it_is_promoted_from(
    counted: tuple[Project, list[dict[str, Any]]],
) -> None:
    project, _ = counted
    with (project.root / "headwater.toml").open("a") as file:
        file.write(
            '\n[environments.qa]\n\n[environments.prod]\nprotected = true\npromote_from = "qa"\n'
            '\n[environments.uat]\npromote_from = "qa"\n'
        )
    _git(project.root, "init", "-q")
    _git(project.root, "add", "-A")
    _git(project.root, "commit", "-qm", "first")
    run_cli(project, "--env", "prod", "migrate")
    # qa applies the commit with a change not committed: not the commit itself.
    _write(
        project, "counts.sql", COUNTS.replace("COUNT(*) AS events", "COUNT(*) AS events, 1 AS one")
    )
    run_cli(project, "--env", "qa", "apply")
    _git(project.root, "checkout", "--", "pipelines/counts.sql")
    refused = run_cli(project, "--env", "prod", "apply", check=False)
    assert refused.returncode == 1
    assert "has not been applied to 'qa'" in refused.stderr, refused.stderr
    # Applied to qa as committed, the commit is promoted; not the same commit with changes.
    run_cli(project, "--env", "qa", "apply")
    _write(
        project, "counts.sql", COUNTS.replace("COUNT(*) AS events", "COUNT(*) AS events, 2 AS two")
    )
    dirty = run_cli(project, "--env", "uat", "apply", check=False)
    assert dirty.returncode == 1
    assert "changes not committed: pipelines/counts.sql" in dirty.stderr, dirty.stderr
    _git(project.root, "checkout", "--", "pipelines/counts.sql")
    run_cli(project, "--env", "uat", "apply")
    assert "Applied to environment 'prod'" in run_cli(project, "--env", "prod", "apply").stdout


def test_builds_left_for_a_change_since_undone_are_dropped_not_swapped_in(
    counted: tuple[Project, list[dict[str, Any]]], monkeypatch: pytest.MonkeyPatch
) -> None:
    project, rows = counted
    _apply(project)
    tenfold = COUNTS.replace("COUNT(*) AS events", "COUNT(*) * 10 AS events")
    _write(project, "counts.sql", tenfold)
    _apply_dying_at(project, monkeypatch, "record")
    # Both builds are there: counts tenfold, and totals computed from it.
    assert {"_hw_next_counts", "_hw_next_totals"} <= _tables(project)
    _write(project, "counts.sql", COUNTS)  # the change is undone
    assert _plan(project).empty
    _apply(project)
    assert not [t for t in _tables(project) if t.startswith("_hw_")]
    totals = {r["event"]: r["total"] for r in _query(project, "SELECT * FROM totals")}
    assert totals == dict(Counter(r["event"] for r in rows))
    assert _counts(project) == _expected(rows)
    built = _metadata(project, "SELECT count(*) FROM intervals WHERE pipeline LIKE '_hw_%'")
    assert built == [(0,)]


BY_EVENT_TIME = """\
/* headwater
schedule = "@hourly"
kind = "incremental"
time = "timestamp"
time_column = "hour"
key = ["hour"]
*/
SELECT TIMESTAMP_TRUNC(timestamp, HOUR) AS hour, SUM(weight) AS events
FROM events CROSS JOIN weights
WHERE timestamp >= @start AND timestamp < @end
GROUP BY hour
"""

WEIGHTS = """\
/* headwater
schedule = "@hourly"
kind = "full"
key = ["weight"]
*/
SELECT 1 AS weight
"""


def test_late_events_the_live_pipeline_took_during_an_apply_are_in_the_table_swapped_in(
    project: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    # While an apply rebuilds a reader of a changed pipeline, late events re-open an hour
    # the build has already run, and the scheduler re-runs it in the live table (whose
    # file is as applied). The build must not put the older count back at the swap.
    for path in (project.root / "pipelines").iterdir():
        path.unlink()
    _write(project, "weights.sql", WEIGHTS)
    _write(project, "by_time.sql", BY_EVENT_TIME)
    rows = _rows(_start(), 30, 6, "a")
    _ingest(project, rows)
    run_cli(project, "run", "--due")
    _apply(project)
    _write(project, "weights.sql", WEIGHTS.replace("SELECT 1", "SELECT 2 - 1"))

    import headwater.runtime.apply as applying

    late_hour = _start() + 2 * HOUR
    late: list[dict[str, Any]] = []
    swap = applying._swap
    live: list[int] = []

    def late_events_then_swap(ws: Workspace, *args: Any, **kwargs: Any) -> None:
        # Received now, after the build ran that hour (the collector's floor holds).
        late.extend(
            {**row, "message_id": f"late-{n}", "received_at": datetime.now(UTC)}
            for n, row in enumerate(_rows(late_hour, 1, 5, "late"))
        )
        ws.engine.ingest(
            IngestBatch(pa.Table.from_pylist(late, schema=schema.EVENTS),
                        schema.FAILED_EVENTS.empty_table())
        )  # fmt: skip
        ws.pipelines.run_due()  # the live pipeline's scheduler takes them
        found = ws.engine.query(f"SELECT events FROM by_time WHERE hour = '{late_hour}'")
        live.append(found.column("events")[0].as_py())
        swap(ws, *args, **kwargs)

    monkeypatch.setattr(applying, "_swap", late_events_then_swap)
    plan = _apply(project)
    assert {change.name for change in plan.changes} >= {"weights"}
    assert live == [6 + 5]  # the live table had the late events before the swap
    found = {r["hour"]: r["events"] for r in _query(project, "SELECT * FROM by_time")}
    expected = Counter(r["timestamp"].replace(minute=0, second=0) for r in rows + late)
    assert found == dict(expected)


def test_promote_from_says_it_reads_the_other_environments_metadata_when_it_cannot(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """prod's apply reads QA's metadata: a job without QA's URL is told that, not only that
    some [store] url is missing."""
    from headwater.config.project import load_project
    from headwater.runtime.apply import check_promotion

    monkeypatch.delenv("QA_DATABASE_URL", raising=False)
    (tmp_path / "headwater.toml").write_text(
        '[environments.qa.store]\nengine = "postgres"\nurl = "${QA_DATABASE_URL}"\n\n'
        '[environments.prod]\npromote_from = "qa"\n',
        "utf-8",
    )
    (tmp_path / "pipelines").mkdir()
    prod = load_project(tmp_path, "prod")
    with pytest.raises(ConfigError) as caught:
        check_promotion(prod, "0123456789abcdef", [])
    message = str(caught.value)
    assert "environment 'prod' takes only commits applied to 'qa' first" in message, message
    assert "QA_DATABASE_URL" in message, message
