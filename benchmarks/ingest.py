"""Ingest benchmark: a real ``headwater up`` on loopback, loaded from other processes.

Run from the repository root::

    .venv/bin/python benchmarks/ingest.py            # ~10 s per phase, about 2.5 minutes
    .venv/bin/python benchmarks/ingest.py --quick    # every phase for 1 s: about 20 s
    .venv/bin/python benchmarks/ingest.py --profile /tmp/hw-profile   # adds py-spy (perturbs!)
    .venv/bin/python benchmarks/ingest.py --quick --pii   # the source has PII rules (PII_RULES)
    .venv/bin/python benchmarks/ingest.py --collector accept_processes=2   # [collector] settings

What it measures, in a fresh temporary project:

1. Throughput, closed loop: ``POST /v1/batch`` with 1, 10 and 100 Segment track
   events per request, at each of the ``--connections`` counts. Only 2xx answers
   count, times the events in the request; every event carries its own messageId,
   so no request is a cheap duplicate.
2. Latency, open loop: requests of 10 events paced at half the peak rate of the
   batches of 10, timed from the moment each was *due* (so a stalled server cannot
   hide its stall by slowing the generator down, as a closed loop would).
3. The server's peak memory (``VmHWM``) after the load.
4. The raw limit of the store: the same events, validated in this process,
   committed as Arrow batches through ``DuckDBEngine.ingest`` into a fresh file; and
   what a DuckDB checkpoint costs (a commit waits for it) by how often it runs.
5. A ``COUNT(*)`` per phase on the server's store: it must hold at least every
   acknowledged event (more is fine: requests in flight when a phase ends are
   committed but not counted).

The load comes from ``wrk`` (``apt-get install -y wrk``) with a Lua script that
gives every event a unique messageId, or from Python processes with keep-alive
connections when wrk is missing. The open-loop phase always uses Python
processes, since wrk cannot pace requests. The machine has few cores and the
generator shares them with the server, so its CPU use is reported per phase.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import http.client
import importlib
import importlib.metadata
import json
import math
import multiprocessing as mp
import os
import platform
import re
import resource
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

    from headwater.store.duckdb import DuckDBEngine

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
PATH = "/v1/batch"
#: Stands for the per-request counter in a body template; joined in with ``bytes.join``.
COUNTER = "@N@"
#: Stands for the generator thread or process number; filled in once per generator.
THREAD = "@T@"
SENT_AT = "2026-11-25T12:00:01.000+00:00"
BATCHES = (1, 10, 100)

#: With ``--pii``: the rules of the benchmark's source, each touching the track event but one
#: (``traits.email``, absent, as on most track events: it still looks in two places).
PII_RULES = (
    ("context.ip", "truncate"),
    ("properties.orderId", "hash"),
    ("properties.coupon", "drop"),
    ("traits.email", "hash"),
)
PII_VARIABLE = "HEADWATER_BENCH_PII_KEY"

TARGET_BATCH100_EVENTS = 100_000
TARGET_SINGLE_REQUESTS = 8_000
TARGET_P99_MS = 25.0
TARGET_MEMORY_MB = 300.0
TARGET_IDLE_MB = 120.0
#: Cores the server should use at saturation (the machine's, when it has two).
TARGET_CORES = 2

OnStart = Callable[[], None]

#: Printed with the conditions and the results of a --quick run (tests look for it).
QUICK_NOTE = (
    "QUICK RUN (--quick): every phase at a tiny size, to check that the benchmark runs; "
    "its figures mean nothing"
)


# -- events ------------------------------------------------------------------------


def track_event(message_id: str, j: int) -> dict[str, Any]:
    """A track event as segment-analytics-python sends it (about 445 bytes of JSON)."""
    return {
        "type": "track",
        "event": "Order Completed",
        "userId": f"user-{j * 7919 % 100_000:06d}",
        "anonymousId": f"3f0c9a4e-7b1d-4c2a-9e8f-{j:012d}",
        "messageId": message_id,
        "timestamp": "2026-11-25T12:00:00.123+00:00",
        "properties": {
            "orderId": f"ord-{j:08d}",
            "revenue": 42.5 + j,
            "currency": "EUR",
            "coupon": "WINTER26",
            "products": [{"sku": "SKU-1", "qty": 2}],
        },
        "context": {
            "library": {"name": "analytics-python", "version": "2.3.3"},
            "ip": "203.0.113.7",
            "locale": "en-US",
        },
        "integrations": {},
    }


def body_parts(tag: str, size: int) -> list[str]:
    """A ``/v1/batch`` body split where the request counter goes.

    Event ``j`` of request ``n`` from generator ``t`` has messageId
    ``{tag}-{t}-{n}-{j}``: unique in the whole run, and its first part names the phase.
    Joining the parts with the counter is one C call, in Python and in Lua alike.
    """
    events = [track_event(f"{tag}-{THREAD}-{COUNTER}-{j:03d}", j) for j in range(size)]
    text = json.dumps({"batch": events, "sentAt": SENT_AT}, separators=(",", ":"))
    parts = text.split(COUNTER)
    assert len(parts) == size + 1
    return parts


def event_bytes() -> int:
    """The size of one event as sent, with a typical messageId."""
    return len(json.dumps(track_event("b100c64-1-12345-042", 42), separators=(",", ":")))


def basic_auth(key: str) -> str:
    return "Basic " + base64.b64encode(f"{key}:".encode()).decode()


# -- the server --------------------------------------------------------------------


@dataclass
class Server:
    """A ``headwater up --port 0`` child process in its own project."""

    root: Path
    process: subprocess.Popen[bytes]
    url: str
    port: int
    #: store/duckdb.py as the server loaded it (others may edit it while we run).
    store_source: str = ""

    @property
    def pid(self) -> int:
        return self.process.pid

    @property
    def data_dir(self) -> Path:
        return self.root / ".headwater"

    def alive(self) -> bool:
        return self.process.poll() is None

    def cpu_seconds(self) -> float:
        """User + system CPU of every thread of the server and of its live child processes
        (the validating workers) so far."""
        total = 0
        for pid in [self.pid, *descendants(self.pid)]:
            with contextlib.suppress(OSError):
                stat = Path(f"/proc/{pid}/stat").read_text()
                fields = stat[stat.rindex(")") + 2 :].split()
                total += int(fields[11]) + int(fields[12])
        return total / os.sysconf("SC_CLK_TCK")

    def children_rss_kb(self) -> int:
        """Resident memory of the server's child processes (the validating workers) now."""
        total = 0
        for pid in descendants(self.pid):
            with contextlib.suppress(OSError, ValueError, IndexError):
                status = Path(f"/proc/{pid}/status").read_text()
                total += int(status.split("VmRSS:")[1].split()[0])
        return total

    def memory_kb(self) -> dict[str, int]:
        found: dict[str, int] = {}
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            name, _, value = line.partition(":")
            if name in ("VmHWM", "VmRSS", "RssAnon", "RssFile"):
                found[name] = int(value.split()[0])
        return found

    def metrics(self) -> dict[str, float]:
        """The collector's counters: commits, their events and time, duplicates."""
        conn = http.client.HTTPConnection(HOST, self.port, timeout=10)
        try:
            conn.request("GET", "/metrics")
            text = conn.getresponse().read().decode()
        finally:
            conn.close()
        wanted = {
            "headwater_commit_events_sum": "commit_events",
            "headwater_commit_events_count": "commits",
            "headwater_commit_seconds_sum": "commit_seconds",
            "headwater_events_accepted_total": "accepted",
            "headwater_events_duplicate_total": "duplicates",
            "headwater_events_rejected_total": "rejected",
            "headwater_commit_failures_total": "commit_failures",
        }
        found = dict.fromkeys([*wanted.values(), "commits_within_100ms"], 0.0)
        for line in text.splitlines():
            if line.startswith("#"):
                continue
            name = re.split(r"[{ ]", line, maxsplit=1)[0]
            if name in wanted:
                found[wanted[name]] += float(line.rsplit(" ", 1)[1])
            elif name == "headwater_commit_seconds_bucket" and 'le="0.1"' in line:
                found["commits_within_100ms"] = float(line.rsplit(" ", 1)[1])
        return found

    def control(self) -> Any:
        """A client of the server's control socket (``find_server``), or ``None``."""
        # find_server has lived in runtime.control and in runtime.client: try both.
        for module in ("headwater.runtime.client", "headwater.runtime.control"):
            with contextlib.suppress(ImportError, AttributeError):
                return importlib.import_module(module).find_server(self.data_dir)
        raise RuntimeError("headwater has no find_server to reach the running server")

    def counts_by_tag(self) -> dict[str, tuple[int, int]]:
        """Rows and distinct messageIds in ``events`` per phase tag, asked of the server."""
        client = self.control()
        if client is None:
            raise RuntimeError("the server does not answer on its control socket")
        try:
            table = client.query(
                "SELECT split_part(message_id, '-', 1) AS tag, count(*) AS n, "
                "count(DISTINCT message_id) AS d FROM events GROUP BY tag"
            )
        finally:
            client.close()
        return {row["tag"]: (int(row["n"]), int(row["d"])) for row in table.to_pylist()}

    def duckdb_memory(self) -> dict[str, int]:
        """DuckDB's own memory by tag (buffers, indexes), in bytes, asked of the server."""
        client = self.control()
        if client is None:
            return {}
        try:
            table = client.query(
                "SELECT tag, memory_usage_bytes AS b FROM duckdb_memory() "
                "WHERE memory_usage_bytes > 0 ORDER BY b DESC"
            )
        except Exception as exc:  # only informative; the query API may refuse it
            print(f"  (duckdb_memory() not available: {exc})")
            return {}
        finally:
            client.close()
        return {row["tag"]: int(row["b"]) for row in table.to_pylist()}

    def stop(self, timeout: float = 60.0) -> int:
        if self.alive():
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            return self.process.wait(10)


def descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (children, their children, ...)."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, ValueError):
            stat = (entry / "stat").read_text()
            parent = int(stat[stat.rindex(")") + 2 :].split()[1])
            parents.setdefault(parent, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in parents.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def start_server(root: Path, timeout: float = 30.0) -> Server:
    runtime = root / ".headwater" / "server.json"
    store_source = (ROOT / "src/headwater/store/duckdb.py").read_text()
    with (root / "server.log").open("ab") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "headwater", "--project", str(root), "up", "--port", "0"],
            stdout=log,
            stderr=subprocess.STDOUT,
            env={**os.environ, "COLUMNS": "200"},
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"headwater up exited early:\n{(root / 'server.log').read_text()}")
        if runtime.exists():
            with contextlib.suppress(ValueError):
                url = json.loads(runtime.read_text())["url"]
                return Server(root, process, url, int(url.rsplit(":", 1)[1]), store_source)
        time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"headwater up did not start within {timeout:.0f}s")


def machine_busy_seconds() -> float:
    """CPU seconds all processes on the machine have used (from ``/proc/stat``)."""
    fields = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    idle = fields[3] + fields[4]  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK")


# -- results -----------------------------------------------------------------------


@dataclass
class Load:
    """What a generator saw in one phase."""

    ok: int = 0
    bad: int = 0
    errors: int = 0
    seconds: float = 0.0
    generator_cpu: float = 0.0
    statuses: Counter[int] = field(default_factory=Counter)
    latencies: list[float] = field(default_factory=list)
    lags: list[float] = field(default_factory=list)
    waited: int = 0
    unanswered: int = 0


@dataclass(frozen=True)
class Snapshot:
    """The clock, the server's CPU and counters, and the machine's CPU at one moment."""

    at: float
    cpu: float
    machine: float
    metrics: dict[str, float]
    peak_kb: int
    children_kb: int = 0


def snapshot(server: Server) -> Snapshot:
    metrics = server.metrics()
    peak = server.memory_kb().get("VmHWM", 0)
    children = server.children_rss_kb()
    return Snapshot(
        time.monotonic(), server.cpu_seconds(), machine_busy_seconds(), metrics, peak, children
    )


@dataclass
class Phase:
    """One measured phase and the server's side of it."""

    name: str
    tag: str
    batch: int
    connections: int
    load: Load
    before: Snapshot
    after: Snapshot
    profile: dict[str, dict[str, Any]] | None = None

    @property
    def requests_per_second(self) -> float:
        return self.load.ok / self.load.seconds if self.load.seconds else 0.0

    @property
    def events_per_second(self) -> float:
        return self.requests_per_second * self.batch

    @property
    def acked_events(self) -> int:
        return self.load.ok * self.batch

    def delta(self, name: str) -> float:
        return self.after.metrics[name] - self.before.metrics[name]

    @property
    def wall(self) -> float:
        """Seconds between the snapshots: the load, and its last answers."""
        return self.after.at - self.before.at

    @property
    def server_cores(self) -> float:
        return (self.after.cpu - self.before.cpu) / self.wall

    @property
    def other_cores(self) -> float:
        """CPU of every other process on the machine: noise, if well above zero."""
        machine = (self.after.machine - self.before.machine) / self.wall
        return max(0.0, machine - self.server_cores - self.load.generator_cpu / self.wall)

    @property
    def events_per_commit(self) -> float:
        commits = self.delta("commits")
        return self.delta("commit_events") / commits if commits else 0.0

    @property
    def ms_per_commit(self) -> float:
        commits = self.delta("commits")
        return 1000 * self.delta("commit_seconds") / commits if commits else 0.0

    @property
    def slow_commits(self) -> int:
        return int(self.delta("commits") - self.delta("commits_within_100ms"))

    @property
    def writer_busy(self) -> float:
        return self.delta("commit_seconds") / self.wall


@dataclass
class Raw:
    batch_rows: int
    rows: int
    batches: int
    ingest_seconds: float
    validate_seconds: float
    arrow_seconds: float
    stored: int
    commit_ms: list[float]

    @property
    def events_per_second(self) -> float:
        return self.rows / self.ingest_seconds if self.ingest_seconds else 0.0


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of ``values`` (``q`` in 0..1)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


# -- wrk ---------------------------------------------------------------------------

LUA = """\
-- Generated by benchmarks/ingest.py: unique messageIds, Basic auth, count 2xx only.
local parts_src = {@PARTS@}
local threads = {}
local parts = nil
local counter = 0
ok = 0  -- globals, so that done() can read them with thread:get
bad = 0

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function init(args)
  parts = {}
  for i, p in ipairs(parts_src) do
    parts[i] = (p:gsub("@T@", tostring(tid)))
  end
  wrk.method = "POST"
  wrk.path = "@PATH@"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["Authorization"] = "@AUTH@"
end

function request()
  counter = counter + 1
  return wrk.format(nil, nil, nil, table.concat(parts, tostring(counter)))
end

function response(status, headers, body)
  if status >= 200 and status < 300 then ok = ok + 1 else bad = bad + 1 end
end

function done(summary, latency, requests)
  local tok, tbad = 0, 0
  for _, t in ipairs(threads) do
    tok = tok + t:get("ok")
    tbad = tbad + t:get("bad")
  end
  local e = summary.errors
  io.write(string.format("HWRESULT %d %d %d %d %d\\n", tok, tbad, summary.requests,
    summary.duration, e.connect + e.read + e.write + e.timeout))
end
"""


def wrk_script(path: Path, parts: list[str], auth: str) -> Path:
    assert not any("]==]" in part for part in parts)
    quoted = ", ".join(f"[==[{part}]==]" for part in parts)
    path.write_text(LUA.replace("@PARTS@", quoted).replace("@PATH@", PATH).replace("@AUTH@", auth))
    return path


def wrk_version(wrk: str) -> str:
    out = subprocess.run([wrk, "--version"], capture_output=True, text=True, timeout=10)
    return (out.stdout or out.stderr).split("Copyright")[0].strip()


def run_wrk(
    url: str, script: Path, seconds: int, connections: int, threads: int, on_start: OnStart
) -> Load:
    wrk = shutil.which("wrk")
    assert wrk is not None
    cmd = [wrk, "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s"]
    cmd += ["--timeout", "10s", "-s", str(script), url + PATH]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    on_start()
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=seconds + 60)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    line = next((x for x in out.stdout.splitlines() if x.startswith("HWRESULT")), None)
    if line is None:
        raise RuntimeError(f"wrk gave no result:\n{out.stdout}\n{out.stderr}")
    ok, bad, answered, duration_us, errors = (int(x) for x in line.split()[1:])
    if ok + bad != answered:
        raise RuntimeError(f"wrk counted {answered} answers but {ok} 2xx and {bad} others")
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return Load(ok=ok, bad=bad, errors=errors, seconds=duration_us / 1e6, generator_cpu=cpu)


# -- the Python generator ----------------------------------------------------------


class _Client(asyncio.Protocol):
    """One keep-alive HTTP/1.1 connection with at most one request in flight."""

    def __init__(self, on_answer: Callable[[_Client, int], None], on_lost: Callable[[], None]):
        self.on_answer = on_answer
        self.on_lost = on_lost
        self.transport: Any = None  # uvloop's transports are not asyncio.Transport
        self.buf = bytearray()
        self.head_end = -1
        self.status = 0
        self.need = -1
        self.due = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def send(self, data: bytes) -> None:
        self.transport.write(data)

    def close(self) -> None:
        self.on_lost = lambda: None
        self.transport.close()

    def data_received(self, data: bytes) -> None:
        buf = self.buf
        buf += data
        while True:
            if self.head_end < 0:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    return
                head = bytes(buf[:end]).lower()
                self.head_end = end + 4
                self.status = int(head[9:12])
                at = head.find(b"\r\ncontent-length:")
                if at >= 0:
                    stop = head.find(b"\r\n", at + 2)
                    length = int(head[at + 17 : stop if stop >= 0 else len(head)])
                    self.need = self.head_end + length
                else:
                    self.need = -1  # chunked: ends with an empty chunk
            if self.need >= 0:
                if len(buf) < self.need:
                    return
                end = self.need
            elif buf[self.head_end : self.head_end + 5] == b"0\r\n\r\n":
                end = self.head_end + 5
            else:
                # JSON escapes CR and LF, so this cannot occur inside the body.
                at = buf.find(b"\r\n0\r\n\r\n", self.head_end)
                if at < 0:
                    return
                end = at + 7
            del buf[:end]
            status, self.head_end, self.need = self.status, -1, -1
            self.on_answer(self, status)
            if not buf:
                return

    def connection_lost(self, exc: Exception | None) -> None:
        self.on_lost()


def _event_loop_runner() -> Callable[[Any], Any]:
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


def _prefix(port: int, auth: str) -> bytes:
    return (
        f"POST {PATH} HTTP/1.1\r\nHost: {HOST}:{port}\r\nAuthorization: {auth}\r\n"
        "Content-Type: application/json\r\nContent-Length: "
    ).encode()


def _request(prefix: bytes, parts: list[bytes], counter: int) -> bytes:
    body = str(counter).encode().join(parts)
    return b"".join((prefix, str(len(body)).encode(), b"\r\n\r\n", body))


def _count(load: Load, status: int) -> None:
    load.statuses[status] += 1
    if 200 <= status < 300:
        load.ok += 1
    else:
        load.bad += 1


async def _closed_loop(
    port: int, prefix: bytes, parts: list[bytes], connections: int, start: float, end: float
) -> Load:
    """Each connection sends its next request as soon as the last is answered."""
    loop = asyncio.get_running_loop()
    load = Load(seconds=end - start)
    counter = 0
    active = connections
    finished: asyncio.Future[None] = loop.create_future()

    def next_request(client: _Client) -> None:
        nonlocal counter
        counter += 1
        client.send(_request(prefix, parts, counter))

    def retire() -> None:
        nonlocal active
        active -= 1
        if active == 0 and not finished.done():
            finished.set_result(None)

    def on_answer(client: _Client, status: int) -> None:
        if time.monotonic() > end:
            client.close()
            retire()
            return
        _count(load, status)
        next_request(client)

    def on_lost() -> None:
        load.errors += 1
        retire()

    clients = []
    for _ in range(connections):
        _, client = await loop.create_connection(lambda: _Client(on_answer, on_lost), HOST, port)
        clients.append(client)
    await asyncio.sleep(max(0.0, start - time.monotonic()))
    for client in clients:
        next_request(client)
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(finished, timeout=max(0.0, end - time.monotonic()) + 15)
    return load


async def _open_loop(
    port: int,
    prefix: bytes,
    parts: list[bytes],
    connections: int,
    first: float,
    interval: float,
    end: float,
) -> Load:
    """Requests fall due every ``interval`` seconds, answered or not; latency from due time."""
    loop = asyncio.get_running_loop()
    load = Load(seconds=end - first)
    free: deque[_Client] = deque()
    backlog: deque[float] = deque()
    counter = 0
    outstanding = 0
    scheduling = True
    finished: asyncio.Future[None] = loop.create_future()

    def send(client: _Client, due: float) -> None:
        nonlocal counter, outstanding
        counter += 1
        client.due = due
        outstanding += 1
        client.send(_request(prefix, parts, counter))

    def on_answer(client: _Client, status: int) -> None:
        nonlocal outstanding
        outstanding -= 1
        load.latencies.append(time.monotonic() - client.due)
        _count(load, status)
        if backlog:
            send(client, backlog.popleft())
        else:
            free.append(client)
        if not scheduling and outstanding == 0 and not backlog and not finished.done():
            finished.set_result(None)

    def on_lost() -> None:
        load.errors += 1

    for _ in range(connections):
        _, client = await loop.create_connection(lambda: _Client(on_answer, on_lost), HOST, port)
        free.append(client)
    i = 0
    while (due := first + i * interval) < end:
        await asyncio.sleep(max(0.0, due - time.monotonic()))
        if free:
            send(free.popleft(), due)
            load.lags.append(time.monotonic() - due)
        else:
            backlog.append(due)  # every connection busy: it waits, and the wait counts
            load.waited += 1
        i += 1
    scheduling = False
    if outstanding or backlog:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(finished, timeout=15)
    load.unanswered = outstanding + len(backlog)
    for client in free:
        client.close()
    return load


def _worker(
    out: Connection,
    mode: str,
    port: int,
    auth: str,
    parts: list[str],
    tid: int,
    connections: int,
    start: float,
    interval: float,
    end: float,
) -> None:
    prefix = _prefix(port, auth)
    raw = [p.replace(THREAD, str(tid)).encode() for p in parts]
    run = _event_loop_runner()
    try:
        if mode == "closed":
            load = run(_closed_loop(port, prefix, raw, connections, start, end))
        else:
            load = run(_open_loop(port, prefix, raw, connections, start, interval, end))
    except Exception as exc:
        out.send(f"{type(exc).__name__}: {exc}")
        raise
    usage = resource.getrusage(resource.RUSAGE_SELF)
    load.generator_cpu = usage.ru_utime + usage.ru_stime
    out.send(load)
    out.close()


def run_python(
    port: int,
    auth: str,
    parts: list[str],
    *,
    processes: int,
    connections: int,
    seconds: float,
    on_start: OnStart,
    rate: float | None = None,
) -> Load:
    """Closed loop (``rate`` None) or paced at ``rate`` requests/s, from child processes.

    ``connections`` is per process.
    """
    ctx = mp.get_context("fork")
    start = time.monotonic() + 1.0 + 0.1 * processes  # time for every child to connect
    end = start + seconds
    interval = processes / rate if rate else 0.0
    children = []
    for n in range(processes):
        receiver, sender = ctx.Pipe(duplex=False)
        first = start + n * interval / processes
        args = ("open" if rate else "closed", port, auth, parts, n + 1, connections)
        proc = ctx.Process(target=_worker, args=(sender, *args, first, interval, end), daemon=True)
        proc.start()
        sender.close()
        children.append((proc, receiver))
    time.sleep(max(0.0, start - time.monotonic()))
    on_start()
    total = Load(seconds=seconds)
    for proc, receiver in children:
        if not receiver.poll(seconds + 45):
            proc.kill()
            raise RuntimeError("a load generator process did not report in time")
        part: Load | str = receiver.recv()
        proc.join(10)
        if isinstance(part, str):
            raise RuntimeError(f"a load generator process failed: {part}")
        total.ok += part.ok
        total.bad += part.bad
        total.errors += part.errors
        total.unanswered += part.unanswered
        total.waited += part.waited
        total.generator_cpu += part.generator_cpu
        total.statuses.update(part.statuses)
        total.latencies += part.latencies
        total.lags += part.lags
    return total


# -- profiling ---------------------------------------------------------------------

#: (category, path fragment, functions or None for any, line span or None); the
#: innermost frame that matches a rule decides, rules tried in order.
Rule = tuple[str, str, frozenset[str] | None, tuple[int, int] | None]

IDLE_WORK = "idle: writer waiting for work"
LOOP = "event loop (uvloop/asyncio; idle in epoll too, wall view)"


def _duckdb_lines(source: str) -> dict[str, list[tuple[int, int]]]:
    """Line spans in store/duckdb.py of each step of ``ingest``, found by their text."""
    lines = source.splitlines()
    found: dict[str, list[tuple[int, int]]] = {}
    for n, line in enumerate(lines, 1):
        if line.lstrip().startswith("#"):
            continue
        if "RETURNING" in line or "ON CONFLICT" in line:
            near = range(max(1, n - 3), min(len(lines), n + 3) + 1)
            start = min((m for m in near if m <= n and "con.sql(" in lines[m - 1]), default=n)
            stop = max((m for m in near if m >= n and "to_arrow" in lines[m - 1]), default=n)
            found.setdefault("dedupe", []).append((start, stop))
        for key, text in (
            ("insert", "INSERT INTO events"),
            ("commit", "con.commit()"),
            ("begin", "con.begin()"),
            ("register", "register("),
        ):
            if text in line:
                found.setdefault(key, []).append((n, n))
    return found


def _rules(store_source: str) -> list[Rule]:
    rules: list[Rule] = [
        (IDLE_WORK, "threading.py", frozenset({"wait"}), None),
        ("JSON encode (properties/context/answer)", "core/jsonio.py", None, None),
        ("batch split (decode_batch)", "collect/validate.py", frozenset({"decode_batch"}), None),
        ("validation (msgspec decode + rules)", "collect/validate.py", None, None),
        ("Arrow build", "collect/writer.py", frozenset({"rows_table"}), None),
    ]
    names = {
        "dedupe": "DuckDB dedupe INSERT .. RETURNING",
        "insert": "DuckDB events INSERT",
        "commit": "DuckDB COMMIT",
        "begin": "DuckDB BEGIN",
        "register": "DuckDB register/unregister Arrow",
    }
    for key, spans in _duckdb_lines(store_source).items():
        rules += [(names[key], "store/duckdb.py", None, span) for span in spans]
    rules += [
        ("DuckDB other (is_in, filter, cursor)", "store/duckdb.py", None, None),
        ("metrics (prometheus_client)", "prometheus_client/", None, None),
        ("writer bookkeeping (dedupe set, futures)", "collect/writer.py", None, None),
        ("request handling (app, auth, body)", "headwater/collect/", None, None),
        ("HTTP parsing/response (uvicorn+httptools)", "uvicorn/", None, None),
        ("HTTP parsing/response (uvicorn+httptools)", "httptools/", None, None),
        (LOOP, "asyncio/", None, None),
        (LOOP, "uvloop/", None, None),
    ]
    return rules


_FRAME = re.compile(r"^(?P<func>.*) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def classify(frames: list[str], rules: list[Rule]) -> str:
    for frame in reversed(frames):
        match = _FRAME.match(frame)
        if match is None:
            continue
        func, path, line = match["func"], match["file"], int(match["line"] or 0)
        for category, fragment, funcs, span in rules:
            if fragment not in path or (funcs is not None and func not in funcs):
                continue
            if span is not None and not span[0] <= line <= span[1]:
                continue
            return category
    return "other"


def summarize_profile(path: Path, store_source: str) -> dict[str, Counter[str]]:
    """Samples per thread and category from py-spy's raw (collapsed) output."""
    rules = _rules(store_source)
    threads: dict[str, Counter[str]] = {}
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack or not count.isdigit():
            continue
        frames = stack.split(";")
        thread = "main (event loop)"
        if frames and "threading.py" in frames[0]:
            writer = any("collect/writer.py" in f for f in frames)
            thread = "writer" if writer else "other Python threads"
        threads.setdefault(thread, Counter())[classify(frames, rules)] += int(count)
    return threads


class Profiler:
    """Two ``py-spy record`` runs on the server: on-CPU samples, and all samples (--idle)."""

    def __init__(self, server: Server, seconds: int, folder: Path | None, name: str, rate: int):
        self.pid, self.seconds, self.rate = server.pid, seconds, rate
        self.store_source = server.store_source
        self.outs = (
            {} if folder is None else {v: folder / f"{name}.{v}.txt" for v in ("cpu", "wall")}
        )
        self.procs: dict[str, subprocess.Popen[bytes]] = {}

    def start(self) -> None:
        spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
        for view, out in self.outs.items():
            cmd = [spy, "record", "--pid", str(self.pid), "--duration", str(self.seconds)]
            cmd += ["--rate", str(self.rate), "--nonblocking", "--format", "raw", "-o", str(out)]
            if view == "wall":
                cmd.append("--idle")
            self.procs[view] = subprocess.Popen(
                cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
            )

    def finish(self) -> dict[str, dict[str, Any]] | None:
        if not self.procs:
            return None
        result: dict[str, dict[str, Any]] = {}
        for view, proc in self.procs.items():
            try:
                _, err = proc.communicate(timeout=self.seconds + 30)
            except subprocess.TimeoutExpired:
                proc.kill()
                _, err = proc.communicate()
            if self.outs[view].exists():
                result[view] = summarize_profile(self.outs[view], self.store_source)
            else:
                print(f"  py-spy wrote nothing: {err.decode(errors='replace').strip()}")
        result["meta"] = {"possible": self.rate * self.seconds}
        return result


# -- the raw store -----------------------------------------------------------------


def pii_rules() -> Any:
    """The benchmark's PII rules, keyed from the environment as the server's are."""
    from headwater.collect.pii import Redactor
    from headwater.collect.settings import PiiRule

    rules = [PiiRule(path=path, action=action) for path, action in PII_RULES]  # type: ignore[arg-type]
    return Redactor(rules, os.environ[PII_VARIABLE].encode())


def pii_cost(rounds: int = 7) -> tuple[float, float]:
    """Microseconds per event to validate a batch of 100 without and with the rules, the
    best of ``rounds`` interleaved runs each (the minimum is what a busy machine leaves)."""
    from headwater.collect.validate import Validator, decode_batch

    parts = [p.replace(THREAD, "1").encode() for p in body_parts("pii", 100)]
    envelope = decode_batch(b"1".join(parts))
    validator = Validator(max_event_bytes=32_768, max_depth=64)
    batch = validator.batch(envelope)
    raws = [bytes(raw) for raw in envelope.batch]
    best = {False: math.inf, True: math.inf}
    rules = pii_rules()
    for _ in range(rounds):
        for ruled in (False, True):
            started = time.perf_counter()
            for _ in range(50):
                for raw in raws:
                    validator.event(raw, None, "web", 1, batch, rules if ruled else None)
            best[ruled] = min(best[ruled], (time.perf_counter() - started) / (50 * len(raws)))
    return best[False] * 1e6, best[True] * 1e6


def add_pii_rules(root: Path) -> None:
    """Give the project's source the benchmark's rules, and its key in the environment
    (which the server inherits)."""
    config = root / "headwater.toml"
    text = config.read_text()
    text = text.replace("[sources.web]\n", f'[sources.web]\npii_key = "${{{PII_VARIABLE}}}"\n', 1)
    for path, action in PII_RULES:
        text += f'\n[[sources.web.pii]]\npath = "{path}"\naction = "{action}"\n'
    config.write_text(text)
    os.environ[PII_VARIABLE] = "bench-" + "0123456789abcdef" * 3


def _setting(item: str) -> tuple[str, int]:
    key, sep, value = item.partition("=")
    if not sep or not value.strip().isdigit():
        raise SystemExit(f"--collector {item!r}: give KEY=NUMBER, e.g. accept_processes=1")
    return key.strip(), int(value)


def set_collector(root: Path, values: dict[str, int]) -> None:
    """Put ``values`` in the project's ``[collector]`` table (which ``init`` writes)."""
    if not values:
        return
    config = root / "headwater.toml"
    lines = "".join(f"{key} = {value}\n" for key, value in values.items())
    config.write_text(config.read_text().replace("[collector]\n", f"[collector]\n{lines}", 1))


def _processes(collector: dict[str, int]) -> str:
    accept = collector.get("accept_processes", 0)
    validate = collector.get("validate_processes", 0)
    if accept:
        return f"{accept} accept processes feeding the store's process"
    if validate:
        return f"1 process and {validate} validating workers"
    return "1 process"


class RawBatches:
    """The benchmark's events, ``batch_rows`` at a time, validated in this process (with the
    PII rules when ``pii``) into the Arrow table the collector's writer commits; each batch's
    messageIds are new."""

    def __init__(self, batch_rows: int, pii: bool = False) -> None:
        from headwater.collect.validate import Validator

        self.validator = Validator(max_event_bytes=32_768, max_depth=64)
        self.rules = pii_rules() if pii else None
        self.parts = [p.replace(THREAD, "1").encode() for p in body_parts("raw", batch_rows)]
        self.made = 0
        self.validate_seconds = self.arrow_seconds = 0.0

    def next(self) -> pa.Table:
        from headwater.collect.validate import decode_batch
        from headwater.collect.writer import rows_table
        from headwater.store import schema

        self.made += 1
        body = str(self.made).encode().join(self.parts)
        t0 = time.perf_counter()
        envelope = decode_batch(body)
        received = time.time_ns() // 1000
        shared = self.validator.batch(envelope)
        events = [
            self.validator.event(bytes(raw), None, "web", received, shared, self.rules)
            for raw in envelope.batch
        ]
        t1 = time.perf_counter()
        table = rows_table(events, schema.EVENTS)
        self.validate_seconds += t1 - t0
        self.arrow_seconds += time.perf_counter() - t1
        return table


def ingest_new(engine: DuckDBEngine, table: pa.Table) -> None:
    """Commit ``table`` through the store's ingest; every event must be new."""
    from headwater.store import schema
    from headwater.store.engine import IngestBatch

    new = engine.ingest(IngestBatch(events=table, failed=schema.FAILED_EVENTS.empty_table()))
    if new.false_count:
        raise RuntimeError(f"the raw store called {new.false_count} new events duplicates")


def raw_store(folder: Path, seconds: float, batch_rows: int, pii: bool = False) -> Raw:
    """Commit the same events straight to DuckDB, in batches of ``batch_rows`` (validated
    with the PII rules when ``pii``)."""
    from headwater.store.duckdb import DuckDBEngine

    engine = DuckDBEngine.open(folder / "events.duckdb")
    source = RawBatches(batch_rows, pii)
    rows = 0
    ingest = 0.0
    commit_ms: list[float] = []
    deadline = time.monotonic() + 4 * seconds + 5
    try:
        while ingest < seconds and time.monotonic() < deadline:
            table = source.next()
            t0 = time.perf_counter()
            ingest_new(engine, table)
            took = time.perf_counter() - t0
            ingest += took
            commit_ms.append(1000 * took)
            rows += table.num_rows
        stored = int(engine.query("SELECT count(*) AS n FROM events").column("n")[0].as_py())
    finally:
        engine.close()
    return Raw(
        batch_rows,
        rows,
        source.made,
        ingest,
        source.validate_seconds,
        source.arrow_seconds,
        stored,
        commit_ms,
    )


@dataclass
class Checkpoints:
    """What DuckDB's CHECKPOINT cost with ``every`` events committed between two."""

    every: int
    events: int
    ms: list[float]


#: Events between checkpoints measured by a full run: as often as every few hundred ms at
#: half load, up to just under what DuckDB's WAL threshold (64 MB) holds, ~150,000.
CHECKPOINTS = (240_000, (5_000, 20_000, 60_000, 120_000))


def print_checkpoints(found: list[Checkpoints]) -> None:
    print("Checkpoint stalls: DuckDBEngine.ingest in 1,000-row commits, then CHECKPOINT")
    print("every N events (a commit waits for a checkpoint in progress):")
    print(f"  {'events between':>14}  {'checkpoints':>11}  {'median ms':>9}  {'max ms':>7}  "
          f"{'ms per 100k events':>18}")  # fmt: skip
    for one in found:
        ms = one.ms
        print(f"  {one.every:>14,}  {len(ms):>11}  {percentile(ms, 0.5):>9.1f}  {max(ms):>7.1f}  "
              f"{sum(ms) * 100_000 / one.events:>18.0f}")  # fmt: skip
    print("  Frequent small checkpoints shorten the typical stall, not the longest, and cost")
    print("  more in all: under sustained load, the collector's p99 holds one of them.\n")


def checkpoint_stalls(folder: Path, total: int, everies: Sequence[int]) -> list[Checkpoints]:
    """Per interval in ``everies``: ``total`` events committed in 1,000-row commits to one
    store (after ``total`` to start from), a CHECKPOINT every ``every`` of them, each timed.
    A commit waits for a checkpoint in progress, so each one is a stall of the collector."""
    from headwater.store.duckdb import DuckDBEngine

    engine = DuckDBEngine.open(folder / "events.duckdb")
    source = RawBatches(1_000)
    found = []
    try:
        for _ in range(total // 1_000):
            ingest_new(engine, source.next())
        engine.checkpoint()
        for every in everies:
            ms = []
            for _ in range(total // every):
                for _ in range(every // 1_000):
                    ingest_new(engine, source.next())
                t0 = time.perf_counter()
                engine.checkpoint()
                ms.append(1000 * (time.perf_counter() - t0))
            found.append(Checkpoints(every, total, ms))
    finally:
        engine.close()
    return found


# -- the run -----------------------------------------------------------------------


@dataclass
class Settings:
    seconds: int
    warmup: int
    connections: list[int]
    wrk_threads: int
    processes: int
    generator: str
    raw_batch: int
    profile: Path | None
    profile_rate: int
    quick: bool = False
    pii: bool = False
    #: ``[collector]`` settings given to the server (``--collector KEY=VALUE``).
    collector: dict[str, int] = field(default_factory=dict)


def run_load(
    server: Server,
    settings: Settings,
    auth: str,
    parts: list[str],
    script: Path,
    seconds: int,
    connections: int,
    on_start: OnStart,
) -> Load:
    if settings.generator == "wrk":
        lua = wrk_script(script, parts, auth)
        return run_wrk(server.url, lua, seconds, connections, settings.wrk_threads, on_start)
    processes = max(1, min(settings.processes, connections))
    return run_python(
        server.port,
        auth,
        parts,
        processes=processes,
        connections=max(1, connections // processes),
        seconds=seconds,
        on_start=on_start,
    )


def throughput_phase(
    server: Server, settings: Settings, auth: str, batch: int, connections: int, work: Path
) -> Phase:
    tag = f"b{batch}c{connections}"
    if settings.warmup:
        warm = body_parts(f"w{batch}c{connections}", batch)
        script = work / f"w{tag}.lua"
        run_load(server, settings, auth, warm, script, settings.warmup, connections, lambda: None)
    profile = settings.profile if batch in (1, 100) else None
    profiler = Profiler(server, settings.seconds, profile, tag, settings.profile_rate)
    marks: list[Snapshot] = []

    def on_start() -> None:
        marks.append(snapshot(server))
        profiler.start()

    parts = body_parts(tag, batch)
    load = run_load(
        server, settings, auth, parts, work / f"{tag}.lua", settings.seconds, connections, on_start
    )
    after = snapshot(server)
    name = f"batch {batch}, {connections} conns"
    return Phase(name, tag, batch, connections, load, marks[0], after, profiler.finish())


def latency_phase(server: Server, settings: Settings, auth: str, rate: float) -> Phase:
    processes = max(1, math.ceil(rate / 2_500))
    # Enough connections for a quarter of a second of requests: a request waits for a
    # free connection only when answers take longer than that (and the wait counts).
    connections = min(512, max(64, math.ceil(rate / 4 / processes)))
    marks: list[Snapshot] = []
    load = run_python(
        server.port,
        auth,
        body_parts("lat", 10),
        processes=processes,
        connections=connections,
        seconds=settings.seconds,
        on_start=lambda: marks.append(snapshot(server)),
        rate=rate,
    )
    after = snapshot(server)
    name = f"paced {rate:,.0f} req/s x 10"
    return Phase(name, "lat", 10, connections * processes, load, marks[0], after)


def conditions(settings: Settings) -> list[tuple[str, str]]:
    import duckdb
    import msgspec
    import pyarrow

    import headwater

    try:
        loop = f"uvloop {importlib.metadata.version('uvloop')}"
    except importlib.metadata.PackageNotFoundError:
        loop = "asyncio"
    wrk = shutil.which("wrk")
    conns = " and ".join(str(c) for c in settings.connections)
    if settings.generator == "wrk" and wrk:
        kind = (
            f"{wrk_version(wrk)}, {settings.wrk_threads} thread, {conns} keep-alive "
            "connections, closed loop, Lua-built bodies"
        )
    else:
        kind = (
            f"Python ({loop}), {settings.processes} processes, {conns} keep-alive connections "
            "in all, closed loop, pre-built bodies"
        )
    return [
        ("Headwater", f"{headwater.__version__}, commit {_revision()}"),
        ("CPUs", f"{os.cpu_count()} x {_cpu_model()}, shared by server and generator"),
        ("other load before start", _other_load()),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        (
            "DuckDB/pyarrow/msgspec",
            f"{duckdb.__version__}/{pyarrow.__version__}/{msgspec.__version__}",
        ),
        (
            "server",
            f"headwater up --port 0 on {HOST}: {_processes(settings.collector)}, {loop}, httptools",
        ),
        ("throughput load", kind),
        (
            "latency load",
            f"Python ({loop}), open loop, paced; latency from each request's due time",
        ),
        ("duration", f"{settings.seconds} s per phase after a {settings.warmup} s warm-up"),
        ("events", f"Segment track, {event_bytes()} bytes each, a unique messageId per event"),
        (
            "PII rules",
            ", ".join(f"{action} {path}" for path, action in PII_RULES) if settings.pii else "none",
        ),
    ]


def _other_load() -> str:
    """What the rest of the machine uses while this benchmark does nothing."""
    before, t0 = machine_busy_seconds(), time.monotonic()
    time.sleep(1.0)
    cores = (machine_busy_seconds() - before) / (time.monotonic() - t0)
    warning = "  !! the machine is busy: figures will be low and noisy" if cores > 0.25 else ""
    return f"{cores:.2f} cores busy over 1 s{warning}"


def _revision() -> str:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        git = ["git", "-C", str(ROOT)]
        head = subprocess.run(
            [*git, "log", "-1", "--format=%h"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            [*git, "status", "--porcelain", "--", "src"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        return f"{head or 'unknown'}{' + uncommitted changes in src/' if dirty else ''}"
    return "unknown"


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


def print_table(rows: list[list[str]], header: list[str]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    line = "  ".join(f"{{:{'<' if i == 0 else '>'}{w}}}" for i, w in enumerate(widths))
    print("  " + line.format(*header))
    print("  " + "  ".join("-" * w for w in widths))
    for row in rows:
        print("  " + line.format(*row))


def print_phases(phases: list[Phase]) -> None:
    rows = [
        [
            p.name,
            f"{p.events_per_second:,.0f}",
            f"{p.requests_per_second:,.0f}",
            f"{p.load.ok:,}",
            f"{p.load.bad + p.load.errors:,}",
            f"{p.server_cores:.2f}",
            f"{p.load.generator_cpu / p.load.seconds:.2f}",
            f"{p.other_cores:.2f}",
            f"{p.events_per_commit:,.0f}",
            f"{p.ms_per_commit:.1f}",
            f"{p.slow_commits:,}",
            f"{p.writer_busy:.0%}",
            f"{p.after.peak_kb / 1024:,.0f}",
        ]
        for p in phases
    ]
    header = ["phase", "events/s", "req/s", "2xx", "non-2xx", "server", "generator", "others"]
    print_table(rows, [*header, "events/commit", "ms/commit", ">100ms", "writer busy", "VmHWM"])
    print("  events/s and req/s: 2xx answers only (x events per request); non-2xx: other")
    print("  answers and socket errors; server, generator, others: CPU cores used (of")
    print(f"  {os.cpu_count()}; others = every other process on the machine, i.e. noise);")
    print("  events/commit, ms/commit (mean), >100ms (commits slower than that), writer busy")
    print("  (share of wall time spent committing): from the server's /metrics; VmHWM: the")
    print("  server's peak memory so far, in MB, at the end of the phase.\n")


def print_resources(
    idle: dict[str, int],
    end: dict[str, int],
    batch100: Phase,
    saturated: Phase,
    children_kb: int,
) -> None:
    """The server's memory at idle and at its peak, and the CPU it used, from /proc."""
    print("Server resources (from /proc/PID/status and /proc/PID/stat):")
    rows = [
        [
            "idle after start",
            f"{idle.get('VmRSS', 0) / 1024:,.0f}",
            f"{idle.get('RssAnon', 0) / 1024:,.0f}",
            f"{idle.get('RssFile', 0) / 1024:,.0f}",
            "",
        ],
        ["peak (VmHWM), whole run", f"{end.get('VmHWM', 0) / 1024:,.0f}", "", "", ""],
        ["child processes, most seen", f"{children_kb / 1024:,.0f}", "", "", ""],
        ["CPU, best batch-100 phase", "", "", "", f"{batch100.server_cores:.2f}"],
        [f"CPU, busiest phase ({saturated.name})", "", "", "", f"{saturated.server_cores:.2f}"],
    ]
    print_table(rows, ["server", "RSS MB", "anon MB", "file MB", "cores"])
    print("  anon: the process's own memory; file: mapped files (shared libraries, mostly),")
    print("  also counted in RSS; child processes: the validating workers' RSS (sampled at")
    print("  each phase's ends); cores: CPU seconds per second of the server and its")
    print(f"  children, of {os.cpu_count()}.\n")


def print_profile(phase: Phase) -> None:
    profile = phase.profile
    if not profile:
        return
    possible = profile["meta"]["possible"]
    print(f"Where the server's time went during '{phase.name}' (py-spy):")
    wall, cpu = profile.get("wall", {}), profile.get("cpu", {})
    for thread in sorted(set(wall) | set(cpu)):
        w, c = wall.get(thread, Counter()), cpu.get(thread, Counter())
        busy = sum(c.values()) / possible
        print(f"  thread {thread}: on CPU {busy:.0%} of the time (the rest: waiting)")
        print(f"    {'wall':>6}  {'on CPU':>6}  category")
        total_w, total_c = sum(w.values()) or 1, sum(c.values()) or 1
        for category in sorted(set(w) | set(c), key=lambda k: -(w[k] / total_w + c[k] / total_c)):
            print(f"    {w[category] / total_w:6.1%}  {c[category] / total_c:6.1%}  {category}")
    print("  wall: share of all samples, waiting included (GIL, DuckDB's worker threads,")
    print("  epoll); on CPU: share of the samples where the thread was running.\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--quick", action="store_true", help="smoke run: 1 s phases and warm-ups, one count"
    )
    parser.add_argument("--duration", type=int, default=10, help="seconds per phase (10)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up seconds per phase (2)")
    parser.add_argument(
        "--connections", default="64,256", help="keep-alive connections, comma-separated (64,256)"
    )
    parser.add_argument("--wrk-threads", type=int, default=1, help="wrk threads (1)")
    parser.add_argument("--processes", type=int, default=2, help="Python generator processes (2)")
    parser.add_argument("--generator", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--raw-batch", type=int, default=1_000, help="rows per raw commit (1000)")
    parser.add_argument("--profile", type=Path, help="py-spy the batch 1 and 100 phases into DIR")
    parser.add_argument("--profile-rate", type=int, default=200, help="py-spy samples/s (200)")
    parser.add_argument(
        "--pii", action="store_true", help="give the source PII rules (PII_RULES) and a key"
    )
    parser.add_argument(
        "--collector",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a [collector] setting of the server, e.g. accept_processes=1 (repeatable)",
    )
    args = parser.parse_args(argv)

    generator = args.generator
    if generator != "python" and shutil.which("wrk") is None:
        print("wrk is not installed; `apt-get install -y wrk` (Debian) gives a cheaper load")
        print("generator. Falling back to Python load-generator processes.\n")
        generator = "python"
    elif generator == "auto":
        generator = "wrk"
    connections = [int(c) for c in str(args.connections).split(",") if c.strip()]
    settings = Settings(
        # wrk's -d counts whole seconds: 1 s is its shortest phase, warm-up included.
        seconds=1 if args.quick else max(1, args.duration),
        warmup=1 if args.quick else max(0, args.warmup),
        connections=connections[:1] if args.quick else connections,
        wrk_threads=args.wrk_threads,
        processes=args.processes,
        generator=generator,
        raw_batch=args.raw_batch,
        profile=args.profile,
        profile_rate=args.profile_rate,
        quick=args.quick,
        pii=args.pii,
        collector=dict(_setting(item) for item in args.collector),
    )
    if settings.profile is not None:
        settings.profile.mkdir(parents=True, exist_ok=True)

    # A hard bound on the whole run, whatever hangs.
    phases = len(BATCHES) * len(settings.connections) + 1
    signal.signal(signal.SIGALRM, _timeout)
    signal.alarm(phases * (settings.seconds + settings.warmup + 30) + 3 * settings.seconds + 120)
    # A SIGTERM unwinds like the alarm, so the server is stopped and the folder removed.
    signal.signal(signal.SIGTERM, _terminated)

    print("Headwater ingest benchmark\n")
    for name, value in conditions(settings):
        print(f"  {name:<27} {value}")
    if settings.profile is not None:
        print("  !! py-spy samples the server in this run: figures are perturbed")
    if settings.quick:
        print(f"  {QUICK_NOTE}")
    print()

    from headwater.cli.scaffold import init_project

    with tempfile.TemporaryDirectory(prefix="hw-bench-") as tmp:
        work = Path(tmp)
        key = init_project(work / "project")
        if settings.pii:
            add_pii_rules(work / "project")
        set_collector(work / "project", settings.collector)
        server = start_server(work / "project")
        try:
            return _run(server, settings, basic_auth(key), work)
        finally:
            server.stop()


def _run(server: Server, settings: Settings, auth: str, work: Path) -> int:
    idle = server.memory_kb()
    idle_rss = idle.get("VmRSS", 0) / 1024
    phases: list[Phase] = []
    for connections in settings.connections:
        for batch in BATCHES:
            print(f"  running: batch of {batch}, {connections} connections ...", flush=True)
            phases.append(throughput_phase(server, settings, auth, batch, connections, work))
            if not server.alive():
                raise RuntimeError("the server died under load; see its server.log")
    best = {b: max((p for p in phases if p.batch == b), key=_rate) for b in BATCHES}
    rate = max(1.0, best[10].requests_per_second / 2)
    print(f"  running: open loop, {rate:,.0f} requests/s of 10 events ...", flush=True)
    latency = latency_phase(server, settings, auth, rate)
    memory = server.memory_kb()
    final = server.metrics()
    counts = server.counts_by_tag()
    duck = server.duckdb_memory()
    code = server.stop()
    sizes = [settings.raw_batch]
    observed = int(round(best[100].events_per_commit, -2))
    if observed >= 100 and abs(observed - settings.raw_batch) > 0.2 * settings.raw_batch:
        sizes.append(observed)
    raws = []
    for size in sizes:
        print(f"  running: raw DuckDBEngine.ingest in {size:,}-row commits ...", flush=True)
        raws.append(raw_store(work / f"raw{size}", settings.seconds, size, settings.pii))
    stall_events, everies = (20_000, (5_000, 10_000)) if settings.quick else CHECKPOINTS
    print(f"  running: CHECKPOINT every {'/'.join(f'{e:,}' for e in everies)} events ...")
    stalls = checkpoint_stalls(work / "checkpoints", stall_events, everies)
    print()

    print("Throughput, closed loop, then the open-loop latency phase:")
    print_phases([*phases, latency])

    lat = latency.load
    lat_ms = [x * 1000 for x in lat.latencies]
    p50, p99 = percentile(lat_ms, 0.50), percentile(lat_ms, 0.99)
    print(f"Acknowledgement latency, open loop at {rate:,.0f} requests/s of 10 events")
    print(f"(half the best batch-10 rate, {best[10].name}), {latency.connections} connections:")
    print(
        f"  p50 {p50:.1f} ms   p90 {percentile(lat_ms, 0.9):.1f} ms   p99 {p99:.1f} ms   "
        f"p99.9 {percentile(lat_ms, 0.999):.1f} ms   max {max(lat_ms, default=math.nan):.1f} ms"
    )
    lag_ms = [x * 1000 for x in lat.lags]
    print(
        f"  answered {len(lat_ms):,} ({lat.ok:,} 2xx), unanswered {lat.unanswered}; "
        f"{lat.waited:,} waited for a free connection (counted in their latency);\n"
        f"  the generator's own send lag: p99 {percentile(lag_ms, 0.99):.2f} ms\n"
    )

    hwm = memory.get("VmHWM", 0) / 1024
    print(
        f"Server memory at the end: VmHWM {hwm:,.1f} MB (peak), "
        f"VmRSS {memory.get('VmRSS', 0) / 1024:,.1f} MB (VmRSS idle after start: "
        f"{idle_rss:,.1f} MB); exit code after SIGTERM: {code}"
    )
    saturated = max(phases, key=lambda p: p.server_cores)
    children = max(p.after.children_kb for p in [*phases, latency])
    print_resources(idle, memory, best[100], saturated, children)
    if duck:
        parts = ", ".join(f"{tag} {b / 2**20:,.0f}" for tag, b in duck.items() if b >= 2**20)
        print(f"  of which DuckDB's own, now: {sum(duck.values()) / 2**20:,.0f} MB ({parts})")
    print()

    print("Raw store limit: the same events, validated in this process, committed by")
    print("DuckDBEngine.ingest as Arrow tables of schema.EVENTS into a fresh file:")
    ratios = []
    for raw in raws:
        ratio = best[100].events_per_second / raw.events_per_second if raw.ingest_seconds else 0.0
        ratios.append(ratio)
        ms = raw.commit_ms
        print(
            f"  {raw.batch_rows:>6,}-row commits: {raw.events_per_second:>9,.0f} events/s "
            f"({raw.rows:,} rows); server best batch-100 / raw = {ratio:.2f}\n"
            f"      ms/commit: mean {1000 * raw.ingest_seconds / raw.batches:.1f}, "
            f"p50 {percentile(ms, 0.5):.1f}, p99 {percentile(ms, 0.99):.1f}, max {max(ms):.1f}"
        )
    print_checkpoints(stalls)
    raw = raws[0]
    serial = raw.rows / (raw.validate_seconds + raw.arrow_seconds + raw.ingest_seconds)
    print(
        f"  the same events on one core: decode+validate {raw.rows / raw.validate_seconds:,.0f}/s,"
        f" Arrow build {raw.rows / raw.arrow_seconds:,.0f}/s;\n"
        f"  validate + build + ingest in series: {serial:,.0f} events/s\n"
    )
    if settings.pii:
        without, with_rules = pii_cost()
        print(
            "PII rules, in this process: decode+validate of the same batch of 100, best of 7\n"
            f"  without rules {without:.2f} us/event, with them {with_rules:.2f} us/event "
            f"(x{with_rules / without:.2f}; +{with_rules - without:.2f} us/event)\n"
        )

    failures = verify(phases, latency, counts, raws, final)

    for phase in phases:
        print_profile(phase)

    if settings.quick:
        print(f"{QUICK_NOTE}\n")
    print("Summary against the targets:")
    single = best[1]
    summary = [
        [
            "events/s, batches of 100",
            f"{best[100].events_per_second:,.0f}",
            f">= {TARGET_BATCH100_EVENTS:,}",
            _verdict(best[100].events_per_second >= TARGET_BATCH100_EVENTS),
            f"{best[100].connections} conns",
        ],
        [
            "requests/s, single events",
            f"{single.requests_per_second:,.0f}",
            f">= {TARGET_SINGLE_REQUESTS:,}",
            _verdict(single.requests_per_second >= TARGET_SINGLE_REQUESTS),
            f"{single.connections} conns",
        ],
        [
            "p99 latency at half load, ms",
            f"{p99:.1f}",
            f"<= {TARGET_P99_MS:g}",
            _verdict(p99 <= TARGET_P99_MS and lat.unanswered == 0),
            f"p50 {p50:.1f} ms",
        ],
        [
            "server peak memory, MB",
            f"{hwm:,.1f}",
            f"<= {TARGET_MEMORY_MB:g}",
            _verdict(hwm <= TARGET_MEMORY_MB),
            "VmHWM",
        ],
        [
            "server idle memory, MB",
            f"{idle_rss:,.1f}",
            f"<= {TARGET_IDLE_MB:g}",
            _verdict(idle_rss <= TARGET_IDLE_MB),
            "VmRSS after start",
        ],
        [
            "server CPU at saturation, cores",
            f"{best[100].server_cores:.2f}",
            f">= {TARGET_CORES - 0.2:g}",
            _verdict(best[100].server_cores >= TARGET_CORES - 0.2),
            f"of {os.cpu_count()}, {best[100].name}",
        ],
        *[
            [
                "server / raw store",
                f"{ratio:.2f}",
                "",
                "",
                f"raw {r.events_per_second:,.0f}/s in {r.batch_rows:,}-row commits",
            ]
            for r, ratio in zip(raws, ratios, strict=True)
        ],
        [
            "events/s, batches of 10",
            f"{best[10].events_per_second:,.0f}",
            "",
            "",
            f"{best[10].connections} conns",
        ],
    ]
    print_table(summary, ["measure", "measured", "target", "result", "note"])
    if failures:
        print("\nVERIFICATION FAILED:\n  " + "\n  ".join(failures))
        return 1
    print("\nVerified: every acknowledged event is in the store, exactly once.")
    return 0


def verify(
    phases: list[Phase],
    latency: Phase,
    counts: dict[str, tuple[int, int]],
    raws: list[Raw],
    final: dict[str, float],
) -> list[str]:
    """Compare COUNT(*) per phase tag with the acknowledged events; print the table."""
    print("Verification: COUNT(*) of the server's events per phase vs acknowledged events")
    failures = []
    rows = []
    acked_by_tag = {p.tag: p.acked_events for p in [*phases, latency]}
    for tag in sorted(set(acked_by_tag) | set(counts), key=lambda t: (t[0] != "b", t)):
        stored, distinct = counts.get(tag, (0, 0))
        acked = acked_by_tag.get(tag)
        check = "ok"
        if stored != distinct:
            check = "DUPLICATE ROWS"
            failures.append(f"{tag}: {stored - distinct} rows are duplicates")
        if acked is not None and stored < acked:
            check = "MISSING"
            failures.append(f"{tag}: {acked - stored} acknowledged events are not in the store")
        shown = "warm-up" if acked is None else f"{acked:,}"
        extra = "" if acked is None else f"{stored - acked:,}"
        rows.append([tag, shown, f"{stored:,}", extra, check])
    print_table(rows, ["tag", "acknowledged", "stored", "extra", "check"])
    print("  extra: committed but not counted (in flight when the generator stopped);")
    print(
        f"  the server counted {final['duplicates']:,.0f} duplicates, "
        f"{final['rejected']:,.0f} rejected events, {final['commit_failures']:,.0f} failed commits"
    )
    for raw in raws:
        if raw.stored != raw.rows:
            failures.append(f"the raw store holds {raw.stored} rows; {raw.rows} were ingested")
    if final["duplicates"] or final["rejected"]:
        failures.append("the server saw duplicates or rejected events; the load is not clean")
    print("  " + ("FAILED" if failures else "passed") + "\n")
    return failures


def _rate(phase: Phase) -> float:
    return phase.events_per_second


def _verdict(passed: bool) -> str:
    return "PASS" if passed else "MISS"


def _timeout(signum: int, frame: object) -> None:
    raise TimeoutError("the benchmark ran past its time budget")


def _terminated(signum: int, frame: object) -> None:
    sys.exit(128 + signum)


if __name__ == "__main__":
    sys.exit(main())
