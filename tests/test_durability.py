"""Durability of the collector: what a 2xx promises, under crashes, storms, shutdown and load.

Every test here but the last runs a real ``headwater up`` process on loopback and
talks to it over real HTTP. The contract under test (DESIGN.md, "Collect"): a 2xx
is sent only after the events are committed; a duplicate is never stored twice;
overload and store failure answer 503 with ``Retry-After``; SIGTERM stops
accepting, commits and answers what is in flight, and exits.
"""

from __future__ import annotations

import asyncio
import json
import random
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pytest
from prometheus_client import CollectorRegistry
from prometheus_client.parser import text_string_to_metric_families

from headwater.collect.errors import CommitFailed
from headwater.collect.metrics import CollectorMetrics
from headwater.collect.validate import EventRow, Validator
from headwater.collect.writer import Outcome, Writer
from headwater.core.clock import now_us
from headwater.store.duckdb import DuckDBEngine
from headwater.store.engine import IngestBatch
from headwater.store.errors import StoreUnavailable
from tests.conftest import Project, Server

Json = dict[str, Any]


# -- helpers ----------------------------------------------------------------


def _event(message_id: str, **extra: object) -> Json:
    return {
        "type": "track",
        "event": "Durability Probe",
        "userId": "u-durability",
        "messageId": message_id,
        "properties": {"id": message_id},
        **extra,
    }


def _batch(ids: Sequence[str]) -> Json:
    return {"batch": [_event(i) for i in ids]}


def _http(project: Project, timeout: float = 10.0) -> httpx.Client:
    return httpx.Client(auth=(project.key, ""), timeout=timeout)


def _stored_ids(project: Project) -> list[str]:
    """Every ``message_id`` in ``events``, one entry per row (duplicates kept)."""
    table = project.query("SELECT message_id FROM events")
    return [str(v) for v in table.column("message_id").to_pylist()]


def _set_collector(project: Project, **values: object) -> None:
    """Set keys of the ``[collector]`` table that ``headwater init`` wrote."""
    path = project.root / "headwater.toml"
    text = path.read_text()
    assert text.count("[collector]\n") == 1, "expected one [collector] table from headwater init"
    lines = "".join(f"{k} = {json.dumps(v)}\n" for k, v in values.items())
    path.write_text(text.replace("[collector]\n", "[collector]\n" + lines, 1))


def _join(threads: Sequence[threading.Thread], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    alive = [t.name for t in threads if t.is_alive()]
    assert not alive, f"threads still running after {timeout}s: {alive}"


def _metrics(url: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """The samples of ``/metrics``, keyed by name and sorted labels."""
    text = httpx.get(f"{url}/metrics", timeout=10).text
    samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            samples[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return samples


def _dups(counts: Counter[str]) -> dict[str, int]:
    return {k: n for k, n in counts.items() if n > 1}


# -- 1. crash: SIGKILL under load, restart, nothing acknowledged is lost --------


@dataclass
class _Target:
    """Where clients send now; replaced on every restart."""

    url: str
    life: int
    lock: threading.Lock = field(default_factory=threading.Lock)

    def get(self) -> tuple[str, int]:
        with self.lock:
            return self.url, self.life

    def set(self, url: str, life: int) -> None:
        with self.lock:
            self.url, self.life = url, life


@dataclass
class _Ledger:
    """What the clients know: acknowledged ids (and in which life), and the unknown ones."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    acked: dict[str, int] = field(default_factory=dict)
    unknown: set[str] = field(default_factory=set)
    acks_per_life: Counter[int] = field(default_factory=Counter)
    found_duplicate: int = 0
    requests: Counter[str] = field(default_factory=Counter)
    errors: list[str] = field(default_factory=list)

    def sending(self, ids: Sequence[str]) -> None:
        with self.lock:
            self.unknown.update(ids)

    def ack(self, ids: Sequence[str], life: int, duplicates: int) -> None:
        with self.lock:
            for i in ids:
                self.acked[i] = life
            self.unknown.difference_update(ids)
            self.acks_per_life[life] += len(ids)
            self.found_duplicate += duplicates

    def count(self, what: str) -> None:
        with self.lock:
            self.requests[what] += 1

    def error(self, message: str) -> None:
        with self.lock:
            self.errors.append(message)

    def acks_in(self, life: int) -> int:
        with self.lock:
            return self.acks_per_life[life]


_CRASH_CLIENTS = 4
_CRASH_BATCH = 20
_CRASH_KILLS = 4
_CRASH_MAX_BATCHES = 2_000  # per client: a bound on the loop, far above what ~8 s allows


def _crash_client(
    number: int, project: Project, target: _Target, ledger: _Ledger, stop: threading.Event
) -> None:
    """Send batches until ``stop``; retry a failed batch unchanged, like a Segment client."""
    try:
        with _http(project, timeout=5.0) as http:
            for seq in range(_CRASH_MAX_BATCHES):
                if stop.is_set():
                    return
                ids = [f"crash-{number}-{seq}-{i}" for i in range(_CRASH_BATCH)]
                body = _batch(ids)
                for _attempt in range(200):
                    url, life = target.get()
                    ledger.sending(ids)
                    try:
                        response = http.post(f"{url}/v1/batch", json=body)
                    except httpx.TransportError as exc:
                        ledger.count(type(exc).__name__)
                    else:
                        ledger.count(str(response.status_code))
                        if response.status_code == 200:
                            answer = response.json()
                            if answer.get("accepted") != _CRASH_BATCH or answer.get("rejected"):
                                ledger.error(f"unexpected 200 answer: {answer}")
                                return
                            ledger.ack(ids, life, int(answer["duplicates"]))
                            break
                        if response.status_code < 500:
                            ledger.error(f"{response.status_code}: {response.text}")
                            return
                    if stop.is_set():
                        return  # these ids stay unknown
                    time.sleep(0.02)
                else:
                    ledger.error(f"batch {seq} of client {number} never acknowledged")
                    return
    except Exception as exc:  # report in the test, never as an unhandled thread error
        ledger.error(f"client {number} crashed: {exc!r}")


def _wait_for_acks(ledger: _Ledger, life: int, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while ledger.acks_in(life) == 0 and time.monotonic() < deadline and not ledger.errors:
        time.sleep(0.02)


#: Each crash, storm and drain test runs with the server answering alone, and with two
#: accept processes in front of it (``[collector] accept_processes``).
ACCEPT = pytest.mark.parametrize("accept", [0, 2], ids=["one-process", "accept-processes"])


@pytest.mark.slow
@pytest.mark.timeout(120)
@ACCEPT
def test_sigkill_under_load_loses_no_acknowledged_event(project: Project, accept: int) -> None:
    _set_collector(project, accept_processes=accept)
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    server = Server(project).start()
    servers = [server]
    target = _Target(server.url, 0)
    ledger = _Ledger()
    stop = threading.Event()
    clients = [
        threading.Thread(
            target=_crash_client,
            args=(n, project, target, ledger, stop),
            name=f"crash-client-{n}",
            daemon=True,
        )
        for n in range(_CRASH_CLIENTS)
    ]
    exit_code: int | None = None
    try:
        for thread in clients:
            thread.start()
        for life in range(_CRASH_KILLS + 1):
            # Let this life acknowledge something, then crash it at a random moment.
            _wait_for_acks(ledger, life, timeout=10.0)
            time.sleep(rng.uniform(0.3, 1.0))
            if life == _CRASH_KILLS:
                break
            server.kill()
            server = Server(project).start()
            servers.append(server)
            target.set(server.url, life + 1)
        stop.set()
        _join(clients, timeout=30.0)
        exit_code = server.stop(signal.SIGTERM, timeout=60.0)
    finally:
        stop.set()
        for running in servers:
            if running.process is not None and running.process.poll() is None:
                running.kill()

    where = f"(seed {seed}, requests {dict(ledger.requests)})"
    assert ledger.errors == [], f"client errors {where}: {ledger.errors[:5]}"
    assert exit_code == 0, f"the last server exited with {exit_code} on SIGTERM {where}"
    per_life = [ledger.acks_per_life[life] for life in range(_CRASH_KILLS + 1)]
    assert all(n > 0 for n in per_life), f"a life acknowledged nothing: {per_life} {where}"

    stored = _stored_ids(project)
    counts = Counter(stored)
    assert _dups(counts) == {}, f"events stored twice {where}: {list(_dups(counts))[:10]}"
    missing = set(ledger.acked) - set(counts)
    assert not missing, (
        f"{len(missing)} of {len(ledger.acked)} acknowledged events are not stored {where}; "
        f"e.g. {sorted(missing)[:5]}, lives {Counter(ledger.acked[m] for m in missing)}"
    )
    never_sent = set(counts) - set(ledger.acked) - ledger.unknown
    assert not never_sent, f"stored events nobody sent {where}: {sorted(never_sent)[:5]}"
    # The dedupe table agrees with events (one id per stored event, none lost).
    keys = project.query("SELECT count(*) AS n, count(DISTINCT message_id) AS d FROM message_ids")
    assert keys.to_pylist() == [{"n": len(counts), "d": len(counts)}]


# -- 2. duplicate storm -------------------------------------------------------------


_STORM_THREADS = 16


@pytest.mark.slow
@pytest.mark.timeout(90)
@ACCEPT
def test_duplicate_storm_stores_one_row(project: Project, accept: int) -> None:
    _set_collector(project, accept_processes=accept)
    server = Server(project).start()
    try:
        _storm(server, project)
    finally:
        server.stop()


def _storm(server: Server, project: Project) -> None:
    message_id = "storm-the-one-and-only"
    barrier = threading.Barrier(_STORM_THREADS, timeout=30)
    lock = threading.Lock()
    answers: list[tuple[str, int, Json]] = []
    errors: list[str] = []

    # Per thread, the id is sent 6 times: alone on /v1/track, twice inside one
    # batch, and once beside a new event, in two rounds; a barrier starts each send.
    def sends(n: int) -> list[tuple[str, Json, int]]:
        plan: list[tuple[str, Json, int]] = []
        for r in range(2):
            plan.append(("/v1/track", _event(message_id), 1))
            plan.append(("/v1/batch", {"batch": [_event(message_id), _event(message_id)]}, 2))
            plan.append(("/v1/batch", _batch([f"storm-{n}-{r}", message_id]), 1))
        return plan

    def storm(n: int) -> None:
        try:
            with _http(project) as http:
                for path, body, _count in sends(n):
                    barrier.wait()
                    response = http.post(f"{server.url}{path}", json=body)
                    with lock:
                        answers.append((path, response.status_code, response.json()))
        except Exception as exc:
            barrier.abort()
            with lock:
                errors.append(f"thread {n}: {exc!r}")

    threads = [
        threading.Thread(target=storm, args=(n,), name=f"storm-{n}", daemon=True)
        for n in range(_STORM_THREADS)
    ]
    for thread in threads:
        thread.start()
    _join(threads, timeout=60)
    assert errors == []

    total_sends = sum(c for n in range(_STORM_THREADS) for _p, _b, c in sends(n))
    assert len(answers) == _STORM_THREADS * 6
    bad = [(path, status, body) for path, status, body in answers if not 200 <= status < 300]
    assert bad == []
    assert all(body["rejected"] == [] for _p, _s, body in answers)
    duplicates = sum(int(body["duplicates"]) for _p, _s, body in answers)
    assert duplicates == total_sends - 1

    rows = project.query(
        "SELECT count(*) AS n FROM events WHERE message_id = ?", message_id
    ).to_pylist()
    assert rows == [{"n": 1}]
    counts = Counter(_stored_ids(project))
    fillers = {f"storm-{n}-{r}" for n in range(_STORM_THREADS) for r in range(2)}
    assert counts == Counter({message_id: 1, **dict.fromkeys(fillers, 1)})


# -- 3. graceful drain on SIGTERM -----------------------------------------------------


_DRAIN_THREADS = 24
_DRAIN_BATCH = 200


@dataclass(frozen=True)
class _Call:
    started: float
    ended: float
    ids: tuple[str, ...]
    status: int | None  # None: no HTTP answer (connection refused, reset, timeout)
    error: str = ""
    body: str = ""


@pytest.mark.slow
@pytest.mark.timeout(120)
@ACCEPT
def test_sigterm_drains_in_flight_requests(project: Project, accept: int) -> None:
    _set_collector(project, accept_processes=accept)
    server = Server(project).start()
    assert server.process is not None
    url = server.url
    lock = threading.Lock()
    calls: list[_Call] = []
    errors: list[str] = []
    terminated = threading.Event()
    hard_deadline = time.monotonic() + 60

    def load(n: int) -> None:
        try:
            with _http(project, timeout=20.0) as http:
                for seq in range(10_000):
                    if time.monotonic() > hard_deadline:
                        return
                    ids = tuple(f"drain-{n}-{seq}-{i}" for i in range(_DRAIN_BATCH))
                    started = time.monotonic()
                    try:
                        response = http.post(f"{url}/v1/batch", json=_batch(ids))
                    except httpx.TransportError as exc:
                        call = _Call(started, time.monotonic(), ids, None, repr(exc))
                    else:
                        call = _Call(
                            started, time.monotonic(), ids, response.status_code, "", response.text
                        )
                    with lock:
                        calls.append(call)
                    # After SIGTERM keep knocking until the door is shut.
                    if call.status is None:
                        if terminated.is_set():
                            return
                        time.sleep(0.01)
        except Exception as exc:
            with lock:
                errors.append(f"thread {n}: {exc!r}")

    threads = [
        threading.Thread(target=load, args=(n,), name=f"drain-{n}", daemon=True)
        for n in range(_DRAIN_THREADS)
    ]
    try:
        for thread in threads:
            thread.start()
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            with lock:
                if sum(c.status == 200 for c in calls) >= _DRAIN_THREADS:
                    break
            time.sleep(0.02)
        time.sleep(0.3)
        signalled = time.monotonic()
        server.process.send_signal(signal.SIGTERM)
        terminated.set()
        exit_code = server.process.wait(timeout=45)
        exited_after = time.monotonic() - signalled
        _join(threads, timeout=30)
    finally:
        terminated.set()
        if server.process.poll() is None:
            server.kill()

    assert errors == []
    assert exit_code == 0, server.log.read_text()[-2000:]
    assert exited_after < 15, f"took {exited_after:.1f}s to exit after SIGTERM"

    # Nothing after the exit gets in, let alone gets a 2xx.
    with _http(project, timeout=5.0) as http, pytest.raises(httpx.TransportError):
        http.post(f"{url}/v1/batch", json=_batch(["drain-after-exit"]))

    statuses = Counter(c.status for c in calls)
    unexpected = [c for c in calls if c.status not in (None, 200, 503)]
    assert unexpected == [], f"statuses {statuses}: {[(c.status, c.body) for c in unexpected[:3]]}"
    for call in calls:
        if call.status == 503:
            assert json.loads(call.body)["error"]["code"] == "shutting_down", call.body
    acked = {i for c in calls if c.status == 200 for i in c.ids}
    sent = {i for c in calls for i in c.ids}
    in_flight_answered = [c for c in calls if c.status == 200 and c.started < signalled < c.ended]
    assert in_flight_answered, f"no request in flight at SIGTERM was answered 200: {statuses}"

    counts = Counter(_stored_ids(project))
    assert _dups(counts) == {}
    missing = acked - set(counts)
    assert not missing, (
        f"{len(missing)} acknowledged events lost on SIGTERM "
        f"({len(in_flight_answered)} requests drained, statuses {statuses})"
    )
    assert set(counts) <= sent


# -- 4. overload: 503 + Retry-After, and the health and metrics endpoints -------------


_OVERLOAD_QUEUE_MAX = 5
_OVERLOAD_THREADS = 32
_OVERLOAD_BATCH = 3


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_overload_answers_503_and_loses_nothing_acknowledged(project: Project) -> None:
    _set_collector(project, queue_max_events=_OVERLOAD_QUEUE_MAX, retry_after_seconds=3)
    server = Server(project).start()
    try:
        _check_overload(server, project)
    finally:
        exit_code = server.stop()
    assert exit_code == 0


_Answer = tuple[list[str], int, httpx.Headers, Json]


def _overload_round(server: Server, project: Project, number: int) -> list[_Answer]:
    barrier = threading.Barrier(_OVERLOAD_THREADS, timeout=30)
    lock = threading.Lock()
    results: list[_Answer] = []
    errors: list[str] = []

    def send(n: int) -> None:
        try:
            with _http(project) as http:
                for k in range(3):
                    ids = [f"over-{number}-{n}-{k}-{i}" for i in range(_OVERLOAD_BATCH)]
                    barrier.wait()
                    response = http.post(f"{server.url}/v1/batch", json=_batch(ids))
                    with lock:
                        results.append(
                            (ids, response.status_code, response.headers, response.json())
                        )
        except Exception as exc:
            barrier.abort()
            with lock:
                errors.append(f"thread {n}: {exc!r}")

    threads = [
        threading.Thread(target=send, args=(n,), name=f"overload-{n}", daemon=True)
        for n in range(_OVERLOAD_THREADS)
    ]
    for thread in threads:
        thread.start()
    _join(threads, timeout=60)
    assert errors == []
    return results


def _check_overload(server: Server, project: Project) -> None:
    with _http(project) as http:
        assert http.get(f"{server.url}/healthz").status_code == 200
        ready = http.get(f"{server.url}/readyz")
        assert ready.status_code == 200, ready.text
        # A request larger than the whole queue is still taken when nothing waits.
        big = [f"over-big-{i}" for i in range(4 * _OVERLOAD_QUEUE_MAX)]
        response = http.post(f"{server.url}/v1/batch", json=_batch(big))
        assert response.status_code == 200, response.text

    results: list[_Answer] = []
    for number in range(10):
        results += _overload_round(server, project, number)
        if any(status == 503 for _i, status, _h, _b in results):
            break
    statuses = Counter(status for _i, status, _h, _b in results)
    assert set(statuses) <= {200, 503}, statuses
    assert statuses[503] > 0, f"no request was refused with a queue of {_OVERLOAD_QUEUE_MAX}"
    assert statuses[200] > 0, statuses
    for _ids, status, headers, body in results:
        if status == 503:
            assert headers.get("retry-after") == "3", headers
            assert body["error"]["code"] == "overloaded", body
        else:
            assert body["accepted"] == _OVERLOAD_BATCH, body
            assert body["duplicates"] == 0, body

    acked = {i for ids, s, _h, _b in results if s == 200 for i in ids} | set(big)
    refused = {i for ids, s, _h, _b in results if s == 503 for i in ids}
    counts = Counter(_stored_ids(project))
    assert _dups(counts) == {}
    assert acked - set(counts) == set(), "acknowledged events are missing"
    assert refused & set(counts) == set(), "events answered 503 were stored anyway"
    assert set(counts) == acked

    with _http(project) as http:
        # One duplicate request and one bad single event, so those counters have samples.
        again = http.post(f"{server.url}/v1/batch", json=_batch(big[:2]))
        assert again.status_code == 200
        assert again.json()["duplicates"] == 2
        bad = {"type": "track", "event": "No Identity", "messageId": "over-bad-single"}
        refused_single = http.post(f"{server.url}/v1/track", json=bad)
        assert refused_single.status_code == 400, refused_single.text
        assert [r["code"] for r in refused_single.json()["rejected"]] == ["missing_identity"]
        ready = http.get(f"{server.url}/readyz")
        assert ready.status_code == 200, ready.text
        assert http.get(f"{server.url}/healthz").status_code == 200

    stored = len(_stored_ids(project))
    failed = project.query("SELECT code FROM failed_events").column("code").to_pylist()
    assert failed == ["missing_identity"]
    samples = _metrics(server.url)
    web = (("source", "web"),)
    assert samples[("headwater_events_accepted_total", web)] == stored
    assert samples[("headwater_events_duplicate_total", web)] == 2
    rejected_key = (("code", "missing_identity"), ("source", "web"))
    assert samples[("headwater_events_rejected_total", rejected_key)] == 1
    assert samples[("headwater_commit_seconds_count", ())] >= 1
    assert samples[("headwater_commit_seconds_sum", ())] > 0
    assert samples[("headwater_writer_queue_events", ())] == 0

    # Last, because it is the case most likely to break: a bad event inside a batch
    # is rejected alone; the good one beside it is acknowledged and stored.
    mixed = {"batch": [_event("over-good"), {"type": "track", "event": "No Identity"}]}
    with _http(project) as http:
        response = http.post(f"{server.url}/v1/batch", json=mixed)
    assert response.status_code == 200, (
        f"a batch with one bad event was answered {response.status_code} {response.text!r}; "
        "its good event cannot be delivered however often the client retries"
    )
    assert [r["index"] for r in response.json()["rejected"]] == [1]
    assert "over-good" in _stored_ids(project)
    assert project.query("SELECT count(*) AS n FROM failed_events").to_pylist() == [{"n": 2}]


# -- 5. store failure: 503, not 500, and not a lost event (in-process) ----------------


_VALIDATOR = Validator(max_event_bytes=32_768, max_depth=64)


def _rows(ids: Sequence[str]) -> list[EventRow]:
    received = now_us()
    return [
        _VALIDATOR.event(json.dumps(_event(i)).encode(), None, "web", received, None) for i in ids
    ]


class _FaultyEngine:
    """FAULT INJECTION: a real DuckDBEngine whose ``ingest`` fails on demand.

    ``fail(batch)`` decides per call whether to raise ``StoreUnavailable`` instead
    of committing; ``gate``, when set, holds the next ``ingest`` until released so
    that submissions pile up and are committed as one group.
    """

    name = "faulty-duckdb"

    def __init__(self, inner: DuckDBEngine, fail: Callable[[list[str]], bool]) -> None:
        self.inner = inner
        self.fail = fail
        self.calls: list[list[str]] = []
        self.gate: threading.Event | None = None
        self.entered = threading.Event()

    def ingest(self, batch: IngestBatch) -> pa.Array:
        ids = [str(i) for i in batch.events.column("message_id").to_pylist()]
        self.calls.append(ids)
        gate, self.gate = self.gate, None
        if gate is not None:
            self.entered.set()
            gate.wait(10)
        if self.fail(ids):
            raise StoreUnavailable(self.name, "injected fault")
        return self.inner.ingest(batch)

    def prune_dedupe(self, before_us: int) -> int:
        return self.inner.prune_dedupe(before_us)


@dataclass
class _Rig:
    engine: _FaultyEngine
    writer: Writer
    registry: CollectorRegistry
    path: Path


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[_Rig]:
    path = tmp_path / "store" / "events.duckdb"
    inner = DuckDBEngine.open(path)
    engine = _FaultyEngine(inner, lambda _ids: False)
    registry = CollectorRegistry()
    metrics = CollectorMetrics(registry)
    writer = Writer(
        engine,  # type: ignore[arg-type]
        metrics,
        dedupe_window_us=7 * 86_400 * 1_000_000,
        queue_max_events=10_000,
        commit_max_events=10_000,
        retry_after=7,
    )
    writer.start()
    try:
        yield _Rig(engine, writer, registry, path)
    finally:
        writer.close(10)
        inner.close()


def _read_store(path: Path) -> list[str]:
    engine = DuckDBEngine.open(path, read_only=True)
    try:
        ids = engine.query("SELECT message_id FROM events ORDER BY 1").column("message_id")
        return [str(i) for i in ids.to_pylist()]
    finally:
        engine.close()


@pytest.mark.timeout(60)
def test_store_failure_is_a_retryable_503_and_the_writer_recovers(rig: _Rig) -> None:
    engine, writer, path = rig.engine, rig.writer, rig.path
    failures_left = [2]

    def fail_first_two(_ids: list[str]) -> bool:
        if failures_left[0] > 0:
            failures_left[0] -= 1
            return True
        return False

    engine.fail = fail_first_two

    async def scenario() -> tuple[list[BaseException], bool, Outcome, Outcome, bool]:
        refused: list[BaseException] = []
        for ids in (["sf-a1", "sf-a2"], ["sf-b1"]):
            try:
                await asyncio.wait_for(writer.submit(_rows(ids), [], 0), 10)
            except CommitFailed as exc:
                refused.append(exc)
        unhealthy_after_failure = not writer.healthy
        # The client retries the first request unchanged, then sends a new one.
        retried = await asyncio.wait_for(writer.submit(_rows(["sf-a1", "sf-a2"]), [], 0), 10)
        fresh = await asyncio.wait_for(writer.submit(_rows(["sf-c1", "sf-a1"]), [], 0), 10)
        return refused, unhealthy_after_failure, retried, fresh, writer.healthy

    refused, unhealthy, retried, fresh, healthy = asyncio.run(scenario())
    assert len(refused) == 2
    assert all(isinstance(e, CommitFailed) and e.retry_after == 7 for e in refused)
    assert all(getattr(e, "code", None) == "store_unavailable" for e in refused)
    assert unhealthy, "readyz must report the failed commit"
    assert writer.accepting, "the writer thread died after a store failure"
    assert retried == Outcome(stored=2, duplicates=0)
    assert fresh == Outcome(stored=1, duplicates=1)
    assert healthy
    assert rig.registry.get_sample_value("headwater_commit_failures_total") == 2

    writer.close(10)
    engine.inner.close()
    assert _read_store(path) == ["sf-a1", "sf-a2", "sf-c1"]


@pytest.mark.timeout(60)
def test_one_poisoned_submission_does_not_fail_its_group(rig: _Rig) -> None:
    engine, writer, path = rig.engine, rig.writer, rig.path
    engine.fail = lambda ids: "poison" in ids

    async def scenario() -> list[Outcome | BaseException]:
        # Hold the writer inside one commit so that the next three submissions
        # queue up and are taken as one group.
        gate = threading.Event()
        engine.gate = gate
        first = asyncio.ensure_future(writer.submit(_rows(["pz-first"]), [], 0))
        await asyncio.sleep(0)
        entered = await asyncio.to_thread(engine.entered.wait, 10)
        assert entered, "the writer never reached the store"
        group = [
            asyncio.ensure_future(writer.submit(_rows(ids), [], 0))
            for ids in (["pz-a1", "pz-a2"], ["pz-b1", "poison"], ["pz-c1"])
        ]
        for _ in range(500):  # until all three wait in the queue
            if writer.queued == 5:
                break
            await asyncio.sleep(0.01)
        assert writer.queued == 5, writer.queued
        gate.set()
        results = await asyncio.wait_for(asyncio.gather(first, *group, return_exceptions=True), 20)
        return list(results)

    first, a, b, c = asyncio.run(scenario())
    assert first == Outcome(stored=1, duplicates=0)
    assert a == Outcome(stored=2, duplicates=0)
    assert isinstance(b, CommitFailed), b
    assert c == Outcome(stored=1, duplicates=0)
    # The group was tried together once, then each submission alone.
    grouped = ["pz-a1", "pz-a2", "pz-b1", "poison", "pz-c1"]
    assert engine.calls[1:] == [grouped, ["pz-a1", "pz-a2"], ["pz-b1", "poison"], ["pz-c1"]]
    assert writer.accepting

    writer.close(10)
    engine.inner.close()
    assert _read_store(path) == ["pz-a1", "pz-a2", "pz-c1", "pz-first"]
