"""Read API and delivery benchmark: lookups, full reads and webhooks on loopback.

Run from the repository root::

    .venv/bin/python benchmarks/serve.py            # about 1.5 minutes
    .venv/bin/python benchmarks/serve.py --quick    # every part, tiny: about 10 seconds
    .venv/bin/python benchmarks/serve.py --profile  # adds where the webhook delivery's time goes

What it measures, in a fresh temporary project with a throwaway PostgreSQL
(``tests/pg.py``: initdb and pg_ctl on a free loopback port):

1. Point lookups, ``GET /api/v1/datasets/{name}/rows/{key}`` on a real
   ``headwater up``, sequential over one keep-alive connection, random keys:
   p50 and p99 of ``scores`` (1,000,000 rows, key ``user_id``) from the embedded
   DuckDB store, and of ``scores_pg`` (the same rows, delivered to a PostgreSQL
   sink with ``serve = true``) from PostgreSQL. The stores are measured in
   alternating blocks so that noise on the shared machine falls on both alike.
   Baselines: the same lookup straight on DuckDB (a read-only connection to the
   same file, before the server owns it) and straight through psycopg. In
   between, for where the time goes: the same lookup through Headwater's
   readers in this process (``DuckDBEngine.select``, ``PostgresReader.select``),
   without HTTP, and ``GET /healthz`` as the floor of an HTTP round trip.
2. The full dataset as Arrow, ``GET .../rows?format=arrow`` paged by the
   ``X-Next-Cursor`` header with ``[api] max_page_size`` raised to the page size:
   rows/s over every row, from both stores. Baselines: DuckDB reading the table
   to Arrow in one query (and, to tell the query from the transport, the same
   paged queries the API runs, run in this process); psycopg fetching the table.
3. Webhook delivery: a pipeline of 200,000 rows delivered by
   ``headwater.deliver.deliverer.Deliverer`` (``Workspace.deliver``, as
   ``headwater run`` does) to a receiver in another process (a
   ``ThreadingHTTPServer`` that decodes each body, counts its rows and answers
   200), timed from the start of the delivery to its end; the interval is
   published again before each further delivery, and the median is reported.
   Baseline: the same bodies, made beforehand, posted by a plain httpx loop to
   the same receiver. How long making the bodies alone takes is printed too.

The setup runs in this process before the server starts (DuckDB lets one
process open the file): the pipelines, their PostgreSQL delivery and the
webhook deliveries, then the baselines on the file opened read-only.

Every figure is printed with the conditions, its ratio to its baseline, and the
targets as MET or MISSED. Everything runs on loopback; the servers and the
temporary folder are removed at the end, also after an error or Ctrl-C.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import math
import multiprocessing as mp
import os
import platform
import pstats
import random
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

import duckdb
import httpx
import msgspec
import psycopg
import pyarrow as pa
import pyarrow.ipc
from sqlglot import exp

import headwater
from headwater.cli.scaffold import add_consumer, init_project
from headwater.config.project import load_project
from headwater.deliver.settings import PostgresSink, WebhookSink
from headwater.deliver.webhook import IDEMPOTENCY, SIGNATURE, batches, body, sign
from headwater.runtime.workspace import Workspace, engine_for, state_for
from headwater.serve.query import Dataset, Reader, encode_cursor, rows_query
from headwater.store.duckdb import DuckDBEngine
from headwater.store.postgres.reader import PostgresReader

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
PG_ENV = "HW_BENCH_PG_URL"
SECRET_ENV = "HW_BENCH_HOOK_SECRET"

EMBEDDED = "scores"  # served from the embedded DuckDB store
SERVED = "scores_pg"  # the same rows, delivered to PostgreSQL and served from there
HOOK = "scores_hook"  # delivered to the webhook receiver
BLOCK = 250  # lookups per store before switching to the other

#: Printed with the conditions and the results of a --quick run (tests look for it).
QUICK_NOTE = (
    "QUICK RUN (--quick): every phase at a tiny size, to check that the benchmark runs; "
    "its figures mean nothing"
)

TARGET_PG_P99_MS = 10.0
TARGET_EMBEDDED_P99_MS = 50.0
TARGET_ARROW_ROWS_PER_S = 1_000_000.0
TARGET_EMBEDDED_P50_MS = 3.0
TARGET_WEBHOOK_RATIO = 0.5

PIPELINE = """\
/* headwater
description = "Benchmark rows: a score per user, made by range()."
schedule = "@monthly"
kind = "full"
key = ["user_id"]
sinks = [{sinks}]
*/
WITH t AS (SELECT unnest(range(1, {rows} + 1)) AS i)
SELECT
  i AS user_id,
  CAST((i * 7919) % 100003 AS DOUBLE) / 100 AS score,
  CASE i % 3 WHEN 0 THEN 'free' WHEN 1 THEN 'pro' ELSE 'team' END AS plan,
  (i * 31) % 1000 AS events,
  TIMESTAMPTZ '2026-11-01 00:00:00+00' + to_seconds(i % 86400) AS updated_at
FROM t
"""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile of ``values`` (``q`` in 0..1)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def expected_score(user_id: int) -> float:
    return float((user_id * 7919) % 100003) / 100


# -- the webhook receiver, in its own process ----------------------------------------


def receiver_main(conn: Connection, counters: Any) -> None:
    """Answer every POST with 200 after decoding its JSON and counting its rows."""
    rows, posts, received = counters
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as any real receiver

        def do_POST(self) -> None:
            data = self.rfile.read(int(self.headers.get("content-length", "0")))
            count = len(msgspec.json.decode(data)["rows"])
            with lock:
                rows.value += count
                posts.value += 1
                received.value += len(data)
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer((HOST, 0), Handler)
    server.daemon_threads = True
    conn.send(server.server_address[1])
    server.serve_forever()


@dataclass
class Receiver:
    process: Any
    port: int
    counters: tuple[Any, Any, Any]

    def snapshot(self) -> tuple[int, int, int]:
        rows, posts, received = self.counters
        return int(rows.value), int(posts.value), int(received.value)


@contextlib.contextmanager
def receiver() -> Iterator[Receiver]:
    ctx = mp.get_context("spawn")
    counters = (ctx.Value("q", 0, lock=False), ctx.Value("q", 0, lock=False),
                ctx.Value("q", 0, lock=False))  # fmt: skip
    parent, child = ctx.Pipe()
    process = ctx.Process(target=receiver_main, args=(child, counters), daemon=True)
    process.start()
    try:
        if not parent.poll(30):
            raise RuntimeError("the webhook receiver did not start")
        yield Receiver(process, int(parent.recv()), counters)
    finally:
        process.terminate()
        process.join(10)


# -- headwater up ------------------------------------------------------------------


@dataclass
class Server:
    process: subprocess.Popen[bytes]
    url: str
    log: Path


@contextlib.contextmanager
def headwater_up(root: Path, timeout: float = 60.0) -> Iterator[Server]:
    """``headwater up --port 0`` on 127.0.0.1; its URL from ``.headwater/server.json``."""
    runtime = root / ".headwater" / "server.json"
    runtime.unlink(missing_ok=True)
    log_path = root / "server.log"
    with log_path.open("ab") as out:
        process = subprocess.Popen(
            [sys.executable, "-m", "headwater", "--project", str(root), "up", "--port", "0"],
            stdout=out,
            stderr=subprocess.STDOUT,
            env={**os.environ, "COLUMNS": "200"},
        )
    try:
        deadline = time.monotonic() + timeout
        url = ""
        while not url:
            if process.poll() is not None:
                raise RuntimeError(f"headwater up exited early:\n{log_path.read_text()}")
            if time.monotonic() > deadline:
                raise RuntimeError(f"headwater up did not start in {timeout:.0f}s")
            if runtime.exists():
                with contextlib.suppress(ValueError, KeyError):
                    url = str(msgspec.json.decode(runtime.read_bytes())["url"])
            time.sleep(0.05)
        yield Server(process, url, log_path)
    finally:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)


# -- results -----------------------------------------------------------------------


@dataclass
class Latency:
    label: str
    ms: list[float] = field(default_factory=list)

    @property
    def p50(self) -> float:
        return percentile(self.ms, 0.50)

    @property
    def p99(self) -> float:
        return percentile(self.ms, 0.99)


@dataclass
class Throughput:
    label: str
    rows: int
    seconds: list[float]
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def rows_per_second(self) -> float:
        return self.rows / self.median


@dataclass
class Webhook:
    rows: int
    batches: int
    batch_rows: int
    seconds: list[float]
    body_bytes: int
    bodies_seconds: float
    baseline_seconds: list[float]
    profile: list[str] = field(default_factory=list)

    @property
    def median(self) -> float:
        return statistics.median(self.seconds)

    @property
    def baseline_median(self) -> float:
        return statistics.median(self.baseline_seconds)


@dataclass
class Results:
    conditions: list[str] = field(default_factory=list)
    lookups: dict[str, Latency] = field(default_factory=dict)
    reads: dict[str, Throughput] = field(default_factory=dict)
    webhook: Webhook | None = None
    notes: list[str] = field(default_factory=list)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    value = fn()
    return time.perf_counter() - started, value


# -- the project ---------------------------------------------------------------------


def make_project(root: Path, args: argparse.Namespace, port: int) -> str:
    """A project with the three pipelines and the sinks; returns a consumer's token."""
    init_project(root)
    for example in (root / "pipelines").glob("*.sql"):
        example.unlink()
    config = root / "headwater.toml"
    text = config.read_text().replace('dialect = "bigquery"', 'dialect = "duckdb"')
    text += f"""
[api]
max_page_size = {args.page}

[delivery]
allow_hosts = ["localhost"]

[sinks.pg]
type = "postgres"
url = "${{{PG_ENV}}}"
serve = true

[sinks.hook]
type = "webhook"
url = "http://localhost:{port}/"
secret = "${{{SECRET_ENV}}}"
"""
    config.write_text(text)
    pipelines = root / "pipelines"
    for name, rows, sinks in (
        (EMBEDDED, args.rows, ""),
        (SERVED, args.rows, '"pg"'),
        (HOOK, args.hook_rows, '"hook"'),
    ):
        (pipelines / f"{name}.sql").write_text(PIPELINE.format(rows=rows, sinks=sinks))
    return add_consumer(config, "bench", [EMBEDDED, SERVED, HOOK])


def build(root: Path, args: argparse.Namespace, hook: Receiver, results: Results) -> Webhook:
    """Run the pipelines and deliver them, in this process; measure the webhook delivery."""
    project = load_project(root)
    engine = engine_for(project)
    metadata = state_for(project)
    service = Workspace(project, engine, metadata)
    try:
        log(f"running {EMBEDDED} and {SERVED} ({args.rows:,} rows each)")
        seconds, runs = timed(lambda: [*service.run(EMBEDDED), *service.run(SERVED)])
        assert [r.rows_written for r in runs] == [args.rows, args.rows], runs
        results.notes.append(f"setup: both pipelines of {args.rows:,} rows ran in {seconds:.1f} s")
        log("delivering scores_pg to PostgreSQL")
        seconds, delivered = timed(service.deliver)
        assert [(d.sink, d.status, d.rows) for d in delivered] == [("pg", "delivered", args.rows)]
        results.notes.append(
            f"setup: PostgreSQL sink delivery of {args.rows:,} rows took {seconds:.1f} s "
            f"({args.rows / seconds:,.0f} rows/s)"
        )

        log(f"running {HOOK} ({args.hook_rows:,} rows) and delivering it to the webhook")
        sink = project.settings.sinks["hook"]
        assert isinstance(sink, WebhookSink)
        (run,) = service.run(HOOK)
        interval = run.interval
        delivery_seconds = []
        for attempt in range(args.reads):
            if attempt:  # publish the interval again: its delivery is owed again
                (run,) = service.run(HOOK, interval.start, interval.end)
            before = hook.snapshot()
            seconds, delivered = timed(service.deliver)
            after = hook.snapshot()
            assert [(d.sink, d.status, d.rows) for d in delivered] == [
                ("hook", "delivered", args.hook_rows)
            ], delivered
            got_rows, got_posts, got_bytes = (a - b for a, b in zip(after, before, strict=True))
            assert got_rows == args.hook_rows, (got_rows, args.hook_rows)
            delivery_seconds.append(seconds)

        # The bodies of the last delivery, made as the Deliverer makes them, for a plain loop.
        delivery = metadata.deliveries.get(HOOK, "hook", interval.start)
        assert delivery is not None
        assert delivery.status == "delivered", delivery
        table = engine.select(f'SELECT * FROM "{HOOK}" ORDER BY user_id', {}).table
        parts = batches(table, sink.batch_rows)

        def make() -> list[bytes]:
            return [
                body(HOOK, "hook", delivery.interval, delivery.run_id, i, len(parts), part)
                for i, part in enumerate(parts)
            ]

        bodies_seconds, bodies = timed(make)
        assert len(bodies) == got_posts, (len(bodies), got_posts)
        assert sum(len(b) for b in bodies) == got_bytes, "the bodies differ from those sent"
        secret = os.environ[SECRET_ENV]
        url = f"http://localhost:{hook.port}/"
        posts = [
            (payload, {"content-type": "application/json", IDEMPOTENCY: f"k{i}",
                       SIGNATURE: sign(secret, int(time.time()), payload)})
            for i, payload in enumerate(bodies)
        ]  # fmt: skip
        baseline_seconds = []
        with httpx.Client(trust_env=False, timeout=30) as client:
            client.post(url, content=bodies[0], headers=posts[0][1]).raise_for_status()  # warm
            for _ in range(args.reads):
                before = hook.snapshot()
                started = time.perf_counter()
                for payload, headers in posts:
                    client.post(url, content=payload, headers=headers).raise_for_status()
                baseline_seconds.append(time.perf_counter() - started)
                assert hook.snapshot()[0] - before[0] == args.hook_rows
        webhook = Webhook(
            rows=got_rows,
            batches=got_posts,
            batch_rows=sink.batch_rows,
            seconds=delivery_seconds,
            body_bytes=got_bytes,
            bodies_seconds=bodies_seconds,
            baseline_seconds=baseline_seconds,
        )
        if args.profile:
            webhook.profile = profile_delivery(service, interval)
        return webhook
    finally:
        service.close()


def profile_delivery(service: Workspace, interval: Any) -> list[str]:
    """One more webhook delivery (the interval published again), under cProfile."""
    service.run(HOOK, interval.start, interval.end)
    profiler = cProfile.Profile()
    profiler.enable()
    service.deliver()
    profiler.disable()
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("cumulative").print_stats(25)
    return out.getvalue().splitlines()


# -- baselines straight on the stores -------------------------------------------------


def lookup_keys(rows: int, count: int, seed: int) -> list[int]:
    rng = random.Random(seed)
    return [rng.randint(1, rows) for _ in range(count)]


def time_each(keys: list[int], fn: Callable[[int], Any], label: str, warmup: int) -> Latency:
    for key in keys[:warmup]:
        fn(key)
    result = Latency(label)
    for key in keys[warmup:]:
        started = time.perf_counter()
        found = fn(key)
        result.ms.append((time.perf_counter() - started) * 1000)
        assert found == key, (label, key, found)
    return result


def duckdb_baselines(
    store: Path, args: argparse.Namespace, keys: list[int], results: Results
) -> None:
    """Lookups and full reads straight on the file, read-only, before the server owns it."""
    con = duckdb.connect(str(store), read_only=True)
    try:
        sql = f'SELECT * FROM "{EMBEDDED}" WHERE "user_id" = ? LIMIT 1'

        def lookup(key: int) -> int:
            return int(con.sql(sql, params=[key]).to_arrow_table()["user_id"][0].as_py())

        results.lookups["duckdb"] = time_each(keys, lookup, "DuckDB, Python API", args.warmup)
        seconds = []
        for _ in range(args.reads):
            took, table = timed(lambda: con.sql(f'SELECT * FROM "{EMBEDDED}"').to_arrow_table())
            assert table.num_rows == args.rows
            seconds.append(took)
        results.reads["duckdb"] = Throughput("DuckDB, SELECT * to Arrow", args.rows, seconds)
    finally:
        con.close()

    # Headwater's own reader, in this process: what a request costs without HTTP.
    engine = DuckDBEngine.open(store, read_only=True)
    try:
        schema = engine.select(f'SELECT * FROM "{EMBEDDED}" LIMIT 0', {}).table.schema
        dataset = Dataset(EMBEDDED, ("user_id",), schema, engine)

        query = lookup_sql(dataset)

        def engine_lookup(key: int) -> int:
            return int(engine.select(query, {"p0": key}).table["user_id"][0].as_py())

        results.lookups["engine"] = time_each(
            keys, engine_lookup, "DuckDBEngine.select, in-process", args.warmup
        )
        seconds = []
        for _ in range(args.reads):
            took, rows = timed(lambda: read_pages(dataset, args.page))
            assert rows == args.rows, rows
            seconds.append(took)
        results.reads["duckdb_pages"] = Throughput(
            "the API's paged queries, DuckDBEngine in-process", args.rows, seconds
        )
    finally:
        engine.close()


def lookup_sql(dataset: Dataset) -> str:
    """The SELECT the API runs for a lookup by key (as serve/app.py builds it)."""
    column = exp.column(dataset.key[0], quoted=True)
    query = exp.select("*").from_(dataset.relation())
    query = query.where(exp.EQ(this=column, expression=exp.Placeholder(this="p0"))).limit(1)
    return query.sql(dataset.reader.dialect)


def read_pages(dataset: Dataset, page: int) -> int:
    """Every row, by the queries the API runs for its pages (no HTTP, no IPC)."""
    rows, cursor = 0, None
    reader: Reader = dataset.reader
    while True:
        query = {"limit": str(page), "format": "arrow", **({"cursor": cursor} if cursor else {})}
        select, order, size = rows_query(dataset, query, page_size=page, max_page_size=page)
        table = reader.select(select.query.sql(reader.dialect), select.params).table
        rows += min(table.num_rows, size)
        if table.num_rows <= size:
            return rows
        cursor = encode_cursor(table.slice(size - 1, 1).to_pylist()[0], order)


def postgres_baselines(
    url: str, sink: PostgresSink, args: argparse.Namespace, keys: list[int], results: Results
) -> None:
    with psycopg.connect(url, autocommit=True) as con:
        sql = f'SELECT * FROM public."{SERVED}" WHERE "user_id" = %s LIMIT 1'

        def lookup(key: int) -> int:
            with con.cursor() as cur:
                cur.execute(sql, [key])
                row = cur.fetchone()
            assert row is not None
            return int(row[0])

        results.lookups["psycopg"] = time_each(keys, lookup, "psycopg, one connection", args.warmup)
        seconds = []
        for _ in range(args.reads):

            def fetch() -> int:
                with con.cursor() as cur:
                    cur.execute(f'SELECT * FROM public."{SERVED}" ORDER BY user_id')
                    return len(cur.fetchall())

            took, count = timed(fetch)
            assert count == args.rows
            seconds.append(took)
        results.reads["psycopg"] = Throughput(
            "psycopg, SELECT * ORDER BY key, fetchall", args.rows, seconds
        )

    # As the server reads a sink with serve = true (runtime/app.py): its pool and its table.
    reader = PostgresReader("pg", url, sink.pool_size)
    try:
        table = (sink.schema, f"{sink.table_prefix}{SERVED}")
        dataset = Dataset(SERVED, ("user_id",), pa.schema([]), reader, table)
        query = lookup_sql(dataset)

        def reader_lookup(key: int) -> int:
            return int(reader.select(query, {"p0": key}).table["user_id"][0].as_py())

        results.lookups["pgreader"] = time_each(
            keys, reader_lookup, "PostgresReader.select, in-process", args.warmup
        )
    finally:
        reader.close()


# -- over HTTP --------------------------------------------------------------------------


def http_lookups(
    client: httpx.Client, args: argparse.Namespace, keys: list[int], results: Results
) -> None:
    def getter(name: str) -> Callable[[int], int]:
        def get(key: int) -> int:
            response = client.get(f"/api/v1/datasets/{name}/rows/{key}")
            if response.status_code != 200:
                raise RuntimeError(f"{name}/{key}: {response.status_code} {response.text[:300]}")
            return int(response.json()["row"]["user_id"])

        return get

    embedded = Latency("HTTP, embedded DuckDB store")
    served = Latency("HTTP, PostgreSQL sink (serve = true)")
    # Warm-up, then the stores in alternating blocks.
    for name in (EMBEDDED, SERVED):
        get = getter(name)
        for key in keys[: args.warmup]:
            get(key)
    measured = keys[args.warmup :]
    for start in range(0, len(measured), BLOCK):
        block = measured[start : start + BLOCK]
        for name, latency in ((EMBEDDED, embedded), (SERVED, served)):
            latency.ms += time_each(block, getter(name), name, 0).ms
    results.lookups["http_embedded"] = embedded
    results.lookups["http_pg"] = served

    # The same row from both stores, and as the generator made it.
    for key in keys[:50]:
        a = client.get(f"/api/v1/datasets/{EMBEDDED}/rows/{key}").json()["row"]
        b = client.get(f"/api/v1/datasets/{SERVED}/rows/{key}").json()["row"]
        assert a["score"] == b["score"] == expected_score(key), (key, a, b)
        assert a["plan"] == b["plan"], (key, a, b)
        assert a["events"] == b["events"], (key, a, b)

    floor = Latency("HTTP, GET /healthz (the round-trip floor)")
    for i in range(args.warmup + len(measured) // 2):
        started = time.perf_counter()
        client.get("/healthz").raise_for_status()
        if i >= args.warmup:
            floor.ms.append((time.perf_counter() - started) * 1000)
    results.lookups["healthz"] = floor


def http_read(client: httpx.Client, name: str, page: int) -> tuple[int, int]:
    """Every row of ``name`` as Arrow, page by page; (rows, pages), keys checked ascending."""
    rows, pages, cursor, last = 0, 0, None, 0
    while True:
        params: dict[str, Any] = {"format": "arrow", "limit": page}
        if cursor:
            params["cursor"] = cursor
        response = client.get(f"/api/v1/datasets/{name}/rows", params=params)
        if response.status_code != 200:
            raise RuntimeError(f"{name} page {pages}: {response.status_code} {response.text[:300]}")
        table = pa.ipc.open_stream(response.content).read_all()
        if table.num_rows:
            keys = table["user_id"]
            assert keys[0].as_py() > last, (name, pages, last)
            last = keys[-1].as_py()
        rows += table.num_rows
        pages += 1
        cursor = response.headers.get("x-next-cursor")
        if not cursor:
            return rows, pages


def http_reads(client: httpx.Client, args: argparse.Namespace, results: Results) -> None:
    for name, slot, label in (
        (EMBEDDED, "http_embedded", "HTTP, embedded DuckDB store"),
        (SERVED, "http_pg", "HTTP, PostgreSQL sink (serve = true)"),
    ):
        http_read(client, name, args.page)  # warm-up
        seconds, pages = [], 0
        for _ in range(args.reads):
            took, (rows, pages) = timed(lambda name=name: http_read(client, name, args.page))
            assert rows == args.rows, (name, rows)
            seconds.append(took)
        results.reads[slot] = Throughput(
            label, args.rows, seconds, f"{pages} page{'s' if pages != 1 else ''}"
        )


# -- the run -----------------------------------------------------------------------------


def bench(args: argparse.Namespace, work: Path) -> Results:
    sys.path.insert(0, str(ROOT))
    from tests.pg import postgres_server

    results = Results()
    load_start = os.getloadavg()[0]
    keys = lookup_keys(args.rows, args.warmup + args.lookups, seed=20261125)
    with contextlib.ExitStack() as stack:
        log("starting the webhook receiver and PostgreSQL")
        hook = stack.enter_context(receiver())
        pg = stack.enter_context(postgres_server())
        url = pg.create_database("headwater_bench")
        os.environ[PG_ENV] = url
        os.environ[SECRET_ENV] = secrets.token_hex(16)
        with psycopg.connect(url) as con:
            row = con.execute("SHOW server_version").fetchone()
            pg_version = str(row[0]) if row else "?"

        root = work / "project"
        token = make_project(root, args, hook.port)
        results.webhook = build(root, args, hook, results)

        log("baselines straight on the stores")
        project = load_project(root)
        duckdb_baselines(project.store_path, args, keys, results)
        sink = project.settings.sinks["pg"]
        assert isinstance(sink, PostgresSink)
        postgres_baselines(url, sink, args, keys, results)

        log("starting headwater up")
        server = stack.enter_context(headwater_up(root))
        client = stack.enter_context(
            httpx.Client(
                base_url=server.url,
                headers={"authorization": f"Bearer {token}"},
                timeout=120,
                trust_env=False,
            )
        )
        log(f"{server.url}: {args.lookups:,} lookups per store after {args.warmup} warm-up")
        http_lookups(client, args, keys, results)
        log(f"full reads as Arrow, pages of {args.page:,}")
        http_reads(client, args, results)
        if server.process.poll() is not None:
            raise RuntimeError(f"headwater up died:\n{server.log.read_text()}")
        errors = [line for line in server.log.read_text().splitlines() if " ERROR " in line]
        results.notes += [f"server log: {line}" for line in errors[:5]]

    cpus = os.cpu_count()
    results.conditions = [
        f"machine     {cpus} CPUs, {platform.machine()}, {platform.platform()}; shared: the "
        "clients, receiver and both servers run on the same cores",
        f"load        1-minute load average {load_start:.2f} at the start, "
        f"{os.getloadavg()[0]:.2f} at the end",
        f"python      {platform.python_version()}",
        f"headwater   {headwater.__version__} (DuckDB {duckdb.__version__}, pyarrow "
        f"{pa.__version__}, psycopg {psycopg.__version__}, httpx {httpx.__version__})",
        f"PostgreSQL  {pg_version}, throwaway on 127.0.0.1 (fsync off, as tests/pg.py starts it)",
        f"datasets    {EMBEDDED} and {SERVED}: {args.rows:,} rows each, key user_id (bigint), "
        "5 columns; the same rows",
        f"lookups     {args.lookups:,} per path, random keys, after {args.warmup} warm-up, "
        f"sequential, one keep-alive connection; HTTP paths in alternating blocks of {BLOCK}",
        f"full reads  median of {args.reads} (after one warm-up over HTTP), pages of "
        f"{args.page:,} rows ([api] max_page_size = {args.page:,})",
        f"webhook     {args.hook_rows:,} rows of {HOOK}, {args.reads} deliveries, batch_rows = "
        f"{results.webhook.batch_rows if results.webhook else '?'} (the default), to "
        "http://localhost:PORT/ in another process",
    ]
    return results


# -- the report --------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "MET" if ok else "MISSED"


def report(results: Results, quick: bool = False) -> None:
    lk, rd, wh = results.lookups, results.reads, results.webhook
    print()
    print("Read API and delivery benchmark")
    print()
    print("Conditions")
    for line in [*results.conditions, *results.notes]:
        print(f"  {line}")
    if quick:
        print(f"  {QUICK_NOTE}")

    print()
    print("Point lookups, GET /api/v1/datasets/{name}/rows/{key}   (milliseconds)")
    print(f"  {'':<46} {'p50':>7} {'p99':>7} {'max':>7}")
    for key in ("duckdb", "engine", "http_embedded", "psycopg", "pgreader", "http_pg", "healthz"):
        if key in lk:
            lat = lk[key]
            print(f"  {lat.label:<46} {lat.p50:7.2f} {lat.p99:7.2f} {max(lat.ms):7.2f}")
    print("  ratio to the baseline (over HTTP / straight on the store), and the difference:")
    for http, base in (("http_embedded", "duckdb"), ("http_pg", "psycopg")):
        h, b = lk[http], lk[base]
        print(
            f"    {h.label:<38} p50 x{h.p50 / b.p50:5.1f} (+{h.p50 - b.p50:.2f} ms)   "
            f"p99 x{h.p99 / b.p99:5.1f} (+{h.p99 - b.p99:.2f} ms)   vs {b.label}"
        )

    print()
    print("Full dataset as Arrow, GET .../rows?format=arrow paged by X-Next-Cursor")
    print(f"  {'':<50} {'seconds':>8} {'rows/s':>12}")
    for key in ("duckdb", "duckdb_pages", "http_embedded", "psycopg", "http_pg"):
        if key in rd:
            t = rd[key]
            note = f", {t.note}" if t.note else ""
            spread = f"({min(t.seconds):.2f}..{max(t.seconds):.2f} s{note})"
            print(f"  {t.label:<50} {t.median:8.2f} {t.rows_per_second:12,.0f}  {spread}")
    print("  ratio to the baseline (rows/s over HTTP / rows/s straight on the store):")
    for http, base in (("http_embedded", "duckdb"), ("http_pg", "psycopg")):
        h, b = rd[http], rd[base]
        ratio = h.rows_per_second / b.rows_per_second
        print(f"    {h.label:<38} {ratio:6.2f}   vs {b.label}")

    if wh is not None:
        rps, base_rps = wh.rows / wh.median, wh.rows / wh.baseline_median
        kib = wh.body_bytes / wh.batches / 1024

        def spread(values: list[float]) -> str:
            return f"median of {len(values)}, {min(values):.2f}..{max(values):.2f} s"

        print()
        print("Webhook delivery (Deliverer, as `headwater run` delivers)")
        print(
            f"  headwater     {wh.rows:,} rows in {wh.batches} batches of {wh.batch_rows} rows "
            f"({kib:.0f} KiB each) in {wh.median:.2f} s: {rps:,.0f} rows/s, "
            f"{wh.batches / wh.median:,.0f} batches/s  ({spread(wh.seconds)})"
        )
        print(
            f"  baseline      the same bodies, a plain httpx loop: {wh.baseline_median:.2f} s, "
            f"{base_rps:,.0f} rows/s, {wh.batches / wh.baseline_median:,.0f} batches/s  "
            f"({spread(wh.baseline_seconds)})"
        )
        print(f"  ratio         {rps / base_rps:.2f} of the receiver's raw throughput")
        share = wh.bodies_seconds / wh.median
        print(
            f"  of which      making the bodies alone (Arrow rows to JSON): "
            f"{wh.bodies_seconds:.2f} s, {share:.0%} of the delivery's time"
        )

    print()
    if quick:
        print(QUICK_NOTE)
        print()
    print("Targets")
    pg_p99, emb_p99 = lk["http_pg"].p99, lk["http_embedded"].p99
    emb_p50 = lk["http_embedded"].p50
    arrow, pg_arrow = rd["http_embedded"].rows_per_second, rd["http_pg"].rows_per_second
    rows: list[tuple[str, str, str, bool]] = [
        ("lookup p50 from the embedded store", f"{emb_p50:.2f} ms",
         f"<= {TARGET_EMBEDDED_P50_MS:g} ms", emb_p50 <= TARGET_EMBEDDED_P50_MS),
        ("lookup p99 from PostgreSQL", f"{pg_p99:.2f} ms", f"<= {TARGET_PG_P99_MS:g} ms",
         pg_p99 <= TARGET_PG_P99_MS),
        ("lookup p99 from the embedded store", f"{emb_p99:.2f} ms",
         f"<= {TARGET_EMBEDDED_P99_MS:g} ms", emb_p99 <= TARGET_EMBEDDED_P99_MS),
        ("full read as Arrow, embedded store", f"{arrow:,.0f} rows/s",
         f">= {TARGET_ARROW_ROWS_PER_S:,.0f} rows/s", arrow >= TARGET_ARROW_ROWS_PER_S),
        ("full read as Arrow, PostgreSQL (for scale)", f"{pg_arrow:,.0f} rows/s",
         f">= {TARGET_ARROW_ROWS_PER_S:,.0f} rows/s", pg_arrow >= TARGET_ARROW_ROWS_PER_S),
    ]  # fmt: skip
    if wh is not None:
        ratio = wh.baseline_median / wh.median
        rows.append(("webhook delivery / a plain httpx loop", f"{ratio:.2f}",
                     f">= {TARGET_WEBHOOK_RATIO:g}", ratio >= TARGET_WEBHOOK_RATIO))  # fmt: skip
    for label, figure, target, ok in rows:
        print(f"  {label:<44} {figure:>18}  (target {target})  {verdict(ok)}")

    if wh is not None and wh.profile:
        print()
        print("Where the webhook delivery's time goes (cProfile, one more delivery)")
        for line in wh.profile:
            print(f"  {line}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 10,000 rows in pages of 2,500, 100 lookups, 1 read",
    )
    parser.add_argument("--rows", type=int, help="rows of each served dataset (1,000,000)")
    parser.add_argument("--hook-rows", type=int, help="rows delivered to the webhook (200,000)")
    parser.add_argument("--lookups", type=int, help="measured lookups per path (3,000)")
    parser.add_argument("--warmup", type=int, help="lookups before measuring (300)")
    parser.add_argument("--page", type=int, help="rows per page (100,000)")
    parser.add_argument("--reads", type=int, help="full reads per path (3)")
    parser.add_argument("--profile", action="store_true", help="profile a second webhook delivery")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    # Quick: several pages and several webhook batches, so the cursors and batching run too.
    defaults = (
        (10_000, 2_000, 100, 10, 1, 2_500)
        if args.quick
        else (1_000_000, 200_000, 3_000, 300, 3, 100_000)
    )
    for name, default in zip(
        ("rows", "hook_rows", "lookups", "warmup", "reads", "page"), defaults, strict=True
    ):
        if getattr(args, name) is None:
            setattr(args, name, default)
    work = Path(tempfile.mkdtemp(prefix="hw-serve-"))
    # A SIGTERM unwinds like Ctrl-C, so the servers and the folder are cleaned up.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    started = datetime.now(UTC)
    try:
        results = bench(args, work)
    finally:
        if args.keep:
            print(f"\nkept: {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)
    report(results, args.quick)
    print()
    print(f"(total {(datetime.now(UTC) - started).total_seconds():.0f} s)")
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
