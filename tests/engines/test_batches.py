"""Backfills in batches give the tables that interval-by-interval runs give, on every engine.

Each pipeline is written twice, the same query under two names: once run interval by
interval, once with ``batch_size`` (consecutive intervals computed as one query over
their span, published as one replace of it). Both are backfilled over the same events
on each engine of the ``engine`` fixture, and the two tables must be equal exactly:
columns, types and rows.
"""

from __future__ import annotations

import textwrap
from datetime import timedelta
from pathlib import Path

import pyarrow as pa

from headwater.cli.scaffold import init_project
from headwater.config.project import load_project
from headwater.runtime.workspace import Workspace
from headwater.state import StateStore
from headwater.store.engine import Engine
from tests.engines.test_conformance import DAYS, EVENTS, FIRST_PASS, ingest

HOURLY = """\
    /* headwater
    schedule = "@hourly"
    kind = "incremental"
    time_column = "hour"
    audits = [ { unique = ["hour", "type"] }, { not_null = ["events"] } ]
    {batch}
    */
    SELECT
      TIMESTAMP_TRUNC(received_at, HOUR) AS hour,
      type,
      COUNT(*) AS events,
      COUNT(DISTINCT COALESCE(user_id, anonymous_id)) AS people,
      SUM(LENGTH(message_id)) AS id_length
    FROM events
    WHERE received_at >= @start AND received_at < @end
    GROUP BY 1, 2
"""

DAILY = """\
    /* headwater
    schedule = "@daily"
    kind = "incremental"
    time_column = "day"
    {batch}
    */
    SELECT DATE(received_at) AS day, COUNT(*) AS events
    FROM events
    WHERE received_at >= @start AND received_at < @end
    GROUP BY 1
"""

#: A Python pipeline: batched, it still returns Arrow for the whole span.
PYTHON = """\
    import pyarrow as pa

    from headwater.process.python import Context, pipeline


    @pipeline(schedule="@hourly", kind="incremental", time_column="hour", inputs=["events"]
              {batch})
    def counts(ctx: Context) -> pa.Table:
        return ctx.sql(
            "SELECT TIMESTAMP_TRUNC(received_at, HOUR) AS hour, COUNT(*) AS events "
            "FROM events WHERE received_at >= @start AND received_at < @end GROUP BY 1"
        )
"""

#: (file stem, text, how the batched one says its batch size)
PIPELINES = (
    ("hourly", HOURLY, "batch_size = 7"),
    ("daily", DAILY, "batch_size = 2"),
    ("python", PYTHON, ", batch_size=5"),
)


def write_project(root: Path) -> None:
    init_project(root)
    folder = root / "pipelines"
    for path in folder.iterdir():
        path.unlink()
    for stem, text, batch in PIPELINES:
        suffix = ".py" if stem == "python" else ".sql"
        (folder / f"{stem}_one{suffix}").write_text(textwrap.dedent(text).replace("{batch}", ""))
        batched = textwrap.dedent(text).replace("{batch}", batch)
        (folder / f"{stem}_batched{suffix}").write_text(batched)


def table(engine: Engine, name: str) -> pa.Table:
    rows = engine.query(f'SELECT * FROM "{name}"')
    return rows.sort_by([(column, "ascending") for column in rows.column_names])


def test_a_batched_backfill_gives_the_same_table_as_one_interval_at_a_time(
    engine: Engine, tmp_path: Path
) -> None:
    root = tmp_path / "project"
    write_project(root)
    ingest(engine, EVENTS)
    metadata = StateStore.in_folder(tmp_path / "metadata")
    service = Workspace(load_project(root), engine, metadata, clock=lambda: FIRST_PASS)
    try:
        start, end = DAYS[0], DAYS[-1] + timedelta(days=1)
        for stem, _, _ in PIPELINES:
            one = service.backfill(f"{stem}_one", start, end)
            batched = service.backfill(f"{stem}_batched", start, end)
            # One result per interval either way, with the same rows.
            assert [(r.interval, r.rows_written) for r in batched] == [
                (r.interval, r.rows_written) for r in one
            ], stem
            expected = table(engine, f"{stem}_one")
            assert expected.num_rows > 0, stem
            got = table(engine, f"{stem}_batched")
            assert got.schema == expected.schema, stem
            assert got.to_pylist() == expected.to_pylist(), stem
            # Every interval is recorded done, by fewer runs.
            done = metadata.runs.intervals(f"{stem}_batched")
            assert sorted(done) == sorted(metadata.runs.intervals(f"{stem}_one")), stem
            assert {state.status for state in done.values()} == {"done"}, stem
            runs = metadata.runs.runs(f"{stem}_batched", limit=10_000)
            assert len(runs) < len(done), stem
            # A backfill again finds nothing missing.
            assert service.backfill(f"{stem}_batched", start, end) == [], stem
    finally:
        metadata.close()
