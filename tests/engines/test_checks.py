"""The checks before publication say the same on every engine, wherever the rows are.

On DuckDB and PostgreSQL a SQL pipeline's output is checked as SQL on a temporary
table in the engine; on Spark (and for Python pipelines) in Arrow. Each pipeline
here breaks one check; the run must fail with the same message on each engine of the
``engine`` fixture, and publish nothing.
"""

from __future__ import annotations

import textwrap
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from headwater.cli.scaffold import init_project
from headwater.config.project import load_project
from headwater.core.errors import HeadwaterError
from headwater.process.errors import AuditFailed
from headwater.runtime.workspace import Workspace
from headwater.state import StateStore
from headwater.store.engine import Engine
from tests.engines.test_conformance import DAYS, EVENTS, FIRST_PASS, ingest

SELECT = """\
    SELECT {hour} AS hour, type, COUNT(*) AS events, MAX(user_id) AS user_id
    FROM events
    WHERE received_at >= @start AND received_at < @end
    GROUP BY 1, 2
"""
HOUR = "TIMESTAMP_TRUNC(received_at, HOUR)"


def pipeline(
    *, hour: str = HOUR, time_column: str = "hour", audits: str = "", kind: str = "incremental"
) -> str:
    header = f'schedule = "@daily"\nkind = "{kind}"\ntime_column = "{time_column}"\n'
    body = textwrap.dedent(SELECT).replace("{hour}", hour)
    if kind == "full":
        header = 'schedule = "@daily"\nkind = "full"\n'
        body = body.replace("WHERE received_at >= @start AND received_at < @end\n", "")
    return f"/* headwater\n{header}{audits}\n*/\n{body}"


#: name -> (file, what the error says)
BROKEN = {
    "late_hours": (
        pipeline(hour=f"TIMESTAMP_ADD({HOUR}, INTERVAL 1 DAY)"),
        "output rows have hour outside the interval [2025-02-28 00:00, 2025-03-01 00:00) or NULL",
    ),
    "null_hours": (
        pipeline(hour="CAST(NULL AS TIMESTAMP)"),
        "output rows have hour outside the interval",
    ),
    "text_hours": (
        pipeline(hour="CAST(received_at AS STRING)"),
        "time_column 'hour' holds string, not a date or timestamp",
    ),
    "no_such_column": (
        pipeline(time_column="at"),
        "time_column 'at' is not a column of the output",
    ),
    "not_null": (
        pipeline(audits='audits = [ { not_null = ["hour"] }, { not_null = ["user_id"] } ]'),
        "audit not_null(user_id) failed on",
    ),
    "unique": (
        pipeline(audits='audits = [ { unique = ["hour"] } ]'),
        "audit unique(hour) failed on",
    ),
    "accepted": (
        pipeline(
            audits='audits = [ { accepted_values = { column = "type", values = ["track"] } } ]'
        ),
        "audit accepted_values(type) failed on",
    ),
    "row_count": (
        pipeline(audits="audits = [ { row_count = { max = 1 } } ]"),
        "audit row_count(None..1) failed on 1 row: {'row_count': ",
    ),
    "custom": (
        pipeline(audits='audits = [ { sql = "SELECT * FROM output WHERE events > 0" } ]'),
        "audit sql(SELECT * FROM output WHERE events > 0) failed on",
    ),
    "missing_audit_column": (
        pipeline(audits='audits = [ { not_null = ["nope"] } ]'),
        "audit names column 'nope', which the output does not have",
    ),
    "full_custom": (
        pipeline(kind="full", audits='audits = [ { sql = "SELECT * FROM output" } ]'),
        "audit sql(SELECT * FROM output) failed on",
    ),
}

PASSING = pipeline(
    audits=(
        'audits = [ { not_null = ["hour", "type"] }, { unique = ["hour", "type"] },\n'
        '  { accepted_values = { column = "type", values = ["track", "page", "identify",'
        ' "screen", "group", "alias"] } },\n'
        "  { row_count = { min = 1 } },\n"
        '  { sql = "SELECT * FROM output WHERE events < 1" } ]'
    )
)


@pytest.fixture
def service(engine: Engine, tmp_path: Path) -> Workspace:
    root = tmp_path / "project"
    init_project(root)
    folder = root / "pipelines"
    for path in folder.iterdir():
        path.unlink()
    for name, (text, _) in BROKEN.items():
        (folder / f"{name}.sql").write_text(text)
    (folder / "passing.sql").write_text(PASSING)
    ingest(engine, EVENTS)
    metadata = StateStore.in_folder(tmp_path / "metadata")
    return Workspace(load_project(root), engine, metadata, clock=lambda: FIRST_PASS)


DAY: tuple[datetime, datetime] = (DAYS[1], DAYS[1] + timedelta(days=1))


def test_each_broken_check_fails_with_its_message_and_publishes_nothing(
    service: Workspace, engine: Engine
) -> None:
    for name, (_, message) in BROKEN.items():
        with pytest.raises(HeadwaterError) as caught:
            service.backfill(name, *DAY)
        assert message in str(caught.value), (name, str(caught.value))
        audited = name in {"not_null", "unique", "accepted", "row_count", "custom", "full_custom"}
        assert isinstance(caught.value, AuditFailed) is audited, name
        assert name not in engine.list_tables(), name
        assert service.state.runs.intervals(name) == {}, name


def test_passing_checks_publish_the_interval(service: Workspace, engine: Engine) -> None:
    results = service.backfill("passing", *DAY)
    assert [r.rows_written for r in results] == [engine.query('SELECT * FROM "passing"').num_rows]
    assert results[0].rows_written > 0
