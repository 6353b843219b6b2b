"""Sinks per environment: QA never writes production's files, table or webhook.

A project made by ``headwater init`` with three sinks at the top level (the
default environment's): its ``files`` sink, a PostgreSQL table in a database of
a real PostgreSQL server (tests/pg.py), and a webhook to a real receiver on
loopback. ``[environments.qa]`` has its own DuckDB store in ``.headwater/qa/``.
Pipelines run through real ``headwater`` processes; what each sink holds is
read here: the folders, PostgreSQL with psycopg, the receiver's requests.
"""

from __future__ import annotations

import json
import os
import subprocess
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg
import pyarrow as pa
import pytest
from psycopg import sql

from headwater.config.project import load_project
from headwater.core.errors import ConfigError
from headwater.store import schema
from headwater.store.duckdb import DuckDBEngine
from headwater.store.engine import IngestBatch
from tests.conftest import HEADWATER, Project, run_cli, wait_for
from tests.deliver.receiver import Receiver
from tests.pg import PostgresServer

HOUR = timedelta(hours=1)
SECRET = "whsec_env_7d1e0c2b"
PIPELINE = "hourly_names"
SINKS = ("files", "crm", "hook")
PIPELINE_SQL = """\
/* headwater
schedule = "@hourly"
kind = "incremental"
time_column = "hour"
key = ["hour", "event_name"]
sinks = {sinks}
*/
SELECT TIMESTAMP_TRUNC(received_at, HOUR) AS hour, COALESCE(event, type) AS event_name,
       COUNT(*) AS events
FROM events
WHERE received_at >= @start AND received_at < @end
GROUP BY 1, 2
"""


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver(SECRET) as running:
        yield running


@pytest.fixture
def hour() -> datetime:
    """An hour that ended a while ago: its interval is whole."""
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - 3 * HOUR


@pytest.fixture
def crm(project: Project, pg_url: str, receiver: Receiver, monkeypatch: pytest.MonkeyPatch) -> str:
    """The default environment's three sinks and one pipeline delivered to all of them;
    ``[environments.qa]`` appended by each test. Returns the default CRM database's URL."""
    for path in (project.root / "pipelines").iterdir():
        path.unlink()
    _pipeline(project, SINKS)
    monkeypatch.setenv("CRM_URL", pg_url)
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    project.configure(
        "[delivery]\n"
        'allow_hosts = ["localhost"]\n\n'
        "[sinks.crm]\n"
        'type = "postgres"\n'
        'url = "${CRM_URL}"\n\n'
        "[sinks.hook]\n"
        'type = "webhook"\n'
        f"url = {json.dumps(receiver.url())}\n"
        'secret = "${HOOK_SECRET}"\n'
        "max_attempts = 2\n"
        "backoff_seconds = 0.05\n"
    )
    return pg_url


def _pipeline(project: Project, sinks: tuple[str, ...]) -> None:
    text = PIPELINE_SQL.format(sinks=json.dumps(list(sinks)))
    (project.root / "pipelines" / f"{PIPELINE}.sql").write_text(text)


def _ingest(store: Path, hour: datetime, count: int) -> None:
    """``count`` events received in ``hour``, committed straight into the DuckDB file."""
    store.parent.mkdir(parents=True, exist_ok=True)
    rows: list[dict[str, Any]] = [
        {
            "message_id": f"{store.parent.name}-{i}",
            "source": "web",
            "type": "track",
            "event": ("Signed Up", "Page Viewed")[i % 2],
            "user_id": f"u{i}",
            "timestamp": hour + i * timedelta(minutes=1),
            "original_timestamp": hour + i * timedelta(minutes=1),
            "received_at": hour + i * timedelta(minutes=1),
            "properties": "{}",
        }
        for i in range(count)
    ]
    engine = DuckDBEngine.open(store)
    try:
        events = pa.Table.from_pylist(rows, schema=schema.EVENTS)
        engine.ingest(IngestBatch(events, schema.FAILED_EVENTS.empty_table()))
    finally:
        engine.close()


def _run(project: Project, hour: datetime, *env: str) -> subprocess.CompletedProcess[str]:
    window = ("--start", hour.strftime("%Y-%m-%dT%H:%M"), "--end", (hour + HOUR).isoformat())
    return run_cli(project, *env, "run", PIPELINE, *window)


def _crm_rows(url: str) -> list[tuple[Any, ...]] | None:
    """The pipeline's table in a CRM database, or ``None`` when it was never created."""
    with psycopg.connect(url) as db:
        found = db.execute("SELECT to_regclass(%s)", (f"public.{PIPELINE}",)).fetchone()
        if found is None or found[0] is None:
            return None
        query = sql.SQL("SELECT event_name, events FROM public.{} ORDER BY 1")
        return db.execute(query.format(sql.Identifier(PIPELINE))).fetchall()


def _files(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.glob(f"{PIPELINE}/*.parquet"))


def _status_rows(output: str, sink: str) -> list[str]:
    return [line for line in output.splitlines() if f"│ {sink} " in line]


def test_an_environment_without_its_own_sinks_writes_nothing_of_the_defaults(
    project: Project, crm: str, receiver: Receiver, hour: datetime
) -> None:
    project.configure("[environments.qa]\n")
    _ingest(project.data_dir / "qa" / "events.duckdb", hour, 5)

    ran = _run(project, hour, "--env", "qa")
    assert "Ran 1 interval; 2 rows written." in ran.stdout, ran.stdout
    for sink in SINKS:
        assert (
            f"Not delivered {PIPELINE} to {sink}: not in this environment (declared for the "
            "default environment)." in ran.stdout
        ), ran.stdout
    # The run itself happened, in qa's own store ...
    qa = DuckDBEngine.open(project.data_dir / "qa" / "events.duckdb", read_only=True)
    try:
        assert qa.query(f"SELECT sum(events) AS n FROM {PIPELINE}").to_pylist() == [{"n": 5}]
    finally:
        qa.close()
    # ... and none of the default environment's sinks saw it.
    assert not (project.root / "exports").exists()
    assert not (project.data_dir / "qa" / "exports").exists()
    assert _crm_rows(crm) is None
    assert receiver.snapshot() == []

    status = run_cli(project, "--env", "qa", "status").stdout
    for sink in SINKS:
        (row,) = _status_rows(status, sink)
        assert "not in this environment" in row, status

    # The default environment, unchanged: the same pipeline delivers to all three.
    _ingest(project.data_dir / "events.duckdb", hour, 3)
    ran = _run(project, hour)
    for sink in SINKS:
        assert f"Delivered {PIPELINE} to {sink}: 1 interval, 2 rows." in ran.stdout, ran.stdout
    assert _files(project.root / "exports") == [f"{hour:%Y%m%dT%H%M%SZ}.parquet"]
    assert _crm_rows(crm) == [("Page Viewed", 1), ("Signed Up", 2)]
    assert sorted(r["events"] for r in receiver.rows()) == [1, 2]
    assert "not in this environment" not in run_cli(project, "status").stdout


def test_an_environment_writes_its_own_sinks_and_the_ones_it_shares(
    project: Project,
    crm: str,
    receiver: Receiver,
    hour: datetime,
    postgres: PostgresServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    qa_crm = postgres.create_database(f"qa_crm_{uuid.uuid4().hex[:12]}")
    monkeypatch.setenv("QA_CRM_URL", qa_crm)
    project.configure(
        "[environments.qa]\n"
        'shared_sinks = ["hook"]\n\n'
        "[environments.qa.sinks.files]\n"
        'type = "files"\n'
        'url = "exports"\n\n'
        "[environments.qa.sinks.crm]\n"
        'type = "postgres"\n'
        'url = "${QA_CRM_URL}"\n'
    )
    _ingest(project.data_dir / "qa" / "events.duckdb", hour, 5)
    ran = _run(project, hour, "--env", "qa")
    for sink in SINKS:
        assert f"Delivered {PIPELINE} to {sink}: 1 interval, 2 rows." in ran.stdout, ran.stdout
    assert "Not delivered" not in ran.stdout

    # Its own files sink's relative folder is in qa's data folder, not the default's.
    assert _files(project.data_dir / "qa" / "exports") == [f"{hour:%Y%m%dT%H%M%SZ}.parquet"]
    assert not (project.root / "exports").exists()
    # Its own CRM database, not the default's.
    assert _crm_rows(qa_crm) == [("Page Viewed", 2), ("Signed Up", 3)]
    assert _crm_rows(crm) is None
    # The shared webhook: the same receiver as the default environment.
    assert sorted(r["events"] for r in receiver.rows()) == [2, 3]


def test_shared_sinks_are_checked_strictly(project: Project) -> None:
    toml = project.root / "headwater.toml"
    written = toml.read_text()

    def refused(text: str) -> ConfigError:
        toml.write_text(written + text)
        with pytest.raises(ConfigError) as caught:
            load_project(project.root, "qa")
        return caught.value

    error = refused('\n[environments.qa]\nshared_sinks = ["fils"]\n')
    assert "[environments.qa] shared_sinks names 'fils'" in error.message
    assert "not a top-level [sinks.fils] table (declared: files)" in error.message
    assert error.hint == "did you mean 'files'?"

    error = refused(
        '\n[environments.qa]\nshared_sinks = ["files"]\n'
        '[environments.qa.sinks.files]\ntype = "files"\nurl = "qa-exports"\n'
    )
    assert "which [environments.qa.sinks.files] also declares" in error.message

    error = refused('\n[environments.qa]\nshared_sinks = ["files", "files"]\n')
    assert "names files more than once" in error.message

    error = refused('\n[environments.qa]\nshare_sinks = ["files"]\n')
    assert "unknown key `share_sinks` in [environments.qa]" in error.message
    assert error.hint is not None
    assert "shared_sinks" in error.hint

    # An environment's own sinks are named as their tables are, with the allowed keys.
    error = refused('\n[environments.qa.sinks.lake]\ntype = "files"\nurl = "x"\nformt = "csv"\n')
    assert error.message.endswith("unknown key `formt` in [environments.qa.sinks.lake]")
    assert error.hint is not None
    assert "format" in error.hint
    error = refused('\n[environments.qa.sinks.lake]\ntype = "file"\nurl = "x"\n')
    assert error.message.endswith("[environments.qa.sinks.lake] has type 'file'")
    error = refused('\n[environments.qa.sinks.lake]\ntype = "files"\nurl = "x"\nformat = "xml"\n')
    assert "[environments.qa.sinks.lake] format: Invalid enum value 'xml'" in error.message
    error = refused(
        '\n[environments.qa.sinks.hook]\ntype = "webhook"\nurl = "https://a.example"\n'
        'secret = "plain"\n'
    )
    assert "[environments.qa.sinks.hook] secret must be an environment reference" in error.message

    toml.write_text(written + '\n[environments.qa]\nshared_sinks = ["files"]\n')
    shared = load_project(project.root, "qa")
    assert shared.settings.sinks == load_project(project.root).settings.sinks
    assert shared.sinks_elsewhere() == {}
    with pytest.raises(ConfigError, match="there is no environment 'qas'") as caught:
        load_project(project.root, "qas")
    assert caught.value.hint == "did you mean --env qa?"


def test_a_sink_named_nowhere_is_refused_with_the_nearest_name(project: Project) -> None:
    project.configure("[environments.qa]\n")
    hourly = project.root / "pipelines" / "hourly_event_counts.sql"
    hourly.write_text(hourly.read_text().replace('sinks = ["files"]', 'sinks = ["filez"]'))
    for env in ((), ("--env", "qa")):
        # The pipeline is set apart, named with the fix; status still answers.
        said = run_cli(project, *env, "status").stdout
        assert "hourly_event_counts does not load: sinks names 'filez', which is not a " in said
        assert "hint: did you mean 'files'?" in said, said


def test_a_sink_declared_only_for_another_environment_is_skipped_in_the_default(
    project: Project, hour: datetime
) -> None:
    project.configure(
        '[environments.prod.sinks.archive]\ntype = "files"\nurl = "/nonexistent/archive"\n'
    )
    hourly = project.root / "pipelines" / "hourly_event_counts.sql"
    hourly.write_text(
        hourly.read_text().replace('sinks = ["files"]', 'sinks = ["files", "archive"]')
    )
    _ingest(project.data_dir / "events.duckdb", hour, 2)
    window = ("--start", hour.isoformat(), "--end", (hour + HOUR).isoformat())
    ran = run_cli(project, "run", "hourly_event_counts", *window)
    assert "Delivered hourly_event_counts to files: 1 interval" in ran.stdout, ran.stdout
    assert (
        "Not delivered hourly_event_counts to archive: not in this environment (declared for "
        "prod)." in ran.stdout
    ), ran.stdout


@pytest.mark.timeout(90)
def test_up_says_which_sinks_its_environment_has_shares_and_lacks(project: Project) -> None:
    project.configure(
        '[sinks.lake]\ntype = "files"\nurl = "lake"\n\n'
        '[environments.qa]\nshared_sinks = ["lake"]\n'
        '[environments.qa.sinks.audit]\ntype = "files"\nurl = "audit"\n'
    )
    said = _up(project, "--env", "qa")
    assert "sink    lake  shared with the default environment (the same destination): lake" in said
    assert f"sink    audit  this environment's own: {project.data_dir / 'qa' / 'audit'}" in said
    assert "sinks   files: not in this environment; pipelines naming them run without " in said
    assert "[environments.qa.sinks] or list them in shared_sinks" in said, said

    said = _up(project)
    assert "sinks   audit: not in this environment" in said, said
    assert "(declare them under [sinks])" in said, said
    assert "sink    lake" not in said, said


def _up(project: Project, *env: str) -> str:
    """What ``headwater up`` prints when it has started."""
    log = project.root / f"up{'-'.join(env)}.log"
    with log.open("wb") as out:
        up = subprocess.Popen(
            [*HEADWATER, "--project", str(project.root), *env, "up", "--port", "0"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**_environ(), "COLUMNS": "300"},
        )
    try:
        return wait_for(f"headwater {' '.join(env)} up to start", lambda: _started(log), 30)
    finally:
        up.terminate()
        up.wait(30)


def _started(log: Path) -> str | None:
    text = log.read_text(errors="replace")
    return text if "Ctrl-C to stop" in text else None


def _environ() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k not in ("HEADWATER_ENV", "HEADWATER_DEBUG")}
