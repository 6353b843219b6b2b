"""Engines benchmark: collectors writing into PostgreSQL, and the example pipelines on
DuckDB, PostgreSQL and Spark side by side.

Run from the repository root::

    .venv/bin/python benchmarks/engines.py                     # 10,000,000 events: ~6-7 minutes
    .venv/bin/python benchmarks/engines.py --events 2000000    # the same, smaller: ~3 minutes
    .venv/bin/python benchmarks/engines.py --quick             # every part, tiny: ~75 seconds
    .venv/bin/python benchmarks/engines.py --skip-ingest --skip-pipelines   # the offload only

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

Part 3, offload. ``--offload-events`` events (1,000,000 by default) over 24 hours of
arrival, generated as in part 2 and COPY-loaded into PostgreSQL (then ``VACUUM
(ANALYZE)``), are read back as Arrow hour by hour (``transfer.arrivals``, nothing
written: the baseline), then moved by ``Offloader.run()`` (hourly intervals, a fixed
clock and floor) into a DuckDB warehouse file and into a Spark warehouse (``local[2]``,
skipped with the reason when Spark cannot run). Events/s of each, the ratio to the plain
read, and where the offload's time went (hot-store reads, warehouse loads, the rest).
Each warehouse must then hold every event once (read without the engine) and the
recorded offload spans must tile the 24 hours.

Then BigQuery's jobs per million events at ``--traffic`` events/s over
``--simulated-hours`` hours (24 by default) with a fixed clock: the direct path
(``BigQueryEngine.ingest`` once a second, one collector's commit rate as
``costs.direct_path`` models it, one commit in 20 with a failed event) against the
offload (the same rows in a DuckDB hot store, offloaded by the hour into a
``BigQueryEngine`` partitioned by hour), each on the recording client of
``tests/bigquery_fake.py`` (BigQuery cannot run here). Queries, load jobs and bytes
billed (dry-run bytes, at least 10 MB per table referenced) are counted from the clients
and must agree with ``costs.direct_path`` and ``costs.offload`` within 1 %.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import io
import itertools
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
from typing import TYPE_CHECKING, Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

import duckdb  # noqa: E402
import ingest as ingest_bench  # noqa: E402  (its event bodies, wrk script, Python load)
import psycopg  # noqa: E402
import pyarrow as pa  # noqa: E402
import pyarrow.parquet as pq  # noqa: E402
from tests.pg import PostgresServer, postgres_server  # noqa: E402

if TYPE_CHECKING:
    from headwater.state import StateStore
    from headwater.state.offload import Offloader
    from headwater.store.engine import Engine

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
    from headwater.collect.writer import rows_table
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
    return rows_table(events, schema.EVENTS)


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


# -- part 3: offload ----------------------------------------------------------------------


class _Timed:
    """An engine whose methods named in ``methods`` add their wall time to ``seconds``
    (how much of an offload its hot-store reads, or its warehouse loads, took)."""

    def __init__(self, engine: Any, methods: tuple[str, ...]) -> None:
        self._engine = engine
        self._methods = methods
        self.seconds = 0.0
        self.calls = 0
        #: Of those, the ``MIN(received_at)`` queries (``transfer.first_arrival``).
        self.first_seconds = 0.0
        self.first_calls = 0

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._engine, name)
        if name not in self._methods:
            return value

        def timed(*args: Any, **kwargs: Any) -> Any:
            t0 = time.perf_counter()
            try:
                return value(*args, **kwargs)
            finally:
                took = time.perf_counter() - t0
                self.seconds += took
                self.calls += 1
                if args and "MIN(" in str(args[0]).upper():
                    self.first_seconds += took
                    self.first_calls += 1

        return timed


@dataclass
class OffloadRun:
    name: str
    events: int = 0
    seconds: float = 0.0
    read_seconds: float = 0.0
    reads: int = 0
    load_seconds: float = 0.0
    first_seconds: float = 0.0
    firsts: int = 0
    open_seconds: float = 0.0
    stored: str = ""
    ok: bool = False
    skipped: str = ""
    error: str = ""

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds if self.seconds else 0.0


def _tiling(spans: list[Any], first: datetime, end: datetime, events: int) -> str:
    """Why the recorded offload spans do not tile ``[first, end)`` with ``events`` events
    (``""``: they do)."""
    if not spans:
        return "no span recorded"
    if spans[0].interval.start != first or spans[-1].interval.end != end:
        return f"the spans cover {spans[0].interval.start} to {spans[-1].interval.end}"
    for one, two in itertools.pairwise(spans):
        if one.interval.end != two.interval.start:
            return f"a gap or an overlap at {one.interval.end}"
    counted = sum(s.events for s in spans)
    if counted != events:
        return f"the spans count {counted:,} events, not {events:,}"
    return ""


def fixed_offloader(hot: Engine, warehouse: Engine, meta: StateStore, end: datetime) -> Offloader:
    """Hourly offloads from ``hot`` into ``warehouse`` with the floor at ``end`` and a clock
    just after it (every hour before ``end`` is whole)."""
    from headwater.state.offload import Offloader

    return Offloader(
        hot,
        warehouse,
        meta.offloads,
        meta.leases,
        every=HOUR,
        retain=7 * DAY,
        floor=lambda: end,
        clock=lambda: end + timedelta(minutes=5),
    )


def offload_into(
    run: OffloadRun,
    hot: Any,
    warehouse: Any,
    meta_folder: Path,
    first: datetime,
    end: datetime,
    events: int,
) -> str:
    """``Offloader.run()`` from ``hot`` into ``warehouse`` with a fixed clock just after
    ``end`` and the floor at ``end``: every hour of ``[first, end)``; the time its reads
    and loads took. Returns why its spans do not tile the range (``""``: they do)."""
    from headwater.state import StateStore

    meta = StateStore.in_folder(meta_folder)
    try:
        reads = _Timed(hot, ("select",))
        loads = _Timed(warehouse, ("load_arrivals",))
        offloader = fixed_offloader(reads, loads, meta, end)  # type: ignore[arg-type]
        t0 = time.perf_counter()
        result = offloader.run()
        run.seconds = time.perf_counter() - t0
        run.events = sum(s.events for s in result.offloaded)
        run.read_seconds, run.reads, run.load_seconds = reads.seconds, reads.calls, loads.seconds
        run.first_seconds, run.firsts = reads.first_seconds, reads.first_calls
        if result.deleted:
            return f"retention deleted {result.deleted} hot rows (none is 7 days old)"
        return _tiling(meta.offloads.spans(), first, end, events)
    finally:
        meta.close()


def _held(count: int, distinct: int, events: int) -> tuple[str, bool]:
    ok = count == distinct == events
    return f"{count:,} rows, {distinct:,} ids", ok


def part_offload(
    server: PostgresServer, args: argparse.Namespace, work: Path
) -> tuple[list[list[str]], list[str]]:
    """The offload rate out of PostgreSQL, and BigQuery's jobs per million events."""
    print("\nPart 3: offload, a PostgreSQL hot store into a warehouse\n")
    summary, failures = offload_rate(server, args, work)
    more_summary, more_failures = bigquery_jobs(args, work)
    return summary + more_summary, failures + more_failures


def offload_rate(
    server: PostgresServer, args: argparse.Namespace, work: Path
) -> tuple[list[list[str]], list[str]]:
    import pyarrow.compute as pc
    import pyarrow.dataset as ds

    from headwater.store.duckdb import DuckDBEngine
    from headwater.store.postgres import PostgresEngine
    from headwater.store.transfer import arrivals

    events, hours = args.offload_events, 24
    first, end = START, START + hours * HOUR
    folder = work / "offload"
    folder.mkdir()
    gen = folder / "generated.duckdb"
    t0 = time.perf_counter()
    generate(gen, events, first, hours)
    step(f"generated {events:,} events over {hours} hours in {time.perf_counter() - t0:.1f} s")
    url = server.create_database("offload")
    PostgresEngine.open(url, SCHEMA).close()
    csv = folder / "events.csv"
    source = duckdb.connect(str(gen), read_only=True)
    try:
        source.execute("SET TimeZone = 'UTC'")
        source.execute(
            f"COPY (SELECT {_COLUMNS} FROM events) TO '{csv}' (FORMAT csv, HEADER false)"
        )
    finally:
        source.close()
    t0 = time.perf_counter()
    pg_copy(url, csv, vacuum=True)
    step(f"postgres: {events:,} events loaded by COPY in {time.perf_counter() - t0:.1f} s")
    csv.unlink()
    gen.unlink()

    hot = PostgresEngine.open(url, SCHEMA)
    runs: list[OffloadRun] = []
    failures: list[str] = []
    try:
        # The baselines: the same rows read as Arrow, nothing written.
        for name, slices in (
            ("plain read, hour by hour", 1),
            ("plain read, 12 slices an hour", 12),
        ):
            run = OffloadRun(name)
            runs.append(run)
            t0 = time.perf_counter()
            for hour in range(hours * slices):
                start = first + hour * HOUR / slices
                run.events += arrivals(hot, "events", start, start + HOUR / slices).num_rows
            run.seconds = run.read_seconds = time.perf_counter() - t0
            run.reads = hours * slices
            run.stored, run.ok = f"{run.events:,} rows read", run.events == events
            step(f"{name}: {run.events:,} events in {run.seconds:.2f} s")

        # Into a DuckDB warehouse file: no JVM.
        run = OffloadRun("offload into DuckDB")
        runs.append(run)
        path = folder / "warehouse.duckdb"
        t0 = time.perf_counter()
        duck = DuckDBEngine.open(path)
        run.open_seconds = time.perf_counter() - t0
        try:
            why = offload_into(run, hot, duck, folder / "duckdb-meta", first, end, events)
        finally:
            duck.close()
        con = duckdb.connect(str(path), read_only=True)
        try:
            row = con.execute("SELECT count(*), count(DISTINCT message_id) FROM events").fetchone()
            count, distinct = row if row else (0, 0)
        finally:
            con.close()
        run.stored, run.ok = _held(count, distinct, events)
        if why:
            run.error = why
        step(f"{run.name}: {run.events:,} events in {run.seconds:.2f} s; holds {run.stored}")

        # Into a Spark warehouse (local[2]): the interval's file copied into its day folder.
        run = OffloadRun("offload into Spark")
        runs.append(run)
        reason = spark_missing() if not args.skip_spark else "--skip-spark"
        if reason:
            run.skipped = reason
        else:
            from headwater.store.spark import SparkEngine

            warehouse = folder / "warehouse"
            t0 = time.perf_counter()
            try:
                spark = SparkEngine.open(str(warehouse), "local[2]", {"spark.driver.memory": "2g"})
            except Exception as exc:
                run.skipped = f"Spark did not start: {exc}"
            else:
                run.open_seconds = time.perf_counter() - t0
                step(f"spark: session started in {run.open_seconds:.1f} s")
                try:
                    why = offload_into(run, hot, spark, folder / "spark-meta", first, end, events)
                finally:
                    spark.close()
                ids = ds.dataset(warehouse / "events", format="parquet", partitioning="hive")
                table = ids.to_table(columns=["message_id"])
                count = table.num_rows
                distinct = pc.count_distinct(table["message_id"]).as_py() if count else 0
                run.stored, run.ok = _held(count, distinct, events)
                if why:
                    run.error = why
                step(
                    f"{run.name}: {run.events:,} events in {run.seconds:.2f} s; holds {run.stored}"
                )
    finally:
        hot.close()

    base = runs[0]
    print("Offload rate: PostgreSQL hot store -> warehouse, the same rows, one run:")
    table = []
    for run in runs:
        if run.skipped:
            table.append([run.name, "skipped", *[""] * 7])
            continue
        rest = run.seconds - run.read_seconds - run.load_seconds
        check = "ok" if run.ok and not run.error else "WRONG"
        table.append(
            [
                run.name,
                f"{run.events:,}",
                f"{run.seconds:.2f}",
                f"{run.events_per_second:,.0f}",
                f"{run.seconds / base.seconds:.2f}" if base.seconds else "-",
                f"{run.read_seconds:.2f} ({run.reads})",
                f"{run.load_seconds:.2f}",
                f"{rest:.2f}",
                check,
            ]
        )
        if not run.ok:
            failures.append(f"{run.name}: {run.stored}, not {events:,} events once each")
        if run.error:
            failures.append(f"{run.name}: the offload spans: {run.error}")
    ingest_bench.print_table(
        table,
        ["run", "events", "seconds", "events/s", "time ratio", "hot reads s (queries)",
         "warehouse loads s", "rest s", "check"],
    )  # fmt: skip
    print(f"  {events:,} events over {hours} h of arrival, COPY-loaded into PostgreSQL then")
    print("  VACUUM (ANALYZE). plain read: transfer.arrivals() of the rows as Arrow, nothing")
    print("  written. offload: Offloader.run() by the hour (every=1h), fixed clock and floor:")
    print("  per hour and table 12 reads, one zstd Parquet file, load_arrivals; the spans")
    print("  recorded in SQLite metadata. time ratio: seconds / the hour-by-hour plain read.")
    print("  hot reads: engine.select (first arrivals and slices, both tables); rest: Parquet")
    print("  writing, metadata, retention (deletes nothing: no row is 7 days old).")
    for run in runs:
        if run.skipped:
            print(f"  {run.name}: skipped: {run.skipped}")
        elif run.open_seconds:
            print(
                f"  {run.name}: the warehouse opened in {run.open_seconds:.2f} s (not timed); "
                f"of its hot reads, {run.first_seconds:.2f} s in {run.firsts} first-arrival "
                "queries (MIN(received_at) to the floor)"
            )
    print("  check: the warehouse holds every event once (DuckDB: a plain connection; Spark:")
    print("  its Parquet files read by pyarrow) and the offload spans tile the 24 hours.\n")
    summary = []
    for run in runs[2:]:
        if run.skipped:
            continue
        summary.append(
            [
                f"{run.name} / plain read, time",
                f"{run.seconds / base.seconds:.2f}" if base.seconds else "-",
                "",
                "",
                f"{run.events_per_second:,.0f} vs {base.events_per_second:,.0f} events/s",
            ]
        )
    return summary, failures


# -- BigQuery jobs, direct path vs offload ----------------------------------------------------

#: Every this many commits of the direct path carries one failed event (so both paths load
#: ``failed_events`` too, as the cost model counts).
FAILED_EVERY = 20
#: How far the counted jobs and bytes may stray from the cost model's.
MODEL_TOLERANCE = 0.01
_STAGE = re.compile(r"_hw_stage_[0-9a-f]{12}")


@dataclass
class Tally:
    """Jobs a recording client saw."""

    queries: int = 0
    load_jobs: int = 0
    bytes_billed: int = 0
    load_rows: dict[str, int] = field(default_factory=dict)


def _tables_referenced(sql: str, cache: dict[str, int]) -> int:
    """How many tables a query references (staging tables' names are alike to the cache)."""
    import sqlglot
    from sqlglot import exp

    key = _STAGE.sub("_hw_stage_x", sql)
    if key not in cache:
        names = set()
        for statement in sqlglot.parse(key, read="bigquery"):
            if statement is not None:
                names |= {
                    ".".join(p for p in (t.catalog, t.db, t.name) if p)
                    for t in statement.find_all(exp.Table)
                }
        cache[key] = len(names)
    return cache[key]


def tally(fake: Any, into: Tally, cache: dict[str, int]) -> None:
    """Add the jobs ``fake`` recorded to ``into``, then forget them (a day of commits would
    hold every staging load's Parquet in memory). A real query bills what its dry run
    reports (the stand-in's ``default_bytes``), and at least 10 MB per table it references,
    as BigQuery bills it."""
    from headwater.store import costs

    for call in fake.real_queries:
        scanned = next((n for part, n in fake.bytes_for if part in call.sql), fake.default_bytes)
        floor = costs.MIN_BYTES_PER_TABLE * _tables_referenced(call.sql, cache)
        into.queries += 1
        into.bytes_billed += max(scanned, floor)
    for load in fake.loads:
        into.load_jobs += 1
        table = load.destination.rsplit(".", 1)[-1].split("$")[0]
        if not table.startswith("_hw_"):
            rows = pq.read_metadata(io.BytesIO(load.parquet)).num_rows
            into.load_rows[table] = into.load_rows.get(table, 0) + rows
    fake.calls.clear()


class Traffic:
    """``per_second`` events a second (and one failed event every ``FAILED_EVERY``
    commits), second by second from ``START``, the same whichever path takes them."""

    def __init__(self, per_second: float) -> None:
        self.per_second = per_second
        self.template = _template(max(1, int(per_second) + 1))
        failed = {
            "id": ["f"],
            "source": ["web"],
            "received_at": [START],
            "code": ["missing_field"],
            "field": ["event"],
            "message": ["a track event needs an event name"],
            "payload": ['{"type":"track"}'],
            "replayed_at": [None],
        }
        from headwater.store import schema

        self.schema = schema
        self.failed_template = pa.table(failed, schema=schema.FAILED_EVENTS)
        self.commits = 0

    def second(self, s: int) -> tuple[pa.Table, pa.Table] | None:
        """The events (and failed events) of second ``s``, as one commit; ``None``: none
        arrived in it."""
        n = int((s + 1) * self.per_second) - int(s * self.per_second)
        if n == 0:
            return None
        schema = self.schema
        at = schema.EVENTS.get_field_index("received_at")
        base = int((START - datetime(1970, 1, 1, tzinfo=UTC)).total_seconds() + s) * 1_000_000
        times = pa.array([base + j * 1_000_000 // n for j in range(n)], pa.int64())
        events = self.template.slice(0, n)
        events = events.set_column(
            0, schema.EVENTS.field(0), pa.array([f"s{s}-{j}" for j in range(n)])
        )
        events = events.set_column(at, schema.EVENTS.field(at), times.cast(schema.TIMESTAMP))
        failed = self.failed_template.slice(0, 0)
        if self.commits % FAILED_EVERY == 0:
            failed = self.failed_template.set_column(
                0, schema.FAILED_EVENTS.field(0), pa.array([f"f{s}"])
            ).set_column(2, schema.FAILED_EVENTS.field(2), times.slice(0, 1).cast(schema.TIMESTAMP))
        self.commits += 1
        return events, failed


@dataclass
class JobRow:
    path: str
    how: str
    queries: float
    load_jobs: float
    bytes_billed: float
    per_day: float  # dollars a day at this traffic

    def cells(self) -> list[str]:
        from headwater.store import costs

        dollars = self.bytes_billed / costs.TIB * costs.USD_PER_TIB
        return [
            self.path,
            self.how,
            f"{self.queries:,.1f}",
            f"{self.load_jobs:,.1f}",
            f"{self.bytes_billed / 1e9:,.1f}",
            f"{dollars:,.2f}",
            f"{self.per_day:,.2f}",
        ]


def _agree(counted: JobRow, model: JobRow) -> list[str]:
    """What the count and the model disagree on, beyond the tolerance."""
    wrong = []
    for what in ("queries", "load_jobs", "bytes_billed"):
        mine, theirs = getattr(counted, what), getattr(model, what)
        if abs(mine - theirs) > MODEL_TOLERANCE * max(abs(theirs), 1e-9):
            wrong.append(f"{counted.path} {what}: counted {mine:,.1f}, the model {theirs:,.1f}")
    return wrong


def bigquery_jobs(args: argparse.Namespace, work: Path) -> tuple[list[list[str]], list[str]]:
    """A stretch of traffic through the direct path (``BigQueryEngine.ingest`` once a
    second) and through the offload (a DuckDB hot store offloaded by the hour), each on
    its own recording client; jobs per million events, against ``costs``."""
    from tests.bigquery_fake import FakeClient

    from headwater.state import StateStore
    from headwater.store import costs
    from headwater.store.bigquery import BigQueryEngine
    from headwater.store.duckdb import DuckDBEngine
    from headwater.store.engine import IngestBatch

    hours = args.simulated_hours
    end = START + hours * HOUR
    folder = work / "bigquery"
    folder.mkdir()
    traffic = Traffic(args.traffic)
    budget = 10**18  # the engine's own limit: not what is measured here
    direct_fake = FakeClient()
    direct_fake.answers = [
        ("JOIN events", pa.table({"source": pa.array([], pa.string()),
                                  "message_id": pa.array([], pa.string())}))
    ]  # fmt: skip
    direct = BigQueryEngine.open(None, "direct", None, budget, client=direct_fake)
    direct_fake.calls.clear()  # the dataset and tables made: no job
    hot = DuckDBEngine.open(folder / "hot.duckdb")
    counted_direct = Tally()
    cache: dict[str, int] = {}
    events = failed_rows = commits = failed_commits = 0
    step(
        f"direct path: {args.traffic:g} events/s for {hours} simulated hour(s), one "
        "BigQueryEngine.ingest a second ..."
    )
    t0 = time.perf_counter()
    try:
        for hour in range(hours):
            hour_events, hour_failed = [], []
            for s in range(hour * 3600, (hour + 1) * 3600):
                second = traffic.second(s)
                if second is None:
                    continue
                batch_events, batch_failed = second
                direct.ingest(IngestBatch(batch_events, batch_failed))
                commits += 1
                failed_commits += bool(batch_failed.num_rows)
                events += batch_events.num_rows
                failed_rows += batch_failed.num_rows
                hour_events.append(batch_events)
                hour_failed.append(batch_failed)
            tally(direct_fake, counted_direct, cache)
            if hours > 1 and (hour + 1) % 6 == 0:
                step(f"direct path: {hour + 1} of {hours} simulated hours")
            # The same events, in the hot store the collectors would have written.
            hot.append("events", pa.concat_tables(hour_events))
            hot.append("failed_events", pa.concat_tables(hour_failed))
        direct_seconds = time.perf_counter() - t0
        step(f"direct path: {commits:,} commits in {direct_seconds:.1f} s")

        offload_fake = FakeClient()
        warehouse = BigQueryEngine.open(
            None, "warehouse", None, budget, partition="HOUR", client=offload_fake
        )
        offload_fake.calls.clear()
        meta = StateStore.in_folder(folder / "meta")
        try:
            offloader = fixed_offloader(hot, warehouse, meta, end)
            t0 = time.perf_counter()
            offloader.run()
            offload_seconds = time.perf_counter() - t0
            tiling = _tiling(meta.offloads.spans(), START, end, events)
        finally:
            meta.close()
        counted_offload = Tally()
        tally(offload_fake, counted_offload, cache)
        step(f"offload: {hours} hour(s) into BigQuery in {offload_seconds:.1f} s")
    finally:
        hot.close()
        direct.close()

    failures = []
    if tiling:
        failures.append(f"offload into BigQuery: the spans: {tiling}")
    for name, tallied in (("offload", counted_offload), ("direct path", counted_direct)):
        want = {"events": events, "failed_events": failed_rows}
        if name == "direct path":
            want.pop("events")  # merged from staging tables, not loaded into events
        for table, rows in want.items():
            if tallied.load_rows.get(table, 0) != rows:
                failures.append(
                    f"{name}: load jobs carried {tallied.load_rows.get(table, 0):,} rows into "
                    f"{table}, not {rows:,}"
                )

    per_day = round(args.traffic * 86_400)
    commits_per_day = min(per_day, 86_400)  # one collector, one commit a second at most
    failed_per_day = -(-commits_per_day // FAILED_EVERY)
    models = {
        "direct path": costs.direct_path(per_day, commits_per_day, failed_per_day),
        "offload": costs.offload(intervals_per_day=24),
    }
    scale = 1e6 / events
    rows: list[JobRow] = []
    for name, tallied in (("direct path", counted_direct), ("offload", counted_offload)):
        counted = JobRow(
            name,
            "counted",
            tallied.queries * scale,
            tallied.load_jobs * scale,
            tallied.bytes_billed * scale,
            tallied.bytes_billed / costs.TIB * costs.USD_PER_TIB * 24 / hours,
        )
        model = models[name]
        predicted = JobRow(
            name,
            "costs model",
            model.queries * 1e6 / per_day,
            model.load_jobs * 1e6 / per_day,
            model.bytes_billed * 1e6 / per_day,
            model.dollars,
        )
        rows += [counted, predicted]
        failures += _agree(counted, predicted)

    print("BigQuery jobs per million events, direct path vs offload (a recording stand-in):")
    ingest_bench.print_table(
        [r.cells() for r in rows],
        ["path", "figures", "queries", "load jobs", "GB billed", "$ on-demand", "$ a day"],
    )
    print(f"  {args.traffic:g} events/s for {hours} simulated hour(s) ({events:,} events, "
          f"{failed_rows:,} failed events), fixed clock.")  # fmt: skip
    print("  BigQuery is tests/bigquery_fake.py's recording client, not BigQuery: it counts the")
    print("  jobs the engine sends. queries: real ones (dry runs are free); GB billed: each")
    print("  query's dry-run bytes, at least 10 MB per table it references (costs.")
    print("  MIN_BYTES_PER_TABLE), per million events; $ a day: at this traffic.")
    print(f"  direct path: one BigQueryEngine.ingest a second ({commits:,} commits, one")
    print(f"  collector: costs.direct_path's commit rate), every {FAILED_EVERY}th with a failed")
    print(f"  event ({failed_commits:,}). offload: the same rows appended to a DuckDB hot store,")
    print("  Offloader.run() by the hour into BigQueryEngine(partition='HOUR').")
    print(f"  costs model: costs.direct_path({per_day:,}, {commits_per_day:,}, "
          f"{failed_per_day:,}) and costs.offload(24), per day at this traffic.")  # fmt: skip
    disagree = [f for f in failures if "the model" in f]
    print(
        f"  counted vs the model (within {MODEL_TOLERANCE:.0%}): "
        + ("DISAGREE: " + "; ".join(disagree) if disagree else "agree")
    )
    print(
        f"  wall time here: direct path {direct_seconds:.1f} s, offload {offload_seconds:.1f} s\n"
    )
    direct_row, offload_row = rows[0], rows[2]
    summary = [
        [
            "BigQuery jobs per M events, offload",
            f"{offload_row.queries + offload_row.load_jobs:,.1f}",
            "",
            "",
            f"direct path {direct_row.queries + direct_row.load_jobs:,.0f}; $ a day "
            f"{offload_row.per_day:,.2f} vs {direct_row.per_day:,.2f} at {args.traffic:g}/s",
        ],
        [
            "BigQuery jobs: counted = costs model",
            "agree" if not disagree else "DISAGREE",
            f"within {MODEL_TOLERANCE:.0%}",
            verdict_of(not disagree),
            "queries, load jobs, bytes billed",
        ],
    ]
    return summary, failures


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
        (
            "offload",
            f"{args.offload_events:,} events over 24 h of arrival, PostgreSQL -> DuckDB "
            "and Spark warehouses, hourly; BigQuery: a recording stand-in "
            f"(tests/bigquery_fake.py), {args.traffic:g} events/s over "
            f"{args.simulated_hours} simulated hours",
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
    parser.add_argument("--skip-offload", action="store_true")
    parser.add_argument(
        "--offload-events",
        type=int,
        default=1_000_000,
        help="events over 24 h offloaded out of PostgreSQL (1,000,000)",
    )
    parser.add_argument(
        "--traffic", type=float, default=50, help="events/s for the BigQuery job counts (50)"
    )
    parser.add_argument(
        "--simulated-hours", type=int, default=24, help="simulated hours of that traffic (24)"
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: 20,000 events in the last 4 hours of 1 day, 1 s phases and warm-ups; "
        "20,000 events offloaded, 1 simulated hour of BigQuery traffic",
    )
    args = parser.parse_args(argv)
    if args.quick:
        # One day is the least that runs every path: the daily pipeline needs a whole day,
        # and the held-back hour completes it and re-opens the day before (late events).
        # Arrivals in its last 4 hours only: Spark takes a second or two per hourly interval.
        args.events, args.days, args.hours = min(args.events, 20_000), 1, 4
        args.seconds, args.warmup = 1, 1
        args.offload_events = min(args.offload_events, 20_000)
        # An hour of simulated commits (3,600 ingest calls on the stand-in) takes ~20 s.
        args.simulated_hours = min(args.simulated_hours, 1)
    if args.hours is None:
        args.hours = 24 * args.days
    if not 2 <= args.hours <= 24 * args.days:
        parser.error(
            "--hours must be from 2 (a backfilled hour and the held-back one) to 24 x --days"
        )
    if args.traffic < 1:
        parser.error("--traffic must be at least 1 event/s (every simulated hour then has rows)")
    if args.simulated_hours < 1 or args.offload_events < 24:
        parser.error("--simulated-hours must be at least 1 and --offload-events at least 24")
    if args.generator != "python" and shutil.which("wrk") is None:
        print("wrk is not installed (apt-get install -y wrk); using Python load generators.\n")
        args.generator = "python"
    elif args.generator == "auto":
        args.generator = "wrk"

    signal.signal(signal.SIGALRM, ingest_bench._timeout)
    offload = args.offload_events / 5_000 + args.traffic * args.simulated_hours * 3_600 / 20_000
    signal.alarm(
        int(4 * args.seconds + 120 + 4 * args.budget + args.events / 10_000 + 600 + offload)
    )
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
        if not args.skip_offload:
            rows, problems = part_offload(server, args, work)
            failures += problems
            summary += rows
    if args.quick:
        print(f"{ingest_bench.QUICK_NOTE}\n")
    print("Summary against the targets:")
    ingest_bench.print_table(summary, ["measure", "measured", "target", "result", "note"])
    if failures:
        print("\nVERIFICATION FAILED:\n  " + "\n  ".join(failures))
        return 1
    print(
        "\nVerified: every acknowledged event stored once; every engine's outputs agree; "
        "every offloaded event in its warehouse once, the BigQuery counts as modelled."
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
