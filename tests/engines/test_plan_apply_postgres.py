"""``headwater plan`` and ``headwater apply`` on a PostgreSQL store (a real server started
for the session, ``tests.pg``); ``tests/test_plan_apply.py`` has the DuckDB cases, the
command's exit codes, git and crashes."""

from __future__ import annotations

import threading
from collections import Counter
from datetime import datetime
from typing import Any

import psycopg
import pyarrow as pa
import pytest

from headwater.config.project import load_project
from headwater.runtime.apply import apply
from headwater.runtime.plan import Plan, make_plan
from headwater.runtime.workspace import Workspace
from headwater.store import schema
from headwater.store.engine import IngestBatch
from headwater.store.postgres import PostgresEngine
from tests.conftest import Project
from tests.engines.conftest import PG_SCHEMA
from tests.test_plan_apply import COUNTS, TOTALS, _expected, _rows, _start


@pytest.fixture
def pg(project: Project, pg_url: str, monkeypatch: pytest.MonkeyPatch) -> Project:
    """``[environments.pg]`` on the PostgreSQL store at ``pg_url`` with ``counts`` and
    ``totals`` run over 30 hours of events, and a consumer granted both."""
    monkeypatch.setenv("HEADWATER_TEST_PG_URL", pg_url)
    project.configure(
        '[environments.pg.store]\nengine = "postgres"\nurl = "${HEADWATER_TEST_PG_URL}"\n'
    )
    for path in (project.root / "pipelines").iterdir():
        path.unlink()
    (project.root / "pipelines" / "counts.sql").write_text(COUNTS)
    (project.root / "pipelines" / "totals.sql").write_text(TOTALS)
    engine = PostgresEngine.open(pg_url, PG_SCHEMA)
    try:
        events = pa.Table.from_pylist(_rows(_start(), 30, 6, "a"), schema=schema.EVENTS)
        engine.ingest(IngestBatch(events, schema.FAILED_EVENTS.empty_table()))
    finally:
        engine.close()
    project.cli("consumers", "add", "analytics", "--datasets", "counts,totals")
    project.cli("--env", "pg", "run", "--due")
    return project


def _workspace(project: Project) -> Workspace:
    return Workspace.open(load_project(project.root, "pg"))


def _plan(project: Project) -> Plan:
    ws = _workspace(project)
    try:
        return make_plan(ws, [])
    finally:
        ws.close()


def _apply(project: Project) -> None:
    ws = _workspace(project)
    try:
        apply(ws, make_plan(ws, []), commit=None, dirty=False, applied_by="tests")
    finally:
        ws.close()


def _select(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url, autocommit=True) as con:
        return con.execute(sql).fetchall()


def _counts(url: str, column: str = "events") -> Counter[tuple[datetime, str]]:
    rows = _select(url, f"SELECT hour, event, {column} FROM {PG_SCHEMA}.counts")
    return Counter({(hour, event): n for hour, event, n in rows})


def test_changes_are_told_breaking_or_not_and_applied_whole(pg: Project, pg_url: str) -> None:
    expected = _expected(_rows(_start(), 30, 6, "a"))
    assert _plan(pg).changes == []
    _apply(pg)
    metadata = f"{PG_SCHEMA}_metadata"
    totals_runs = _select(
        pg_url, f"SELECT run_id FROM {metadata}.intervals WHERE pipeline = 'totals'"
    )

    # A column added: not breaking, totals untouched.
    added = COUNTS.replace("COUNT(*) AS events", "COUNT(*) AS events, 1 AS one")
    (pg.root / "pipelines" / "counts.sql").write_text(added)
    plan = _plan(pg)
    assert [(c.name, c.breaking, c.readers) for c in plan.changes] == [("counts", False, False)]
    _apply(pg)
    assert _counts(pg_url) == expected
    assert _select(pg_url, f"SELECT DISTINCT one FROM {PG_SCHEMA}.counts") == [(1,)]
    after = _select(pg_url, f"SELECT run_id FROM {metadata}.intervals WHERE pipeline = 'totals'")
    assert after == totals_runs

    # A column removed: breaking, the consumer named, the reader computed again.
    (pg.root / "pipelines" / "counts.sql").write_text(COUNTS)
    plan = _plan(pg)
    assert [(c.name, c.breaking) for c in plan.changes] == [("counts", True)]
    assert plan.changes[0].columns_lost == ["one"]
    assert [(a.who, a.dataset) for a in plan.affected] == [("consumer analytics", "counts")]
    assert [r.pipeline for r in plan.recompute] == ["counts", "totals"]
    _apply(pg)
    columns = _select(
        pg_url,
        "SELECT column_name FROM information_schema.columns WHERE table_schema = "
        f"'{PG_SCHEMA}' AND table_name = 'counts' ORDER BY ordinal_position",
    )
    assert [c for (c,) in columns] == ["hour", "event", "events"]

    # The key changed: breaking, nothing to compute.
    keyed = TOTALS.replace('key = ["event"]', 'key = ["event", "total"]')
    (pg.root / "pipelines" / "totals.sql").write_text(keyed)
    plan = _plan(pg)
    assert [(c.name, c.kind, c.breaking) for c in plan.changes] == [("totals", "changed", True)]
    assert plan.recompute == []
    _apply(pg)

    # A pipeline removed: its table dropped.
    (pg.root / "pipelines" / "totals.sql").unlink()
    plan = _plan(pg)
    assert [(c.name, c.kind) for c in plan.changes] == [("totals", "removed")]
    _apply(pg)
    tables = _select(
        pg_url, f"SELECT table_name FROM information_schema.tables WHERE table_schema='{PG_SCHEMA}'"
    )
    assert "totals" not in {t for (t,) in tables}
    assert not [t for (t,) in tables if t.startswith("_hw_")]
    assert _counts(pg_url) == expected
    assert _plan(pg).empty


def test_readers_see_the_old_version_until_the_swap_then_the_new(pg: Project, pg_url: str) -> None:
    _apply(pg)
    total = sum(_expected(_rows(_start(), 30, 6, "a")).values())
    tenfold = COUNTS.replace("COUNT(*) AS events", "COUNT(*) * 10 AS events")
    (pg.root / "pipelines" / "counts.sql").write_text(tenfold)
    seen: list[int] = []
    errors: list[str] = []
    stop = threading.Event()

    def read() -> None:
        with psycopg.connect(pg_url, autocommit=True) as con:
            while not stop.is_set():
                try:
                    row = con.execute(f"SELECT sum(events) FROM {PG_SCHEMA}.counts").fetchone()
                except psycopg.Error as exc:
                    errors.append(str(exc))
                    continue
                seen.append(int(row[0]) if row and row[0] is not None else -1)

    reader = threading.Thread(target=read)
    reader.start()
    try:
        _apply(pg)
        read_after = len(seen)
        while len(seen) < read_after + 3:
            stop.wait(0.01)
    finally:
        stop.set()
        reader.join(30)
    assert errors == []
    assert set(seen) == {total, 10 * total}, Counter(seen)
    switch = seen.index(10 * total)
    assert all(s == 10 * total for s in seen[switch:])
