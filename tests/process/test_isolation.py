"""One broken pipeline file stops only itself and what reads it.

A running ``headwater up`` gets a pipeline file saved with a SQL syntax error and
another with a typo in its header. Every other pipeline keeps running (late events
still re-run their day), the CLI keeps answering for them, and the read API keeps
serving every dataset: one from the embedded store, one from a PostgreSQL sink, and
the broken pipeline's own last output. ``status``, ``/readyz`` and ``/metrics`` name
the broken files, ``status`` with the line and a caret where the parser stopped.
"""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pyarrow as pa
import pytest

from headwater.store import schema
from headwater.store.duckdb import DuckDBEngine
from headwater.store.engine import IngestBatch
from tests.conftest import Project, Server, run_cli, wait_for
from tests.pg import PostgresServer, postgres_server

TOKEN = re.compile(r"hw_ct_[A-Za-z0-9_-]+")
YESTERDAY = (datetime.now(UTC) - timedelta(days=1)).replace(hour=12, minute=0, second=0)

DAILY = f"""/* headwater
schedule = "@daily"
kind = "incremental"
time = "timestamp"
time_column = "day"
key = ["day"]
start = "{(YESTERDAY - timedelta(days=2)).date().isoformat()}"
*/
SELECT TIMESTAMP_TRUNC(timestamp, DAY) AS day, COUNT(*) AS events
FROM events WHERE timestamp >= @start AND timestamp < @end
GROUP BY day
"""
PROFILES = """/* headwater
kind = "full"
key = ["user_id"]
sinks = ["recs"]
*/
SELECT user_id, COUNT(*) AS events FROM events WHERE user_id IS NOT NULL GROUP BY user_id
"""
BASE = """/* headwater
kind = "full"
key = ["source"]
*/
SELECT source, COUNT(*) AS n FROM events GROUP BY source
"""
BASE_BROKEN = """/* headwater
kind = "full"
key = ["source"]
*/
SELECT source,
       COUNT(* AS n
FROM events GROUP BY source
"""
BASE_READER = """/* headwater
kind = "full"
*/
SELECT source, n * 2 AS twice FROM base
"""
TYPO = """/* headwater
kind = "full"
schedul = "@daily"
*/
SELECT 1 AS one
"""


@pytest.fixture(scope="module")
def postgres() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


def _commit(project: Project, users: list[str]) -> None:
    """Events committed straight into the store, before the server starts."""
    now = datetime.now(UTC)
    rows = [
        {
            "message_id": uuid.uuid4().hex,
            "source": "web",
            "type": "track",
            "event": "Viewed",
            "user_id": user,
            "timestamp": YESTERDAY,
            "original_timestamp": YESTERDAY,
            "received_at": now - timedelta(minutes=5),
            "properties": "{}",
        }
        for user in users
    ]
    engine = DuckDBEngine.open(project.data_dir / "events.duckdb")
    try:
        events = pa.Table.from_pylist(rows, schema=schema.EVENTS)
        engine.ingest(IngestBatch(events, schema.FAILED_EVENTS.empty_table()))
    finally:
        engine.close()


def _events(project: Project, server: Server, users: list[str]) -> None:
    batch = [
        {
            "type": "track",
            "event": "Viewed",
            "userId": user,
            "messageId": uuid.uuid4().hex,
            "timestamp": YESTERDAY.isoformat(),
        }
        for user in users
    ]
    answer = server.post("/v1/batch", json={"batch": batch}, auth=(project.key, ""))
    assert answer.status_code == 200, answer.text


@pytest.mark.timeout(180)
def test_a_broken_file_stops_only_itself_and_its_readers(
    project: Project, postgres: PostgresServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    url = postgres.create_database(f"t_{uuid.uuid4().hex[:12]}")
    monkeypatch.setenv("RECS_URL", url)
    folder = project.root / "pipelines"
    for path in folder.iterdir():
        path.unlink()
    files = {"daily": DAILY, "profiles": PROFILES, "base": BASE, "base_reader": BASE_READER}
    for name, text in files.items():
        (folder / f"{name}.sql").write_text(text)
    toml = project.root / "headwater.toml"
    toml.write_text(re.sub(r"(?m)^tick_seconds = \S+", "tick_seconds = 0.5", toml.read_text()))
    project.configure(
        '[sinks.recs]\ntype = "postgres"\nurl = "${RECS_URL}"\nserve = true\n'
        "[delivery]\npoll_seconds = 0.2\n"
    )
    added = run_cli(
        project, "consumers", "add", "reader", "--datasets", "daily,profiles,base,base_reader"
    )
    [token] = TOKEN.findall(added.stdout)
    auth = {"Authorization": f"Bearer {token}"}

    _commit(project, ["u1", "u2", "u3"])
    server = Server(project).start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as http:
            _break_and_fix(project, server, http, auth)
    finally:
        code = server.stop()
    assert code == 0, server.log.read_text()
    log = server.log.read_text()
    assert log.count("pipeline base does not load") == 1, log  # said once, not every tick


def _break_and_fix(
    project: Project, server: Server, http: httpx.Client, auth: dict[str, str]
) -> None:
    folder = project.root / "pipelines"

    def rows(dataset: str) -> list[dict[str, object]]:
        answer = http.get(f"/api/v1/datasets/{dataset}/rows", headers=auth)
        return answer.json()["rows"] if answer.status_code == 200 else []

    def daily_events() -> int:
        return sum(int(str(r["events"])) for r in rows("daily"))

    def detail() -> str:
        return server.log.read_text()

    wait_for("the first runs", lambda: daily_events() == 3, 60, detail=detail)
    wait_for("base and its reader", lambda: rows("base_reader") and rows("base"), 30)
    wait_for(
        "profiles in PostgreSQL",
        lambda: http.get("/api/v1/datasets/profiles/rows/u1", headers=auth).status_code == 200,
        30,
        detail=detail,
    )

    # Break one file's SQL and add one with a header typo, while the server runs.
    (folder / "base.sql").write_text(BASE_BROKEN)
    (folder / "typo.sql").write_text(TYPO)

    ready = wait_for(
        "/readyz to name the broken files",
        lambda: (r := http.get("/readyz").json()).get("pipelines_broken") and r,
        30,
    )
    broken = ready["pipelines_broken"]
    assert sorted(broken) == ["base", "base_reader", "typo"], broken
    assert "does not parse" in broken["base"]["error"], broken
    assert broken["base_reader"]["waits_for"] == "base", broken
    assert "unknown header key `schedul`" in broken["typo"]["error"], broken
    assert http.get("/readyz").status_code == 200  # still takes events

    metrics = http.get("/metrics").text
    assert 'headwater_pipeline_broken{pipeline="base",reason="does_not_load"} 1.0' in metrics
    assert 'headwater_pipeline_broken{pipeline="base_reader",reason="waits"} 1.0' in metrics

    # The other pipelines keep running: late events re-run their day.
    _events(project, server, ["u4", "u5"])
    wait_for("the late events' day to re-run", lambda: daily_events() == 5, 60, detail=detail)
    # Every dataset is still served, the broken one's last output included.
    assert {r["user_id"] for r in rows("profiles")} >= {"u1", "u2", "u3"}
    assert rows("base"), "the last good output of base is no longer served"
    assert rows("base_reader")

    # The CLI answers for the others and names the broken ones.
    status = run_cli(project, "status").stdout
    assert "base does not load: the SQL does not parse: Expecting )" in status, status
    assert f"  --> {folder / 'base.sql'}:6:16" in status, status
    assert "   6 |        COUNT(* AS n" in status, status
    caret = status.splitlines()[status.splitlines().index("   6 |        COUNT(* AS n") + 1]
    assert caret.rstrip() == "     |" + " " * len("        COUNT(* ") + "^", caret
    assert "typo does not load: unknown header key `schedul`" in status, status
    assert "   3 | schedul" in status, status
    assert "base_reader does not run until base loads" in status, status
    assert re.search(r"│ daily\s+│ incremental", status), status
    listed = run_cli(project, "pipelines").stdout
    assert re.search(r"│ daily\s+│ sql", listed), listed
    assert re.search(r"│ base\s+│ sql\s+│ broken", listed), listed
    rendered = run_cli(project, "render", "daily").stdout
    assert "COUNT(*)" in rendered
    refused = run_cli(project, "run", "base", check=False)
    assert refused.returncode != 0
    assert "does not parse" in refused.stdout + refused.stderr
    due = run_cli(project, "run", "--due", check=False)
    assert due.returncode == 1, due.stdout + due.stderr
    assert "base does not load" in due.stdout, due.stdout
    assert "base_reader does not run until base loads" in due.stdout, due.stdout

    # Fixed, it runs again; its reader with it.
    (folder / "base.sql").write_text(BASE.replace("COUNT(*) AS n", "COUNT(*) + 0 AS n"))
    (folder / "typo.sql").unlink()
    wait_for(
        "/readyz to clear",
        lambda: "pipelines_broken" not in http.get("/readyz").json(),
        30,
    )
    assert "does not load" not in run_cli(project, "status").stdout


def test_excerpt_points_at_the_column(tmp_path: Path) -> None:
    from headwater.process.errors import PipelineError
    from headwater.process.graph import load_graph

    (tmp_path / "a.sql").write_text("SELECT a,\n  FROM WHERE x\n")
    (tmp_path / "b.sql").write_text("SELECT 1 AS one\n")
    graph = load_graph(tmp_path, "bigquery")
    assert list(graph.pipelines) == ["b"]
    error = graph.broken["a"].error
    assert isinstance(error, PipelineError)
    assert (error.line, error.column) == (2, 8)
    assert error.excerpt() == "   2 |   FROM WHERE x\n     |        ^"
    assert json.dumps(str(error))  # plain text, for JSON answers
