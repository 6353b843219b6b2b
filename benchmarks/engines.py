"""Engines benchmark: collectors writing into PostgreSQL, and the example pipelines on
DuckDB, PostgreSQL and Spark side by side.

Run from the repository root::

    .venv/bin/python benchmarks/engines.py                     # 10,000,000 events: ~6-7 minutes
    .venv/bin/python benchmarks/engines.py --events 2000000    # the same, smaller: ~3 minutes
    .venv/bin/python benchmarks/engines.py --quick             # every part, tiny: ~45 seconds

Everything runs on loopback against a throwaway PostgreSQL server (``initdb`` and
``pg_ctl`` in a temporary folder, as ``tests/pg.py`` starts it, but with ``fsync``
and ``synchronous_commit`` on unless ``--fsync off``: a commit is then on disk when
it returns, as in production).

Part 1, ingest into PostgreSQL. A project whose ``[environments.prod.store]`` is
``engine = "postgres"``; ``headwater --env prod serve collector --port 0``
processes take ``POST /v1/batch`` with 100 Segment track events per request, each
with its own messageId, from ``wrk`` (a Lua script builds the bodies, as in
``benchmarks/ingest.py``) or, without wrk, from Python load-generator processes.
Closed loop, keep-alive connections, a warm-up before each measured phase:

1. one collector process alone, all the connections on it;
2. two collector processes, half the connections on each (the target);
3. the raw store ceiling: ``PostgresEngine.ingest`` called directly with the
   same events as Arrow tables (validated as the collector does, built before each
   call with only the messageIds and received_at renewed), 100 rows per commit
   (the requests' batches) and as many as the two collectors committed at once;
   one process on one connection, then two processes on two connections (what two
   collectors have: two connections, two GILs).

Only 2xx answers count. At the end ``events`` must hold every acknowledged event
once (``COUNT(*)`` and ``COUNT(DISTINCT message_id)`` per phase tag).

Part 2, pipelines. ``--events`` events (10,000,000 by default) over ``--days``
days of arrival (or only their last ``--hours``), built by DuckDB's ``range()``, then
bulk-loaded into each engine
(not through ``ingest``: DuckDB by ``INSERT … SELECT`` from the generated file,
PostgreSQL by ``COPY … FROM STDIN`` of a CSV DuckDB wrote, then ``VACUUM (ANALYZE)``
(as autovacuum would in time; it also summarizes the BRIN index on ``received_at``),
Spark by Parquet files DuckDB wrote into the warehouse's day folders). The last
hour is held back. The example pipelines of ``headwater init``
(``hourly_event_counts`` by arrival, ``daily_active_users`` by event time,
BigQuery SQL) run in this process through ``Workspace`` with a fixed clock:
a backfill of every whole interval, then the held-back hour arrives (bulk-loaded
the same way) and each pipeline runs its one new interval (the new hour, and the
day it completes). Spark (``local[2]``) runs when ``headwater.store.spark``
imports, else it is skipped with the reason. Every engine's outputs must equal
DuckDB's, and both tables must account for every generated event.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
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
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import duckdb  # noqa: E402
import ingest as ingest_bench  # noqa: E402  (its event bodies, wrk script, Python load)
import psycopg  # noqa: E402
import pyarrow as pa  # noqa: E402
from tests.pg import PostgresServer, postgres_server  # noqa: E402

HOST = "127.0.0.1"
SCHEMA = "hw"
BATCH = 100
TARGET_EVENTS = 50_000
START = datetime(2025, 3, 3, tzinfo=UTC)  # a Monday; the first hour of arrival
HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
PIPELINES = ("hourly_event_counts", "daily_active_users")
_UP = re.compile(r"Headwater is up at (http://127\.0\.0\.1:(\d+))")
_T0 = time.monotonic()


def step(message: str) -> None:
    """A progress line with the time since the start."""
    print(f"  [{time.monotonic() - _T0:6.1f} s] {message}", flush=True)


# -- PostgreSQL ------------------------------------------------------------------------


@contextmanager
def postgres(fsync: bool) -> Iterator[PostgresServer]:
    """A throwaway server as ``tests/pg.py`` starts it, with ``fsync`` chosen here."""
    flag = "on" if fsync else "off"
    settings = {
        "fsync": flag,
        "synchronous_commit": flag,
        "max_connections": "100",
        "shared_buffers": "1GB",
        "work_mem": "64MB",
        "maintenance_work_mem": "256MB",
        "max_wal_size": "4GB",
    }
    with postgres_server(settings) as server:
        yield server


def pg_settings(url: str) -> str:
    with psycopg.connect(url) as con:
        version = con.execute("SHOW server_version").fetchone()
        shown = []
        for name in ("fsync", "synchronous_commit", "shared_buffers", "work_mem", "max_wal_size"):
            row = con.execute(f"SHOW {name}").fetchone()
            shown.append(f"{name} {row[0] if row else '?'}")
    return f"{version[0] if version else '?'}; " + ", ".join(shown)


def postgres_cpu_seconds() -> float:
    """User + system CPU of every ``postgres`` process now running."""
    total = 0.0
    tick = os.sysconf("SC_CLK_TCK")
    for stat in Path("/proc").glob("[0-9]*/stat"):
        with contextlib.suppress(OSError):
            text = stat.read_text()
            if text[text.index("(") + 1 : text.rindex(")")] != "postgres":
                continue
            fields = text[text.rindex(")") + 2 :].split()
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


# -- the project and its collectors ------------------------------------------------------


def make_project(folder: Path, variable: str) -> tuple[Path, str]:
    """``headwater init``, plus ``[environments.prod.store]`` on PostgreSQL (URL from
    ``$variable``)."""
    from headwater.cli.scaffold import init_project

    root = folder / "project"
    key = init_project(root)
    with (root / "headwater.toml").open("a", encoding="utf-8") as toml:
        toml.write(
            f'\n[environments.prod.store]\nengine = "postgres"\nurl = "${{{variable}}}"\n'
            f'schema = "{SCHEMA}"\n'
        )
    return root, key


def start_collector(root: Path, name: str, env: dict[str, str]) -> ingest_bench.Server:
    """``headwater --env prod serve collector --port 0``; its URL from its output."""
    log = root / f"{name}.log"
    with log.open("wb") as out:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "headwater",
                "--project",
                str(root),
                "--env",
                "prod",
                "serve",
                "collector",
                "--host",
                HOST,
                "--port",
                "0",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = log.read_text(errors="replace")
        if match := _UP.search(text):
            return ingest_bench.Server(root, process, match.group(1), int(match.group(2)))
        if process.poll() is not None:
            raise RuntimeError(f"collector {name} exited early:\n{text}")
        time.sleep(0.05)
    process.kill()
    process.wait()
    raise RuntimeError(f"collector {name} did not start")


# -- part 1: ingest -----------------------------------------------------------------------


@dataclass
class IngestPhase:
    name: str
    tags: list[str]
    collectors: int
    connections: int
    ok: int = 0
    bad: int = 0
    errors: int = 0
    seconds: float = 0.0
    wall: float = 0.0
    collector_cpu: float = 0.0
    postgres_cpu: float = 0.0
    generator_cpu: float = 0.0
    machine_cpu: float = 0.0
    commits: float = 0.0
    commit_events: float = 0.0
    commit_seconds: float = 0.0

    @property
    def events_per_second(self) -> float:
        return self.ok * BATCH / self.seconds if self.seconds else 0.0

    @property
    def events_per_commit(self) -> float:
        return self.commit_events / self.commits if self.commits else 0.0

    @property
    def ms_per_commit(self) -> float:
        return 1000 * self.commit_seconds / self.commits if self.commits else 0.0


def _load(
    collector: ingest_bench.Server,
    generator: str,
    auth: str,
    tag: str,
    seconds: int,
    connections: int,
    script: Path,
) -> ingest_bench.Load:
    parts = ingest_bench.body_parts(tag, BATCH)
    if generator == "wrk":
        lua = ingest_bench.wrk_script(script, parts, auth)
        return ingest_bench.run_wrk(collector.url, lua, seconds, connections, 1, lambda: None)
    return ingest_bench.run_python(
        collector.port,
        auth,
        parts,
        processes=1,
        connections=connections,
        seconds=seconds,
        on_start=lambda: None,
    )


def ingest_phase(
    name: str,
    collectors: list[ingest_bench.Server],
    generator: str,
    auth: str,
    tag: str,
    seconds: int,
    connections: int,
    work: Path,
) -> IngestPhase:
    """Load every collector at once, ``connections`` split between them."""
    per = max(1, connections // len(collectors))
    tags = [f"{tag}{chr(ord('a') + n)}" for n in range(len(collectors))]
    phase = IngestPhase(name, tags, len(collectors), per * len(collectors))
    loads: list[ingest_bench.Load | BaseException] = [Exception("no result")] * len(collectors)

    def one(n: int) -> None:
        try:
            loads[n] = _load(
                collectors[n], generator, auth, tags[n], seconds, per, work / f"{tags[n]}.lua"
            )
        except BaseException as exc:
            loads[n] = exc

    before_metrics = [c.metrics() for c in collectors]
    before_cpu = sum(c.cpu_seconds() for c in collectors)
    before_pg = postgres_cpu_seconds()
    before_machine = ingest_bench.machine_busy_seconds()
    before_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.monotonic()
    threads = [threading.Thread(target=one, args=(n,)) for n in range(len(collectors))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    phase.wall = time.monotonic() - started
    after_children = resource.getrusage(resource.RUSAGE_CHILDREN)
    phase.machine_cpu = ingest_bench.machine_busy_seconds() - before_machine
    phase.postgres_cpu = postgres_cpu_seconds() - before_pg
    phase.collector_cpu = sum(c.cpu_seconds() for c in collectors) - before_cpu
    for collector, before in zip(collectors, before_metrics, strict=True):
        after = collector.metrics()
        phase.commits += after["commits"] - before["commits"]
        phase.commit_events += after["commit_events"] - before["commit_events"]
        phase.commit_seconds += after["commit_seconds"] - before["commit_seconds"]
    for load in loads:
        if isinstance(load, BaseException):
            raise RuntimeError(f"the load generator failed: {load!r}")
        phase.ok += load.ok
        phase.bad += load.bad
        phase.errors += load.errors
        phase.seconds = max(phase.seconds, load.seconds)
        phase.generator_cpu += load.generator_cpu
    if generator == "wrk":
        phase.generator_cpu = (after_children.ru_utime - before_children.ru_utime) + (
            after_children.ru_stime - before_children.ru_stime
        )
    return phase


@dataclass
class RawRun:
    name: str
    rows_per_commit: int
    connections: int
    rows: int = 0
    seconds: float = 0.0
    commit_ms: list[float] = field(default_factory=list)
    stored_ok: bool = False

    @property
    def events_per_second(self) -> float:
        return self.rows / self.seconds if self.seconds else 0.0


def _template(rows: int) -> pa.Table:
    """``rows`` events validated as the collector validates them, as its writer's Arrow."""
    from headwater.collect.validate import Validator, decode_batch
    from headwater.store import schema

    validator = Validator(max_event_bytes=32_768, max_depth=64)
    parts = [
        p.replace(ingest_bench.THREAD, "0").encode() for p in ingest_bench.body_parts("t", rows)
    ]
    envelope = decode_batch(b"0".join(parts))
    received = time.time_ns() // 1000
    events = [
        validator.event(bytes(raw), None, "web", received, validator.batch(envelope))
        for raw in envelope.batch
    ]
    columns = list(zip(*events, strict=True))
    return pa.Table.from_arrays(
        [pa.array(c, type=f.type) for c, f in zip(columns, schema.EVENTS, strict=True)],
        schema=schema.EVENTS,
    )


def _raw_worker(
    out: Any, url: str, schema_name: str, rows: int, n: int, start_at: float, seconds: float
) -> None:
    """One process, one connection: ``PostgresEngine.ingest`` from ``start_at`` for
    ``seconds``; sends (rows, commit times in ms, warm-up rows) or an error message."""
    try:
        from headwater.store import schema
        from headwater.store.engine import IngestBatch
        from headwater.store.postgres import PostgresEngine

        template = _template(rows)
        failed = schema.FAILED_EVENTS.empty_table()
        at = schema.EVENTS.get_field_index("received_at")
        engine = PostgresEngine.open(url, schema_name)

        def batch(tag: str) -> IngestBatch:
            ids = pa.array([f"{tag}-{j}" for j in range(rows)])
            now = pa.array([time.time_ns() // 1000] * rows, pa.int64()).cast(
                schema.EVENTS.field(at).type
            )
            table = template.set_column(0, schema.EVENTS.field(0), ids)
            return IngestBatch(table.set_column(at, schema.EVENTS.field(at), now), failed)

        try:
            engine.ingest(batch(f"rawwarm-{n}"))  # the connection and its staging table
            time.sleep(max(0.0, start_at - time.monotonic()))
            done, commit_ms = 0, []
            while time.monotonic() < start_at + seconds:
                prepared = batch(f"raw-{n}-{len(commit_ms)}")
                t0 = time.perf_counter()
                new = engine.ingest(prepared)
                commit_ms.append(1000 * (time.perf_counter() - t0))
                if new.false_count:
                    raise RuntimeError(f"the raw store called {new.false_count} new events old")
                done += rows
        finally:
            engine.close()
        out.send((done, commit_ms, rows))
    except BaseException as exc:
        out.send(f"{type(exc).__name__}: {exc}")
    finally:
        out.close()


def raw_ingest(
    url: str, schema_name: str, rows: int, connections: int, seconds: float, lead: float = 3.0
) -> RawRun:
    """``PostgresEngine.ingest`` in a loop for ``seconds`` from ``connections`` processes
    (one GIL each, as collectors have), the Arrow tables built before each call; they start
    together ``lead`` seconds from now, once each has connected and warmed up."""
    from headwater.store.postgres import PostgresEngine

    PostgresEngine.open(url, schema_name).close()  # the schema and tables, before the children
    run = RawRun(f"{rows}-row commits, {connections} conn", rows, connections)
    ctx = mp.get_context("fork")
    start_at = time.monotonic() + lead
    children = []
    for n in range(connections):
        receiver, sender = ctx.Pipe(duplex=False)
        args = (sender, url, schema_name, rows, n, start_at, seconds)
        process = ctx.Process(target=_raw_worker, args=args, daemon=True)
        process.start()
        sender.close()
        children.append((process, receiver))
    warm = 0
    for process, receiver in children:
        if not receiver.poll(seconds + 60):
            process.kill()
            raise RuntimeError("a raw ingest process did not report in time")
        result = receiver.recv()
        process.join(10)
        if isinstance(result, str):
            raise RuntimeError(f"raw ingest failed: {result}")
        done, commit_ms, warmed = result
        run.rows += done
        run.commit_ms += commit_ms
        warm += warmed
    run.seconds = seconds
    with psycopg.connect(url) as con:
        row = con.execute(f"SELECT count(*), count(DISTINCT message_id) FROM {schema_name}.events")
        stored, distinct = row.fetchone() or (0, 0)
    run.stored_ok = stored == distinct == run.rows + warm
    return run


def part_ingest(server: PostgresServer, args: argparse.Namespace, work: Path) -> list[list[str]]:

    print("Part 1: ingest into PostgreSQL through `headwater --env prod serve collector`\n")
    url = server.create_database("ingest")
    root, key = make_project(work / "ingest", "HW_BENCH_INGEST_URL")
    env = {**os.environ, "HW_BENCH_INGEST_URL": url, "COLUMNS": "200", "PYTHONUNBUFFERED": "1"}
    env.pop("HEADWATER_ENV", None)
    auth = ingest_bench.basic_auth(key)
    seconds, warmup, conns = args.seconds, args.warmup, args.connections
    collectors: list[ingest_bench.Server] = []
    phases: list[IngestPhase] = []
    try:
        # One collector first, alone; the second joins it later, as in a scale-out.
        collectors.append(start_collector(root, "one", env))
        step(f"collector one up at {collectors[0].url}")
        if warmup:
            ingest_phase("warm-up", collectors[:1], args.generator, auth, "w1", warmup, conns, work)
        step(f"one collector, {conns} connections, {seconds} s ...")
        phases.append(
            ingest_phase(
                f"1 collector, {conns} conns",
                collectors[:1],
                args.generator,
                auth,
                "one",
                seconds,
                conns,
                work,
            )
        )
        collectors.append(start_collector(root, "two", env))
        step(f"collector two up at {collectors[1].url}")
        if warmup:
            ingest_phase("warm-up", collectors, args.generator, auth, "w2", warmup, conns, work)
        step(f"two collectors, {conns // 2} connections each, {seconds} s ...")
        phases.append(
            ingest_phase(
                f"2 collectors, {conns // 2}+{conns // 2} conns",
                collectors,
                args.generator,
                auth,
                "two",
                seconds,
                conns,
                work,
            )
        )
        exits = [c.stop() for c in collectors]
    finally:
        for collector in collectors:
            if collector.alive():
                collector.process.kill()
                collector.process.wait()

    two = phases[-1]
    observed = int(round(two.events_per_commit, -2))
    raws = []
    sizes = [BATCH] + ([observed] if observed >= 2 * BATCH else [])
    for rows in sizes:
        for connections in (1, 2):
            step(f"raw PostgresEngine.ingest, {rows}-row commits, {connections} connection(s) ...")
            raws.append(
                raw_ingest(
                    url,
                    f"raw_{rows}_{connections}",
                    rows,
                    connections,
                    seconds,
                    # Each child warms up on one small batch: 1.5 s is ample for it.
                    lead=1.5 if args.quick else 3.0,
                )
            )

    with psycopg.connect(url) as con:
        counts = {
            str(tag): (int(n), int(d))
            for tag, n, d in con.execute(
                "SELECT split_part(message_id, '-', 1), count(*), count(DISTINCT message_id) "
                f"FROM {SCHEMA}.events GROUP BY 1"
            ).fetchall()
        }
    print()
    print("Throughput, closed loop, batches of 100 events (2xx answers only):")
    rows_out = []
    for p in phases:
        rows_out.append(
            [
                p.name,
                f"{p.events_per_second:,.0f}",
                f"{p.ok / p.seconds:,.0f}",
                f"{p.ok:,}",
                f"{p.bad + p.errors:,}",
                f"{p.collector_cpu / p.wall:.2f}",
                f"{p.postgres_cpu / p.wall:.2f}",
                f"{p.generator_cpu / p.wall:.2f}",
                f"{p.machine_cpu / p.wall:.2f}",
                f"{p.events_per_commit:,.0f}",
                f"{p.ms_per_commit:.1f}",
            ]
        )
    ingest_bench.print_table(
        rows_out,
        [
            "phase",
            "events/s",
            "req/s",
            "2xx",
            "non-2xx",
            "collectors",
            "postgres",
            "generator",
            "machine",
            "events/commit",
            "ms/commit",
        ],
    )
    print(f"  collectors, postgres, generator, machine: CPU cores used (of {os.cpu_count()});")
    print("  events/commit and ms/commit: the collectors' own /metrics (commit = one")
    print("  PostgreSQL transaction: COPY to a staging table, claim ids, insert events).\n")

    print("Raw store ceiling: PostgresEngine.ingest called directly, one process per")
    print("connection, each table built before the call (only messageIds and received_at new):")
    raw_rows = []
    for r in raws:
        ms = r.commit_ms
        raw_rows.append(
            [
                r.name,
                f"{r.events_per_second:,.0f}",
                f"{r.rows:,}",
                f"{ingest_bench.percentile(ms, 0.5):.1f}",
                f"{ingest_bench.percentile(ms, 0.99):.1f}",
                "ok" if r.stored_ok else "WRONG",
            ]
        )
    ingest_bench.print_table(
        raw_rows, ["raw ingest", "events/s", "rows", "p50 ms", "p99 ms", "stored once"]
    )
    print()

    failures = [
        f"raw {r.name}: the store does not hold each row once" for r in raws if not r.stored_ok
    ]
    print("Verification: events per phase tag in PostgreSQL vs acknowledged")
    checks = []
    for p in phases:
        acked = p.ok * BATCH
        stored = sum(counts.get(t, (0, 0))[0] for t in p.tags)
        distinct = sum(counts.get(t, (0, 0))[1] for t in p.tags)
        verdict = "ok"
        if stored != distinct:
            verdict = "DUPLICATES"
            failures.append(f"{p.name}: {stored - distinct} duplicate rows")
        if stored < acked:
            verdict = "MISSING"
            failures.append(f"{p.name}: {acked - stored} acknowledged events missing")
        checks.append([p.name, f"{acked:,}", f"{stored:,}", f"{stored - acked:,}", verdict])
    ingest_bench.print_table(checks, ["phase", "acknowledged", "stored", "extra", "check"])
    print("  extra: committed, but answered after the generator stopped counting")
    print(f"  collectors' exit codes after SIGTERM: {exits}\n")
    one, two = phases
    best_raw = {(r.rows_per_commit, r.connections): r for r in raws}
    raw100 = best_raw[(BATCH, 1)]
    raw_top = max(raws, key=lambda r: r.events_per_second)
    summary = [
        [
            "events/s, 2 collectors, batches of 100",
            f"{two.events_per_second:,.0f}",
            f">= {TARGET_EVENTS:,}",
            verdict_of(two.events_per_second >= TARGET_EVENTS),
            f"{two.connections} conns",
        ],
        [
            "2 collectors / 1 collector",
            f"{two.events_per_second / one.events_per_second:.2f}",
            "",
            "",
            f"1 collector {one.events_per_second:,.0f}/s",
        ],
        [
            "2 collectors / raw, 100-row commits",
            f"{two.events_per_second / raw100.events_per_second:.2f}",
            "",
            "",
            f"raw {raw100.events_per_second:,.0f}/s, 1 conn",
        ],
        [
            "2 collectors / best raw",
            f"{two.events_per_second / raw_top.events_per_second:.2f}",
            "",
            "",
            f"raw {raw_top.events_per_second:,.0f}/s, {raw_top.name}",
        ],
    ]
    if failures:
        summary.append(["verification", "FAILED", "", "", "; ".join(failures)[:80]])
    return summary


# -- part 2: pipelines --------------------------------------------------------------------

_COLUMNS = (
    "message_id, source, type, event, name, user_id, anonymous_id, group_id, previous_id, "
    "timestamp, original_timestamp, sent_at, received_at, properties, traits, context"
)


def generate(path: Path, events: int, first: datetime, hours: int) -> None:
    """``events`` rows in arrival order over ``hours`` hours from ``first``, in a DuckDB
    file."""
    span_us = hours * 3_600_000_000
    step_us = span_us // events
    con = duckdb.connect(str(path))
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"""
            CREATE TABLE events AS
            WITH base AS (
                SELECT i,
                       TIMESTAMPTZ '{first.isoformat()}' + to_microseconds(i * {step_us}) AS arrived
                FROM range({events}) t(i)
            )
            SELECT
                'e' || i AS message_id,
                CASE WHEN i % 10 = 0 THEN 'backend' WHEN i % 10 < 4 THEN 'ios' ELSE 'web' END
                    AS source,
                CASE WHEN i % 23 = 0 THEN 'identify' WHEN i % 11 = 0 THEN 'page' ELSE 'track' END
                    AS type,
                CASE WHEN i % 23 = 0 OR i % 11 = 0 THEN NULL
                     ELSE ['Product Viewed', 'Product Added', 'Order Completed', 'Signed Up',
                           'Searched', 'Cart Viewed', 'Checkout Started', 'Coupon Applied']
                          [1 + (hash(i) % 8)::INTEGER] END AS event,
                CAST(NULL AS VARCHAR) AS name,
                CASE WHEN i % 4 = 0 THEN NULL ELSE 'user-' || (hash(i + 1) % 200000) END
                    AS user_id,
                'anon-' || (hash(i + 2) % 400000) AS anonymous_id,
                CAST(NULL AS VARCHAR) AS group_id,
                CAST(NULL AS VARCHAR) AS previous_id,
                CASE WHEN i % 200 = 0 THEN arrived - INTERVAL 30 HOUR
                     ELSE arrived - to_milliseconds((hash(i + 3) % 5000)::BIGINT) END
                    AS timestamp,
                CAST(NULL AS TIMESTAMPTZ) AS original_timestamp,
                CAST(NULL AS TIMESTAMPTZ) AS sent_at,
                arrived AS received_at,
                '{{"plan":"'
                    || ['free', 'pro', 'team', 'enterprise'][1 + (hash(i + 4) % 4)::INTEGER]
                    || '","amount":' || (hash(i + 5) % 1000) || '}}' AS properties,
                CAST(NULL AS VARCHAR) AS traits,
                CAST(NULL AS VARCHAR) AS context
            FROM base
            ORDER BY i
        """)
    finally:
        con.close()


@dataclass
class EngineRun:
    name: str
    load_seconds: float = 0.0
    load_note: str = ""
    open_seconds: float = 0.0
    backfill: dict[str, tuple[float, int, int]] = field(default_factory=dict)
    new_load_seconds: float = 0.0
    new_pass: float = 0.0
    new: dict[str, tuple[float, int, int]] = field(default_factory=dict)
    outputs: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    skipped: str = ""
    error: str = ""

    def backfill_total(self) -> float:
        return sum(s for s, _n, _r in self.backfill.values())

    def new_total(self) -> float:
        return sum(s for s, _n, _r in self.new.values())


class _OverBudget(Exception):
    pass


def _normal(table: pa.Table, columns: list[str]) -> list[tuple[Any, ...]]:
    rows = []
    for row in table.select(columns).to_pylist():
        values = []
        for name in columns:
            value = row[name]
            if isinstance(value, datetime):
                value = value.astimezone(UTC) if value.tzinfo else value.replace(tzinfo=UTC)
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                value = int(value)
            values.append(value)
        rows.append(tuple(values))
    return sorted(rows, key=repr)


_OUTPUT_COLUMNS = {
    "hourly_event_counts": ["hour", "source", "event_name", "events", "people"],
    "daily_active_users": ["day", "plan", "active_users", "events"],
}


def run_pipelines(
    run: EngineRun,
    engine: Any,
    metadata: Any,
    root: Path,
    cut: datetime,
    end: datetime,
    load_new: Callable[[], None],
    budget: float,
    first: datetime,
) -> None:
    """Backfill both pipelines up to ``cut`` (the hourly one from ``first``, the first
    arrival), load the last hour, run each new interval."""
    from headwater.config.project import load_project
    from headwater.runtime.workspace import Workspace

    clock = [cut]
    service = Workspace(load_project(root), engine, metadata, clock=lambda: clock[0])
    started = time.monotonic()

    def guard(progress: Any) -> None:
        if time.monotonic() - started > budget:
            raise _OverBudget(f"{progress.done} of {progress.total} intervals")

    firsts = {"hourly_event_counts": first, "daily_active_users": START - 2 * DAY}
    for name in PIPELINES:
        t0 = time.perf_counter()
        results = service.backfill(name, firsts[name], cut, progress=guard)
        seconds = time.perf_counter() - t0
        run.backfill[name] = (seconds, len(results), sum(r.rows_written for r in results))
        step(f"{run.name}: backfill {name}: {len(results)} intervals in {seconds:.1f} s")
    t0 = time.perf_counter()
    load_new()
    run.new_load_seconds = time.perf_counter() - t0
    # One scheduler pass, as `headwater up` or `run --due` makes: the new hour, the day it
    # completes, and the day its late events re-open.
    clock[0] = end + timedelta(minutes=1)
    t0 = time.perf_counter()
    results = service.run_due()
    run.new_pass = time.perf_counter() - t0
    for name in PIPELINES:
        mine = [r for r in results if r.pipeline == name]
        seconds = sum(r.seconds for r in mine)
        run.new[name] = (seconds, len(mine), sum(r.rows_written for r in mine))
        step(f"{run.name}: scheduler pass: {name}: {len(mine)} intervals in {seconds:.2f} s")
    step(f"{run.name}: the whole scheduler pass took {run.new_pass:.2f} s")
    for name, columns in _OUTPUT_COLUMNS.items():
        run.outputs[name] = _normal(
            engine.query(f"SELECT {', '.join(columns)} FROM {name}"), columns
        )


def part_pipelines(
    server: PostgresServer | None, args: argparse.Namespace, work: Path
) -> tuple[list[EngineRun], list[str]]:
    from headwater.state import StateStore
    from headwater.store.duckdb import DuckDBEngine
    from headwater.store.postgres import PostgresEngine

    events = args.events
    end = START + args.days * DAY
    cut = end - HOUR
    first = end - args.hours * HOUR
    print(f"\nPart 2: the example pipelines over {events:,} events, {arrival(args)}\n")
    root, _key = make_project(work / "pipelines", "HW_BENCH_PIPELINES_URL")
    gen = work / "generated.duckdb"
    t0 = time.perf_counter()
    generate(gen, events, first, args.hours)
    step(f"generated {events:,} events with DuckDB range() in {time.perf_counter() - t0:.1f} s")
    source = duckdb.connect(str(gen), read_only=True)
    source.execute("SET TimeZone = 'UTC'")
    history = f"SELECT {_COLUMNS} FROM events WHERE received_at < TIMESTAMPTZ '{cut.isoformat()}'"
    last = f"SELECT {_COLUMNS} FROM events WHERE received_at >= TIMESTAMPTZ '{cut.isoformat()}'"
    runs: list[EngineRun] = []

    # DuckDB: the store's file, filled by INSERT … SELECT from the generated file before
    # the engine opens it; the last hour goes in through the engine, as Arrow.
    run = EngineRun("duckdb")
    runs.append(run)
    path = work / "duckdb" / "events.duckdb"
    DuckDBEngine.open(path).close()
    t0 = time.perf_counter()
    con = duckdb.connect(str(path))
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.execute(f"ATTACH '{gen}' AS gen (READ_ONLY)")
        con.execute(
            f"INSERT INTO events ({_COLUMNS}) {history.replace('FROM events', 'FROM gen.events')}"
        )
        con.execute("CHECKPOINT")
    finally:
        con.close()
    run.load_seconds = time.perf_counter() - t0
    run.load_note = "INSERT … SELECT from the generated file (the last hour: append of Arrow)"
    step(f"duckdb: loaded in {run.load_seconds:.1f} s")
    last_hour = source.sql(last).to_arrow_table()
    t0 = time.perf_counter()
    duck = DuckDBEngine.open(path)
    run.open_seconds = time.perf_counter() - t0
    meta = StateStore.in_folder(work / "duckdb-meta")
    try:
        run_pipelines(
            run,
            duck,
            meta,
            root,
            cut,
            end,
            lambda: duck.append("events", last_hour),
            args.budget,
            first,
        )
    finally:
        meta.close()
        duck.close()

    # PostgreSQL: COPY of a CSV that DuckDB wrote.
    run = EngineRun("postgres")
    runs.append(run)
    if server is None:
        run.skipped = "--skip-postgres"
    else:
        url = server.create_database("pipelines")
        PostgresEngine.open(url, SCHEMA).close()
        csv_history, csv_last = work / "history.csv", work / "last.csv"
        t0 = time.perf_counter()
        source.execute(f"COPY ({history}) TO '{csv_history}' (FORMAT csv, HEADER false)")
        source.execute(f"COPY ({last}) TO '{csv_last}' (FORMAT csv, HEADER false)")
        exported = time.perf_counter() - t0
        t0 = time.perf_counter()
        pg_copy(url, csv_history, vacuum=True)
        run.load_seconds = time.perf_counter() - t0
        size = csv_history.stat().st_size / 2**30
        run.load_note = (
            f"COPY FROM STDIN of a {size:.1f} GiB CSV, then VACUUM (ANALYZE); the last hour: COPY "
            f"only (writing the CSVs: {exported:.1f} s)"
        )
        step(f"postgres: loaded in {run.load_seconds:.1f} s ({run.load_note})")
        t0 = time.perf_counter()
        pg = PostgresEngine.open(url, SCHEMA)
        run.open_seconds = time.perf_counter() - t0
        meta = StateStore.beside_postgres(url, f"{SCHEMA}_metadata")
        try:
            run_pipelines(
                run,
                pg,
                meta,
                root,
                cut,
                end,
                lambda: pg_copy(url, csv_last, vacuum=False),
                args.budget,
                first,
            )
        except _OverBudget as exc:
            run.error = f"stopped after {args.budget:.0f} s, at {exc}"
        finally:
            meta.close()
            pg.close()
        csv_history.unlink()

    # Spark, when the engine is there.
    run = EngineRun("spark")
    runs.append(run)
    reason = spark_missing() if not args.skip_spark else "--skip-spark"
    if reason:
        run.skipped = reason
    else:
        spark_pipelines(run, source, history, last, root, work, cut, end, args.budget, first)
    source.close()
    return runs, verify_outputs(runs, events)


def pg_copy(url: str, csv: Path, *, vacuum: bool) -> None:
    """``COPY … FROM STDIN`` of the CSV in one transaction; then, for the history,
    ``VACUUM (ANALYZE)``: what autovacuum does to a table some time after the rows
    arrived, and what summarizes the BRIN index on ``received_at`` (a page range
    filled after the index was made stays unsummarized, and so matches every query,
    until a VACUUM)."""
    with psycopg.connect(url) as con, con.cursor() as cur:
        with (
            cur.copy(f"COPY {SCHEMA}.events ({_COLUMNS}) FROM STDIN (FORMAT csv)") as copy,
            csv.open("rb") as file,
        ):
            while chunk := file.read(1 << 20):
                copy.write(chunk)
        con.commit()
    if vacuum:
        with psycopg.connect(url, autocommit=True) as con:
            con.execute(f"VACUUM (ANALYZE) {SCHEMA}.events")


def spark_missing() -> str:
    """Why Spark cannot run here, or ``""``."""
    try:
        importlib.import_module("headwater.store.spark")
    except ImportError as exc:
        return f"headwater.store.spark does not import ({exc})"
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        return "no Java runtime (java on PATH or JAVA_HOME)"
    return ""


def spark_pipelines(
    run: EngineRun,
    source: duckdb.DuckDBPyConnection,
    history: str,
    last: str,
    root: Path,
    work: Path,
    cut: datetime,
    end: datetime,
    budget: float,
    first: datetime,
) -> None:
    from headwater.state import StateStore
    from headwater.store.spark import SparkEngine

    warehouse = work / "warehouse"
    events_dir = warehouse / "events"

    def write(query: str, pattern: str) -> None:
        source.execute(
            f"COPY (SELECT *, CAST(received_at AS DATE) AS received_day FROM ({query})) "
            f"TO '{events_dir}' (FORMAT parquet, PARTITION_BY (received_day), "
            f"COMPRESSION zstd, FILENAME_PATTERN '{pattern}_{{i}}', OVERWRITE_OR_IGNORE)"
        )

    events_dir.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    write(history, "history")
    run.load_seconds = time.perf_counter() - t0
    run.load_note = "Parquet per day written by DuckDB into the warehouse"
    step(f"spark: loaded in {run.load_seconds:.1f} s")
    t0 = time.perf_counter()
    try:
        engine = SparkEngine.open(str(warehouse), "local[2]", {"spark.driver.memory": "4g"})
    except Exception as exc:
        run.skipped = f"Spark did not start: {exc}"
        return
    run.open_seconds = time.perf_counter() - t0
    step(f"spark: session started in {run.open_seconds:.1f} s")
    meta = StateStore.in_folder(work / "spark-meta")
    try:
        run_pipelines(run, engine, meta, root, cut, end, lambda: write(last, "last"), budget, first)
    except _OverBudget as exc:
        run.error = f"stopped after {budget:.0f} s, at {exc}"
    finally:
        meta.close()
        engine.close()


def verify_outputs(runs: list[EngineRun], events: int) -> list[str]:
    failures = []
    reference = runs[0]
    for name in PIPELINES:
        total = sum(row[_OUTPUT_COLUMNS[name].index("events")] for row in reference.outputs[name])
        if total != events:
            failures.append(f"duckdb {name} counts {total:,} events of {events:,}")
    for run in runs[1:]:
        if run.skipped or run.error:
            continue
        for name in PIPELINES:
            if run.outputs.get(name) != reference.outputs[name]:
                theirs = run.outputs.get(name) or []
                mine = reference.outputs[name]
                diff = len(set(theirs) ^ set(mine))
                failures.append(f"{run.name} {name} differs from duckdb ({diff} rows differ)")
    return failures


def print_pipelines(runs: list[EngineRun], failures: list[str]) -> list[list[str]]:
    print("\nPipelines, side by side (seconds; ratios: engine / DuckDB):")
    reference = runs[0]
    whole = [r for r in runs if not r.skipped and not r.error and len(r.new) == len(PIPELINES)]
    table = []
    for run in runs:
        if run.skipped:
            table.append([run.name, "skipped", *[""] * 8])
            continue
        bf, nw = run.backfill, run.new
        done = run in whole
        table.append(
            [
                run.name,
                f"{run.load_seconds:.1f}",
                *[f"{bf[n][0]:.1f} ({bf[n][1]})" if n in bf else "-" for n in PIPELINES],
                f"{run.backfill_total():.1f}" if done else "-",
                *[f"{nw[n][0]:.2f} ({nw[n][1]})" if n in nw else "-" for n in PIPELINES],
                f"{run.new_pass:.2f}" if done else "-",
                f"{run.backfill_total() / reference.backfill_total():.2f}" if done else "-",
                f"{run.new_pass / reference.new_pass:.2f}" if done else "-",
            ]
        )
    ingest_bench.print_table(
        table,
        ["engine", "load", "backfill hourly", "backfill daily", "backfill all", "pass hourly",
         "pass daily", "pass all", "backfill ratio", "pass ratio"],
    )  # fmt: skip
    print("  (N): intervals run. load: bulk load of the history, not a pipeline cost.")
    print("  backfill: every whole interval before the held-back hour, pipeline by pipeline.")
    print("  pass: after the held-back hour is loaded, one scheduler pass (run_due): the new")
    print("  hour, the day it completes and the day its late events re-open; per pipeline the")
    print("  sum of its runs, 'pass all' the wall time of the pass (late-event check included).")
    for run in runs:
        if run.skipped:
            print(f"  {run.name}: skipped: {run.skipped}")
            continue
        print(
            f"  {run.name}: load = {run.load_note}; engine open {run.open_seconds:.2f} s; "
            f"the new hour loaded in {run.new_load_seconds:.2f} s"
        )
        if run.error:
            print(f"  {run.name}: {run.error}")
    print()
    print("Verification: every engine's two tables equal DuckDB's, and count every event:")
    print("  " + ("FAILED: " + "; ".join(failures) if failures else "passed") + "\n")
    summary = []
    for run in whole[1:]:
        for label, mine, ref in (
            ("backfill of all intervals", run.backfill_total(), reference.backfill_total()),
            ("scheduler pass for a new hour", run.new_pass, reference.new_pass),
        ):
            summary.append(
                [f"{run.name} / duckdb, {label}", f"{mine / ref:.2f}", "", "",
                 f"{mine:.2f} s vs {ref:.2f} s"]
            )  # fmt: skip
    return summary


# -- the run ------------------------------------------------------------------------------


def arrival(args: argparse.Namespace) -> str:
    days = f"{args.days} day{'s' if args.days != 1 else ''}"
    if args.hours == 24 * args.days:
        return f"{days} of arrival"
    return f"arriving in the last {args.hours} hours of {days}"


def verdict_of(passed: bool) -> str:
    return "MET" if passed else "MISSED"


def conditions(args: argparse.Namespace, pg_url: str | None) -> list[tuple[str, str]]:
    import headwater

    wrk = shutil.which("wrk")
    if args.generator == "wrk" and wrk:
        load = f"{ingest_bench.wrk_version(wrk)}, 1 thread per collector, closed loop"
    else:
        load = "Python processes (wrk is not installed), closed loop"
    return [
        ("Headwater", f"{headwater.__version__}, commit {ingest_bench._revision()}"),
        ("CPUs", f"{os.cpu_count()} x {ingest_bench._cpu_model()}, shared by everything"),
        ("other load before start", ingest_bench._other_load()),
        ("Python", f"{platform.python_implementation()} {platform.python_version()}"),
        ("DuckDB/pyarrow/psycopg", f"{duckdb.__version__}/{pa.__version__}/{psycopg.__version__}"),
        ("PostgreSQL", (pg_settings(pg_url) if pg_url else "not started") + ", on 127.0.0.1"),
        ("ingest load", f"{load}; {args.connections} connections in all"),
        ("ingest phases", f"{args.seconds} s each after a {args.warmup} s warm-up"),
        (
            "pipelines",
            f"{args.events:,} events, {arrival(args)}; example pipelines, "
            "BigQuery SQL; Workspace in this process",
        ),
    ]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000, help="events (10,000,000)")
    parser.add_argument("--days", type=int, default=3, help="days of arrival (3)")
    parser.add_argument(
        "--hours", type=int, help="events arrive in the last HOURS of those days (all of them)"
    )
    parser.add_argument("--seconds", type=int, default=10, help="seconds per ingest phase (10)")
    parser.add_argument("--warmup", type=int, default=2, help="warm-up seconds (2)")
    parser.add_argument("--connections", type=int, default=64, help="connections in all (64)")
    parser.add_argument("--generator", choices=["auto", "wrk", "python"], default="auto")
    parser.add_argument("--fsync", choices=["on", "off"], default="on", help="PostgreSQL (on)")
    parser.add_argument(
        "--budget", type=float, default=300, help="max seconds of pipeline runs per engine (300)"
    )
    parser.add_argument("--skip-ingest", action="store_true")
    parser.add_argument("--skip-pipelines", action="store_true")
    parser.add_argument("--skip-spark", action="store_true")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 20,000 events in the last 4 hours of 1 day, 1 s phases and warm-ups",
    )
    args = parser.parse_args(argv)
    if args.quick:
        # One day is the least that runs every path: the daily pipeline needs a whole day,
        # and the held-back hour completes it and re-opens the day before (late events).
        # Arrivals in its last 4 hours only: Spark takes a second or two per hourly interval.
        args.events, args.days, args.hours = min(args.events, 20_000), 1, 4
        args.seconds, args.warmup = 1, 1
    if args.hours is None:
        args.hours = 24 * args.days
    if not 2 <= args.hours <= 24 * args.days:
        parser.error(
            "--hours must be from 2 (a backfilled hour and the held-back one) to 24 x --days"
        )
    if args.generator != "python" and shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install -y wrk); using Python load generators.\n")
        args.generator = "python"
    elif args.generator == "auto":
        args.generator = "wrk"

    signal.signal(signal.SIGALRM, ingest_bench._timeout)
    signal.alarm(int(4 * args.seconds + 120 + 4 * args.budget + args.events / 10_000 + 600))
    # A SIGTERM unwinds like the alarm: collectors, PostgreSQL and Spark stopped, folder removed.
    signal.signal(signal.SIGTERM, ingest_bench._terminated)

    print("Headwater engines benchmark\n")
    with (
        tempfile.TemporaryDirectory(prefix="hw-bench-engines-") as tmp,
        postgres(args.fsync == "on") as server,
    ):
        work = Path(tmp)
        for name, value in conditions(args, server.url()):
            print(f"  {name:<25} {value}")
        if args.quick:
            print(f"  {ingest_bench.QUICK_NOTE}")
        print()
        summary: list[list[str]] = []
        failures: list[str] = []
        if not args.skip_ingest:
            summary += part_ingest(server, args, work)
            failures += [row[4] for row in summary if row[1] == "FAILED"]
        if not args.skip_pipelines:
            runs, problems = part_pipelines(server, args, work)
            failures += problems
            summary += print_pipelines(runs, problems)
    if args.quick:
        print(f"{ingest_bench.QUICK_NOTE}\n")
    print("Summary against the targets:")
    ingest_bench.print_table(summary, ["measure", "measured", "target", "result", "note"])
    if failures:
        print("\nVERIFICATION FAILED:\n  " + "\n  ".join(failures))
        return 1
    print("\nVerified: every acknowledged event stored once; every engine's outputs agree.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
