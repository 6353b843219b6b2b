"""Erasure end to end: real ``headwater`` processes, a real DuckDB store, a real PostgreSQL
sink (tests/pg.py), a real webhook receiver on loopback and a Parquet files sink.

A person has events over three days in two sources, and a failed event; they flow into
an aggregate (daily counts by source, no person column) and a per-user pipeline that
declares ``person = ["user_id"]`` and is delivered to files, PostgreSQL and a webhook.
After ``headwater erase`` no table of the store, no delivered file and no PostgreSQL
table holds the person's id; the aggregate equals the same query over the events left;
the webhook got a signed deletion notice; the receipt (read from the metadata database)
lists every place with its rows.
"""

from __future__ import annotations

import json
import os
import re
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import httpx
import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from psycopg import sql

from headwater.collect.suppress import id_hash
from headwater.store import schema
from headwater.store.duckdb import DuckDBEngine
from headwater.store.engine import IngestBatch
from tests.conftest import HEADWATER, Project, Server, run_cli, wait_for
from tests.deliver.receiver import Receiver

SECRET = "whsec_erasure_test_91ab"
PERSON = "u-erase-7f3c"
ANONYMOUS = "anon-erase-2b9d"
OTHERS = ("u-keep-1", "u-keep-2")
DAY = timedelta(days=1)

AGGREGATE = """/* headwater
schedule = "@daily"
kind = "incremental"
time_column = "day"
key = ["day", "source"]
sinks = ["files"]
*/
SELECT TIMESTAMP_TRUNC(received_at, DAY) AS day, source, COUNT(*) AS events,
  COUNT(DISTINCT COALESCE(user_id, anonymous_id)) AS people
FROM events WHERE received_at >= @start AND received_at < @end
GROUP BY day, source
"""

PER_USER = """/* headwater
schedule = "@daily"
kind = "incremental"
time_column = "day"
key = ["day", "user_id"]
person = ["user_id"]
sinks = ["files", "pg", "hook"]
*/
SELECT TIMESTAMP_TRUNC(received_at, DAY) AS day, user_id, COUNT(*) AS events
FROM events WHERE received_at >= @start AND received_at < @end AND user_id IS NOT NULL
GROUP BY day, user_id
"""

AGGREGATE_SQL = """SELECT date_trunc('day', received_at) AS day, source, COUNT(*) AS events,
  COUNT(DISTINCT COALESCE(user_id, anonymous_id)) AS people
FROM events GROUP BY ALL ORDER BY day, source"""


# -- the project ------------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver(SECRET) as running:
        yield running


@pytest.fixture
def governed(
    project: Project, pg_url: str, receiver: Receiver, monkeypatch: pytest.MonkeyPatch
) -> Project:
    """The project with the two pipelines, three sinks, and a person's history."""
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    monkeypatch.setenv("PG_URL", pg_url)
    for path in (project.root / "pipelines").iterdir():
        path.unlink()
    (project.root / "pipelines" / "daily_counts.sql").write_text(AGGREGATE)
    (project.root / "pipelines" / "per_user.sql").write_text(PER_USER)
    project.configure(
        "\n".join(
            [
                "[delivery]",
                'allow_hosts = ["localhost"]',
                "poll_seconds = 0.1",
                "",
                "[sinks.pg]",
                'type = "postgres"',
                'url = "${PG_URL}"',
                "",
                "[sinks.hook]",
                'type = "webhook"',
                f'url = "{receiver.url("/hook")}"',
                'secret = "${HOOK_SECRET}"',
                "timeout_seconds = 3",
                "backoff_seconds = 0.05",
                "max_backoff_seconds = 0.2",
            ]
        )
        + "\n"
    )
    path = project.root / "headwater.toml"
    path.write_text(
        path.read_text().replace("tick_seconds = 10", "tick_seconds = 0.2\nlease_seconds = 3")
    )
    _history(project)
    run_cli(project, "run", "--due")
    # Delivered, before anything is erased: the person is everywhere.
    assert PERSON in _pg_text(pg_url)
    assert any(PERSON in json.dumps(r.payload) for r in receiver.snapshot())
    assert any(PERSON in text for text in _file_texts(project))
    return project


def _today() -> datetime:
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _event(
    n: int, source: str, user: str | None, anonymous: str | None, at: datetime
) -> dict[str, Any]:
    return {
        "message_id": f"m{n}", "source": source, "type": "track", "event": "Page Viewed",
        "user_id": user, "anonymous_id": anonymous, "timestamp": at, "original_timestamp": at,
        "received_at": at, "properties": json.dumps({"path": f"/p/{n}"}),
    }  # fmt: skip


def _history(project: Project) -> None:
    """Three days: the person in both sources (and once only by anonymous id), others too,
    and a failed event whose payload holds the person's id."""
    start = _today() - 3 * DAY
    rows = []
    n = 0
    for day in range(3):
        for source in ("web", "app"):
            for hour in (2, 9):
                at = start + day * DAY + timedelta(hours=hour)
                n += 1
                rows.append(_event(n, source, PERSON, ANONYMOUS, at))
                for other in OTHERS:
                    n += 1
                    rows.append(_event(n, source, other, None, at + timedelta(minutes=5)))
    n += 1
    rows.append(_event(n, "web", None, ANONYMOUS, start + timedelta(hours=12)))
    failed = [
        {"id": "f-person", "source": "web", "received_at": start + timedelta(hours=3),
         "code": "missing_field", "field": "event", "message": "track needs an event name",
         "payload": json.dumps({"type": "track", "userID": PERSON, "properties": {}})},
        {"id": "f-other", "source": "web", "received_at": start + timedelta(hours=3),
         "code": "missing_field", "field": "event", "message": "track needs an event name",
         "payload": json.dumps({"type": "track", "userId": OTHERS[0]})},
        # Bodies that did not parse: kept as a JSON string of their text.
        {"id": "f-person-text", "source": "web", "received_at": start + timedelta(hours=4),
         "code": "malformed_json", "message": "the body is not JSON",
         "payload": json.dumps(f'{{not json "{PERSON}" ')},
        {"id": "f-other-text", "source": "web", "received_at": start + timedelta(hours=4),
         "code": "malformed_json", "message": "the body is not JSON",
         "payload": json.dumps(f'{{not json "{OTHERS[0]}" ')},
    ]  # fmt: skip
    engine = DuckDBEngine.open(project.data_dir / "events.duckdb")
    try:
        engine.ingest(
            IngestBatch(
                pa.Table.from_pylist(rows, schema=schema.EVENTS),
                pa.Table.from_pylist(failed, schema=schema.FAILED_EVENTS),
            )
        )
    finally:
        engine.close()


# -- what is where ----------------------------------------------------------------------


def _store_hits(
    project: Project,
    needle: str,
    expected: frozenset[str] = frozenset({"events", "failed_events", "per_user", "daily_counts"}),
) -> dict[str, int]:
    """Rows of every table of the store (Headwater's own included) with ``needle`` in any
    column, read with DuckDB itself (``expected`` among the tables)."""
    hits: dict[str, int] = {}
    with closing(duckdb.connect(str(project.data_dir / "events.duckdb"), read_only=True)) as db:
        tables = [row[0] for row in db.execute(
            "SELECT table_name FROM information_schema.tables"
        ).fetchall()]  # fmt: skip
        assert expected <= set(tables)
        for table in tables:
            rows = db.execute(f'SELECT * FROM "{table}"').fetchall()
            count = sum(needle in json.dumps(row, default=str) for row in rows)
            if count:
                hits[table] = count
    return hits


def _file_texts(project: Project) -> list[str]:
    """Every delivered Parquet file, each as the JSON of its rows."""
    found = sorted((project.root / "exports").rglob("*.parquet"))
    assert found
    return [json.dumps(pq.read_table(p).to_pylist(), default=str) for p in found]


def _pg_text(url: str) -> str:
    """Every row of every table of the sink's database, as text."""
    with psycopg.connect(url, autocommit=True) as con:
        tables = con.execute(
            "SELECT table_schema, table_name FROM information_schema.tables "
            "WHERE table_schema NOT IN ('pg_catalog', 'information_schema')"
        ).fetchall()
        assert tables
        return "\n".join(
            str(row)
            for s, t in tables
            for row in con.execute(sql.SQL("SELECT * FROM {}").format(sql.Identifier(s, t)))
        )


def _places(project: Project, erasure_id: int = 1) -> dict[str, dict[str, Any]]:
    path = project.data_dir / "metadata.sqlite"
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        db.row_factory = sqlite3.Row
        rows = db.execute(
            "SELECT * FROM erasure_places WHERE erasure_id = ? ORDER BY seq", [erasure_id]
        ).fetchall()
    return {row["place"]: dict(row) for row in rows}


def _erasure(project: Project, erasure_id: int = 1) -> dict[str, Any]:
    path = project.data_dir / "metadata.sqlite"
    with closing(sqlite3.connect(f"file:{path}?mode=ro", uri=True)) as db:
        db.row_factory = sqlite3.Row
        row = db.execute("SELECT * FROM erasures WHERE id = ?", [erasure_id]).fetchone()
    assert row is not None
    return dict(row)


def _nowhere(project: Project, pg_url: str) -> None:
    metadata = [p.read_bytes() for p in project.data_dir.glob("metadata.sqlite*")]
    assert metadata, sorted(project.data_dir.iterdir())
    for needle in (PERSON, ANONYMOUS):
        assert _store_hits(project, needle) == {}
        # Not in the run-state database, its free space or its log: only hashes stay.
        assert not [m for m in metadata if needle.encode() in m]
        assert not [t for t in _file_texts(project) if needle in t]
        assert needle not in _pg_text(pg_url)


def _notices(receiver: Receiver) -> list[Any]:
    return [r for r in receiver.snapshot() if (r.payload or {}).get("type") == "erasure"]


# -- the tests --------------------------------------------------------------------------


def test_erase_removes_the_person_everywhere_and_keeps_a_receipt(
    governed: Project, pg_url: str, receiver: Receiver
) -> None:
    project = governed
    others_before = _store_hits(project, OTHERS[0])

    out = run_cli(project, "erase", "--user-id", PERSON, "--anonymous-id", ANONYMOUS).stdout
    assert "Erasure 1 " in out, out
    assert ": done" in out, out

    _nowhere(project, pg_url)
    # Nobody else lost a row: the other person is where they were.
    assert _store_hits(project, OTHERS[0]) == others_before

    # The aggregate is what its query gives over the events left, in the store and in
    # its delivered files (recomputed, then delivered again).
    expected = project.query(AGGREGATE_SQL).to_pylist()
    stored = project.query(
        "SELECT day, source, events, people FROM daily_counts ORDER BY day, source"
    ).to_pylist()
    assert stored == expected
    assert sum(r["people"] for r in expected) == 3 * 2 * len(OTHERS)
    delivered = pa.concat_tables(
        [
            pq.read_table(p)
            for p in sorted((project.root / "exports" / "daily_counts").glob("*.parquet"))
        ]
    )
    assert sorted(
        map(json.dumps, delivered.select(["source", "events", "people"]).to_pylist())
    ) == sorted(json.dumps({k: r[k] for k in ("source", "events", "people")}) for r in expected)

    # The webhook got one signed notice naming the ids by person column.
    notices = _notices(receiver)
    assert len(notices) == 1
    notice = notices[0]
    assert notice.signature_ok, notice.signature_error
    assert notice.key
    assert notice.payload["erasure"] == 1
    assert notice.payload["pipeline"] == "per_user"
    assert notice.payload["sink"] == "hook"
    assert sorted(notice.payload["ids"]["user_id"]) == sorted([ANONYMOUS, PERSON])

    # The receipt: every place, done, with its rows.
    places = _places(project)
    assert {name: (p["status"], p["rows"]) for name, p in places.items()} == {
        "events@store": ("done", 3 * 2 * 2 + 1),
        "failed_events@store": ("done", 2),
        "output:per_user": ("done", 3),
        "recompute:daily_counts": ("done", 3),
        "sink:files:per_user": ("done", 3),
        "sink:pg:per_user": ("done", 3),
        "sink:hook:per_user": ("done", 2),
    }
    assert all(p["done_at"] for p in places.values())
    rewritten = json.loads(places["sink:files:per_user"]["detail"])["files"]
    assert sorted(Path(f).name for f in rewritten) == sorted(
        p.name for p in (project.root / "exports" / "per_user").glob("*.parquet")
    )
    assert len(rewritten) == 3
    erasure = _erasure(project)
    assert erasure["status"] == "done"
    assert erasure["finished_at"]
    # Done everywhere: the raw ids are gone, their hashes kept.
    assert erasure["ids"] is None
    assert id_hash("user_id", PERSON) in erasure["hashes"]
    shown = run_cli(project, "erase", "--receipt", "1").stdout
    assert "sink:pg:per_user" in shown
    assert f"rewrote {rewritten[0]}" in shown

    # Erasing again finds nothing more (a new erasure, every place 0 rows but the notice).
    run_cli(project, "erase", "--user-id", PERSON)
    again = _places(project, 2)
    assert all(p["status"] == "done" for p in again.values())
    assert again["events@store"]["rows"] == 0


def test_a_sink_down_keeps_the_erasure_owed_until_the_server_delivers_it(
    governed: Project, pg_url: str, receiver: Receiver
) -> None:
    project = governed
    receiver.stop()
    failed = run_cli(
        project, "erase", "--user-id", PERSON, "--anonymous-id", ANONYMOUS, check=False
    )
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert "Still owed: sink:hook:per_user" in failed.stdout
    places = _places(project)
    assert places["sink:hook:per_user"]["status"] == "pending"
    assert places["sink:hook:per_user"]["attempts"] == 1
    assert places["sink:hook:per_user"]["last_error"]
    assert places["sink:pg:per_user"]["status"] == "done"
    assert _erasure(project)["ids"] is not None  # still needed to tell the webhook
    status = run_cli(project, "status").stdout
    assert "Erasure 1 still owes sink:hook:per_user" in status

    receiver.start()
    server = Server(project).start()
    try:
        wait_for(
            "the owed notice", lambda: _erasure(project)["status"] == "done" or None, timeout=30
        )
    finally:
        server.stop()
    assert _places(project)["sink:hook:per_user"]["status"] == "done"
    assert len(_notices(receiver)) == 1
    assert _notices(receiver)[0].signature_ok
    _nowhere(project, pg_url)


def test_sigkill_in_the_middle_and_a_rerun_completes_it(governed: Project, pg_url: str) -> None:
    project = governed
    env = {**os.environ, "COLUMNS": "3000"}
    args = [*HEADWATER, "--project", str(project.root), "erase", "--user-id", PERSON,
            "--anonymous-id", ANONYMOUS]  # fmt: skip
    # The PostgreSQL sink's table is locked: the erasure stops there, with the store's
    # places done, and is killed while it waits.
    with psycopg.connect(pg_url) as holder:
        holder.execute("LOCK TABLE public.per_user IN ACCESS EXCLUSIVE MODE")
        child = subprocess.Popen(
            args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        try:
            wait_for(
                "the erasure to wait on the lock",
                lambda: _waiting_delete(pg_url) or None,
                timeout=60,
            )
            assert _places(project)["output:per_user"]["status"] == "done"
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=30)
        finally:
            if child.poll() is None:
                child.kill()
        holder.rollback()
    places = _places(project)
    assert places["sink:pg:per_user"]["status"] == "pending"
    assert places["sink:hook:per_user"]["status"] == "pending"
    assert _erasure(project)["status"] == "pending"

    out = run_cli(project, *args[len(HEADWATER) + 2 :]).stdout
    assert "Erasure 1 " in out, out
    assert ": done" in out, out
    assert all(p["status"] == "done" for p in _places(project).values())
    assert _erasure(project)["status"] == "done"
    _nowhere(project, pg_url)


def _waiting_delete(url: str) -> bool:
    with psycopg.connect(url, autocommit=True) as con:
        row = con.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock' "
            "AND query LIKE 'DELETE%'"
        ).fetchone()
    return bool(row and row[0])


def test_new_events_of_an_erased_id_are_dropped_until_lifted(governed: Project) -> None:
    project = governed
    run_cli(project, "erase", "--user-id", PERSON)
    server = Server(project).start()
    try:

        def track(user: str, message: str) -> httpx.Response:
            return server.post(
                "/v1/track", auth=(project.key, ""),
                json={"userId": user, "event": "Came Back", "messageId": message},
            )  # fmt: skip

        # Sent at once: the list is read before the collector takes its first request.
        answer = track(PERSON, "after-1")
        assert answer.status_code == 200
        assert answer.json()["accepted"] == 1
        assert track(OTHERS[0], "after-2").status_code == 200
        stored = project.query("SELECT user_id FROM events WHERE message_id LIKE 'after-%'")
        assert stored.column("user_id").to_pylist() == [OTHERS[0]]
        # Refused events are not kept for the person either: one refused in a batch (an
        # event without its name), and a whole body refused (two batch keys).
        for user in (PERSON, OTHERS[1]):
            bad = {"type": "track", "userId": user, "messageId": f"bad-{user}"}
            answer = server.post("/v1/batch", auth=(project.key, ""), json={"batch": [bad]})
            assert answer.json()["rejected"], answer.text
            body = json.dumps({"batch": [bad], "context": {"traits": {"id": user}}})
            answer = server.post(
                "/v1/batch", auth=(project.key, ""),
                content=body[:-1] + ', "batch": []}',
            )  # fmt: skip
            assert answer.status_code == 400, answer.text
        failed = project.query("SELECT payload::VARCHAR AS p FROM failed_events")
        payloads = failed.column("p").to_pylist()
        assert not [p for p in payloads if PERSON in p], payloads
        assert len([p for p in payloads if OTHERS[1] in p]) == 2, payloads
        with server.client() as client:
            metrics = client.get("/metrics").text
        assert re.search(r"^headwater_events_suppressed_total 3\.0$", metrics, re.M), metrics
        wait_for(
            "the dropped events counted",
            lambda: "3 new event(s) of them dropped" in run_cli(project, "status").stdout or None,
        )
        run_cli(project, "erase", "--lift", "--user-id", PERSON)
        # The collector takes the changed list at its next look (every 2 seconds).
        wait_for(
            "the lifted id stored again",
            lambda: (
                (
                    track(PERSON, f"after-lift-{time.monotonic_ns()}").status_code == 200
                    and project.query("SELECT count(*) AS n FROM events WHERE user_id = ?", PERSON)
                    .column("n")[0]
                    .as_py()
                )
                or None
            ),
        )
    finally:
        server.stop()


def test_the_api_needs_an_admin_token(governed: Project, pg_url: str) -> None:
    project = governed
    admin = re.search(r"hw_at_[A-Za-z0-9_-]+", run_cli(project, "admins", "add", "dpo").stdout)
    consumer = re.search(
        r"hw_ct_[A-Za-z0-9_-]+",
        run_cli(project, "consumers", "add", "crm", "--datasets", "per_user").stdout,
    )
    assert admin
    assert consumer
    server = Server(project).start()
    try:
        body = {"user_ids": [PERSON], "anonymous_ids": [ANONYMOUS]}
        assert server.post("/api/v1/erasures", json=body).status_code == 401
        refused = server.post("/api/v1/erasures", json=body,
                              headers={"authorization": f"Bearer {consumer.group(0)}"})  # fmt: skip
        assert refused.status_code == 401, refused.text
        assert refused.json()["error"]["code"] == "unknown_token"
        still = project.query("SELECT count(*) AS n FROM events WHERE user_id = ?", PERSON)
        assert still.column("n")[0].as_py() == 12  # nothing was erased
        bearer = {"authorization": f"Bearer {admin.group(0)}"}
        for nobody in ({}, {"user_ids": []}, {"user_ids": [""], "anonymous_ids": [""]}):
            empty = server.post("/api/v1/erasures", json=nobody, headers=bearer)
            assert empty.status_code == 400, empty.text
            assert empty.json()["error"]["code"] == "no_ids"
        done = server.post("/api/v1/erasures", json=body, headers=bearer)
        assert done.status_code == 200, done.text
        receipt = done.json()
        assert receipt["requested_by"] == "admin:dpo"
        assert receipt["status"] == "done"
        assert receipt["pending"] == []
        assert {p["place"] for p in receipt["places"]} >= {"events@store", "sink:hook:per_user"}
        with server.client() as client:
            read = client.get(f"/api/v1/erasures/{receipt['id']}", headers=bearer)
            assert read.status_code == 200
            assert read.json()["id"] == receipt["id"]
            assert client.get(f"/api/v1/erasures/{receipt['id']}").status_code == 401
            assert client.get("/api/v1/erasures/999", headers=bearer).status_code == 404
    finally:
        server.stop()
    _nowhere(project, pg_url)


def test_status_flags_a_pipeline_that_outputs_ids_without_declaring_them(
    governed: Project,
) -> None:
    project = governed
    (project.root / "pipelines" / "leaky.sql").write_text(
        "SELECT user_id, COUNT(*) AS n FROM per_user GROUP BY user_id\n"
    )
    (project.root / "pipelines" / "totals.sql").write_text(
        "SELECT COUNT(*) AS n FROM daily_counts\n"
    )
    out = run_cli(project, "status").stdout
    assert "leaky reads person data and outputs user_id without declaring them" in out
    assert "totals reads" not in out  # an aggregate
    assert "daily_counts reads" not in out


def test_an_ids_file(tmp_path: Path) -> None:
    from headwater.cli.governance import read_ids

    path = tmp_path / "ids.txt"
    path.write_text(f"# to erase\n{PERSON}\n\nanonymous_id:{ANONYMOUS}\n  u-3  \n")
    assert read_ids(path) == ([PERSON, "u-3"], [ANONYMOUS])


def test_an_erasure_is_refused_while_a_pipeline_with_a_table_does_not_load(
    governed: Project,
) -> None:
    project = governed
    (project.root / "pipelines" / "per_user.sql").write_text("SELEC user_id FROM events\n")
    refused = run_cli(project, "erase", "--user-id", PERSON, check=False)
    assert refused.returncode == 1
    assert "per_user do not load" in refused.stderr
    assert "headwater validate" in refused.stderr
    # Nothing was planned, recorded or deleted.
    still = project.query("SELECT count(*) AS n FROM events WHERE user_id = ?", PERSON)
    assert still.column("n")[0].as_py() == 12
    (project.root / "pipelines" / "per_user.sql").write_text(PER_USER)
    run_cli(project, "erase", "--user-id", PERSON)
    assert _erasure(project)["status"] == "done"


def test_an_interval_retention_retired_is_not_recomputed(project: Project) -> None:
    """The person's oldest day is below the aggregate's ``retain``: its rows are dropped
    already and a run of it is refused, so the erasure leaves it out and finishes."""
    for path in (project.root / "pipelines").iterdir():
        path.unlink()
    pipeline = project.root / "pipelines" / "daily_counts.sql"
    pipeline.write_text(AGGREGATE.replace('sinks = ["files"]\n', ""))
    _history(project)
    run_cli(project, "run", "--due")
    # Kept two days from now on: the first of the three days is retired.
    pipeline.write_text(AGGREGATE.replace('sinks = ["files"]', 'retain = "2d"'))
    out = run_cli(project, "erase", "--user-id", PERSON, "--anonymous-id", ANONYMOUS).stdout
    assert ": done" in out, out
    places = _places(project)
    assert {name: p["status"] for name, p in places.items()} == {
        "events@store": "done",
        "failed_events@store": "done",
        "recompute:daily_counts": "done",
    }
    first = (_today() - 3 * DAY).isoformat()
    planned = json.loads(places["recompute:daily_counts"]["detail"])["intervals"]
    assert [start for start, _ in planned] == [
        (_today() - 2 * DAY).isoformat(),
        (_today() - DAY).isoformat(),
    ]
    assert first not in json.dumps(planned)
    assert places["recompute:daily_counts"]["rows"] == 2


def test_a_misspelt_person_column_fails_the_erasure_until_it_is_fixed(
    governed: Project, pg_url: str
) -> None:
    project = governed
    path = project.root / "pipelines" / "per_user.sql"
    path.write_text(PER_USER.replace('person = ["user_id"]', 'person = ["user_idd"]'))
    failed = run_cli(
        project, "erase", "--user-id", PERSON, "--anonymous-id", ANONYMOUS, check=False
    )
    assert failed.returncode == 1
    assert "Still owed: output:per_user" in failed.stdout, failed.stdout
    places = _places(project)
    place = places["output:per_user"]
    assert place["status"] != "done"
    assert "per_user has no column user_idd" in place["last_error"]
    assert "day, events, user_id" in place["last_error"]
    assert _erasure(project)["status"] != "done"
    # The person's rows are all still there, and the receipt says so.
    assert _store_hits(project, PERSON)["per_user"] == 3

    path.write_text(PER_USER)
    run_cli(project, "erase", "--user-id", PERSON, "--anonymous-id", ANONYMOUS)
    assert _erasure(project)["status"] == "done"
    _nowhere(project, pg_url)


def test_alias_events_naming_the_person_as_previous_id_are_erased(
    project: Project,
) -> None:
    """An alias's ``previous_id`` is the person's earlier id (user or anonymous): those
    events go too, and their days are recomputed."""
    for path in (project.root / "pipelines").iterdir():
        path.unlink()
    (project.root / "pipelines" / "daily_counts.sql").write_text(
        AGGREGATE.replace('sinks = ["files"]\n', "")
    )
    _history(project)
    at = _today() - DAY + timedelta(hours=20)
    aliases = [
        {**_event(900, "web", "u-new-1", None, at), "type": "alias", "event": None,
         "previous_id": PERSON},
        {**_event(901, "web", "u-new-2", None, at), "type": "alias", "event": None,
         "previous_id": ANONYMOUS},
        {**_event(902, "web", OTHERS[0], None, at), "type": "alias", "event": None,
         "previous_id": "anon-someone-else"},
    ]  # fmt: skip
    engine = DuckDBEngine.open(project.data_dir / "events.duckdb")
    try:
        engine.ingest(
            IngestBatch(
                pa.Table.from_pylist(aliases, schema=schema.EVENTS),
                schema.FAILED_EVENTS.empty_table(),
            )
        )
    finally:
        engine.close()
    run_cli(project, "run", "--due")

    run_cli(project, "erase", "--user-id", PERSON, "--anonymous-id", ANONYMOUS)
    places = _places(project)
    assert places["events@store"]["rows"] == 3 * 2 * 2 + 1 + 2
    left = project.query("SELECT user_id FROM events WHERE type = 'alias'")
    assert left.column("user_id").to_pylist() == [OTHERS[0]]
    for needle in (PERSON, ANONYMOUS):
        assert _store_hits(project, needle, frozenset({"events", "daily_counts"})) == {}
    expected = project.query(AGGREGATE_SQL).to_pylist()
    stored = project.query(
        "SELECT day, source, events, people FROM daily_counts ORDER BY day, source"
    ).to_pylist()
    assert stored == expected


#: Ids as JSON encoders write them: escaped to ASCII, a slash escaped (PHP), in a body
#: that parsed and in one that did not (kept as a JSON string of its text).
ESCAPED_BODIES = [
    ("f-json-u", "ünï", '{"type": "track", "userId": "\\u00fcn\\u00ef"}'),
    ("f-json-slash", "a/b", '{"type": "track", "userId": "a\\/b"}'),
    ("f-text-u", "ünï", json.dumps('{"userId": "\\u00fcn\\u00ef", not json')),
    ("f-text-slash", "a/b", json.dumps('{"userId": "a\\/b" not json')),
    ("f-raw-u", "ünï", json.dumps('{"userId": "ünï", not json')),
    ("f-other", "ünï-2", '{"type": "track", "userId": "\\u00fcn\\u00ef-2"}'),
]


def test_failed_events_are_found_however_the_id_was_escaped(tmp_path: Path) -> None:
    from headwater.runtime.erasure import failed_rows

    at = datetime(2026, 11, 2, tzinfo=UTC)
    rows = [
        {"id": row_id, "source": "web", "received_at": at, "code": "malformed_json",
         "message": "x", "payload": payload}
        for row_id, _, payload in ESCAPED_BODIES
    ]  # fmt: skip
    engine = DuckDBEngine.open(tmp_path / "events.duckdb")
    try:
        engine.ingest(
            IngestBatch(
                pa.Table.from_pylist([], schema=schema.EVENTS),
                pa.Table.from_pylist(rows, schema=schema.FAILED_EVENTS),
            )
        )
        assert failed_rows(engine, ["ünï", "a/b"]) == sorted(
            row_id for row_id, person, _ in ESCAPED_BODIES if person in ("ünï", "a/b")
        )
        assert failed_rows(engine, ["ünï-2"]) == ["f-other"]
    finally:
        engine.close()
