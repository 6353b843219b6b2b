"""Erasure on a hot store offloaded into a warehouse (PostgreSQL into DuckDB, in process):
the person's events go from both, those not offloaded yet never reach the warehouse, and
the aggregates on the warehouse equal the same pipelines run without the person at all.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from headwater.config.project import load_project
from headwater.runtime import operations
from headwater.runtime.workspace import Workspace
from headwater.state import StateStore
from headwater.store import schema
from headwater.store.duckdb import DuckDBEngine
from headwater.store.postgres import PostgresEngine
from tests.engines.test_warehouse import (
    CLOCK,
    DAY,
    HOT_SCHEMA,
    HOUR,
    NAMES,
    NOW,
    T0,
    URL_VARIABLE,
    Floor,
    ingest,
    make_project,
    open_warehouse,
    rows_of,
    sample_events,
    sample_failed,
)

PERSON = "u3"

PER_USER = """\
/* headwater
schedule = "@daily"
kind = "incremental"
time_column = "day"
person = ["user_id"]
*/
SELECT TIMESTAMP_TRUNC(received_at, DAY) AS day, user_id, COUNT(*) AS events
FROM events WHERE received_at >= @start AND received_at < @end AND user_id IS NOT NULL
GROUP BY day, user_id
"""


def _aggregates_without_the_person(folder: Path) -> dict[str, list[tuple[object, ...]]]:
    """The reference: the same pipelines on DuckDB over the events without the person."""
    root = make_project(folder / "project")
    (root / "pipelines" / "per_user.sql").write_text(PER_USER)
    engine = DuckDBEngine.open(folder / "events.duckdb")
    state = StateStore.in_folder(folder / "metadata")
    try:
        kept = [r for r in sample_events().to_pylist() if r["user_id"] != PERSON]
        ingest(engine, pa.Table.from_pylist(kept, schema=schema.EVENTS), sample_failed())
        workspace = Workspace(load_project(root), engine, state, clock=lambda: NOW)
        assert not operations.call(workspace, "due", {})["broken"]
        return {name: rows_of(engine, name) for name in [*NAMES, "per_user"]}
    finally:
        state.close()
        engine.close()


def test_erasure_deletes_from_the_hot_store_and_the_warehouse(
    pg_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    expected = _aggregates_without_the_person(tmp_path / "reference")
    monkeypatch.setenv(URL_VARIABLE, pg_url)
    warehouse, body = open_warehouse("duckdb", tmp_path, pg_url)
    root = make_project(tmp_path / "project", body)
    (root / "pipelines" / "per_user.sql").write_text(PER_USER)
    project = load_project(root, "prod")
    hot = PostgresEngine.open(pg_url, HOT_SCHEMA)
    state = StateStore.in_folder(tmp_path / "metadata")
    # Only what arrived before day 1 is offloaded: the rest of the person's events are in
    # the hot store alone when they are erased.
    floor = Floor(T0 + DAY + timedelta(minutes=30))
    try:
        theirs = {"id": "f-u3", "source": "web", "received_at": T0 + 20 * HOUR,
                  "code": "missing_field", "message": "track needs an event name",
                  "payload": '{"type": "track", "user": {"id": "u3"}}'}  # fmt: skip
        failed = pa.concat_tables(
            [sample_failed(), pa.Table.from_pylist([theirs], schema=schema.FAILED_EVENTS)]
        )
        ingest(hot, sample_events(), failed)
        workspace = Workspace(
            project, warehouse, state, store=hot, floor=floor, clock=lambda: CLOCK
        )
        assert not operations.call(workspace, "due", {})["broken"]
        person_rows = "SELECT count(*) AS n FROM events WHERE user_id = 'u3'"
        assert hot.query(person_rows).column("n")[0].as_py() > 0
        assert warehouse.query(person_rows).column("n")[0].as_py() > 0

        [receipt] = operations.call(workspace, "erase", {"user_ids": [PERSON], "by": "test"})
        assert receipt["status"] == "done", receipt
        rows = {p["place"]: p["rows"] for p in receipt["places"]}
        assert rows["events@store"] == sum(
            r["user_id"] == PERSON for r in sample_events().to_pylist()
        )
        assert rows["events@warehouse"] > 0
        assert rows["failed_events@store"] == 1  # the failed row, by the id in its payload
        assert rows["failed_events@warehouse"] == 1
        left = hot.query("SELECT id FROM failed_events").column("id").to_pylist()
        assert sorted(left) == sorted(sample_failed().column("id").to_pylist())
        assert rows["output:per_user"] > 0
        assert {"recompute:hourly_event_counts", "recompute:plans"} <= set(rows)
        assert hot.query(person_rows).column("n")[0].as_py() == 0
        assert warehouse.query(person_rows).column("n")[0].as_py() == 0

        # The rest arrives at the warehouse: none of it is the person's, and every table
        # equals the pipelines run without the person.
        floor.at = NOW
        assert not operations.call(workspace, "due", {})["broken"]
        assert warehouse.query(person_rows).column("n")[0].as_py() == 0
        assert {name: rows_of(warehouse, name) for name in expected} == expected
    finally:
        state.close()
        hot.close()
        warehouse.close()
