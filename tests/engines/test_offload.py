"""The offload's own rules, beside the end-to-end runs of ``test_offload_e2e.py``.

Real parts: DuckDB files and a throwaway PostgreSQL server (``tests/pg.py``), the
metadata in SQLite, and ``headwater`` child processes on loopback for the embedded
hot store. What is checked:

1. ``offload_interval`` changed while the progress lies inside an interval of the new
   length: the next span runs to the next boundary, whole intervals follow, and no row
   is missed, loaded twice, or loaded from past the floor;
2. a load made of a delete and an insert is fenced: a holder that stalled past its
   lease cannot load after the one that took it over, and cannot record its span;
3. an embedded (DuckDB) hot store served by a collector alone: the commands that reach
   it through its control socket work on the warehouse (``run --due`` offloads, then
   ``query`` reads the warehouse), and its ``/metrics`` has the offload's lag.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from headwater.core.types import Interval
from headwater.state import StateStore
from headwater.state.errors import LeaseLost
from headwater.state.leases import Holder, Lease
from headwater.state.offload import LEASE, Offloaded, Offloader
from headwater.store import schema
from headwater.store.duckdb import DuckDBEngine
from headwater.store.engine import Engine, Fence, IngestBatch
from headwater.store.errors import Fenced
from headwater.store.postgres import PostgresEngine
from tests.conftest import HEADWATER, Project, run_cli, wait_for

T0 = datetime(2026, 3, 1, 10, tzinfo=UTC)
MINUTE = timedelta(minutes=1)


def events(times: list[datetime]) -> pa.Table:
    rows = [
        {
            "message_id": uuid.uuid4().hex,
            "source": "web",
            "type": "track",
            "event": "Signed Up",
            "user_id": "u1",
            "timestamp": moment,
            "received_at": moment,
            "properties": "{}",
        }
        for moment in times
    ]
    return pa.Table.from_pylist(rows, schema=schema.EVENTS)


def ids(engine: Engine) -> list[str]:
    table = engine.query("SELECT message_id FROM events ORDER BY message_id")
    return [str(v) for v in table["message_id"].to_pylist()]


@pytest.fixture
def stores(tmp_path: Path) -> Iterator[tuple[DuckDBEngine, DuckDBEngine, StateStore]]:
    hot = DuckDBEngine.open(tmp_path / "hot.duckdb")
    warehouse = DuckDBEngine.open(tmp_path / "warehouse.duckdb")
    state = StateStore.in_folder(tmp_path)
    yield hot, warehouse, state
    state.close()
    warehouse.close()
    hot.close()


def offloader(
    hot: Engine, warehouse: Engine, state: StateStore, every: timedelta, floor: datetime
) -> Offloader:
    return Offloader(
        hot,
        warehouse,
        state.offloads,
        state.leases,
        every=every,
        retain=timedelta(days=7),
        floor=lambda: floor,
        clock=lambda: floor + timedelta(minutes=5),
    )


def test_a_changed_offload_interval_runs_to_the_next_boundary_then_whole_intervals(
    stores: tuple[DuckDBEngine, DuckDBEngine, StateStore],
) -> None:
    hot, warehouse, state = stores
    # One event every 5 minutes from 10:00 to 12:55.
    arrivals = [T0 + 5 * MINUTE * i for i in range(36)]
    hot.ingest(IngestBatch(events(arrivals), schema.FAILED_EVENTS.empty_table()))

    quarter = offloader(hot, warehouse, state, 15 * MINUTE, floor=T0 + 50 * MINUTE)
    first = quarter.run()
    assert first.progress == T0 + 45 * MINUTE

    # Now by the hour, with the collectors' floor at 12:10: the progress (10:45) lies inside
    # the hour 10:00-11:00.
    hourly = offloader(hot, warehouse, state, timedelta(hours=1), floor=T0 + 130 * MINUTE)
    second = hourly.run()
    assert [s.interval for s in second.offloaded] == [
        Interval(T0 + 45 * MINUTE, T0 + 60 * MINUTE),
        Interval(T0 + 60 * MINUTE, T0 + 120 * MINUTE),
    ]
    assert second.progress == T0 + 120 * MINUTE  # never past the floor's hour

    spans = state.offloads.spans()
    assert all(a.interval.end == b.interval.start for a, b in itertools.pairwise(spans))
    offloaded = [a for a in arrivals if a < T0 + 120 * MINUTE]
    assert sum(s.events for s in spans) == len(offloaded) == 24
    hot_ids = hot.query(
        "SELECT message_id FROM events WHERE received_at < ? ORDER BY message_id",
        [T0 + 120 * MINUTE],
    )
    assert ids(warehouse) == [str(v) for v in hot_ids["message_id"].to_pylist()]


@pytest.mark.parametrize("kind", ["duckdb", "postgres"])
def test_a_load_by_a_holder_that_lost_the_lease_is_refused(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    if kind == "duckdb":
        warehouse: Engine = DuckDBEngine.open(tmp_path / "warehouse.duckdb")
    else:
        url = request.getfixturevalue("pg_url")
        warehouse = PostgresEngine.open(url, "hw_warehouse")
    hour = Interval(T0, T0 + timedelta(hours=1))
    newer, older = tmp_path / "newer.parquet", tmp_path / "older.parquet"
    pq.write_table(events([T0 + MINUTE]), newer)
    pq.write_table(events([T0 + 2 * MINUTE, T0 + 3 * MINUTE]), older)
    try:
        warehouse.load_arrivals("events", hour, str(newer), Fence(LEASE, 20))
        with pytest.raises(Fenced):
            warehouse.load_arrivals("events", hour, str(older), Fence(LEASE, 10))
        assert ids(warehouse) == pq.read_table(newer)["message_id"].to_pylist()
    finally:
        warehouse.close()


def test_a_span_is_recorded_only_while_its_holder_holds_the_lease(tmp_path: Path) -> None:
    state = StateStore.in_folder(tmp_path)
    try:
        with Lease(state.leases, LEASE) as lease:
            stale = Holder(LEASE, lease.owner, lease.token - 1)
            span = Offloaded(Interval(T0, T0 + timedelta(hours=1)), 3, 0, 100)
            with pytest.raises(LeaseLost):
                state.offloads.record(span, T0, stale)
            assert state.offloads.progress() is None
            state.offloads.record(span, T0, lease.holder)
            assert state.offloads.progress() == T0 + timedelta(hours=1)
    finally:
        state.close()


def test_a_collector_owning_an_embedded_hot_store_serves_commands_on_the_warehouse(
    project: Project,
) -> None:
    """``serve collector`` on the embedded file owns it, so ``run --due``, ``query`` and
    ``status`` come to it: they must work on the warehouse, not the hot store."""
    with (project.root / "headwater.toml").open("a") as toml:
        toml.write('\n[warehouse]\nengine = "duckdb"\npath = "warehouse.duckdb"\n')
        toml.write('offload_interval = "2s"\n')
    runtime = project.data_dir / "server.json"
    log = project.root / "collector.log"
    with log.open("ab") as out:
        process = subprocess.Popen(
            [*HEADWATER, "--project", str(project.root), "serve", "collector", "--port", "0"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "COLUMNS": "200"},
        )
    try:
        wait_for("the collector", runtime.exists, timeout=30, detail=log.read_text)
        url = json.loads(runtime.read_text())["url"]
        batch = [{"type": "track", "userId": f"u{i}", "event": "Signed Up"} for i in range(5)]
        answer = httpx.post(f"{url}/v1/batch", json={"batch": batch}, auth=(project.key, ""))
        assert answer.status_code == 200, answer.text
        sent = datetime.now(UTC)
        # The 2-second interval holding them ends, and the offload's clock margin passes.
        time.sleep(max(0.0, (sent + timedelta(seconds=5) - datetime.now(UTC)).total_seconds()))

        due = run_cli(project, "run", "--due")
        assert "Offloaded" in due.stdout, due.stdout
        assert "5 events" in due.stdout, due.stdout
        counted = run_cli(project, "query", "SELECT COUNT(*) AS n FROM events", "--format", "json")
        assert json.loads(counted.stdout) == [{"n": 5}]
        status = run_cli(project, "status")
        assert "Offload duckdb -> duckdb" in status.stdout, status.stdout
        # The process that offloads exports how far the warehouse is behind.
        metrics = httpx.get(f"{url}/metrics").text
        [lag] = [
            float(line.split()[-1])
            for line in metrics.splitlines()
            if line.startswith("headwater_offload_lag_seconds ")
        ]
        assert 0 <= lag < 120, lag
    finally:
        process.send_signal(signal.SIGTERM)
        process.wait(60)
    # The warehouse file holds them; the hot store keeps them too (retain is 7 days).
    for name in ("warehouse.duckdb", "events.duckdb"):
        engine = DuckDBEngine.open(project.data_dir / name, read_only=True)
        try:
            assert len(ids(engine)) == 5, name
        finally:
            engine.close()
