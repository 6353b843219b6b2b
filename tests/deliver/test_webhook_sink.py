"""The webhook sink end to end: real ``headwater`` processes, a real receiver over loopback.

Events go straight into the project's DuckDB file with past arrival times; a
pipeline naming ``sinks = [...]`` publishes them through ``headwater run --due``
(which delivers what it owes before it returns) or through a ``headwater up``
server (which delivers in a background loop). The receiver
(:mod:`tests.deliver.receiver`) checks every signature and keeps each
idempotency key's rows once, as a real receiver that drops repeats would; what
it keeps is compared with the pipeline's table, read from the store here.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import math
import random
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pyarrow as pa
import pytest

from headwater.deliver.guard import AddressRefused, Checked, NotResolved, check
from headwater.deliver.settings import WebhookSink
from headwater.deliver.webhook import WebhookTarget, idempotency_key, sign
from headwater.state import StateStore
from headwater.state.deliveries import Delivery
from headwater.store import schema
from headwater.store.duckdb import DuckDBEngine
from headwater.store.engine import IngestBatch
from tests.conftest import Project, Server, run_cli, wait_for
from tests.deliver.receiver import Receiver, Reply, Request, verify

SECRET = "whsec_test_3f1c9a7e5b2d"
PIPELINE = "crm_events"
DAY = timedelta(days=1)
TIMESTAMP_COLUMNS = ("day", "received_at")

PIPELINE_SQL = """\
/* headwater
description = "Every event, for the CRM."
schedule = "@daily"
kind = "incremental"
time = "received_at"
time_column = "day"
key = ["message_id"]
sinks = {sinks}
*/
SELECT
  TIMESTAMP_TRUNC(received_at, DAY) AS day,
  message_id,
  COALESCE(event, type) AS event,
  user_id,
  received_at,
  JSON_VALUE(properties, '$.plan') AS plan,
  CAST(JSON_VALUE(properties, '$.amount') AS FLOAT64) AS amount
FROM events
WHERE received_at >= @start AND received_at < @end
"""


# -- the project ------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver(SECRET) as running:
        yield running


@pytest.fixture
def hooked(project: Project, monkeypatch: pytest.MonkeyPatch) -> Project:
    """The project with only :data:`PIPELINE`; the signing secret in the environment
    (inherited by every ``headwater`` process started from here)."""
    monkeypatch.setenv("CRM_SECRET", SECRET)
    for path in (project.root / "pipelines").iterdir():
        path.unlink()
    return project


def _pipeline(project: Project, sinks: Sequence[str]) -> None:
    text = PIPELINE_SQL.format(sinks=json.dumps(list(sinks)))
    (project.root / "pipelines" / f"{PIPELINE}.sql").write_text(text)


def _configure(
    project: Project,
    sinks: dict[str, dict[str, Any]],
    *,
    allow_hosts: Sequence[str] = ("localhost",),
    poll_seconds: float = 0.1,
) -> None:
    """Append ``[delivery]`` and one ``[sinks.NAME]`` webhook table per sink."""
    lines = [
        "[delivery]",
        f"allow_hosts = {json.dumps(list(allow_hosts))}",
        f"poll_seconds = {poll_seconds}",
    ]
    for name, options in sinks.items():
        values = {
            "type": "webhook",
            "secret": "${CRM_SECRET}",
            "batch_rows": 8,
            "timeout_seconds": 5,
            "max_attempts": 8,
            "backoff_seconds": 0.05,
            "max_backoff_seconds": 0.2,
            **options,
        }
        lines += ["", f"[sinks.{name}]", *(f"{k} = {json.dumps(v)}" for k, v in values.items())]
    project.configure("\n".join(lines) + "\n")
    _pipeline(project, list(sinks))


def _wire(moment: datetime) -> str:
    """A time as webhook bodies write it."""
    return moment.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _today() -> datetime:
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


EVENT_NAMES = ("Signed Up", "Page Viewed", "Commande passée ✓", 'Said "hi", then left')


def _ingest_events(project: Project, per_day: Sequence[int], seed: int) -> list[datetime]:
    """Commit events that arrived on the days before today (``per_day[0]`` on the
    earliest); return those days, which are the pipeline's intervals."""
    rng = random.Random(seed)
    today = _today()
    days = [today - (len(per_day) - i) * DAY for i in range(len(per_day))]
    rows = []
    for day, count in zip(days, per_day, strict=True):
        for index in range(count):
            received = day + timedelta(
                seconds=rng.randrange(86_400), microseconds=rng.randrange(1_000_000)
            )
            properties = {
                "plan": rng.choice(["free", "pro", None]),
                "amount": rng.choice([None, 0.1, 12.5, 1e-7, 3.14159, 42]),
            }
            user = rng.randrange(40)
            rows.append(
                {
                    "message_id": f"m-{seed}-{day:%m%d}-{index:04d}",
                    "source": "web",
                    "type": "track",
                    "event": rng.choice(EVENT_NAMES),
                    "user_id": f"user-{user}" if user % 5 else None,
                    "anonymous_id": f"anon-{user}",
                    "timestamp": received,
                    "received_at": received,
                    "properties": json.dumps(properties),
                }
            )
    engine = DuckDBEngine.open(project.data_dir / "events.duckdb")
    try:
        table = pa.Table.from_pylist(rows, schema=schema.EVENTS)
        engine.ingest(IngestBatch(table, schema.FAILED_EVENTS.empty_table()))
    finally:
        engine.close()
    return days


# -- the command, the metadata, the table -----------------------------------------


def _table_rows(lines: Sequence[str]) -> list[dict[str, str]]:
    """The rows of the first rich table in ``lines``, by column title."""
    header = next(line for line in lines if line.startswith("┃"))
    titles = [cell.strip() for cell in header.strip().strip("┃").split("┃")]
    rows = []
    for line in lines[lines.index(header) :]:
        if line.startswith("│"):
            cells = [cell.strip() for cell in line.strip().strip("│").split("│")]
            rows.append(dict(zip(titles, cells, strict=True)))
        elif line.startswith("└"):
            break
    return rows


def _delivery_status(project: Project) -> tuple[dict[str, dict[str, str]], str]:
    """``headwater status``: the Deliveries table's rows by sink, and the whole output."""
    out = run_cli(project, "status").stdout
    lines = out.splitlines()
    titles = [i for i, line in enumerate(lines) if "Deliveries (intervals)" in line]
    assert len(titles) == 1, f"no Deliveries table in:\n{out}"
    rows = _table_rows(lines[titles[0] :])
    return {row["sink"]: row for row in rows if row["pipeline"] == PIPELINE}, out


def _dead_letter_list(project: Project, *options: str) -> list[dict[str, str]]:
    out = run_cli(project, "replay", "--list", *options).stdout
    lines = out.splitlines()
    return _table_rows(lines) if any(line.startswith("┃") for line in lines) else []


@contextmanager
def _metadata(project: Project) -> Iterator[StateStore]:
    store = StateStore.in_folder(project.data_dir)
    try:
        yield store
    finally:
        store.close()


def _deliveries(project: Project) -> list[Delivery]:
    with _metadata(project) as store:
        return store.deliveries.all(PIPELINE)


def _all_delivered(project: Project, intervals: int) -> bool:
    found = _deliveries(project)
    return len(found) == intervals and all(d.status == "delivered" for d in found)


def _run_due_until(
    project: Project, condition: Callable[[], bool], timeout: float = 45.0
) -> list[str]:
    """``headwater run --due`` again and again (each makes one attempt per due delivery)."""
    outputs: list[str] = []
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "not delivered in time:\n" + "\n".join(outputs)
        result = run_cli(project, "run", "--due", check=False)
        # Exit 1 exactly when a delivery attempt failed or became a dead letter.
        failed = "Delivery of" in result.stdout or "Dead letter for" in result.stdout
        assert result.returncode == (1 if failed else 0), result.stdout + result.stderr
        outputs.append(result.stdout)
    return outputs


def _published(project: Project) -> dict[str, dict[str, Any]]:
    """The pipeline's table as the store has it, by message_id."""
    engine = DuckDBEngine.open(project.data_dir / "events.duckdb", read_only=True)
    try:
        rows = engine.query(f"SELECT * FROM {PIPELINE}").to_pylist()
    finally:
        engine.close()
    by_id = {row["message_id"]: row for row in rows}
    assert len(by_id) == len(rows), "two rows for one message_id in the table"
    return by_id


def _as_stored(row: dict[str, Any]) -> dict[str, Any]:
    """A row of a webhook body, its times read back into datetimes."""
    return {
        column: datetime.fromisoformat(value)
        if column in TIMESTAMP_COLUMNS and value is not None
        else value
        for column, value in row.items()
    }


def _received(rows: Sequence[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    by_id: dict[str, dict[str, Any]] = {}
    for row in rows:
        assert row["message_id"] not in by_id, f"{row['message_id']} under two keys"
        by_id[row["message_id"]] = _as_stored(row)
    return by_id


def _assert_received_everything(
    receiver: Receiver, project: Project, events: int
) -> dict[str, dict[str, Any]]:
    table = _published(project)
    assert len(table) == events
    assert _received(receiver.rows()) == table
    return table


def _assert_signed_and_keyed(receiver: Receiver) -> None:
    """Every request verified; each batch always came with the key made of its identity."""
    requests = receiver.snapshot()
    assert requests
    assert receiver.bad_signatures == 0
    assert [r for r in requests if not r.signature_ok] == []
    by_batch = receiver.keys_by_batch()
    for (pipeline, sink, start, run, batch), keys in by_batch.items():
        expected = idempotency_key(pipeline, sink, datetime.fromisoformat(start), run, batch)
        assert keys == {expected}, f"batch {batch} of run {run} came with {keys}"
    all_keys = [key for keys in by_batch.values() for key in keys]
    assert len(set(all_keys)) == len(all_keys), "two batches shared a key"


def _batches_per_interval(table: dict[str, dict[str, Any]], batch_rows: int) -> Counter[str]:
    per_day = Counter(row["day"] for row in table.values())
    return Counter({_wire(day): math.ceil(count / batch_rows) for day, count in per_day.items()})


@contextmanager
def _server(project: Project) -> Iterator[Server]:
    server = Server(project).start()
    try:
        yield server
    finally:
        if server.process is not None and server.process.poll() is None:
            server.stop()


# -- 1. failures, then success: nothing lost -------------------------------------------


@pytest.mark.timeout(90)
def test_retried_after_500_503_429_and_a_timeout_until_every_row_arrives(
    hooked: Project, receiver: Receiver
) -> None:
    days = _ingest_events(hooked, [21, 30, 17], seed=1)
    _configure(
        hooked,
        {
            "crm": {
                "url": receiver.url("/hook"),
                "timeout_seconds": 0.5,
                "max_backoff_seconds": 2.0,  # above the Retry-After below, so it shows
            }
        },
    )
    # One failure per interval on the first pass, then a timeout and a 500 more.
    receiver.fail_next(1, 500)
    receiver.fail_next(1, 503)
    receiver.fail_next(1, 429, retry_after=1)
    receiver.slow_next(1, 1.5)  # answers 200 after the sender gave up: a repeat follows
    receiver.fail_next(1, 500)

    ran = run_cli(hooked, "run", "--due", check=False)
    assert ran.returncode == 1, ran.stderr  # every delivery failed
    first = ran.stdout
    assert "Ran 3 intervals" in first, first
    port = receiver.port
    for status, text in ((500, "failing (500)"), (503, "failing (503)"), (429, "failing (429)")):
        assert f"localhost:{port} answered {status}: {text}" in first, first
    assert first.count("failed") >= 3
    assert "Delivered" not in first, first

    # Persisted: every delivery failed once, due again later; the 429's not before Retry-After.
    states = {d.interval.start: d for d in _deliveries(hooked)}
    assert sorted(states) == days
    assert all((d.status, d.attempts) == ("failed", 1) for d in states.values()), states
    told_to_wait = next(r for r in receiver.snapshot() if r.status == 429)
    assert told_to_wait.payload is not None
    start = datetime.fromisoformat(told_to_wait.payload["interval"]["start"])
    assert states[start].next_attempt_at.timestamp() >= told_to_wait.at + 1.0 - 1e-3
    assert "answered 429" in (states[start].last_error or "")
    status, _ = _delivery_status(hooked)
    assert (status["crm"]["failed"], status["crm"]["delivered"]) == ("3", "0"), status
    assert "answered" in status["crm"]["last error"]

    later = _run_due_until(hooked, lambda: _all_delivered(hooked, 3))
    assert any("Delivered crm_events to crm:" in out for out in later), later
    assert any("no answer within 0.5s" in out for out in later), later

    table = _assert_received_everything(receiver, hooked, 21 + 30 + 17)
    _assert_signed_and_keyed(receiver)
    requests = receiver.snapshot()
    answered = Counter(r.status for r in requests)
    batches = _batches_per_interval(table, 8)
    assert answered == {200: sum(batches.values()) + 1, 500: 2, 503: 1, 429: 1}
    # The timed-out batch was accepted twice under one key; the receiver kept it once. (Its
    # retry can be taken before the receiver ends the slow answer the sender gave up on.)
    wait_for("the slow answer to end", lambda: len(receiver.repeated_keys()) == 1, timeout=5)
    assert sum(len(r.payload["rows"]) for r in requests if r.status == 200 and r.payload) > len(
        table
    )
    for request in requests:
        payload = request.payload
        assert payload is not None
        assert (payload["pipeline"], payload["sink"]) == (PIPELINE, "crm")
        assert payload["batches"] == batches[payload["interval"]["start"]]
        assert 0 <= payload["batch"] < payload["batches"]
        assert 1 <= len(payload["rows"]) <= 8
        assert request.headers["content-type"] == "application/json"
        assert request.path == "/hook"
        assert request.headers["host"] == f"localhost:{port}"  # the URL's, not the address
    status, out = _delivery_status(hooked)
    assert (status["crm"]["delivered"], status["crm"]["failed"]) == ("3", "0"), out
    assert status["crm"]["dead letters"] == "0"


# -- 2. receiver down, then back -------------------------------------------------------


@pytest.mark.timeout(90)
def test_receiver_down_for_a_while_then_back_gets_everything_from_headwater_up(
    hooked: Project, receiver: Receiver
) -> None:
    _ingest_events(hooked, [26, 19], seed=2)
    _configure(
        hooked,
        {"crm": {"url": receiver.url("/hook"), "max_attempts": 200, "max_backoff_seconds": 0.3}},
    )
    receiver.stop()  # the port is known; nothing listens on it

    with _server(hooked) as server:

        def failing_again_and_again() -> bool:
            found = _deliveries(hooked)
            return len(found) == 2 and all(d.status == "failed" and d.attempts >= 2 for d in found)

        wait_for("retries while down", failing_again_and_again, 30, detail=server.log.read_text)
        status, out = _delivery_status(hooked)
        row = status["crm"]
        assert (row["failed"], row["delivered"], row["dead letters"]) == ("2", "0", "0"), out
        assert "could not connect" in row["last error"], out
        assert receiver.snapshot() == []

        back = time.time()
        receiver.start()
        wait_for(
            "delivery once back", lambda: _all_delivered(hooked, 2), 30, detail=server.log.read_text
        )
        status, out = _delivery_status(hooked)
        assert (status["crm"]["delivered"], status["crm"]["failed"]) == ("2", "0"), out
        assert server.stop() == 0

    assert all(r.at >= back for r in receiver.snapshot())
    table = _assert_received_everything(receiver, hooked, 26 + 19)
    _assert_signed_and_keyed(receiver)
    assert receiver.repeated_keys() == {}
    assert len(receiver.snapshot()) == sum(_batches_per_interval(table, 8).values())
    with _metadata(hooked) as store:
        assert store.deliveries.dead_letters() == []


# -- 3. a crash in the middle of a delivery --------------------------------------------


@pytest.mark.timeout(120)
def test_server_killed_mid_delivery_resumes_from_the_batch_it_was_on(
    hooked: Project, receiver: Receiver
) -> None:
    _ingest_events(hooked, [150, 90], seed=3)
    _configure(hooked, {"crm": {"url": receiver.url("/hook"), "batch_rows": 10}})
    receiver.rule = lambda request: Reply(200, delay=0.15)  # slow: batches arrive one by one
    total = 15 + 9

    server = Server(hooked).start()
    try:
        wait_for(
            "the first batches",
            lambda: len(receiver.accepted) >= 5,
            30,
            detail=server.log.read_text,
        )
        server.kill()
    finally:
        if server.process is not None and server.process.poll() is None:
            server.kill()
    assert server.process is not None
    assert server.process.returncode == -9
    at_kill = len(receiver.accepted)
    assert at_kill < total, "everything arrived before the kill; nothing to resume"
    before = {d.interval.start: d for d in _deliveries(hooked)}
    assert any(d.status != "delivered" for d in before.values()), before
    assert sum(d.batches_done for d in before.values()) >= at_kill - 1

    with _server(hooked) as again:
        wait_for(
            "delivery after restart",
            lambda: _all_delivered(hooked, 2),
            60,
            detail=again.log.read_text,
        )
        assert again.stop() == 0

    table = _assert_received_everything(receiver, hooked, 150 + 90)
    assert sum(_batches_per_interval(table, 10).values()) == total
    _assert_signed_and_keyed(receiver)
    assert len(receiver.accepted) == total
    repeated = receiver.repeated_keys()
    assert len(repeated) <= 1, repeated  # at most the batch in flight at the kill
    assert all(n == 2 for n in repeated.values()), repeated
    assert len(receiver.snapshot()) <= total + 1
    runs = {r.payload["run"] for r in receiver.snapshot() if r.payload}
    assert len(runs) == 2, "the intervals were published again instead of resumed"


# -- 4. dead letters and replay --------------------------------------------------------


@pytest.mark.timeout(90)
def test_dead_letters_are_listed_with_their_reason_and_replayed_with_the_same_key(
    hooked: Project, receiver: Receiver
) -> None:
    days = _ingest_events(hooked, [24, 20], seed=4)
    _configure(hooked, {"crm": {"url": receiver.url("/hook"), "max_attempts": 2}})
    first_day, second_day = (_wire(day) for day in days)

    def broken(request: Request) -> Reply | None:
        p = request.payload
        assert p is not None
        if (p["interval"]["start"], p["batch"]) == (first_day, 1):
            return Reply(400, body='{"error": "unknown field plan"}')
        if (p["interval"]["start"], p["batch"]) == (second_day, 1):
            return Reply(500, body="database is down")
        return None

    receiver.rule = broken
    # `headwater run NAME` publishes both days and makes one attempt at each delivery.
    ran = run_cli(hooked, "run", PIPELINE, "--start", first_day, "--end", _wire(_today()),
                  check=False)  # fmt: skip
    assert ran.returncode == 1, ran.stderr  # a dead letter and a failed delivery
    first = ran.stdout
    assert "Ran 2 intervals" in first, first
    assert f"Dead letter for crm_events {first_day[:16]} to crm" in first, first
    assert f"Delivery of crm_events {second_day[:16]} to crm failed" in first, first
    assert "answered 500: database is down" in first, first  # failed, tried again later
    outputs = _run_due_until(hooked, lambda: all(d.status == "dead" for d in _deliveries(hooked)))

    status, out = _delivery_status(hooked)
    assert (status["crm"]["dead letters"], status["crm"]["failed"]) == ("2", "0"), out
    # Why, though the batches after the dead one were delivered (the delivery's end
    # cleared its error).
    assert re.search(r"batch 1: .*answered (400|500)", status["crm"]["last error"]), out
    assert "`headwater replay --list`" in out
    letters = sorted(_dead_letter_list(hooked), key=lambda d: d["interval"])
    assert [(d["pipeline"], d["sink"], d["batch"]) for d in letters] == [
        (PIPELINE, "crm", "1"),
        (PIPELINE, "crm", "1"),
    ], letters
    client_error, server_error = letters
    assert client_error["interval"] == first_day[:16]
    assert f"localhost:{receiver.port} answered 400" in client_error["reason"]
    assert "unknown field plan" in client_error["reason"]
    assert client_error["attempts"] == "1"
    assert server_error["interval"] == second_day[:16]
    assert "answered 500: database is down" in server_error["reason"]
    assert "after 2 attempts" in server_error["reason"]
    assert server_error["attempts"] == "2"
    assert (client_error["rows"], server_error["rows"]) == ("8", "8")
    listed_by_id = _dead_letter_list(hooked, "--id", server_error["id"])

    # Everything but the two dead batches arrived: delivery went on past each of them.
    answered = Counter(r.status for r in receiver.snapshot())
    assert (answered[400], answered[500]) == (1, 2)  # 400 at once; 500 until max_attempts
    table = _published(hooked)
    held = {
        request.batch_id: request for request in receiver.snapshot() if request.status in (400, 500)
    }
    assert len(held) == 2
    missing = {row["message_id"] for r in held.values() for row in (r.payload or {})["rows"]}
    assert len(missing) == 8 + 8
    assert set(_received(receiver.rows())) == set(table) - missing

    receiver.rule = None  # fixed
    one = run_cli(hooked, "replay", "--id", client_error["id"]).stdout
    assert "Replayed: 1 delivered" in one, one
    assert [d["id"] for d in _dead_letter_list(hooked)] == [server_error["id"]]
    rest = run_cli(hooked, "replay", "--pipeline", PIPELINE, "--sink", "crm").stdout
    assert "Replayed: 1 delivered" in rest, rest

    # Each replay was the batch as it was, under the same key, freshly signed.
    for batch_id, failed in held.items():
        resent = [r for r in receiver.snapshot() if r.batch_id == batch_id and r.status == 200]
        assert len(resent) == 1, batch_id
        assert resent[0].key == failed.key
        assert resent[0].body == failed.body
        assert resent[0].signature_ok
    _assert_signed_and_keyed(receiver)
    assert _received(receiver.rows()) == table
    assert len(table) == 24 + 20

    status, out = _delivery_status(hooked)
    assert status["crm"]["dead letters"] == "0", out
    assert "`headwater replay --list`" not in out
    assert _dead_letter_list(hooked) == []
    assert "No dead letters to replay." in run_cli(hooked, "replay").stdout

    # What the commands said along the way (checked last, so the above runs regardless).
    problems = []
    if [d["id"] for d in listed_by_id] != [server_error["id"]]:
        problems.append(f"`replay --list --id {server_error['id']}` listed {listed_by_id}")
    said = "\n".join([first, *outputs]).splitlines()
    for day, reason in ((first_day, "answered 400"), (second_day, "answered 500")):
        line = next(x for x in said if x.startswith(f"Dead letter for crm_events {day[:16]}"))
        if reason not in line:
            problems.append(f"the dead-letter line does not say why: {line!r}")
    assert not problems, "\n".join(problems)


@pytest.mark.timeout(90)
def test_two_replays_at_once_send_each_letter_once_and_a_newer_run_supersedes_letters(
    hooked: Project, receiver: Receiver
) -> None:
    """The dashboard's Replay beside `headwater replay` (two threads of one server): the
    second waits for the first and finds nothing left to send. Then an interval published
    again drops its older dead letters, which `status` stops counting."""
    from headwater.config.project import load_project
    from headwater.runtime import operations
    from headwater.runtime.workspace import Workspace

    days = _ingest_events(hooked, [24, 20], seed=5)
    _configure(hooked, {"crm": {"url": receiver.url("/hook"), "max_attempts": 1}})
    first_day = _wire(days[0])
    receiver.rule = lambda _request: Reply(400, body='{"error": "not yet"}')
    ran = run_cli(hooked, "run", PIPELINE, "--start", first_day, "--end", _wire(_today()),
                  check=False)  # fmt: skip
    assert ran.returncode == 1, ran.stderr
    letters = _dead_letter_list(hooked)
    assert len(letters) == 6, (letters, ran.stdout)  # 3 batches a day, each refused
    receiver.rule = lambda _request: Reply(200, delay=0.1)  # slow: the replays overlap

    workspace = Workspace.open(load_project(hooked.root))
    try:
        answers: list[Any] = []

        def replay() -> None:
            answers.append(operations.call(workspace, "replay", {}))

        threads = [threading.Thread(target=replay) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=60)
        delivered = sorted(len([r for r in a if r["status"] == "delivered"]) for a in answers)
        assert delivered == [0, len(letters)], answers
        sent = Counter(r.key for r in receiver.snapshot() if r.status == 200)
        assert len(sent) == len(letters), sent
        assert set(sent.values()) == {1}, sent
        rows = {d.interval.start: d.rows_delivered for d in workspace.state.deliveries.all()}
        assert sorted(rows.values()) == [20, 24], rows  # each row counted once
    finally:
        workspace.close()

    # A dead letter, then the interval published again and delivered: the letter is gone.
    receiver.rule = lambda _request: Reply(400, body='{"error": "again"}')
    run_cli(hooked, "run", PIPELINE, "--start", first_day, "--end", _wire(days[1]), check=False)
    assert len(_dead_letter_list(hooked)) == 3
    receiver.rule = None
    out = run_cli(hooked, "run", PIPELINE, "--start", first_day, "--end", _wire(days[1])).stdout
    assert "Ran 1 interval" in out, out
    assert _dead_letter_list(hooked) == []
    status, printed = _delivery_status(hooked)
    assert status["crm"]["dead letters"] == "0", printed


# -- 5. addresses webhooks may not reach ------------------------------------------------


@pytest.mark.timeout(60)
def test_private_loopback_and_metadata_addresses_are_refused_before_any_request(
    hooked: Project, receiver: Receiver
) -> None:
    [day] = _ingest_events(hooked, [5], seed=5)
    port = receiver.port
    refused = {
        "loop4": (f"http://127.0.0.1:{port}/hook", "127.0.0.1, a loopback address"),
        "loop6": (f"http://[::1]:{port}/hook", "::1, a loopback address"),
        "lan": ("http://10.0.0.1/hook", "10.0.0.1, a private address"),
        "meta": (
            "http://169.254.169.254/latest/meta-data/",
            "169.254.169.254, a cloud metadata address",
        ),
        "named": (f"http://localhost:{port}/hook", "localhost resolves to 127.0.0.1, a loopback"),
    }
    _configure(hooked, {name: {"url": url} for name, (url, _) in refused.items()}, allow_hosts=[])

    # `headwater backfill` also delivers what it owes before it returns.
    out = run_cli(hooked, "backfill", PIPELINE, "--start", _wire(day), "--end", _wire(day + DAY),
                  check=False)  # fmt: skip
    assert out.returncode == 1, out.stderr  # dead letters
    assert "Backfilled 1 intervals" in out.stdout, out.stdout
    assert out.stdout.count("Dead letter for crm_events") == len(refused), out.stdout
    assert receiver.snapshot() == []

    letters = {d["sink"]: d for d in _dead_letter_list(hooked)}
    assert set(letters) == set(refused)
    for sink, (_, reason) in refused.items():
        assert reason in letters[sink]["reason"], letters[sink]
        assert "webhooks do not reach those" in letters[sink]["reason"]
        assert (letters[sink]["batch"], letters[sink]["rows"]) == ("all", "0")
    assert 'add "localhost" to [delivery] allow_hosts' in letters["named"]["reason"]
    status, text = _delivery_status(hooked)
    assert {sink: row["dead letters"] for sink, row in status.items()} == dict.fromkeys(
        refused, "1"
    ), text

    # Replayed while still refused: owed again, refused again, still nothing sent.
    replayed = run_cli(hooked, "replay", check=False)
    again = replayed.stdout
    assert f"Replayed: {len(refused)} dead" in again, again
    assert replayed.returncode == 1, again  # what failed again fails the command
    assert receiver.snapshot() == []
    assert {d["sink"] for d in _dead_letter_list(hooked)} == set(refused)

    # Allowed by name now: the replay of that sink's letter delivers; the others stay.
    path = hooked.root / "headwater.toml"
    path.write_text(path.read_text().replace("allow_hosts = []", 'allow_hosts = ["localhost"]'))
    fixed = run_cli(hooked, "replay", "--sink", "named").stdout
    assert "Replayed: 1 delivered" in fixed, fixed
    assert {r.path for r in receiver.snapshot()} == {"/hook"}
    assert _received(receiver.rows()) == _published(hooked)
    _assert_signed_and_keyed(receiver)
    left = {d["sink"]: d["reason"] for d in _dead_letter_list(hooked)}
    assert set(left) == set(refused) - {"named"}
    assert "127.0.0.1, a loopback address" in left["loop4"]


@pytest.mark.timeout(60)
def test_redirects_are_not_followed(hooked: Project, receiver: Receiver) -> None:
    _ingest_events(hooked, [5], seed=6)
    with Receiver(SECRET) as elsewhere:
        targets = {
            "/to-metadata": "http://169.254.169.254/latest/meta-data/",
            "/to-elsewhere": elsewhere.url("/landing"),  # reachable and allowed: still not
        }
        receiver.rule = lambda request: Reply(302, {"Location": targets[request.path]})
        _configure(
            hooked,
            {
                "meta": {"url": receiver.url("/to-metadata")},
                "hop": {"url": receiver.url("/to-elsewhere")},
            },
        )
        ran = run_cli(hooked, "run", "--due", check=False)
        assert ran.returncode == 1, ran.stderr  # dead letters
        out = ran.stdout
        assert out.count("Dead letter for crm_events") == 2, out
        assert elsewhere.snapshot() == []
    assert sorted(r.path for r in receiver.snapshot()) == ["/to-elsewhere", "/to-metadata"]
    letters = {d["sink"]: d for d in _dead_letter_list(hooked)}
    for sink, path in (("meta", "/to-metadata"), ("hop", "/to-elsewhere")):
        reason = letters[sink]["reason"]
        assert f"answered 302, a redirect to {targets[path]}, which is not followed" in reason
        assert letters[sink]["attempts"] == "1"
        assert letters[sink]["batch"] == "0"


# -- the address check, the signature and the key, in-process ------------------------------


def _resolver(table: dict[str, list[str]]) -> Callable[[str, int], list[str]]:
    calls: list[tuple[str, int]] = []

    def resolve(host: str, port: int) -> list[str]:
        calls.append((host, port))
        if host not in table:
            raise OSError(f"unknown host {host}")
        return table[host]

    resolve.calls = calls  # type: ignore[attr-defined]
    return resolve


def test_check_pins_a_public_address_and_keeps_the_host() -> None:
    resolve = _resolver({"hooks.example.com": ["93.184.215.14", "2606:2800:21f:cb07::1"]})
    target = check("https://hooks.example.com/in/crm?x=1", [], resolve)
    # Every checked address, in the resolver's order: the next is tried if one refuses.
    assert target.urls == (
        "https://93.184.215.14/in/crm?x=1",
        "https://[2606:2800:21f:cb07::1]/in/crm?x=1",
    )
    assert (target.host, target.hostname) == ("hooks.example.com", "hooks.example.com")
    assert resolve.calls == [("hooks.example.com", 443)]  # type: ignore[attr-defined]

    six = _resolver({"v6.example.com": ["2606:2800:21f:cb07::1"]})
    target = check("http://V6.Example.com:8080/h", [], six)
    assert target.urls == ("http://[2606:2800:21f:cb07::1]:8080/h",)
    assert (target.host, target.hostname) == ("V6.Example.com:8080", "v6.example.com")
    assert six.calls == [("v6.example.com", 8080)]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("addresses", "kind"),
    [
        (["::ffff:127.0.0.1"], "loopback"),
        (["::ffff:10.1.2.3"], "private"),
        (["93.184.215.14", "10.1.2.3"], "private"),  # one bad address is enough
        (["127.0.0.2"], "loopback"),
        (["::1"], "loopback"),
        (["fe80::1%eth0"], "link-local"),
        (["169.254.10.10"], "link-local"),
        (["169.254.169.254"], "cloud metadata"),
        (["fd00:ec2::254"], "cloud metadata"),
        (["100.100.100.200"], "cloud metadata"),
        (["100.64.3.4"], "shared (carrier-grade NAT)"),
        (["192.168.1.1"], "private"),
        (["172.16.0.1"], "private"),
        (["0.0.0.0"], "unspecified"),
        (["224.0.0.1"], "multicast"),
    ],
)
def test_check_refuses_addresses_webhooks_may_not_reach(addresses: list[str], kind: str) -> None:
    with pytest.raises(AddressRefused) as caught:
        check("https://hooks.example.com/in", [], _resolver({"hooks.example.com": addresses}))
    assert f"a {kind} address" in caught.value.message
    assert 'add "hooks.example.com" to [delivery] allow_hosts' in (caught.value.hint or "")


def test_check_lets_an_allowed_host_name_through_and_only_that_name() -> None:
    resolve = _resolver({"crm.internal": ["10.0.0.7"], "other.internal": ["10.0.0.7"]})
    target = check("http://crm.internal:9000/hook", ["CRM.internal"], resolve)
    assert target.urls == ("http://10.0.0.7:9000/hook",)
    assert target.host == "crm.internal:9000"
    with pytest.raises(AddressRefused, match="private"):
        check("http://other.internal:9000/hook", ["CRM.internal"], resolve)


@pytest.mark.parametrize(
    ("url", "kind"),
    [
        ("http://[::ffff:127.0.0.1]:8080/", "loopback"),
        ("http://127.1/", "loopback"),
        ("http://2130706433/", "loopback"),
        ("http://0x7f000001/", "loopback"),
        ("http://0177.0.0.1/", "loopback"),
        ("http://[::ffff:169.254.169.254]/", "cloud metadata"),
        ("http://0.0.0.0:9/", "unspecified"),
        ("http://[::]/", "unspecified"),
    ],
)
def test_check_refuses_spellings_of_local_addresses(url: str, kind: str) -> None:
    """Numeric hosts, resolved by the system's own resolver (no DNS involved)."""
    with pytest.raises(AddressRefused) as caught:
        check(url, [])
    assert f"a {kind} address" in caught.value.message


@pytest.mark.parametrize(
    "address",
    [
        pytest.param("2002:7f00:1::1", id="6to4-of-127.0.0.1"),
        pytest.param("2002:a9fe:a9fe::1", id="6to4-of-169.254.169.254"),
        pytest.param("2002:a00:1::1", id="6to4-of-10.0.0.1"),
    ],
)
def test_check_refuses_6to4_addresses_that_embed_a_refused_ipv4_address(address: str) -> None:
    """A 6to4 address (2002::/16) is routed to the IPv4 address inside it, as an
    IPv4-mapped one is; the check looks inside the mapped ones but not these."""
    with pytest.raises(AddressRefused):
        check("https://hooks.example.com/in", [], _resolver({"hooks.example.com": [address]}))


@pytest.mark.parametrize(
    ("url", "says"),
    [
        ("https://user:secret@hooks.example.com/in", "user or password"),
        ("https://user@hooks.example.com/in", "user or password"),
        ("http://hooks.example.com@127.0.0.1/in", "user or password"),
        ("ftp://hooks.example.com/in", "not an http(s) URL"),
        ("file:///etc/passwd", "not an http(s) URL"),
        ("http:///no-host", "not an http(s) URL"),
    ],
)
def test_check_refuses_urls_before_resolving(url: str, says: str) -> None:
    resolve = _resolver({"hooks.example.com": ["93.184.215.14"]})
    with pytest.raises(AddressRefused, match=says.replace("(", r"\(").replace(")", r"\)")):
        check(url, ["hooks.example.com"], resolve)
    assert resolve.calls == []  # type: ignore[attr-defined]


def test_a_name_that_does_not_resolve_is_retried_not_refused() -> None:
    # DNS may answer later (EAI_AGAIN): a transient failure, not a policy refusal.
    with pytest.raises(NotResolved, match="does not resolve"):
        check("https://gone.example.com/", [], _resolver({}))
    with pytest.raises(NotResolved, match="resolves to no address"):
        check("https://empty.example.com/", [], _resolver({"empty.example.com": []}))
    assert not issubclass(NotResolved, AddressRefused)


def test_a_checked_address_is_kept_for_a_second_then_the_host_is_checked_again() -> None:
    table = {"hooks.example.com": ["93.184.215.14"]}
    resolve = _resolver(table)
    now = [100.0]
    checked = Checked("https://hooks.example.com/in", [], resolve, ttl=1.0, clock=lambda: now[0])
    assert checked.target().urls == ("https://93.184.215.14/in",)
    # The name now points at a private address: until the second is up, the POSTs still go
    # to the address that was checked, never to the new one unchecked.
    table["hooks.example.com"] = ["10.0.0.9"]
    now[0] = 100.9
    assert checked.target().urls == ("https://93.184.215.14/in",)
    assert len(resolve.calls) == 1  # type: ignore[attr-defined]
    # Past it, the change is seen and checked: refused, and not kept.
    now[0] = 101.0
    with pytest.raises(AddressRefused, match=r"10\.0\.0\.9, a private address"):
        checked.target()
    with pytest.raises(AddressRefused):
        checked.target()
    assert len(resolve.calls) == 3  # type: ignore[attr-defined]
    # A public address again: pinned to it, kept for the next second.
    table["hooks.example.com"] = ["93.184.215.15"]
    assert checked.target().urls == ("https://93.184.215.15/in",)
    now[0] = 101.5
    assert checked.target().urls == ("https://93.184.215.15/in",)
    assert len(resolve.calls) == 4  # type: ignore[attr-defined]


def test_a_burst_of_posts_resolves_once_and_a_dns_change_reaches_the_new_address(
    receiver: Receiver,
) -> None:
    table = {"hooks.test": ["127.0.0.1"]}
    resolve = _resolver(table)
    now = [0.0]
    sink = WebhookSink(url=f"http://hooks.test:{receiver.port}/hook", secret=SECRET)
    target = WebhookTarget("crm", sink, ["hooks.test"], resolver=resolve, clock=lambda: now[0])
    try:
        for n in range(5):
            assert target.send(b'{"rows":[]}', f"k{n}").delivered
        assert len(resolve.calls) == 1  # type: ignore[attr-defined]
        assert {r.headers.get("host") for r in receiver.snapshot()} == {
            f"hooks.test:{receiver.port}"
        }
        # The name moves to an address where nothing listens: within the second the POSTs
        # go where they went; after it, to the new address (which refuses the connection).
        table["hooks.test"] = ["127.0.0.2"]
        assert target.send(b'{"rows":[]}', "k5").delivered
        now[0] = 1.5
        moved = target.send(b'{"rows":[]}', "k6")
        assert (moved.delivered, moved.retry) == (False, True), moved
        assert "could not connect" in (moved.reason or "")
        assert len(receiver.snapshot()) == 6
        assert len(resolve.calls) == 2  # type: ignore[attr-defined]
    finally:
        target.close()


def test_signature_is_hmac_sha256_of_timestamp_dot_body() -> None:
    body = b'{"rows":[{"a":1}]}'
    value = sign("s3cret", 1_700_000_123, body)
    mac = hmac.new(b"s3cret", b"1700000123." + body, hashlib.sha256).hexdigest()
    assert value == f"t=1700000123,v1={mac}"
    assert sign("s3cret", 1_700_000_123, body + b" ") != value
    assert sign("s3cret", 1_700_000_124, body) != value
    assert sign("other", 1_700_000_123, body) != value
    # The receiver's check agrees, and refuses a changed body, secret or an old timestamp.
    assert verify("s3cret", value, body, 1_700_000_130, 300) is None
    assert verify("s3cret", value, body + b" ", 1_700_000_130, 300) == "signature does not match"
    assert verify("other", value, body, 1_700_000_130, 300) == "signature does not match"
    assert "old" in (verify("s3cret", value, body, 1_700_001_000, 300) or "")


def test_idempotency_key_names_one_batch_of_one_run() -> None:
    start = datetime(2026, 11, 20, tzinfo=UTC)
    key = idempotency_key("p", "crm", start, 7, 0)
    assert key == idempotency_key("p", "crm", start, 7, 0)
    assert len(key) == 40
    assert int(key, 16) >= 0
    others = {
        idempotency_key("q", "crm", start, 7, 0),
        idempotency_key("p", "lake", start, 7, 0),
        idempotency_key("p", "crm", start + DAY, 7, 0),
        idempotency_key("p", "crm", start, 8, 0),
        idempotency_key("p", "crm", start, 7, 1),
        # No ambiguity where the parts join.
        idempotency_key("p\x00crm", "", start, 7, 0),
    }
    assert key not in others
    assert len(others) == 6


def test_receiver_counts_and_refuses_bad_signatures(receiver: Receiver) -> None:
    payload = {"pipeline": "p", "sink": "s", "interval": {"start": "x", "end": "y"}, "run": 1}
    body = json.dumps({**payload, "batch": 0, "batches": 1, "rows": [{"a": 1}]}).encode()
    now = int(time.time())
    with httpx.Client(base_url=receiver.url("", host="127.0.0.1"), timeout=5) as client:

        def post(signature: str, key: str) -> int:
            headers = {"Headwater-Signature": signature, "Idempotency-Key": key}
            return client.post("/hook", content=body, headers=headers).status_code

        assert post(sign(SECRET, now, body), "k1") == 200
        assert post(sign("wrong", now, body), "k2") == 401
        assert post(sign(SECRET, now - 3600, body), "k3") == 401
        assert post(sign(SECRET, now, body), "k1") == 200
    assert receiver.bad_signatures == 2
    assert receiver.rows() == [{"a": 1}]
    assert receiver.repeated_keys() == {"k1": 2}


@contextmanager
def _trickling(status: int, length: int, every: float) -> Iterator[tuple[int, threading.Event]]:
    """A receiver on loopback that reads a request, answers ``status`` with a body of
    ``length`` bytes announced, and sends that body one byte every ``every`` seconds."""
    listener = socket.create_server(("127.0.0.1", 0))
    done = threading.Event()

    def serve() -> None:
        with contextlib.suppress(OSError):
            conn, _ = listener.accept()
            with conn:
                conn.recv(65536)
                head = f"HTTP/1.1 {status} X\r\nContent-Length: {length}\r\n\r\n"
                conn.sendall(head.encode())
                for _ in range(length):
                    if done.wait(every):
                        return
                    conn.sendall(b"e")

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield listener.getsockname()[1], done
    finally:
        done.set()
        listener.close()
        thread.join(5)


@pytest.mark.parametrize(("status", "delivered", "retry"), [(200, True, False), (503, False, True)])
def test_a_receiver_that_trickles_its_answer_does_not_hold_the_post_past_its_timeout(
    status: int, delivered: bool, retry: bool
) -> None:
    # 40 bytes at one every 0.25 s is 10 s of answer; the sink's timeout is 0.5 s. The status
    # is the answer: what arrived of the body is its excerpt.
    with _trickling(status, 40, 0.25) as (port, _):
        sink = WebhookSink(url=f"http://127.0.0.1:{port}/hook", secret=SECRET, timeout_seconds=0.5)
        target = WebhookTarget("crm", sink, ["127.0.0.1"])
        try:
            started = time.monotonic()
            outcome = target.send(b'{"rows":[]}', "k")
            took = time.monotonic() - started
        finally:
            target.close()
    assert (outcome.delivered, outcome.retry) == (delivered, retry), outcome
    assert took < 5, took  # about 2 x 0.5 s at most; the whole answer would take 10 s
    if not delivered:
        assert f"answered {status}: e" in (outcome.reason or "")


def test_a_replay_of_a_misspelt_pipeline_or_sink_says_so(hooked: Project) -> None:
    _pipeline(hooked, ["crm"])
    _configure(hooked, {"crm": {"url": "https://hooks.example.com/in"}})
    refused = run_cli(hooked, "replay", "--pipeline", "crm_event", check=False)
    assert refused.returncode == 1
    assert "there is no pipeline 'crm_event'" in refused.stderr, refused.stderr
    refused = run_cli(hooked, "replay", "--sink", "cmr", check=False)
    assert "there is no sink 'cmr'" in refused.stderr, refused.stderr
    fine = run_cli(hooked, "replay", "--pipeline", PIPELINE, "--sink", "crm").stdout
    assert "No dead letters to replay." in fine, fine
