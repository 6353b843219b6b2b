"""The traffic report (the dashboard's overview, ``headwater traffic``) on both stores that
collect: the embedded DuckDB file and PostgreSQL (a real server, ``tests.pg``)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest

from headwater.config.project import load_project
from headwater.runtime.traffic import traffic
from headwater.runtime.workspace import Workspace, engine_for
from headwater.store import schema
from headwater.store.engine import IngestBatch
from tests.conftest import Project

UNTIL = datetime.now(UTC).replace(second=0, microsecond=0)


def _event(n: int, name: str, ago: timedelta, source: str = "web") -> dict[str, Any]:
    when = UNTIL - ago
    return {"message_id": f"t-{n}", "source": source, "type": "track", "event": name,
            "timestamp": when, "received_at": when}  # fmt: skip


def _refused(n: int, code: str, ago: timedelta) -> dict[str, Any]:
    return {"id": f"f-{n}", "source": "web", "received_at": UNTIL - ago, "code": code,
            "message": "refused", "payload": "{}"}  # fmt: skip


@pytest.mark.parametrize("store", ["duckdb", "postgres"])
def test_counts_per_minute_by_source_name_and_code(
    project: Project, store: str, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    environment = None
    if store == "postgres":
        monkeypatch.setenv("HEADWATER_TEST_PG_URL", request.getfixturevalue("pg_url"))
        project.configure(
            '[environments.pg.store]\nengine = "postgres"\nurl = "${HEADWATER_TEST_PG_URL}"\n'
        )
        environment = "pg"
    loaded = load_project(project.root, environment)
    events = [
        _event(0, "Signed Up", timedelta(minutes=10)),
        _event(1, "Signed Up", timedelta(minutes=10, seconds=-30)),
        _event(2, "Paid", timedelta(minutes=3), source="api"),
        _event(3, "Paid", timedelta(hours=5)),  # in the day only
        _event(4, "Paid", timedelta(days=2)),  # in neither
    ]
    failed = [_refused(0, "invalid_json", timedelta(minutes=1)),
              _refused(1, "missing_field", timedelta(hours=3))]  # fmt: skip
    engine = engine_for(loaded)
    try:
        engine.ingest(
            IngestBatch(
                pa.Table.from_pylist(events, schema=schema.EVENTS),
                pa.Table.from_pylist(failed, schema=schema.FAILED_EVENTS),
            )
        )
    finally:
        engine.close()
    workspace = Workspace.open(loaded)
    try:
        report = traffic(workspace, UNTIL)
    finally:
        workspace.close()
    hour, day = report["hour"], report["day"]
    assert report["until"] == (UNTIL + timedelta(minutes=1)).isoformat()
    assert (hour["accepted"], hour["refused"]) == (3, 1)
    assert (day["accepted"], day["refused"]) == (4, 2)
    assert len(hour["minutes"]) == 60
    assert len(day["minutes"]) == 1440
    # Each event in its minute: the last slot is the minute of UNTIL.
    assert hour["by_source"]["web"][-11] == 2
    assert hour["by_source"]["api"][-4] == 1
    assert {k: sum(v) for k, v in hour["by_event"].items()} == {"Signed Up": 2, "Paid": 1}
    assert {k: sum(v) for k, v in day["refused_by_code"].items()} == {
        "invalid_json": 1,
        "missing_field": 1,
    }
    assert report["store"]["events"] == 5
    assert report["store"]["failed_events"] == 2
    assert (report["store"]["bytes"] is None) == (store == "postgres")
