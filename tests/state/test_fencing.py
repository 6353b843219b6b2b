"""At most one holder wins: a run or a deliverer that stalled past its lease, while
another took the lease over, publishes nothing and records nothing when it resumes.

The cross-process test stalls a real ``headwater run`` with SIGSTOP on a PostgreSQL
store (a throwaway server, ``tests.pg``), lets a second process take the lease and
finish, then resumes the first. The in-process tests stall a holder at a chosen
point (a Python pipeline that waits for a file; a webhook receiver that holds its
answer) and take its lease away by expiring it, as the clock would.
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest
import sqlalchemy as sa

from headwater.config.project import load_project
from headwater.deliver.deliverer import DeliveryResult
from headwater.runtime.workspace import Workspace
from headwater.state import StateStore
from headwater.state.errors import LeaseLost
from headwater.state.tables import leases
from headwater.store import schema
from headwater.store.duckdb import DuckDBEngine
from headwater.store.engine import IngestBatch
from tests.conftest import HEADWATER, Project, wait_for
from tests.deliver.receiver import Receiver, Reply, Request
from tests.pg import PostgresServer, postgres_server

T0 = datetime(2026, 11, 2, tzinfo=UTC)
HOUR = timedelta(hours=1)

#: A Python pipeline that says who computed it, and waits for a "go" file when asked to,
#: so a test can hold it between computing and publishing.
SLOW = """
import os
import time
from pathlib import Path

import pyarrow as pa

from headwater.process import Context, pipeline

MARKERS = Path(os.environ["HW_TEST_MARKERS"])


@pipeline(schedule="@hourly", kind="incremental", time_column="hour", retries=0)
def slow(ctx: Context) -> pa.Table:
    me = os.environ.get("HW_TEST_NAME", str(os.getpid()))
    (MARKERS / f"started-{me}").write_text("")
    go = MARKERS / f"go-{me}"
    deadline = time.monotonic() + 60
    while os.environ.get("HW_TEST_WAIT") and not go.exists() and time.monotonic() < deadline:
        time.sleep(0.02)
    return pa.table({"hour": pa.array([ctx.start], pa.timestamp("us", "UTC")),
                     "computed_by": [me]})
"""


def _expire(state: StateStore, name: str) -> None:
    """What the clock does to the lease of a holder that stalled: it runs out."""
    with state.engine.begin() as db:
        db.execute(
            leases.update()
            .where(leases.c.pipeline == name)
            .values(expires_at=datetime(2000, 1, 1, tzinfo=UTC))
        )


# -- runs, in one process ------------------------------------------------------------


@pytest.fixture
def markers(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    folder = tmp_path / "markers"
    folder.mkdir()
    monkeypatch.setenv("HW_TEST_MARKERS", str(folder))
    return folder


@pytest.mark.timeout(60)
def test_a_run_that_lost_its_lease_publishes_nothing_and_records_nothing(
    project: Project, markers: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (project.root / "pipelines" / "slow.py").write_text(SLOW)
    loaded = load_project(project.root)
    engine = DuckDBEngine.open(tmp_path / "store.duckdb")
    state = StateStore.in_folder(tmp_path / "state")
    stalled = Workspace(loaded, engine, state, clock=lambda: T0 + 2 * HOUR)
    taker = Workspace(loaded, engine, state, clock=lambda: T0 + 2 * HOUR)
    outcome: list[BaseException | None] = []

    def first() -> None:
        try:
            stalled.run("slow", T0, T0 + HOUR)
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    try:
        monkeypatch.setenv("HW_TEST_WAIT", "1")
        monkeypatch.setenv("HW_TEST_NAME", "first")
        thread = threading.Thread(target=first)
        thread.start()
        wait_for("the first run to compute", (markers / "started-first").exists)
        # The first holder stalls past its lease; the second takes it over and finishes.
        _expire(state, "slow")
        monkeypatch.setenv("HW_TEST_NAME", "second")
        (markers / "go-second").write_text("")
        [second] = taker.run("slow", T0, T0 + HOUR)
        assert second.rows_written == 1
        # The first wakes up with its rows computed, and tries to publish them.
        (markers / "go-first").write_text("")
        thread.join(30)
        [error] = outcome
        assert isinstance(error, LeaseLost), error
        assert "lost its lease" in str(error)

        assert engine.query("SELECT computed_by FROM slow").to_pylist() == [
            {"computed_by": "second"}
        ]
        runs = {r.id: r for r in state.runs.runs("slow")}
        done = state.runs.intervals("slow")[T0]
        assert runs[done.run_id].status == "succeeded"
        assert [r.status for r in runs.values() if r.id != done.run_id] == ["failed"]
        [lost] = [r for r in runs.values() if r.id != done.run_id]
        assert lost.error_kind == "transient"
        assert "lost its lease" in (lost.error or "")
    finally:
        state.close()
        engine.close()


# -- runs, across processes: SIGSTOP on a PostgreSQL store ---------------------------


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


@pytest.mark.timeout(120)
def test_a_stalled_process_that_lost_its_lease_publishes_nothing(
    pg: PostgresServer, project: Project, markers: Path
) -> None:
    url = pg.create_database("fencing")
    project.configure('\n[environments.shared.store]\nengine = "postgres"\nurl = "${HW_TEST_PG}"\n')
    text = (project.root / "headwater.toml").read_text()
    (project.root / "headwater.toml").write_text(
        text.replace("[pipelines]\n", "[pipelines]\nlease_seconds = 2\n", 1)
    )
    (project.root / "pipelines" / "slow.py").write_text(SLOW)
    env = {
        **os.environ,
        "HW_TEST_PG": url,
        "HW_TEST_MARKERS": str(markers),
        "HW_TEST_WAIT": "1",
    }
    command = [*HEADWATER, "--project", str(project.root), "--env", "shared", "run", "slow",
               "--start", T0.isoformat(), "--end", (T0 + HOUR).isoformat()]  # fmt: skip

    def start(name: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            command,
            env={**env, "HW_TEST_NAME": name},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    with start("first") as first:
        try:
            wait_for("the first process to compute", (markers / "started-first").exists)
            first.send_signal(signal.SIGSTOP)
            time.sleep(3)  # past its 2 s lease: its renewals stopped with it
            (markers / "go-second").write_text("")
            with start("second") as second:
                out, err = second.communicate(timeout=60)
            assert second.returncode == 0, out + err
            assert "Ran 1 interval" in out, out + err
            (markers / "go-first").write_text("")
            first.send_signal(signal.SIGCONT)
            out, err = first.communicate(timeout=60)
        finally:
            if first.poll() is None:
                first.send_signal(signal.SIGCONT)
                first.kill()
    assert first.returncode == 1, out + err
    assert "lost its lease" in err, err

    # The run state is kept beside the store, in the schema headwater_metadata.
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    try:
        with engine.connect() as db:
            published = db.execute(sa.text("SELECT computed_by FROM headwater.slow")).all()
            statuses = db.execute(
                sa.text("SELECT status FROM headwater_metadata.runs ORDER BY id")
            ).all()
    finally:
        engine.dispose()
    assert [row[0] for row in published] == ["second"]
    assert sorted(row[0] for row in statuses) == ["failed", "succeeded"]


# -- deliveries, in one process ----------------------------------------------------


@pytest.mark.timeout(90)
def test_a_deliverer_that_lost_its_lease_stops_and_its_progress_does_not_land(
    project: Project, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HOOK_SECRET", "s3cret")
    with Receiver("s3cret") as receiver:
        project.configure(
            f'[sinks.hook]\ntype = "webhook"\nurl = "{receiver.url()}"\n'
            'secret = "${HOOK_SECRET}"\nbatch_rows = 2\n'
            '[delivery]\nallow_hosts = ["localhost"]\n'
        )
        (project.root / "pipelines" / "names.sql").write_text(
            '/* headwater\nschedule = "@hourly"\nkind = "incremental"\ntime_column = "hour"\n'
            'sinks = ["hook"]\nkey = ["user_id"] */\n'
            "SELECT TIMESTAMP_TRUNC(received_at, HOUR) AS hour, user_id FROM events\n"
            "WHERE received_at >= @start AND received_at < @end\n"
        )
        loaded = load_project(project.root)
        engine = DuckDBEngine.open(tmp_path / "store.duckdb")
        state = StateStore.in_folder(tmp_path / "state")
        # The real clock: deliveries fall due by it.
        stalled = Workspace(loaded, engine, state)
        taker = Workspace(loaded, engine, state)
        try:
            times = [T0 + i * timedelta(minutes=1) for i in range(6)]
            rows = [
                {"message_id": f"m{i}", "source": "web", "type": "track", "event": "E",
                 "user_id": f"u{i}", "timestamp": t, "received_at": t}
                for i, t in enumerate(times)
            ]  # fmt: skip
            events = pa.Table.from_pylist(rows, schema=schema.EVENTS)
            engine.ingest(IngestBatch(events, schema.FAILED_EVENTS.empty_table()))
            assert len(stalled.run("names", T0, T0 + HOUR)) == 1  # 6 rows: 3 batches owed

            # The first request (the stalled deliverer's first batch) is answered late.
            held = threading.Event()
            first_seen = threading.Event()

            def rule(request: Request) -> Reply | None:
                if not first_seen.is_set():
                    first_seen.set()
                    held.wait(30)
                return None

            receiver.rule = rule
            results: list[DeliveryResult] = []
            thread = threading.Thread(target=lambda: results.extend(stalled.deliver()))
            thread.start()
            wait_for("the first batch to arrive", first_seen.is_set)
            _expire(state, "deliver:names:hook")
            taken = taker.deliver()
            assert [(r.status, r.rows) for r in taken] == [("delivered", 6)]
            held.set()
            thread.join(30)
            receiver.rule = None
        finally:
            for workspace in (stalled, taker):
                workspace.deliverer.close()
            state.close()
            engine.close()

        # The stalled one stopped at its next record of progress (after a slow answer, or
        # within 32 batches or a second): none of its progress landed, and whatever it sent
        # again carried the taker's idempotency keys, so receivers drop the repeats.
        assert [r.status for r in results] == ["pending"]
        seen = [r for r in receiver.snapshot() if r.payload]
        assert sorted({r.payload["batch"] for r in seen}) == [0, 1, 2]
        keys: dict[int, set[str]] = {}
        for request in seen:
            keys.setdefault(request.payload["batch"], set()).add(request.headers["idempotency-key"])
        assert all(len(found) == 1 for found in keys.values()), keys
        state = StateStore.in_folder(tmp_path / "state")
        try:
            [delivery] = state.deliveries.all("names")
            assert (delivery.status, delivery.batches_done, delivery.rows_delivered) == (
                "delivered",
                3,
                6,
            )
        finally:
            state.close()
        assert len(receiver.rows()) == 6  # each row once: the repeat had the same key
