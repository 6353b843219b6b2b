"""``headwater failed`` and ``headwater failed replay`` on the embedded store: events a real
server refused, grouped, fixed by a SQL expression and replayed once, through the running
server's control socket and without a server."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import pyarrow as pa
import pytest

from headwater.runtime.failed import ReplayError, expression
from headwater.store import schema
from headwater.store.duckdb import DuckDBEngine
from headwater.store.engine import IngestBatch
from tests.conftest import Project, Server

#: The misnamed field: ``user_id`` where Segment's spec says ``userId``.
FIX = """REPLACE(payload, '"user_id"', '"userId"')"""

BATCH = {
    "batch": [
        {"type": "track", "event": "Signed Up", "userId": "u1", "messageId": "good-1"},
        {"type": "track", "event": "Signed Up", "user_id": "u2", "messageId": "misnamed-1"},
        # No messageId: the replay derives one from the failed event, so it is stable.
        {"type": "track", "event": "Signed Up", "user_id": "u3"},
        # Broken in another way too: the fix cannot help it.
        {"type": "track", "user_id": "u4", "messageId": "no-name-1"},
    ]
}


def _send(server: Server, project: Project) -> datetime:
    """The batch, posted to the running server; when it was sent."""
    sent = datetime.now(UTC)
    answer = server.post("/v1/batch", json=BATCH, auth=(project.key, ""))
    assert answer.status_code == 200, answer.text
    codes = [(r["index"], r["code"], r["field"]) for r in answer.json()["rejected"]]
    assert codes == [
        (1, "missing_identity", "userId"),
        (2, "missing_identity", "userId"),
        (3, "missing_identity", "userId"),
    ]
    return sent


def _json(project: Project, *args: str, code: int = 0) -> Any:
    result = project.cli(*args, "--json", check=False)
    assert result.returncode == code, result.stdout + result.stderr
    return json.loads(result.stdout)


def _events(project: Project) -> list[dict[str, Any]]:
    return project.query(
        "SELECT message_id, user_id, received_at, first_received_at FROM events ORDER BY message_id"
    ).to_pylist()


def _failed(project: Project) -> list[dict[str, Any]]:
    return project.query(
        "SELECT id, code, received_at, replayed_at, payload FROM failed_events ORDER BY payload"
    ).to_pylist()


def _check_replayed(project: Project, sent: datetime) -> None:
    """The two misnamed events are stored once, as first sent, with when they first
    arrived; their failed rows are marked; the third failed event is not."""
    events = {e["user_id"]: e for e in _events(project)}
    assert sorted(events) == ["u1", "u2", "u3"]
    failed = {json.loads(f["payload"])["user_id"]: f for f in _failed(project)}
    for user in ("u2", "u3"):
        event, row = events[user], failed[user]
        assert event["first_received_at"] == row["received_at"]
        assert event["received_at"] > row["received_at"] >= sent.replace(microsecond=0)
        assert row["replayed_at"] == event["received_at"]
    assert events["u1"]["first_received_at"] is None
    assert events["u2"]["message_id"] == "misnamed-1"
    assert events["u3"]["message_id"] == failed["u3"]["id"]
    assert failed["u4"]["replayed_at"] is None


def test_misnamed_field_fixed_and_replayed_once_through_the_server(
    server: Server, project: Project
) -> None:
    sent = _send(server, project)

    groups = _json(project, "failed")
    assert [(g["code"], g["field"], g["source"], g["events"], g["replayed"]) for g in groups] == [
        ("missing_identity", "userId", "web", 3, 0)
    ]
    assert groups[0]["message"] == "the event has neither userId nor anonymousId; set at least one"
    assert '"user_id"' in groups[0]["sample"]
    assert groups[0]["first_received_at"] == groups[0]["last_received_at"]

    preview = _json(project, "failed", "replay", "--fix", FIX, "--dry-run")
    assert (preview["dry_run"], preview["selected"], preview["passed"]) == (True, 3, 2)
    assert preview["stored"] == 0
    [still] = preview["still_failing"]
    assert (still["code"], still["field"], still["events"]) == ("missing_field", "event", 1)
    assert still["message"] == "a track event needs an event name; set event"
    assert '"userId"' in still["sample"]
    assert [e["user_id"] for e in _events(project)] == ["u1"], "a dry run wrote"
    # The text names them too, to replay or inspect by id.
    said = project.cli("failed", "replay", "--fix", FIX, "--dry-run", check=False).stdout
    assert "Still failing" in said, said
    for failed_id in still["ids"]:
        assert failed_id in said.replace("\n", "").replace("│", "").replace(" ", ""), said

    done = _json(project, "failed", "replay", "--fix", FIX, code=1)
    assert (done["dry_run"], done["selected"], done["passed"]) == (False, 3, 2)
    assert (done["stored"], done["duplicates"]) == (2, 0)
    assert [g["code"] for g in done["still_failing"]] == ["missing_field"]
    assert done["still_failing"][0]["ids"] == [
        f["id"] for f in _failed(project) if json.loads(f["payload"])["user_id"] == "u4"
    ]
    _check_replayed(project, sent)

    again = _json(project, "failed", "replay", "--fix", FIX, code=1)
    assert (again["selected"], again["passed"], again["stored"]) == (1, 0, 0)
    _check_replayed(project, sent)
    groups = _json(project, "failed")
    assert [(g["events"], g["replayed"]) for g in groups] == [(3, 2)]


def test_a_replayed_event_of_a_batch_keeps_the_batchs_clock_and_context(
    server: Server, project: Project
) -> None:
    """SDKs send sentAt and the library's context once per batch: a refused event of the
    batch, fixed and replayed alone, is corrected for the sender's clock and carries the
    context as its sibling that was accepted."""
    device = datetime(2020, 1, 1, tzinfo=UTC)  # a device whose clock is years behind
    body = {
        "sentAt": "2020-01-01T00:00:10Z",
        "context": {"library": {"name": "analytics-python", "version": "2.3.3"}},
        "batch": [
            {"type": "track", "event": "E", "userId": "u1", "messageId": "skew-ok",
             "timestamp": "2020-01-01T00:00:00Z", "context": {"page": {"path": "/a"}}},
            {"type": "track", "event": "E", "user_id": "u2", "messageId": "skew-bad",
             "timestamp": "2020-01-01T00:00:00Z", "context": {"page": {"path": "/b"}}},
        ],
    }  # fmt: skip
    answer = server.post("/v1/batch", json=body, auth=(project.key, ""))
    assert answer.status_code == 200, answer.text
    assert [r["index"] for r in answer.json()["rejected"]] == [1]

    done = _json(project, "failed", "replay", "--fix", FIX)
    assert done["stored"] == 1, done
    rows = {
        r["message_id"]: r
        for r in project.query(
            "SELECT message_id, timestamp, received_at, first_received_at, sent_at, context "
            "FROM events ORDER BY message_id"
        ).to_pylist()
    }
    ok, replayed = rows["skew-ok"], rows["skew-bad"]
    # Ten seconds before it reached the collector, as the sender's clock said; not 2020.
    for row in (ok, replayed):
        arrived = row["first_received_at"] or row["received_at"]
        assert row["timestamp"] == arrived - timedelta(seconds=10), row
        assert row["timestamp"] > device + timedelta(days=365)
        assert row["sent_at"] == device + timedelta(seconds=10)
    assert json.loads(replayed["context"]) == {
        "library": {"name": "analytics-python", "version": "2.3.3"},
        "page": {"path": "/b"},
    }
    assert json.loads(ok["context"])["library"] == json.loads(replayed["context"])["library"]


@pytest.mark.parametrize(
    "sent_at", ["0001-01-01T00:00:00+05:00", "9999-12-31T20:00:00-05:00", "2024-01-01T00:00:00"]
)
def test_a_refused_event_keeps_the_batchs_sent_at_as_it_was_written(
    server: Server, project: Project, sent_at: str
) -> None:
    """At either end of the range a sentAt may have no UTC form, and one without an offset
    is UTC (not the server's local time): kept as written, the batch is answered."""
    body = {"sentAt": sent_at, "batch": [{"type": "track", "event": "E", "user_id": "u9"}]}
    answer = server.post("/v1/batch", json=body, auth=(project.key, ""))
    assert answer.status_code == 200, answer.text
    [kept] = [json.loads(f["payload"]) for f in _failed(project)]
    assert kept["sentAt"] == sent_at


def test_replay_without_a_server_and_a_replay_cut_short(server: Server, project: Project) -> None:
    sent = _send(server, project)
    server.stop()

    # --where picks by the row: only the event whose payload names u2.
    only = _json(
        project, "failed", "replay", "--code", "missing_identity",
        "--where", "STRPOS(CAST(payload AS STRING), 'u2') > 0", "--fix", FIX,
    )  # fmt: skip
    assert (only["selected"], only["stored"], only["still_failing"]) == (1, 1, [])
    done = _json(project, "failed", "replay", "--fix", FIX, code=1)
    assert (done["selected"], done["stored"]) == (2, 1)
    _check_replayed(project, sent)

    # A replay whose marks were lost (as if it stopped between storing and marking, which
    # one transaction rules out): the events are there already, and are not stored twice.
    engine = DuckDBEngine.open(project.data_dir / "events.duckdb")
    try:
        engine.execute("UPDATE failed_events SET replayed_at = NULL")
    finally:
        engine.close()
    repeated = _json(project, "failed", "replay", "--code", "missing_identity", "--fix", FIX,
                     code=1)  # fmt: skip
    assert (repeated["passed"], repeated["stored"], repeated["duplicates"]) == (2, 0, 2)
    assert sorted(e["user_id"] for e in _events(project)) == ["u1", "u2", "u3"]


@pytest.mark.parametrize(
    ("option", "text", "says"),
    [
        ("--where", "code = 'x'; DELETE FROM events", "holds 2 statements"),
        ("--where", "(SELECT COUNT(*) FROM events) > 0", "not a query or subquery"),
        ("--where", "EXISTS (SELECT 1 FROM events)", "not a query or subquery"),
        ("--where", "SELECT 1", "not a query or subquery"),
        ("--where", "user_id = 'u2'", "names user_id, which is not a column of failed_events"),
        ("--where", "code = @code", "not a parameter"),
        ("--where", "code = ", "does not parse"),
        ("--fix", "payload; DROP TABLE events", "holds 2 statements"),
        ("--fix", "(SELECT payload FROM failed_events LIMIT 1)", "not a query or subquery"),
        ("--fix", "MIN(payload)", "not an aggregate or window function"),
        ("--code", "x' OR '1'='1", "is not a failed event's code"),
        # Functions that read other tables or files: unknown to sqlglot, or table functions.
        ("--fix", "query_to_xml('select * from events', true, true, '')", "calls query_to_xml"),
        ("--fix", "pg_read_file('/etc/passwd')", "calls pg_read_file"),
        ("--where", "dblink('dbname=x', 'select 1') IS NOT NULL", "calls dblink"),
        ("--fix", "CONCAT(payload, read_csv('/etc/passwd'))", "calls READ_CSV"),
        ("--where", "read_parquet('events.parquet') IS NULL", "calls READ_PARQUET"),
        ("--fix", "CAST(payload AS GEOGRAPHY)", "casts to GEOGRAPHY"),
    ],
)
def test_what_is_not_one_expression_over_the_row_is_refused(
    project: Project, option: str, text: str, says: str
) -> None:
    result = project.cli("failed", "replay", option, text, check=False)
    assert result.returncode == 1
    assert says in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.parametrize(
    ("dialect", "text", "says"),
    [
        ("postgres", "query_to_xml('select * from events', true, true, '')", "query_to_xml"),
        ("postgres", "pg_read_file('/etc/passwd')", "pg_read_file"),
        ("postgres", "public.dblink('dbname=x', 'select 1')::text", "dblink"),
        ("postgres", "payload::regclass::text", "casts to REGCLASS"),
        ("duckdb", "read_csv('/etc/passwd')::VARCHAR", "READ_CSV"),
        ("duckdb", "read_parquet('x.parquet')::VARCHAR", "READ_PARQUET"),
        ("duckdb", "getenv('HOME')", "getenv"),
    ],
)
def test_functions_that_read_beyond_the_row_are_refused_in_every_dialect(
    dialect: str, text: str, says: str
) -> None:
    with pytest.raises(ReplayError, match=says) as refused:
        expression(text, dialect, "--fix")
    assert "cast to a string" in str(refused.value.hint) or "REPLACE, CONCAT" in str(
        refused.value.hint
    )


@pytest.mark.parametrize(
    "text",
    [
        FIX,
        "CONCAT(SUBSTR(payload, 1, LENGTH(payload) - 1), '}\"')",
        "REPLACE(payload, '{', '{\"type\":\"track\",')",
        "IF(STRPOS(payload, 'u2') > 0, REGEXP_REPLACE(payload, 'user_id', 'userId'), payload)",
        "COALESCE(JSON_VALUE(payload, '$.x'), CASE WHEN code = 'a' THEN LOWER(payload) "
        "ELSE TRIM(payload) END)",
    ],
)
def test_the_documented_fixes_are_accepted(project: Project, text: str) -> None:
    nothing = _json(
        project, "failed", "replay", "--dry-run", "--fix", text,
        "--where", "received_at >= TIMESTAMP '2026-11-30 08:00:00+00' "
        "AND STRPOS(CAST(payload AS STRING), '\"Signed Up\"') > 0",
    )  # fmt: skip
    assert (nothing["selected"], nothing["still_failing"]) == (0, [])


def test_an_erased_persons_failed_events_are_not_stored_by_a_replay(
    server: Server, project: Project
) -> None:
    project.cli("erase", "--user-id", "u2")
    _send(server, project)

    preview = _json(project, "failed", "replay", "--fix", FIX, "--dry-run")
    assert (preview["passed"], preview["events"], preview["suppressed"]) == (2, 1, 1)
    done = _json(project, "failed", "replay", "--fix", FIX, code=1)
    assert (done["passed"], done["stored"], done["suppressed"]) == (2, 1, 1)
    assert sorted(e["user_id"] for e in _events(project)) == ["u1", "u3"]
    # Its failed event stays unreplayed: were the suppression lifted, a replay would store it.
    marked = {json.loads(f["payload"])["user_id"]: f["replayed_at"] for f in _failed(project)}
    assert marked["u2"] is None
    assert marked["u3"] is not None
    again = _json(project, "failed", "replay", "--fix", FIX, code=1)
    assert (again["selected"], again["stored"], again["suppressed"]) == (2, 0, 1)
    assert sorted(e["user_id"] for e in _events(project)) == ["u1", "u3"]

    project.cli("erase", "--lift", "--user-id", "u2")
    lifted = _json(project, "failed", "replay", "--fix", FIX, code=1)
    assert (lifted["stored"], lifted["suppressed"]) == (1, 0)
    assert sorted(e["user_id"] for e in _events(project)) == ["u1", "u2", "u3"]


def test_no_failed_events(project: Project) -> None:
    assert _json(project, "failed") == []
    assert "No failed events." in project.cli("failed").stdout
    nothing = _json(project, "failed", "replay")
    assert (nothing["selected"], nothing["stored"], nothing["still_failing"]) == (0, 0, [])


def _keep_failed(project: Project, rows: list[dict[str, Any]]) -> None:
    """Failed events as the collector keeps them, written into the project's store."""
    engine = DuckDBEngine.open(project.data_dir / "events.duckdb")
    try:
        failed = pa.Table.from_pylist(rows, schema.FAILED_EVENTS)
        engine.ingest(IngestBatch(schema.EVENTS.empty_table(), failed))
    finally:
        engine.close()


def test_whole_bodies_are_replayed_whole_and_samples_cut(project: Project) -> None:
    at = datetime(2026, 11, 30, 8, tzinfo=UTC)
    envelope = {"batch": [{"type": "identify", "userId": f"b{i}"} for i in range(3)]}
    long = {"type": "track", "event": "Long", "user_id": "l1", "properties": {"x": "y" * 900}}
    cut = json.dumps('{"type":"page","userId":"p1"')
    _keep_failed(project, [
        # A batch refused as a whole (say, over max_batch_events then): its events together.
        {"id": "body-1", "source": "web", "received_at": at, "code": "batch_too_large",
         "field": "batch", "message": "too many", "payload": json.dumps(envelope)},
        # A body that did not parse, kept as a JSON string of its text.
        {"id": "text-1", "source": "web", "received_at": at, "code": "malformed_json",
         "field": None, "message": "not JSON", "payload": cut},
        {"id": "long-1", "source": "web", "received_at": at, "code": "missing_identity",
         "field": "userId", "message": "no identity", "payload": json.dumps(long)},
    ])  # fmt: skip

    groups = {g["code"]: g for g in _json(project, "failed")}
    assert groups["missing_identity"]["sample"].endswith("…")
    assert len(groups["missing_identity"]["sample"]) == 501
    assert groups["batch_too_large"]["sample"] == json.dumps(envelope)

    # The unparsed body is still not JSON, and says so; the batch passes whole.
    first = _json(project, "failed", "replay", "--where", "code != 'missing_identity'", code=1)
    assert (first["passed"], first["events"], first["stored"]) == (1, 3, 3)
    [still] = first["still_failing"]
    assert (still["code"], still["ids"]) == ("malformed_json", ["text-1"])
    stored = project.query("SELECT message_id, user_id, first_received_at FROM events").to_pylist()
    assert sorted((e["message_id"], e["user_id"]) for e in stored) == [
        ("body-1:0", "b0"), ("body-1:1", "b1"), ("body-1:2", "b2"),
    ]  # fmt: skip
    assert {e["first_received_at"] for e in stored} == {at}

    # Its payload is the JSON string of the text: the brace goes inside the closing quote.
    brace = "CONCAT(SUBSTR(payload, 1, LENGTH(payload) - 1), '}\"')"
    fixed = _json(project, "failed", "replay", "--code", "malformed_json", "--fix", brace)
    assert (fixed["stored"], fixed["still_failing"]) == (1, [])
    assert project.query("SELECT user_id FROM events WHERE type = 'page'").to_pylist() == [
        {"user_id": "p1"}
    ]
