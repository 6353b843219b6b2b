"""Accept processes (``[collector] accept_processes``) in front of the store's process.

The crash, duplicate-storm and drain tests of test_durability.py also run with two
accept processes; these tests cover what only they have: real SDK traffic through
them, the other paths proxied to the owner, an accept process killed and replaced,
accept processes dying with the owner, and the wire itself (floor, outcomes per
request, erased people) in one process with a real DuckDB store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import socket
import threading
from collections import Counter
from pathlib import Path

import httpx
import pyarrow as pa
import pytest
import segment.analytics.client as segment
from prometheus_client import CollectorRegistry

from headwater.cli.scaffold import add_admin, init_project
from headwater.collect.errors import CommitFailed
from headwater.collect.forward import Forwarder
from headwater.collect.metrics import CollectorMetrics
from headwater.collect.suppress import Suppression, id_hash
from headwater.collect.validate import Validator
from headwater.collect.writer import Outcome, Writer
from headwater.core.clock import now_us
from headwater.dashboard.tail import MAX_VIEWERS
from headwater.runtime.acceptors import Frames
from headwater.store.duckdb import DuckDBEngine
from headwater.store.engine import IngestBatch
from headwater.store.errors import StoreUnavailable
from tests.conftest import Project, Server, wait_for

ACCEPTOR = "headwater.runtime.accept_process"


def _accepting(project: Project, count: int = 2) -> Server:
    path = project.root / "headwater.toml"
    text = path.read_text()
    path.write_text(text.replace("[collector]\n", f"[collector]\naccept_processes = {count}\n", 1))
    return Server(project).start()


def _acceptors(server: Server) -> set[int]:
    """The live accept processes the server started (its children running the module)."""
    assert server.process is not None
    pid = server.process.pid
    children: set[int] = set()
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        children.update(int(child) for child in text)
    return {child for child in children if _is_acceptor(child)}


def _is_acceptor(pid: int) -> bool:
    try:
        command = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return ACCEPTOR.encode() in command and state != "Z"


def _running(pid: int) -> bool:
    """Whether ``pid`` is a process that has not exited (an exiting one may already have
    no command line while it still holds its sockets)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def _listening() -> dict[int, set[int]]:
    """Per local TCP port some process listens on, the sockets' inodes (state 0A in
    /proc/net/tcp and tcp6)."""
    sockets: dict[int, set[int]] = {}
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with contextlib.suppress(FileNotFoundError):
            for line in Path(table).read_text().splitlines()[1:]:
                fields = line.split()
                if fields[3] == "0A":
                    port = int(fields[1].rsplit(":", 1)[1], 16)
                    sockets.setdefault(port, set()).add(int(fields[9]))
    return sockets


def _ids(project: Project) -> Counter[str]:
    table = project.query("SELECT message_id FROM events")
    return Counter(str(v) for v in table.column("message_id").to_pylist())


def test_sdk_traffic_and_every_other_path_go_through_accept_processes(project: Project) -> None:
    server = _accepting(project)
    try:
        assert len(_acceptors(server)) == 2
        errors: list[Exception] = []
        client = segment.Client(
            write_key=project.key,
            host=server.url,
            upload_size=50,
            max_retries=0,
            on_error=lambda error, _batch: errors.append(error),
        )
        for n in range(300):
            client.track(f"acc-u{n % 7}", "Clicked", {"n": n}, message_id=f"acc-{n}")
        # The same messageId again, in its own request: one row, whichever process takes it.
        for _ in range(3):
            client.track("acc-u0", "Clicked", {"n": 0}, message_id="acc-0")
        client.flush()
        client.join()
        assert errors == []

        with httpx.Client(base_url=server.url, auth=(project.key, ""), timeout=10) as http:
            single = http.post("/v1/track", json={"userId": "u", "event": "E", "messageId": "one"})
            again = http.post("/v1/track", json={"userId": "u", "event": "E", "messageId": "one"})
            refused = http.post("/v1/track", json={"userId": "u", "messageId": "no-name"})
        assert single.json() == {"success": True, "accepted": 1, "duplicates": 0, "rejected": []}
        assert again.json()["duplicates"] == 1
        assert refused.status_code == 400
        assert refused.json()["rejected"][0]["code"] == "missing_field"

        ids = _ids(project)
        assert ids == Counter({f"acc-{n}": 1 for n in range(300)} | {"one": 1})
        # pyarrow would import pandas at its first conversion; an accept process has none.
        for pid in _acceptors(server):
            assert "/pandas/" not in Path(f"/proc/{pid}/maps").read_text()
        failed = project.query("SELECT code, source FROM failed_events").to_pylist()
        assert failed == [{"code": "missing_field", "source": "web"}]

        # Everything but the tracking API is the owner's, reached through its socket.
        with httpx.Client(base_url=server.url, timeout=10) as http:
            assert http.get("/healthz").json() == {"status": "alive"}
            assert http.get("/readyz").json()["status"] == "ready"
            metrics = http.get("/metrics").text
            assert 'headwater_events_accepted_total{source="web"} 301.0' in metrics
            home = http.get("/")
            assert home.status_code == 303
            assert home.headers["location"].endswith("/signin?next=%2F")
            assert http.get("/api/v1/datasets").status_code == 401
            bad = http.post("/v1/track", json={"userId": "u", "event": "E"})
            assert bad.status_code == 401  # no write key: refused by the accept process
    finally:
        assert server.stop() == 0
    assert _acceptors_seen(project) == []


def _acceptors_seen(project: Project) -> list[int]:
    """Pids of any accept process of this project still on the machine."""
    found = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit() and _is_acceptor(int(entry.name)):
            with contextlib.suppress(OSError):
                if str(project.root).encode() in (entry / "cmdline").read_bytes():
                    found.append(int(entry.name))
    return found


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_a_killed_accept_process_is_replaced_and_nothing_acknowledged_is_lost(
    project: Project,
) -> None:
    server = _accepting(project)
    acked: list[str] = []
    problems: list[str] = []
    stop = threading.Event()
    lock = threading.Lock()

    def load(n: int) -> None:
        seq = 0
        while not stop.is_set():
            ids = [f"kill-{n}-{seq}-{i}" for i in range(20)]
            seq += 1
            body = {"batch": [{"type": "track", "event": "E", "userId": "u", "messageId": i}
                              for i in ids]}  # fmt: skip
            try:
                # A fresh connection each time, so the kernel spreads them over both.
                answer = httpx.post(
                    f"{server.url}/v1/batch", json=body, auth=(project.key, ""), timeout=10
                )
            except httpx.TransportError:
                continue  # the killed process had it: unanswered, sent again as new ids
            if answer.status_code == 200:
                with lock:
                    acked.extend(ids)
            elif answer.status_code != 503:
                problems.append(f"{answer.status_code}: {answer.text}")

    threads = [threading.Thread(target=load, args=(n,), daemon=True) for n in range(6)]
    try:
        for thread in threads:
            thread.start()
        wait_for("acknowledgements", lambda: len(acked) > 200)
        before = _acceptors(server)
        victim = min(before)
        os.kill(victim, signal.SIGKILL)

        def replaced_victim() -> set[int] | None:
            now = _acceptors(server)
            return now if len(now) == 2 and victim not in now else None

        replaced = wait_for(
            "a new accept process",
            replaced_victim,
            timeout=30,
            detail=lambda: server.log.read_text()[-2000:],
        )
        assert replaced - before, "the accept processes were not replaced"
        count = len(acked)
        wait_for("acknowledgements after the replacement", lambda: len(acked) > count + 200)
    finally:
        stop.set()
        for thread in threads:
            thread.join(20)
        exit_code = server.stop()
    assert problems == []
    assert exit_code == 0
    assert "accept process" in server.log.read_text()
    stored = _ids(project)
    assert {i: n for i, n in stored.items() if n > 1} == {}
    missing = set(acked) - set(stored)
    assert not missing, f"{len(missing)} acknowledged events are not stored"


@pytest.mark.timeout(60)
def test_accept_processes_die_with_the_server(project: Project) -> None:
    server = _accepting(project)
    port = int(server.url.rsplit(":", 1)[1])
    children = _acceptors(server)
    assert len(children) == 2
    ours = _listening().get(port, set())
    assert ours
    server.kill()
    wait_for("the accept processes to end", lambda: not any(map(_running, children)))
    # None of the server's listening sockets is left (read from the kernel's table: a
    # connect could meet itself, the port being in the range the kernel picks client
    # ports from; another process on this machine may take the port number meanwhile).
    assert not ours & _listening().get(port, set())


def _first_event(stream: httpx.Response) -> str:
    for line in stream.iter_lines():
        if line.startswith("event: "):
            return line.removeprefix("event: ")
    return ""


@pytest.mark.timeout(120)
def test_dashboard_sessions_and_live_streams_through_an_accept_process(project: Project) -> None:
    token = add_admin(project.root / "headwater.toml", "alice")
    path = project.root / "headwater.toml"
    # A long drain: stopping must not wait for it because a live page is open.
    path.write_text(
        path.read_text().replace("[collector]\n", "[collector]\ndrain_timeout_seconds = 60\n", 1)
    )
    server = _accepting(project, count=1)  # one: every connection meets the same proxy
    try:
        with httpx.Client(base_url=server.url, timeout=10) as admin:
            signed = admin.post("/signin", data={"token": token, "next": "/live"})
            assert signed.status_code == 303
            assert admin.get("/live").status_code == 200
            # The session is the admin's client's alone: the proxy keeps no cookie.
            with httpx.Client(base_url=server.url, timeout=10) as anonymous:
                home = anonymous.get("/")
                assert home.status_code == 303
                assert "/signin" in home.headers["location"]
                assert anonymous.get("/live/stream").status_code == 401
            # Streams the client leaves end on the server too: more than the viewers a
            # server takes are opened and dropped one after another, and a new one is
            # still let in.
            for _ in range(MAX_VIEWERS + 4):
                with admin.stream("GET", "/live/stream") as stream:
                    assert _first_event(stream) == "ready"
            with admin.stream("GET", "/live/stream") as stream:
                assert _first_event(stream) == "ready"
                # Stopped with this stream open: it ends, the drain does not wait for it.
                assert server.stop(timeout=30) == 0
    finally:
        if server.process is not None and server.process.poll() is None:
            server.kill()


def test_a_project_in_a_deep_folder_starts_its_accept_processes(tmp_path: Path) -> None:
    """The accept processes' sockets do not live in the project's folder, whose path can
    be longer than a socket's path may be."""
    root = tmp_path / ("d" * 60) / ("e" * 60) / "project"
    project = Project(root=root, key=init_project(root))
    server = _accepting(project)
    try:
        answer = server.post(
            "/v1/track",
            json={"userId": "u", "event": "E", "messageId": "deep"},
            auth=(project.key, ""),
        )
        assert answer.status_code == 200
        with server.client() as client:
            assert client.get("/healthz").status_code == 200
    finally:
        assert server.stop() == 0
    assert _ids(project) == Counter({"deep": 1})


def test_accept_processes_must_be_a_small_count(project: Project) -> None:
    path = project.root / "headwater.toml"
    text = path.read_text()
    path.write_text(text.replace("[collector]\n", "[collector]\naccept_processes = -1\n", 1))
    result = project.cli("validate", check=False)
    assert result.returncode != 0
    assert "accept_processes" in result.stdout + result.stderr


# -- the wire, in one process --------------------------------------------------------


def _track(message_id: str, user: str) -> bytes:
    return json.dumps(
        {"type": "track", "event": "E", "userId": user, "messageId": message_id}
    ).encode()


def test_frames_hold_the_floor_split_outcomes_and_drop_erased_people(tmp_path: Path) -> None:
    engine = DuckDBEngine.open(tmp_path / "events.duckdb")
    writer = Writer(
        engine,
        CollectorMetrics(CollectorRegistry()),
        dedupe_window_us=3_600_000_000,
        queue_max_events=10_000,
        commit_max_events=10_000,
        retry_after=1,
    )
    suppression = Suppression()
    suppression.replace({id_hash("user_id", "erased")})
    frames = Frames(writer, suppression)
    validator = Validator(max_event_bytes=32_768, max_depth=64)
    path = tmp_path / "frames.sock"

    def rows(received: int, *events: tuple[str, str]) -> list:  # type: ignore[type-arg]
        return [validator.event(_track(m, u), None, "web", received, None) for m, u in events]

    async def scenario() -> tuple[list[Outcome], int, int | None, int | None, int]:
        listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listening.bind(str(path))
        listening.listen()
        await frames.listen(listening)
        forwarder = Forwarder(
            path,
            retry_after=1,
            queue_max_events=1000,
            queue_max_bytes=1 << 20,
            on_lost=lambda: None,
        )
        await forwarder.connect()
        received = now_us()
        requests = [
            # Two events, one id twice within the request.
            rows(received, ("a", "u1"), ("a", "u1")),
            # An erased person's event beside another's.
            rows(received + 1, ("b", "erased"), ("c", "u2")),
            # The first request's id again, and a new one.
            rows(received + 2, ("a", "u1"), ("d", "u3")),
        ]
        waiting = [
            asyncio.create_task(forwarder.submit(r, [], received + i, nbytes=100))
            for i, r in enumerate(requests)
        ]
        # The writer has not started: the requests wait in its queue, and the floor the
        # accept process reported stays at or before the earliest of them.
        await asyncio.sleep(0.5)
        held = frames.floor()
        writer.start()
        outcomes = await asyncio.gather(*waiting)
        await asyncio.sleep(0.5)  # a heartbeat after the answers
        after = frames.floor()
        connected = frames.connected
        await forwarder.close()
        await frames.close()
        return outcomes, received, held, after, connected

    try:
        outcomes, received, held, after, connected = asyncio.run(scenario())
        stored = engine.query("SELECT message_id, user_id FROM events ORDER BY 1").to_pylist()
    finally:
        writer.close()
        engine.close()
    assert connected == 1
    # While the requests waited, the floor did not pass the earliest of them; once they
    # were answered, it moved past the last.
    assert held is not None
    assert held <= received
    assert after is not None
    assert after > received + 2
    assert [(o.stored, o.duplicates) for o in outcomes] == [(1, 1), (1, 0), (1, 1)]
    assert stored == [
        {"message_id": "a", "user_id": "u1"},
        {"message_id": "c", "user_id": "u2"},
        {"message_id": "d", "user_id": "u3"},
    ]


class _Poisoned:
    """FAULT INJECTION: a real DuckDBEngine that refuses any commit holding ``poison``."""

    name = "poisoned-duckdb"

    def __init__(self, inner: DuckDBEngine) -> None:
        self.inner = inner

    def ingest(self, batch: IngestBatch) -> pa.Array:
        if "poison" in batch.events.column("message_id").to_pylist():
            raise StoreUnavailable(self.name, "injected fault")
        return self.inner.ingest(batch)

    def prune_dedupe(self, before_us: int) -> int:
        return self.inner.prune_dedupe(before_us)


def test_a_request_the_store_refuses_fails_alone_not_its_frame(tmp_path: Path) -> None:
    engine = DuckDBEngine.open(tmp_path / "events.duckdb")
    writer = Writer(
        _Poisoned(engine),  # type: ignore[arg-type]
        CollectorMetrics(CollectorRegistry()),
        dedupe_window_us=3_600_000_000,
        queue_max_events=10_000,
        commit_max_events=10_000,
        retry_after=1,
    )
    frames = Frames(writer, Suppression())
    validator = Validator(max_event_bytes=32_768, max_depth=64)
    path = tmp_path / "frames.sock"

    async def scenario() -> list[Outcome | BaseException]:
        listening = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        listening.bind(str(path))
        listening.listen()
        await frames.listen(listening)
        forwarder = Forwarder(
            path, retry_after=1, queue_max_events=1000, queue_max_bytes=1 << 20,
            on_lost=lambda: None,
        )  # fmt: skip
        await forwarder.connect()
        received = now_us()
        ids = [["ok-1"], ["poison", "ok-2"], ["ok-3"]]
        waiting = [
            asyncio.create_task(
                forwarder.submit(
                    [validator.event(_track(i, "u"), None, "web", received, None) for i in group],
                    [],
                    received,
                    nbytes=100,
                )
            )
            for group in ids
        ]
        # All three are in one frame: the writer starts once they are queued together.
        await asyncio.sleep(0.3)
        writer.start()
        outcomes = await asyncio.gather(*waiting, return_exceptions=True)
        await forwarder.close()
        await frames.close()
        return outcomes

    try:
        outcomes = asyncio.run(scenario())
        stored = engine.query("SELECT message_id FROM events ORDER BY 1").to_pylist()
    finally:
        writer.close()
        engine.close()
    first, poisoned, third = outcomes
    assert isinstance(first, Outcome)
    assert (first.stored, first.duplicates) == (1, 0)
    assert isinstance(poisoned, CommitFailed)
    assert isinstance(third, Outcome)
    assert (third.stored, third.duplicates) == (1, 0)
    assert stored == [{"message_id": "ok-1"}, {"message_id": "ok-3"}]
