"""An engine's refusal of a pipeline's SQL is terminal and names the file and line.

A pipeline whose SQL the engine refuses when it runs (an unknown column, an
unknown function) fails its run for good: the run is recorded ``terminal``
with the pipeline's file and the line of the construct, it is not retried
within the run, and later scheduler passes do not run it again until the
file changes. Checked on every engine, for a full-refresh and an incremental
pipeline.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pyarrow as pa
import pytest

from headwater.config.project import load_project
from headwater.runtime.workspace import Workspace
from headwater.state import StateStore
from headwater.store import schema
from headwater.store.engine import Engine, IngestBatch
from tests.conftest import Project
from tests.engines.conftest import ENGINE_NAMES, open_engine

T0 = datetime(2026, 3, 2, tzinfo=UTC)
HOUR = timedelta(hours=1)

#: The unknown column is on line 7 (the header's lines count).
UNKNOWN_COLUMN = """\
/* headwater
schedule = "@hourly"
kind = "full"
*/
SELECT
  event,
  COUNT(no_such_column) AS n
FROM events
GROUP BY event
"""

#: The unknown function is on line 9.
UNKNOWN_FUNCTION = """\
/* headwater
schedule = "@hourly"
kind = "incremental"
time_column = "hour"
*/
SELECT
  TIMESTAMP_TRUNC(received_at, HOUR) AS hour,
  COUNT(*) AS events,
  MAX(no_such_function(event)) AS x
FROM events
WHERE received_at >= @start AND received_at < @end
GROUP BY hour
"""

CASES = {"unknown_column.sql": (UNKNOWN_COLUMN, 7), "unknown_function.sql": (UNKNOWN_FUNCTION, 9)}


class Clock:
    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.fixture(params=ENGINE_NAMES)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    engine = open_engine(request.param, request, tmp_path / request.param)
    try:
        yield engine
    finally:
        engine.close()


@pytest.mark.timeout(180)
def test_sql_the_engine_refuses_fails_for_good_with_file_and_line(
    project: Project, store: Engine, tmp_path: Path
) -> None:
    folder = project.root / "pipelines"
    for old in folder.iterdir():
        old.unlink()
    for name, (text, _) in CASES.items():
        (folder / name).write_text(text)
    rows = [
        {
            "message_id": f"m{k}",
            "source": "web",
            "type": "track",
            "event": "Page Viewed",
            "user_id": f"u{k}",
            "timestamp": T0 + timedelta(minutes=k),
            "received_at": T0 + timedelta(minutes=k),
        }
        for k in range(3)
    ]
    store.ingest(
        IngestBatch(
            pa.Table.from_pylist(rows, schema=schema.EVENTS), schema.FAILED_EVENTS.empty_table()
        )
    )
    sleeps: list[float] = []
    clock = Clock(T0 + HOUR + timedelta(minutes=5))
    metadata = StateStore.open(f"sqlite:///{tmp_path / 'metadata.sqlite'}")
    try:
        for _ in range(3):  # three scheduler passes at the same time: one run each
            workspace = Workspace(
                load_project(project.root), store, metadata, clock=clock, sleep=sleeps.append
            )
            assert workspace.run_due() == []
        assert sleeps == []  # never retried within a run
        for name, (_, line) in CASES.items():
            pipeline = name.removesuffix(".sql")
            runs = metadata.runs.runs(pipeline, limit=100)
            assert [(r.status, r.error_kind, r.attempt) for r in runs] == [
                ("failed", "terminal", 1)
            ], pipeline
            error = runs[0].error or ""
            assert f"{name}:{line}:" in error, error
            assert "no_such" in error.lower(), error
    finally:
        metadata.close()


STAR_EXCEPT = """\
/* headwater
kind = "full"
*/
SELECT e.* EXCEPT (user_id, properties, traits, context) REPLACE (UPPER(e.event) AS event)
FROM events AS e
"""


@pytest.mark.timeout(180)
def test_star_except_and_replace_over_events_run_on_every_engine(
    project: Project, store: Engine, tmp_path: Path
) -> None:
    """``e.* EXCEPT (...)`` over the event tables, whose columns are known, is written out
    as its column list for an engine without EXCEPT, and gives BigQuery's columns."""
    folder = project.root / "pipelines"
    for old in folder.iterdir():
        old.unlink()
    (folder / "trimmed.sql").write_text(STAR_EXCEPT)
    rows = [
        {"message_id": f"m{k}", "source": "web", "type": "track", "event": "Viewed",
         "user_id": f"u{k}", "timestamp": T0, "received_at": T0}
        for k in range(3)
    ]  # fmt: skip
    store.ingest(
        IngestBatch(
            pa.Table.from_pylist(rows, schema=schema.EVENTS), schema.FAILED_EVENTS.empty_table()
        )
    )
    metadata = StateStore.open(f"sqlite:///{tmp_path / 'metadata.sqlite'}")
    try:
        workspace = Workspace(load_project(project.root), store, metadata, clock=Clock(T0 + HOUR))
        assert [r.pipeline for r in workspace.run_due()] == ["trimmed"]
        table = store.select("SELECT * FROM trimmed ORDER BY message_id", {}).table
    finally:
        metadata.close()
    dropped = {"user_id", "properties", "traits", "context"}
    assert table.column_names == [c for c in schema.EVENTS.names if c not in dropped]
    assert table["message_id"].to_pylist() == ["m0", "m1", "m2"]
    assert set(table["event"].to_pylist()) == {"VIEWED"}
