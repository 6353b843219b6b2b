"""Several collector processes on one PostgreSQL store, end to end.

Every test here runs real ``headwater`` processes on loopback against a real,
throwaway PostgreSQL server (``tests.pg``), with a project whose
``[environments.prod.store]`` is ``engine = "postgres"`` (its URL, with the
password, comes from the environment as ``headwater.toml`` requires):

* collectors started at the same moment on a new database all come up;
* two ``headwater --env prod serve collector`` processes under load from client
  threads, one of them SIGKILLed mid-load while the clients fail over to the
  other as a load balancer would: every acknowledged event is stored exactly
  once, including events sent to both collectors at once;
* ``headwater --env prod run --due`` from a third process: the example pipelines
  on PostgreSQL equal the same figures computed here from ``events``;
* the shared arrival floor in ``collector_floors``: not held back by a client
  stalled mid-upload (its event is stamped when its body is in), held back by a
  request in flight after its arrival (also when its commit waits longer than the
  stale period), moving on once it is answered, removed on SIGTERM, ignored once
  stale after SIGKILL;
* ``headwater export`` from the embedded store, ``headwater --env prod import``.
"""

from __future__ import annotations

import base64
import json
import os
import random
import re
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pyarrow as pa
import pytest

from headwater.cli.scaffold import init_project
from headwater.core.clock import now_us, to_us
from headwater.store import schema
from headwater.store.duckdb import DuckDBEngine
from headwater.store.engine import FLOOR_STALE_SECONDS, IngestBatch
from headwater.store.postgres import PostgresEngine
from tests.conftest import wait_for
from tests.pg import PostgresServer, postgres_server

HEADWATER = [sys.executable, "-m", "headwater"]
HOST = "127.0.0.1"
SCHEMA = "hw_prod"
URL_VARIABLE = "HW_TEST_PROD_URL"
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
_UP = re.compile(r"Headwater is up at (http://127\.0\.0\.1:\d+)")

Json = dict[str, Any]


# -- the project, its collectors and its database ------------------------------------


@dataclass
class Collector:
    """A ``headwater --env prod serve collector`` child process."""

    name: str
    process: subprocess.Popen[bytes]
    url: str
    log: Path

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def port(self) -> int:
        return int(self.url.rsplit(":", 1)[1])

    def stop(self, sig: int, timeout: float = 60.0) -> int:
        if self.process.poll() is None:
            self.process.send_signal(sig)
        return self.process.wait(timeout)

    def ensure_dead(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(30)


@dataclass
class Prod:
    """A project made by ``headwater init`` with a ``prod`` environment on its own database."""

    root: Path
    key: str
    url: str  # with the password: only ever in the environment of the commands

    @property
    def env(self) -> dict[str, str]:
        base = {k: v for k, v in os.environ.items() if k != "HEADWATER_ENV"}
        return {**base, URL_VARIABLE: self.url, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*HEADWATER, "--project", str(self.root), *args],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=120,
            check=False,
        )

    def spawn_collector(self, name: str) -> subprocess.Popen[bytes]:
        with (self.root / f"{name}.log").open("wb") as log:
            return subprocess.Popen(
                [*HEADWATER, "--project", str(self.root), "--env", "prod", "serve", "collector",
                 "--host", HOST, "--port", "0"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
            )  # fmt: skip

    def collectors(self, *names: str) -> list[Collector]:
        """Start one collector per name, each once the one before is up.

        One after the other, so that each test exercises what it is about; starting
        together on a new database is ``test_collectors_started_together…``'s.
        """
        started: list[Collector] = []
        try:
            for name in names:
                started.append(self.wait_up(name, self.spawn_collector(name)))
        except BaseException:
            for collector in started:
                collector.ensure_dead()
            raise
        return started

    def wait_up(
        self, name: str, process: subprocess.Popen[bytes], timeout: float = 30.0
    ) -> Collector:
        """The collector once it printed its URL; killed if it does not come up."""
        log = self.root / f"{name}.log"
        deadline = time.monotonic() + timeout
        try:
            while True:
                text = log.read_text(errors="replace")
                if match := _UP.search(text):
                    return Collector(name, process, match.group(1), log)
                if process.poll() is not None:
                    raise RuntimeError(f"collector {name} exited early:\n{text}")
                if time.monotonic() > deadline:
                    raise RuntimeError(f"collector {name} did not start in {timeout}s:\n{text}")
                time.sleep(0.05)
        except BaseException:
            if process.poll() is None:
                process.kill()
            process.wait(30)
            raise

    def connect(self, *, autocommit: bool = True) -> psycopg.Connection[Any]:
        con = psycopg.connect(self.url, autocommit=autocommit)
        con.execute("SET TIME ZONE 'UTC'")
        return con

    def rows(self, text: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        with self.connect() as con:
            return con.execute(text, list(params) or None).fetchall()

    def floors(self) -> dict[int, tuple[datetime, datetime]]:
        """``collector_floors`` by the collector's process id: (floor, seen_at)."""
        found = {}
        for collector, floor, seen in self.rows(
            f"SELECT collector, floor, seen_at FROM {SCHEMA}.collector_floors"
        ):
            # The id is host:pid:random.
            found[int(str(collector).rsplit(":", 2)[1])] = (floor, seen)
        return found

    def engine(self) -> PostgresEngine:
        return PostgresEngine.open(self.url, SCHEMA)


def make_prod(server: PostgresServer, folder: Path) -> Prod:
    root = folder / "project"
    key = init_project(root)
    with (root / "headwater.toml").open("a", encoding="utf-8") as toml:
        toml.write(
            "\n[environments.prod.store]\n"
            'engine = "postgres"\n'
            f'url = "${{{URL_VARIABLE}}}"\n'
            f'schema = "{SCHEMA}"\n'
        )
    return Prod(root, key, server.create_database(f"hw_{uuid.uuid4().hex[:12]}"))


@pytest.fixture(scope="module")
def pg() -> Iterator[PostgresServer]:
    with postgres_server() as server:
        yield server


@pytest.fixture
def prod(pg: PostgresServer, tmp_path: Path) -> Prod:
    return make_prod(pg, tmp_path)


def events_table(rows: Sequence[Json]) -> pa.Table:
    return pa.Table.from_pylist(list(rows), schema=schema.EVENTS)


def event_row(
    message_id: str,
    received: datetime,
    *,
    source: str = "web",
    event: str | None = "Order Completed",
    kind: str = "track",
    user: str | None = None,
    anonymous: str | None = None,
    timestamp: datetime | None = None,
    plan: str | None = None,
) -> Json:
    return {
        "message_id": message_id,
        "source": source,
        "type": kind,
        "event": event,
        "user_id": user,
        "anonymous_id": anonymous,
        "timestamp": timestamp or received,
        "received_at": received,
        "properties": json.dumps({"plan": plan} if plan else {"n": message_id}),
    }


def ingest(engine: Any, rows: Sequence[Json], failed: pa.Table | None = None) -> list[bool]:
    batch = IngestBatch(events_table(rows), failed or schema.FAILED_EVENTS.empty_table())
    return [bool(v) for v in engine.ingest(batch).to_pylist()]


# -- 0. collectors started together on a new database ----------------------------------


@pytest.mark.timeout(90)
def test_collectors_started_together_on_a_new_database_all_come_up(prod: Prod) -> None:
    """Replicas of a first deployment start at the same moment: every one must come up.

    Left alone they raced about one time in eight (measured before the metadata was
    migrated under a lock, commit 83b088c); to make the race certain
    the test holds the creation of the metadata schema (``<schema>_metadata``, where
    ``StateStore.for_project`` keeps it beside a PostgreSQL store) in an open
    transaction until every collector waits on it, then rolls it back.
    """
    holder = prod.connect(autocommit=False)
    names = [f"together-{n}" for n in range(3)]
    processes: dict[str, subprocess.Popen[bytes]] = {}
    try:
        holder.execute(f"CREATE SCHEMA {SCHEMA}_metadata")
        processes = {name: prod.spawn_collector(name) for name in names}

        def all_waiting() -> bool:
            exited = {n: p.returncode for n, p in processes.items() if p.poll() is not None}
            assert not exited, f"collectors exited before the race: {exited}"
            [(waiting,)] = prod.rows(
                "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                "AND wait_event_type = 'Lock'"
            )
            return int(waiting) >= len(names)

        wait_for("every collector to reach the metadata schema", all_waiting, timeout=30)
        holder.rollback()
        failures = {}
        collectors = []
        for name, process in processes.items():
            try:
                collectors.append(prod.wait_up(name, process))
            except RuntimeError as exc:
                failures[name] = str(exc).splitlines()[1:3]
        assert failures == {}, f"collectors started together did not come up: {failures}"
        floors = prod.floors()
        assert {c.pid for c in collectors} <= set(floors)
        for collector in collectors:
            assert collector.stop(signal.SIGTERM) == 0
        assert prod.floors() == {}
    finally:
        holder.close()
        for process in processes.values():
            if process.poll() is None:
                process.kill()
            process.wait(30)


# -- 1. two collectors under load, one SIGKILLed -------------------------------------

_UNIQUE_CLIENTS = 4
_BATCH = 20
_BOTH_BATCH = 10
_MAX_BATCHES = 5_000  # a bound on each client's loop, far above what the run allows
_MAX_ATTEMPTS = 500


@dataclass
class _Ledger:
    """What the clients know: acknowledged ids, ids ever sent, and the answers' counts."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    acked: set[str] = field(default_factory=set)
    sent: set[str] = field(default_factory=set)
    acks: Counter[int] = field(default_factory=Counter)  # 2xx per collector index
    acks_after_kill: int = 0
    killed: bool = False
    failovers: int = 0
    new_reported: int = 0  # sum of (accepted - duplicates) over 2xx answers
    # Per batch sent to both collectors: (collector, accepted, duplicates, first try).
    both: dict[int, list[tuple[int, int, int, bool]]] = field(default_factory=dict)
    outcomes: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def sending(self, ids: Sequence[str]) -> None:
        with self.lock:
            self.sent.update(ids)

    def ack(self, ids: Sequence[str], index: int, answer: Json) -> None:
        with self.lock:
            self.acked.update(ids)
            self.acks[index] += 1
            if self.killed:
                self.acks_after_kill += 1
            self.new_reported += int(answer["accepted"]) - int(answer["duplicates"])

    def failed(self, outcome: str) -> None:
        with self.lock:
            self.failovers += 1
            self.outcomes[outcome] += 1

    def both_answer(self, seq: int, answer: tuple[int, int, int, bool]) -> None:
        with self.lock:
            self.both.setdefault(seq, []).append(answer)

    def crossed(self) -> int:
        """Batches sent to both that both collectors acknowledged on the first try."""
        with self.lock:
            return sum(
                1
                for answers in self.both.values()
                if len(answers) == 2 and {a[0] for a in answers} == {0, 1}
            )

    def error(self, message: str) -> None:
        with self.lock:
            self.errors.append(message)


def _deliver(
    http: httpx.Client,
    ledger: _Ledger,
    urls: Sequence[str],
    prefer: list[int],
    ids: Sequence[str],
    stop: threading.Event,
) -> tuple[int, Json, bool] | None:
    """POST the batch until a collector answers 200: (collector, answer, first try).

    A refused or broken connection or a 5xx moves this client to the other collector
    for good, as a load balancer takes a dead backend out; the batch is sent again
    unchanged (same messageIds). ``None`` when told to stop before an answer.
    """
    body = {"batch": [_probe(i) for i in ids]}
    first = True
    for _attempt in range(_MAX_ATTEMPTS):
        index = prefer[0]
        ledger.sending(ids)
        try:
            response = http.post(f"{urls[index]}/v1/batch", json=body)
        except httpx.TransportError as exc:
            outcome = type(exc).__name__
        else:
            if response.status_code == 200:
                answer = response.json()
                if answer.get("accepted") != len(ids) or answer.get("rejected"):
                    raise AssertionError(f"unexpected 200 answer: {answer}")
                return index, answer, first
            if response.status_code < 500:
                raise AssertionError(f"{response.status_code}: {response.text}")
            outcome = str(response.status_code)
        ledger.failed(outcome)
        first = False
        prefer[0] = 1 - index
        if stop.is_set():
            return None  # these ids stay unknown: maybe stored, never acknowledged
        time.sleep(0.02)
    raise AssertionError(f"batch {ids[0]}… never acknowledged in {_MAX_ATTEMPTS} attempts")


def _probe(message_id: str) -> Json:
    return {
        "type": "track",
        "event": "Collector Probe",
        "userId": f"user-{hash(message_id) % 50}",
        "messageId": message_id,
        "properties": {"id": message_id},
    }


def _unique_client(
    number: int, key: str, urls: Sequence[str], ledger: _Ledger, stop: threading.Event
) -> None:
    prefer = [number % 2]
    try:
        with httpx.Client(auth=(key, ""), timeout=10.0) as http:
            for seq in range(_MAX_BATCHES):
                if stop.is_set():
                    return
                ids = [f"u{number}-{seq}-{i}" for i in range(_BATCH)]
                result = _deliver(http, ledger, urls, prefer, ids, stop)
                if result is None:
                    return
                index, answer, _first = result
                ledger.ack(ids, index, answer)
    except Exception as exc:  # reported by the test, never as an unhandled thread error
        ledger.error(f"client {number}: {exc!r}")


def _both_client(
    side: int,
    key: str,
    urls: Sequence[str],
    ledger: _Ledger,
    stop: threading.Event,
    barrier: threading.Barrier,
) -> None:
    """One of a pair: both send the same batch at the same moment, each to its collector."""
    prefer = [side]
    try:
        with httpx.Client(auth=(key, ""), timeout=10.0) as http:
            for seq in range(_MAX_BATCHES):
                if stop.is_set():
                    return
                try:
                    barrier.wait()
                except threading.BrokenBarrierError:
                    return
                ids = [f"both-{seq}-{i}" for i in range(_BOTH_BATCH)]
                result = _deliver(http, ledger, urls, prefer, ids, stop)
                if result is None:
                    return
                index, answer, first = result
                ledger.ack(ids, index, answer)
                ledger.both_answer(seq, (index, answer["accepted"], answer["duplicates"], first))
    except Exception as exc:
        ledger.error(f"both-client {side}: {exc!r}")


@dataclass
class LoadRun:
    prod: Prod
    ledger: _Ledger
    seed: int
    killed_pid: int
    survivor_pid: int
    survivor_exit: int | None


def _wait_load(ledger: _Ledger, what: str, check: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if ledger.errors:
            raise AssertionError(f"client errors while waiting for {what}: {ledger.errors[:3]}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}: acks {dict(ledger.acks)}")
        time.sleep(0.02)


def _run_load(prod: Prod) -> LoadRun:
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    collectors = prod.collectors("a", "b")
    a, b = collectors
    urls = [a.url, b.url]
    ledger = _Ledger()
    stop = threading.Event()
    barrier = threading.Barrier(2, timeout=10)
    threads = [
        threading.Thread(target=_unique_client, args=(n, prod.key, urls, ledger, stop), daemon=True)
        for n in range(_UNIQUE_CLIENTS)
    ] + [
        threading.Thread(
            target=_both_client, args=(side, prod.key, urls, ledger, stop, barrier), daemon=True
        )
        for side in (0, 1)
    ]
    survivor_exit = None
    try:
        for thread in threads:
            thread.start()
        _wait_load(
            ledger,
            "both collectors to acknowledge, and batches sent to both",
            lambda: min(ledger.acks[0], ledger.acks[1]) >= 30 and ledger.crossed() >= 5,
            timeout=30,
        )
        time.sleep(rng.uniform(0.2, 0.8))
        a.stop(signal.SIGKILL, timeout=10)
        with ledger.lock:
            ledger.killed = True
        _wait_load(
            ledger,
            "the survivor to take the load",
            lambda: ledger.acks_after_kill >= 100 and ledger.failovers > 0,
            timeout=30,
        )
        stop.set()
        barrier.abort()
        deadline = time.monotonic() + 30
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        assert not any(t.is_alive() for t in threads), "client threads did not stop"
        survivor_exit = b.stop(signal.SIGTERM)
    finally:
        stop.set()
        barrier.abort()
        for collector in collectors:
            collector.ensure_dead()
    return LoadRun(prod, ledger, seed, a.pid, b.pid, survivor_exit)


@pytest.fixture(scope="module")
def loaded(pg: PostgresServer, tmp_path_factory: pytest.TempPathFactory) -> LoadRun:
    """One database that took the load of test 1; test 2 runs pipelines on it after."""
    return _run_load(make_prod(pg, tmp_path_factory.mktemp("load")))


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_two_collectors_sigkill_one_every_acknowledged_event_stored_once(
    loaded: LoadRun,
) -> None:
    ledger, prod = loaded.ledger, loaded.prod
    where = f"(seed {loaded.seed}, failed attempts {dict(ledger.outcomes)})"
    assert ledger.errors == [], f"client errors {where}: {ledger.errors[:5]}"
    assert loaded.survivor_exit == 0, f"the survivor exited {loaded.survivor_exit} on SIGTERM"
    assert min(ledger.acks[0], ledger.acks[1]) > 0, f"acks per collector {dict(ledger.acks)}"
    assert ledger.acks_after_kill > 0, where
    assert ledger.failovers > 0, where

    stored = Counter(
        str(m) for (m,) in prod.rows(f"SELECT message_id FROM {SCHEMA}.events WHERE source = 'web'")
    )
    duplicated = {m: n for m, n in stored.items() if n > 1}
    assert duplicated == {}, f"events stored twice {where}: {list(duplicated)[:10]}"
    missing = ledger.acked - set(stored)
    assert not missing, (
        f"{len(missing)} of {len(ledger.acked)} acknowledged events are not stored {where}; "
        f"e.g. {sorted(missing)[:5]}"
    )
    invented = set(stored) - ledger.sent
    assert not invented, f"stored events nobody sent {where}: {sorted(invented)[:5]}"

    [(total, distinct, keys)] = prod.rows(
        f"SELECT count(*), count(DISTINCT (source, message_id)), "
        f"(SELECT count(*) FROM {SCHEMA}.message_ids) FROM {SCHEMA}.events"
    )
    assert total == distinct == len(stored) == keys
    # A 2xx that says "new" is a row nobody else stored; the rest were duplicates.
    assert ledger.new_reported <= total

    # Batches sent to both collectors at once: stored once, and when both answered on the
    # first try, exactly one of them claimed each event and the other called it a duplicate.
    both_acked = {m for m in ledger.acked if m.startswith("both-")}
    assert both_acked
    assert all(stored[m] == 1 for m in both_acked)
    clean = [answers for answers in ledger.both.values() if len(answers) == 2]
    crossed = [a for a in clean if {x[0] for x in a} == {0, 1} and all(x[3] for x in a)]
    assert crossed, f"no batch was acknowledged by both collectors {where}"
    for answers in clean:
        new = sum(accepted - duplicates for _c, accepted, duplicates, _f in answers)
        if all(first for *_rest, first in answers):
            assert new == _BOTH_BATCH, f"two answers to one batch claimed {new}: {answers}"
        else:
            assert new <= _BOTH_BATCH, answers

    # SIGKILL leaves the killed collector's floor behind; SIGTERM retires the survivor's.
    floors = prod.floors()
    assert loaded.killed_pid in floors
    assert loaded.survivor_pid not in floors


# -- 2. run --due from a third process ------------------------------------------------


def _past_rows(top: datetime) -> list[Json]:
    """Events arrived 6 to 2 hours before the current hour; some happened days earlier."""
    rng = random.Random(7)
    rows = []
    for h in range(2, 7):
        hour = top - h * HOUR
        for i in range(36):
            received = hour + timedelta(seconds=rng.randrange(3600), microseconds=i)
            late = i % 9 == 0
            rows.append(
                event_row(
                    f"past-{h}-{i}",
                    received,
                    source=("web", "backend")[i % 2],
                    event=(None, "Signed Up", "Order Completed")[i % 3],
                    kind=("identify", "track", "track")[i % 3],
                    user=f"user-{i % 7}" if i % 4 else None,
                    anonymous=f"anon-{i % 5}",
                    timestamp=received - (DAY * (2 + i % 2) if late else timedelta(minutes=3)),
                    plan=(None, "pro", "free")[i % 3],
                )
            )
    return rows


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_run_due_from_a_third_process_matches_the_events(loaded: LoadRun) -> None:
    prod = loaded.prod
    top = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    rows = _past_rows(top)
    engine = prod.engine()
    try:
        assert all(ingest(engine, rows))
    finally:
        engine.close()

    result = prod.cli("--env", "prod", "run", "--due")
    finished = datetime.now(UTC)
    assert result.returncode == 0, result.stdout + result.stderr
    ran = re.search(r"Ran (\d+) intervals?; (\d+) rows written", result.stdout)
    assert ran, result.stdout

    hourly = {
        (hour, source, name): (events, people)
        for hour, source, name, events, people in prod.rows(
            f"SELECT hour, source, event_name, events, people FROM {SCHEMA}.hourly_event_counts"
        )
    }
    expected_hourly = {
        (hour, source, name): (events, people)
        for hour, source, name, events, people in prod.rows(
            "SELECT date_trunc('hour', received_at), source, coalesce(event, type), count(*), "
            f"count(DISTINCT coalesce(user_id, anonymous_id)) FROM {SCHEMA}.events "
            "GROUP BY 1, 2, 3"
        )
    }
    hours = {key[0] for key in hourly}
    needed = {top - h * HOUR for h in range(2, 7)}
    assert needed <= hours, f"hours not run: {sorted(needed - hours)}"
    assert all(h + HOUR <= finished for h in hours), "an hour that had not ended was run"
    # Every hour up to the last one run, no gaps, and the same figures as counted here.
    last = max(hours)
    assert hourly == {k: v for k, v in expected_hourly.items() if k[0] <= last}

    daily = {
        (day, plan): (users, events)
        for day, plan, users, events in prod.rows(
            f"SELECT day, plan, active_users, events FROM {SCHEMA}.daily_active_users"
        )
    }
    expected_daily = {
        (day, plan): (users, events)
        for day, plan, users, events in prod.rows(
            "SELECT date_trunc('day', timestamp), coalesce(properties->>'plan', 'unknown'), "
            f"count(DISTINCT coalesce(user_id, anonymous_id)), count(*) FROM {SCHEMA}.events "
            "GROUP BY 1, 2"
        )
    }
    days = {key[0] for key in daily}
    first_day = min(r["timestamp"] for r in rows).replace(hour=0, minute=0, second=0, microsecond=0)
    assert {first_day, first_day + DAY} <= days, f"days run: {sorted(days)}"
    assert all(d + DAY <= finished for d in days)
    assert daily == {k: v for k, v in expected_daily.items() if k[0] <= max(days)}

    assert int(ran.group(2)) == len(hourly) + len(daily), result.stdout


# -- 3. the shared arrival floor --------------------------------------------------------


def _request(collector: Collector, key: str, message_id: str) -> tuple[bytes, bytes]:
    """A raw ``POST /v1/track``: (headers, body)."""
    body = json.dumps(
        {"type": "track", "event": "Floor Probe", "userId": "u-floor", "messageId": message_id}
    ).encode()
    auth = base64.b64encode(f"{key}:".encode()).decode()
    head = (
        f"POST /v1/track HTTP/1.1\r\nHost: {HOST}:{collector.port}\r\n"
        f"Authorization: Basic {auth}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode()
    return head, body


def _status(sock: socket.socket) -> int:
    """Read the answer to a raw request until the server closes; its status code."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return int(data.split(b" ", 2)[1])


class _Hold:
    """Hold a collector's next commit: an open transaction that claimed the message id.

    The collector's ``INSERT … ON CONFLICT DO NOTHING`` into ``message_ids`` waits for
    this transaction, so its request stays in flight, after its arrival was stamped,
    until :meth:`release` rolls back (and the event is then stored as new).
    """

    def __init__(self, prod: Prod, message_id: str) -> None:
        self.con = prod.connect(autocommit=False)
        self.con.execute(
            f"INSERT INTO {SCHEMA}.message_ids (source, message_id, received_at) "
            "VALUES ('web', %s, now())",
            [message_id],
        )

    def release(self) -> None:
        if not self.con.closed:
            self.con.rollback()
            self.con.close()


def _blocked(prod: Prod) -> bool:
    [(waiting,)] = prod.rows(
        "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
        "AND wait_event_type = 'Lock'"
    )
    return int(waiting) > 0


def _published_after(prod: Prod, pid: int, moment: datetime) -> tuple[datetime, datetime]:
    """``pid``'s floor row once it was published after ``moment`` (the database's clock)."""

    def fresh() -> tuple[datetime, datetime] | None:
        row = prod.floors().get(pid)
        return row if row is not None and row[1] > moment else None

    return wait_for(f"collector {pid} to publish its floor", fresh, timeout=15)


def _db_now(prod: Prod) -> datetime:
    [(now,)] = prod.rows("SELECT clock_timestamp()")
    return now


def _stored_received(prod: Prod, message_id: str) -> datetime:
    [(received,)] = prod.rows(
        f"SELECT received_at FROM {SCHEMA}.events WHERE message_id = %s", [message_id]
    )
    return received


def _hold_in_flight(
    prod: Prod, collector: Collector, message_id: str
) -> tuple[_Hold, socket.socket, int]:
    """Send a whole request whose commit is held; return once the collector waits on it."""
    hold = _Hold(prod, message_id)
    head, body = _request(collector, prod.key, message_id)
    sent = now_us()
    sock = socket.create_connection((HOST, collector.port), timeout=30)
    try:
        sock.sendall(head + body)
        wait_for("the collector's commit to wait on the held message id", lambda: _blocked(prod))
    except BaseException:
        sock.close()
        hold.release()
        raise
    return hold, sock, sent


@dataclass
class _Held:
    """A request held in flight: its answer, its arrival, and the floors seen meanwhile."""

    status: int | None
    sent_us: int
    arrived: int  # received_at once stored; 0 when not stored
    # (seconds into the hold, the collector's published floor, shared_floor(stale period))
    samples: list[tuple[float, int | None, int | None]]


def _hold_and_sample(
    prod: Prod, engine: PostgresEngine, collector: Collector, message_id: str, seconds: float
) -> _Held:
    """Hold a request's commit for ``seconds`` while sampling the floors, then let it go."""
    hold, sock, sent_us = _hold_in_flight(prod, collector, message_id)
    samples: list[tuple[float, int | None, int | None]] = []
    try:
        held_from = time.monotonic()
        while (elapsed := time.monotonic() - held_from) < seconds:
            row = prod.floors().get(collector.pid)
            shared = engine.floors.lowest(FLOOR_STALE_SECONDS)
            samples.append((round(elapsed, 2), to_us(row[0]) if row else None, shared))
            time.sleep(0.2)
        hold.release()
        try:
            status: int | None = _status(sock)
        except OSError:
            status = None
    finally:
        hold.release()
        sock.close()
    stored = prod.rows(
        f"SELECT received_at FROM {SCHEMA}.events WHERE message_id = %s", [message_id]
    )
    return _Held(status, sent_us, to_us(stored[0][0]) if stored else 0, samples)


def _assert_never_passed(held: _Held) -> None:
    """No floor seen while the request was in flight was later than its arrival."""
    passed = [
        (t, own, shared)
        for t, own, shared in held.samples
        if (own is not None and own > held.arrived)
        or (shared is not None and shared > held.arrived)
    ]
    assert not passed, (
        f"while an event that was then acknowledged was in flight on a live collector, "
        f"the floors passed its arrival ({held.arrived}) from {passed[0][0]} s on, so a "
        f"pipeline run elsewhere could have run its interval without it; "
        f"(seconds, collector's floor, shared floor): {passed[:3]}"
    )


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_shared_arrival_floor(prod: Prod) -> None:
    one, two = collectors = prod.collectors("one", "two")
    engine = prod.engine()
    sockets: list[socket.socket] = []
    try:
        started = _db_now(prod)
        for collector in collectors:
            _published_after(prod, collector.pid, started)

        # (a) A client stalled mid-upload has not arrived yet: its event is stamped when
        # the body is in, so it must not (and does not) hold the floor back meanwhile.
        head, body = _request(one, prod.key, "floor-stalled")
        stalled = socket.create_connection((HOST, one.port), timeout=30)
        sockets.append(stalled)
        stalled.sendall(head + body[:10])
        stalled_at = _db_now(prod)

        def past_stall() -> tuple[datetime, datetime] | None:
            row = prod.floors().get(one.pid)
            return row if row is not None and row[0] > stalled_at else None

        floor_during_stall, _seen = wait_for("the floor to pass a stalled upload", past_stall)
        stalled.sendall(body[10:])
        assert _status(stalled) == 200
        assert _stored_received(prod, "floor-stalled") >= floor_during_stall

        # (b) A request in flight after its arrival holds its collector's floor, and the
        # shared floor, at or before its arrival until it is answered; then they move on.
        held = _hold_and_sample(prod, engine, one, "floor-held", seconds=3.0)
        assert held.status == 200, held.status
        assert held.sent_us <= held.arrived
        assert len(held.samples) > 5
        _assert_never_passed(held)

        def moved_on() -> bool:
            own = to_us(prod.floors()[one.pid][0])
            shared = engine.floors.lowest(FLOOR_STALE_SECONDS) or 0
            return own > held.arrived and shared > held.arrived

        wait_for("the floors to move past the answered request", moved_on)

        # (c) SIGKILL: the dead collector's row stays and holds the shared floor back for
        # the stale period; past it, only the live collector's floor counts.
        assert one.stop(signal.SIGKILL, timeout=10) == -signal.SIGKILL
        last = to_us(prod.floors()[one.pid][0])
        _published_after(prod, two.pid, _db_now(prod))
        assert engine.floors.lowest(FLOOR_STALE_SECONDS) == last
        wait_for("the dead collector's floor to go stale",
                 lambda: (engine.floors.lowest(2.0) or 0) > last)  # fmt: skip
        assert one.pid in prod.floors(), "nobody may remove a SIGKILLed collector's row"

        # (d) SIGTERM: the collector removes its own row on the way out.
        assert two.stop(signal.SIGTERM) == 0
        floors = prod.floors()
        assert two.pid not in floors
        assert set(floors) == {one.pid}
        assert engine.floors.lowest(2.0) is None  # only the stale row is left
        assert engine.floors.lowest(3600) == last
    finally:
        for sock in sockets:
            sock.close()
        for collector in collectors:
            collector.ensure_dead()
        engine.close()


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_commit_slower_than_the_stale_period_does_not_pass_the_floor(prod: Prod) -> None:
    """A live collector whose commit waits (a lock, a slow disk) longer than the stale
    period is still alive: the shared floor must stay at or before the arrival of the
    event it is committing, or the collector must refuse that event (a 503 the client
    retries, stamped anew). Otherwise the event is stored into an interval that a
    pipeline run elsewhere has already done without it."""
    one, _two = collectors = prod.collectors("one", "two")
    engine = prod.engine()
    try:
        started = _db_now(prod)
        for collector in collectors:
            _published_after(prod, collector.pid, started)
        held = _hold_and_sample(
            prod, engine, one, "floor-slow-commit", seconds=FLOOR_STALE_SECONDS + 3
        )
        assert held.status in (200, 503), held.status
        if held.status == 200:
            _assert_never_passed(held)
        else:
            assert held.arrived == 0, "an event answered 503 was stored"
    finally:
        for collector in collectors:
            collector.ensure_dead()
        engine.close()


# -- 4. export from the embedded store, import into PostgreSQL ---------------------------


@pytest.mark.timeout(120)
def test_export_from_duckdb_import_into_postgres(prod: Prod, tmp_path: Path) -> None:
    today = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
    rows = [
        event_row(
            f"exp-{d}-{i}",
            today - d * DAY + timedelta(hours=1 + i % 20, microseconds=i),
            source=("web", "backend")[i % 2],
            user=f"user-{i % 5}",
            plan=("pro", None)[i % 2],
        )
        for d in range(1, 4)
        for i in range(25)
    ]
    failed = pa.Table.from_pylist(
        [
            {"id": f"bad-{i}", "source": "web", "received_at": today - DAY + HOUR,
             "code": "missing_identity", "field": "userId", "message": "no identity",
             "payload": '{"event": "x"}'}
            for i in range(3)
        ],
        schema=schema.FAILED_EVENTS,
    )  # fmt: skip
    duck = DuckDBEngine.open(prod.root / ".headwater" / "events.duckdb")
    try:
        assert all(ingest(duck, rows, failed))
    finally:
        duck.close()

    folder = tmp_path / "export"
    exported = prod.cli("export", str(folder))
    assert exported.returncode == 0, exported.stdout + exported.stderr
    assert "Exported events: 3 days, 75 rows." in exported.stdout, exported.stdout

    imported = prod.cli("--env", "prod", "import", str(folder))
    assert imported.returncode == 0, imported.stdout + imported.stderr
    assert "Imported events: 3 days, 75 rows." in imported.stdout, imported.stdout
    assert "Imported failed_events: 1 days, 3 rows." in imported.stdout, imported.stdout

    def stored() -> tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]:
        events = prod.rows(
            f"SELECT message_id, source, received_at, user_id FROM {SCHEMA}.events ORDER BY 1"
        )
        bad = prod.rows(f"SELECT id, code FROM {SCHEMA}.failed_events ORDER BY 1")
        return events, bad

    expected = sorted((r["message_id"], r["source"], r["received_at"], r["user_id"]) for r in rows)
    events, bad = stored()
    assert events == expected
    assert bad == [(f"bad-{i}", "missing_identity") for i in range(3)]

    again = prod.cli("--env", "prod", "import", str(folder))
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Imported events: 0 days, 0 rows (3 days done before)." in again.stdout, again.stdout
    assert "(1 days done before)" in again.stdout, again.stdout
    assert stored() == (events, bad)
