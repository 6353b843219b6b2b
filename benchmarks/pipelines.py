"""Pipeline benchmark: one hourly incremental job in Headwater, dbt-duckdb, SQLMesh and bare SQL.

Run from the repository root::

    .venv/bin/python benchmarks/pipelines.py             # 5 million events, 30 days: ~4 minutes
    .venv/bin/python benchmarks/pipelines.py --quick     # 5,000 events, 1 day, no peers: ~20 s
    .venv/bin/python benchmarks/pipelines.py --quick --tools headwater,sql,dbt,sqlmesh
    .venv/bin/python benchmarks/pipelines.py --rows 2000000 --days 30 --keep

The job is Headwater's example pipeline ``hourly_event_counts.sql`` (what
``headwater init`` writes): per hour of arrival (``received_at``), per source and
event name, the events and the distinct people. Each tool runs it on its own copy
of the same synthetic events:

* Headwater: a project made by ``headwater.cli.scaffold.init_project`` (the other
  example pipeline removed), run two ways: in this process through
  ``Workspace`` on an open store (what the scheduler inside ``headwater up``
  pays each tick), and as the ``headwater`` CLI in a new process (what cron pays).
  History is filled interval by interval, and again on two more copies with
  ``batch_size`` in the header (``--batch-size``; default: all of history in one
  batch, as SQLMesh's plan does), in-process and by the CLI.
* dbt-duckdb: an incremental model, ``delete+insert`` with ``unique_key='hour'`` and
  an ``is_incremental()`` filter on ``received_at``; and for history, dbt's own
  hourly backfill, a ``microbatch`` model run with ``--event-time-start/--event-time-end``.
* SQLMesh: an ``INCREMENTAL_BY_TIME_RANGE`` model on ``hour`` filtered by
  ``@start_ts``/``@end_ts``; ``sqlmesh plan`` fills history, ``sqlmesh run`` the rest.
* Bare SQL: ``DELETE`` the hour and ``INSERT … SELECT`` in one transaction on DuckDB,
  on an open connection and from a new Python process.

dbt and SQLMesh are installed only for this benchmark, each in its own virtual
environment under ``benchmarks/.venvs/`` (created when missing, from the package
index: so ``--quick`` leaves them out unless ``--tools`` names them), and run as their
CLIs in subprocesses; every CLI figure is the wall clock of the whole command.
They pin their own DuckDB: a peer whose DuckDB cannot open Headwater's file gets
a fresh file imported from a Parquet export of it (printed in the conditions).

The timeline is anchored to the real clock, because ``sqlmesh run`` and
``headwater run --due`` decide what is due from it: history is ``--days`` of hours
ending ``--new-hours`` hours before the last full hour; then each new hour
"arrives" (is appended to every copy from the same Parquet file) and every tool
runs once. Then every tool runs again with nothing new, ``--repeats`` times. At
the end every tool's output must be identical (counts over all hours, and every row
of sampled hours), or the benchmark fails.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import json
import math
import os
import platform
import pstats
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb

ROOT = Path(__file__).resolve().parents[1]
VENVS = ROOT / "benchmarks" / ".venvs"
HEADWATER_CLI = Path(sys.executable).parent / "headwater"
PIPELINE = "hourly_event_counts"
HOUR = timedelta(hours=1)
HOUR_US = 3_600_000_000
#: A peer's database file. Not "sqlmesh.duckdb": SQLMesh's state schema, sqlmesh, would
#: clash with the catalog that DuckDB names after the file.
WAREHOUSE = "warehouse.duckdb"

#: Targets: Headwater's fixed overhead against the peers', its incremental run against bare
#: SQL, its backfill against SQLMesh's.
TARGET_OVERHEAD_VS_DBT = 0.2
TARGET_OVERHEAD_VS_SQLMESH = 1.0
TARGET_INCREMENTAL_VS_SQL = 1.5
TARGET_BACKFILL_VS_SQLMESH = 1.0

#: Figures of the full run (5,000,000 events, 30 days) on the reference machine (2 CPUs,
#: x86_64) before the in-engine runs and batches: printed beside a run's own, for scale
#: when the peers are not installed. Measured, not targets.
REFERENCE_FIGURES = (
    ("Headwater in-process, one new hour (before)", "54 ms"),
    ("bare SQL, open connection, one new hour", "10 ms"),
    ("Headwater in-process, 720-hour backfill (before)", "19.4 s"),
    ("Headwater CLI, 720-hour backfill (before)", "28.4 s"),
    ("SQLMesh, 720-hour backfill (sqlmesh plan: one batch)", "5.2 s"),
    ("bare SQL, 720 hours: one transaction per hour", "7.1 s"),
    ("bare SQL, 720 hours: one statement", "1.65 s"),
    ("dbt-duckdb microbatch, 720 batches", "40 s"),
)

#: Printed with the conditions and the results of a --quick run (tests look for it).
QUICK_NOTE = (
    "QUICK RUN (--quick): every phase at a tiny size, to check that the benchmark runs; "
    "its figures mean nothing"
)

#: Wall-clock bounds: a backfill, any other command, installing a peer.
BACKFILL_TIMEOUT = 3600.0
COMMAND_TIMEOUT = 600.0
INSTALL_TIMEOUT = 1200.0


@dataclass(frozen=True)
class Peer:
    name: str
    requirements: tuple[str, ...]
    cli: str

    @property
    def venv(self) -> Path:
        return VENVS / self.name

    @property
    def python(self) -> Path:
        return self.venv / "bin" / "python"

    @property
    def executable(self) -> Path:
        return self.venv / "bin" / self.cli


DBT = Peer("dbt", ("dbt-core>=1.9,<1.11", "dbt-duckdb>=1.9,<1.11"), "dbt")
SQLMESH = Peer("sqlmesh", ("sqlmesh",), "sqlmesh")


# -- small helpers -----------------------------------------------------------------


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def iso(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S")


def us(moment: datetime) -> int:
    return int(moment.timestamp()) * 1_000_000


def child_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)
    # This machine sets PYTHONDONTWRITEBYTECODE, so an editable install (Headwater's) would
    # compile its modules at every start. Users' installs keep bytecode: keep it here too,
    # in a cache of our own rather than beside the sources.
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    env["PYTHONPYCACHEPREFIX"] = str(VENVS / "pycache")
    env.update(
        TZ="UTC",
        NO_COLOR="1",
        TERM="dumb",
        # Telemetry would try the network on every command; none of it is reachable here.
        DBT_SEND_ANONYMOUS_USAGE_STATS="False",
        DO_NOT_TRACK="1",
    )
    return env


@dataclass(frozen=True)
class Completed:
    seconds: float
    stdout: str


def run_cli(
    args: Sequence[str | Path], *, cwd: Path, timeout: float = COMMAND_TIMEOUT
) -> Completed:
    """Run a command to completion, timing its whole wall clock; fail loudly on error."""
    command = [str(a) for a in args]
    started = time.perf_counter()
    try:
        done = subprocess.run(
            command,
            cwd=cwd,
            env=child_env(),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as exc:
        raise SystemExit(f"timed out after {timeout:.0f} s: {' '.join(command)}") from exc
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).strip().splitlines()[-40:])
        raise SystemExit(f"failed ({done.returncode}): {' '.join(command)}\n{tail}")
    return Completed(seconds, done.stdout + done.stderr)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = fn()
    return time.perf_counter() - started, result


# -- the peers' environments ---------------------------------------------------------


def ensure_peer(peer: Peer) -> None:
    """Create ``benchmarks/.venvs/NAME`` with the peer installed, unless it is there."""
    marker = peer.venv / "benchmark-requirements.txt"
    wanted = "\n".join(peer.requirements) + "\n"
    if marker.exists() and marker.read_text() == wanted and peer.executable.exists():
        return
    log(f"installing {' '.join(peer.requirements)} into {peer.venv.relative_to(ROOT)}")
    VENVS.mkdir(parents=True, exist_ok=True)
    if not peer.python.exists():
        run_cli([sys.executable, "-m", "venv", peer.venv], cwd=ROOT)
    run_cli(
        [peer.python, "-m", "pip", "install", "--quiet", "--disable-pip-version-check",
         *peer.requirements],
        cwd=ROOT,
        timeout=INSTALL_TIMEOUT,
    )  # fmt: skip
    marker.write_text(wanted)


#: Runs in a peer's environment: statements on a DuckDB file with that peer's DuckDB.
PEER_SQL = r"""
import json, sys
import duckdb
con = duckdb.connect(sys.argv[1])
con.execute("SET TimeZone = 'UTC'")
rows = None
for sql, params in json.loads(sys.argv[2]):
    rows = con.execute(sql, params or None).fetchall()
con.close()
print(json.dumps({"version": duckdb.__version__, "rows": rows}))
"""


def peer_sql(
    python: Path, db: Path, statements: Sequence[tuple[str, Sequence[object]]]
) -> list[Any]:
    """Run statements with the DuckDB of ``python``'s environment; the last one's rows."""
    done = run_cli([python, "-c", PEER_SQL, db, json.dumps(statements)], cwd=db.parent)
    return list(json.loads(done.stdout.strip().splitlines()[-1])["rows"])


def peer_version(python: Path, module: str) -> str:
    code = f"import importlib.metadata as m; print(m.version({module!r}))"
    return run_cli([python, "-c", code], cwd=ROOT).stdout.strip().splitlines()[-1]


# -- the synthetic events ------------------------------------------------------------

#: Fills ``events`` with ``n`` events for each hour, in arrival order. Every value is
#: derived from hash(row id, k), so the data do not depend on threads or runs.
GENERATE = """
INSERT INTO events BY NAME
WITH h AS (
  SELECT unnest(?::BIGINT[]) AS start_us, unnest(?::BIGINT[]) AS n, unnest(?::BIGINT[]) AS base
), r AS (
  SELECT start_us, n, base + k AS id, k
  FROM (SELECT start_us, n, base, unnest(range(n)) AS k FROM h)
), u AS (
  SELECT
    id,
    start_us + k * (3600000000 // n) + (hash(id, 1) % (3600000000 // n))::BIGINT AS recv_us,
    (hash(id, 2) % 1000)::INTEGER AS u_src,
    (hash(id, 3) % 1000)::INTEGER AS u_type,
    (hash(id, 4) % 1000000)::DOUBLE / 1000000 AS u_event,
    (hash(id, 5) % 1000)::INTEGER AS u_known,
    -- a few heavy users, a long tail of light ones
    floor(200000 * pow((hash(id, 6) % 1000000) / 1000000.0, 3))::INTEGER AS person,
    (hash(id, 7) % 1000)::INTEGER AS u_late,
    (hash(id, 8) % 21600000000)::BIGINT AS late_us,
    (hash(id, 9) % 3000000)::BIGINT AS skew_us,
    hash(id, 10) AS h10,
    hash(id, 11) AS h11
  FROM r
), v AS (
  SELECT *,
    CASE WHEN u_src < 500 THEN 'web' WHEN u_src < 700 THEN 'ios'
         WHEN u_src < 900 THEN 'android' ELSE 'backend' END AS source,
    CASE WHEN u_type < 760 THEN 'track'
         WHEN u_type < 900 THEN CASE WHEN u_src < 500 THEN 'page' ELSE 'screen' END
         WHEN u_type < 980 THEN 'identify' ELSE 'group' END AS type,
    -- 3% arrive late (offline mobile clients, retries): up to 6 hours after they happened
    recv_us - CASE WHEN u_late < 30 THEN late_us ELSE skew_us END AS ts_us
  FROM u
)
SELECT
  printf('%08x-%04x-4%03x-%04x-%012x', h10 >> 32, (h10 >> 16) & 65535, h10 & 4095,
         ((h11 >> 48) & 16383) | 32768, h11 & 281474976710655) AS message_id,
  source,
  type,
  CASE WHEN type = 'track' THEN ['Page Viewed', 'Product Viewed', 'Product Clicked',
    'Product Added', 'Cart Viewed', 'Checkout Started', 'Order Completed', 'Signed Up',
    'Signed In', 'Signed Out', 'Search Performed', 'Product List Viewed', 'Video Played',
    'Video Paused', 'Video Completed', 'Coupon Applied', 'Payment Info Entered',
    'Order Refunded', 'Subscription Started', 'Subscription Cancelled', 'Invite Sent',
    'Invite Accepted', 'Feature Used', 'Report Exported', 'Dashboard Viewed',
    'Settings Updated', 'Notification Opened', 'App Opened', 'App Backgrounded',
    'Trial Started', 'Plan Upgraded', 'Plan Downgraded', 'File Uploaded', 'Comment Posted',
    'Message Sent', 'Project Created', 'Project Deleted', 'Member Added', 'API Key Created',
    'Error Shown'][1 + floor(40 * u_event * u_event)::INTEGER] END AS event,
  CASE WHEN type IN ('page', 'screen') THEN ['Home', 'Pricing', 'Docs', 'Blog', 'Product',
    'Checkout', 'Account', 'Search'][1 + (h11 % 8)::INTEGER] END AS name,
  CASE WHEN u_known < 600 OR source = 'backend' THEN 'user_' || person END AS user_id,
  CASE WHEN source <> 'backend' THEN 'anon_' || (person * 7 + (h10 % 3)) END AS anonymous_id,
  CASE WHEN type = 'group' THEN 'org_' || (person % 5000) END AS group_id,
  NULL AS previous_id,
  make_timestamptz(ts_us) AS timestamp,
  make_timestamptz(ts_us - (h10 % 50000)::BIGINT) AS original_timestamp,
  make_timestamptz(recv_us - (h11 % 400000)::BIGINT) AS sent_at,
  make_timestamptz(recv_us) AS received_at,
  CASE WHEN type = 'track' THEN printf(
      '{"plan":"%s","product_id":"p%d","price":%.2f,"currency":"USD","quantity":%d}',
      ['free', 'starter', 'pro', 'enterprise'][1 + (person % 4)], h10 % 5000,
      (h11 % 20000) / 100.0, 1 + h10 % 5)
    WHEN type IN ('page', 'screen') THEN printf(
      '{"path":"/p/%d","referrer":"https://www.example.com/","title":"Page %d"}',
      h11 % 300, h11 % 300)
  END AS properties,
  CASE WHEN type = 'identify' THEN printf(
      '{"email":"user%d@example.com","plan":"%s","created_at":"2026-01-%02dT00:00:00Z"}',
      person, ['free', 'starter', 'pro', 'enterprise'][1 + (person % 4)], 1 + person % 28)
    WHEN type = 'group' THEN printf('{"name":"Org %d","employees":%d}',
      person % 5000, 1 + h10 % 900)
  END AS traits,
  printf('{"library":{"name":"%s","version":"2.%d.%d"},"ip":"10.%d.%d.%d","locale":"en-US",'
    || '"userAgent":"Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 Chrome/13%d.0 '
    || 'Safari/537.36","timezone":"Europe/Berlin"}',
    CASE source WHEN 'web' THEN 'analytics.js' WHEN 'ios' THEN 'analytics-ios'
      WHEN 'android' THEN 'analytics-android' ELSE 'analytics-python' END,
    h10 % 10, h11 % 20, h10 % 256, h11 % 256, person % 256, h11 % 10) AS context
FROM v
ORDER BY id
"""


@dataclass(frozen=True)
class Timeline:
    """History ``[start, backfill_end)``, then new hours up to ``end``, the last full hour."""

    start: datetime
    backfill_end: datetime
    end: datetime

    @property
    def history_hours(self) -> int:
        return round((self.backfill_end - self.start) / HOUR)

    @property
    def new_hours(self) -> list[datetime]:
        count = round((self.end - self.backfill_end) / HOUR)
        return [self.backfill_end + i * HOUR for i in range(count)]


def hour_counts(rows: int, hours: int, seed: int = 7) -> list[int]:
    """Events per hour: a daily curve peaking mid-afternoon UTC, quieter weekends, noise."""
    rng = random.Random(seed)
    weights = []
    for h in range(hours):
        day_curve = 1.0 + 0.6 * math.sin(2 * math.pi * ((h % 24) - 9) / 24)
        weekend = 0.7 if (h // 24) % 7 in (5, 6) else 1.0
        weights.append(day_curve * weekend * rng.uniform(0.9, 1.1))
    total = sum(weights)
    counts = [max(1, int(rows * w / total)) for w in weights]
    counts[max(range(hours), key=counts.__getitem__)] += max(0, rows - sum(counts))
    return counts


def generate(path: Path, hours: list[datetime], counts: list[int], first_id: int) -> None:
    """Write events for ``hours`` into a new Headwater store at ``path``, a day at a time."""
    from headwater.store.duckdb import DuckDBEngine

    engine = DuckDBEngine.open(path)  # Headwater creates events with its own schema
    try:
        base = first_id
        for day in range(0, len(hours), 24):
            chunk = slice(day, day + 24)
            bases = []
            for n in counts[chunk]:
                bases.append(base)
                base += n
            engine.execute(GENERATE, [[us(h) for h in hours[chunk]], counts[chunk], bases])
    finally:
        engine.close()


# -- the tools' projects -------------------------------------------------------------

OUTPUT_COLUMNS = "hour, source, event_name, events, people"

BARE_SELECT = """
SELECT
  date_trunc('hour', received_at) AS hour,
  source,
  COALESCE(event, type) AS event_name,
  COUNT(*) AS events,
  COUNT(DISTINCT COALESCE(user_id, anonymous_id)) AS people
FROM events
WHERE received_at >= $start AND received_at < $end
GROUP BY ALL
"""

BARE_TABLE = (
    f"CREATE TABLE IF NOT EXISTS {PIPELINE} "
    "(hour TIMESTAMPTZ, source VARCHAR, event_name VARCHAR, events BIGINT, people BIGINT)"
)

#: The bare-SQL run as a new process would do it: connect, one transaction, exit.
BARE_PROCESS = f"""
import sys, duckdb
con = duckdb.connect(sys.argv[1])
con.execute("SET TimeZone = 'UTC'")
con.execute({BARE_TABLE!r})
params = {{"start": sys.argv[2], "end": sys.argv[3]}}
con.begin()
con.execute("DELETE FROM {PIPELINE} WHERE hour >= $start::TIMESTAMPTZ AND hour < $end::TIMESTAMPTZ",
            params)
con.execute("INSERT INTO {PIPELINE} " + {BARE_SELECT!r}.replace("$start", "$start::TIMESTAMPTZ")
            .replace("$end", "$end::TIMESTAMPTZ"), params)
con.commit()
con.close()
"""


def bare_process(path: Path, start: datetime, end: datetime) -> list[str | Path]:
    """The bare-SQL run for ``[start, end)`` as a command in a new Python process."""
    return [sys.executable, "-c", BARE_PROCESS, path, iso(start) + "+00:00", iso(end) + "+00:00"]


class BareSQL:
    """The baseline: DELETE the hour and INSERT … SELECT, in one transaction."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.con = duckdb.connect(str(path))
        self.con.execute("SET TimeZone = 'UTC'")
        self.con.execute(BARE_TABLE)

    def run(self, start: datetime, end: datetime) -> None:
        params = {"start": start, "end": end}
        con = self.con
        con.begin()
        con.execute(f"DELETE FROM {PIPELINE} WHERE hour >= $start AND hour < $end", params)
        con.execute(f"INSERT INTO {PIPELINE} {BARE_SELECT}", params)
        con.commit()

    def once(self, start: datetime, end: datetime) -> None:
        """All of history in one statement, into its own table."""
        self.con.execute(
            f"CREATE OR REPLACE TABLE {PIPELINE}_once AS {BARE_SELECT}",
            {"start": start, "end": end},
        )

    def append(self, parquet: Path) -> None:
        self.con.execute("INSERT INTO events SELECT * FROM read_parquet(?)", [str(parquet)])

    def close(self) -> None:
        self.con.close()


def headwater_project(folder: Path, data: Path, batch_size: int | None = None) -> Path:
    """``headwater init`` in ``folder`` with only the hourly example, on a copy of ``data``;
    with ``batch_size`` in its header when given."""
    from headwater.cli.scaffold import init_project
    from headwater.config.project import load_project

    init_project(folder)
    for other in (folder / "pipelines").iterdir():
        if other.stem != PIPELINE:
            other.unlink()
    if batch_size is not None:
        path = folder / "pipelines" / f"{PIPELINE}.sql"
        text = path.read_text()
        marker = 'kind = "incremental"\n'
        assert marker in text, "the example pipeline's header changed"
        path.write_text(text.replace(marker, f"{marker}batch_size = {batch_size}\n", 1))
    store = load_project(folder).store_path
    store.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(data, store)
    return store


class HeadwaterInProcess:
    """Headwater's service on an open store, its clock set by the benchmark."""

    def __init__(self, folder: Path) -> None:
        from headwater.config.project import load_project
        from headwater.runtime.workspace import Workspace, engine_for, state_for

        self.project = load_project(folder)
        # What `headwater up` and the CLI open: the project's store and its run state.
        self.engine = engine_for(self.project)
        self.metadata = state_for(self.project)
        self.now = datetime.now(UTC)
        self.service = Workspace(self.project, self.engine, self.metadata, clock=lambda: self.now)

    def append(self, parquet: Path) -> None:
        self.engine.execute("INSERT INTO events SELECT * FROM read_parquet(?)", [str(parquet)])

    def close(self) -> None:
        self.service.close()


DBT_PROJECT = """\
name: headwater_benchmark
version: "1.0.0"
profile: headwater_benchmark
model-paths: ["models"]
"""

DBT_PROFILES = """\
headwater_benchmark:
  target: bench
  outputs:
    bench:
      type: duckdb
      path: "{path}"
      threads: 1
      settings:
        TimeZone: UTC
"""

DBT_SOURCES = """\
sources:
  - name: headwater
    schema: main
    tables:
      - name: events
        config:
          event_time: received_at
"""

DBT_SELECT = """\
select
  date_trunc('hour', received_at) as hour,
  source,
  coalesce(event, type) as event_name,
  count(*) as events,
  count(distinct coalesce(user_id, anonymous_id)) as people
from {{ source('headwater', 'events') }}
"""

DBT_MODEL = (
    "{{ config(materialized='incremental', incremental_strategy='delete+insert',"
    " unique_key='hour') }}\n" + DBT_SELECT + "{% if is_incremental() %}\n"
    # Exactly the hours after the last one published, as Headwater and SQLMesh run.
    "where received_at >= (select max(hour) + interval 1 hour from {{ this }})\n"
    "{% endif %}\n"
    "group by all\n"
)

DBT_MICROBATCH = (
    "{{{{ config(materialized='incremental', incremental_strategy='microbatch',"
    " event_time='hour', batch_size='hour', begin='{begin}', lookback=0,"
    # One DuckDB writer: batches in turn (concurrent batches deadlock dbt 1.10 at threads: 1).
    " concurrent_batches=false) }}}}\n"
    + DBT_SELECT.replace("{", "{{").replace("}", "}}")
    + "group by all\n"
)


def dbt_project(folder: Path, db: Path, begin: datetime) -> None:
    (folder / "models").mkdir(parents=True)
    (folder / "dbt_project.yml").write_text(DBT_PROJECT)
    (folder / "profiles.yml").write_text(DBT_PROFILES.format(path=db))
    (folder / "models" / "sources.yml").write_text(DBT_SOURCES)
    (folder / "models" / f"{PIPELINE}.sql").write_text(DBT_MODEL)
    (folder / "models" / f"{PIPELINE}_mb.sql").write_text(DBT_MICROBATCH.format(begin=iso(begin)))


SQLMESH_CONFIG = """\
gateways:
  local:
    connection:
      type: duckdb
      database: "{path}"
      connector_config:
        TimeZone: UTC
default_gateway: local
model_defaults:
  dialect: duckdb
"""

SQLMESH_MODEL = """\
MODEL (
  name analytics.{name},
  kind INCREMENTAL_BY_TIME_RANGE (time_column hour),
  cron '@hourly',
  start '{start}',
  grain (hour, source, event_name)
);

SELECT
  date_trunc('hour', received_at) AS hour,
  source,
  COALESCE(event, type) AS event_name,
  COUNT(*) AS events,
  COUNT(DISTINCT COALESCE(user_id, anonymous_id)) AS people
FROM main.events
WHERE received_at >= @start_ts AND received_at < @end_ts
GROUP BY ALL
"""


def sqlmesh_project(folder: Path, db: Path, start: datetime) -> None:
    (folder / "models").mkdir(parents=True)
    (folder / "config.yaml").write_text(SQLMESH_CONFIG.format(path=db))
    (folder / "models" / f"{PIPELINE}.sql").write_text(
        SQLMESH_MODEL.format(name=PIPELINE, start=iso(start))
    )


# -- measurements -------------------------------------------------------------------


@dataclass
class Row:
    """One tool's figures, in seconds."""

    label: str
    incremental: list[float] = field(default_factory=list)
    idle: list[float] = field(default_factory=list)
    backfills: list[tuple[str, float]] = field(default_factory=list)


def median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def fmt_seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 1:
        return f"{value * 1000:.1f} ms"
    return f"{value:.2f} s"


def runs(count: int) -> str:
    return f"{count} run" if count == 1 else f"{count} runs"


def fmt_spread(values: list[float]) -> str:
    if not values:
        return "-"
    text = fmt_seconds(median(values))
    if len(values) > 1:
        text += f" ({fmt_seconds(min(values))}-{fmt_seconds(max(values))})"
    return text


@dataclass
class Store:
    """Where a tool's output can be read for the final comparison."""

    label: str
    path: Path
    table: str
    python: Path | None  # None: this process's DuckDB
    span: tuple[datetime, datetime]


FINGERPRINT = (
    "SELECT count(*), sum(events), sum(people), sum(epoch_us(hour::TIMESTAMPTZ) // 3600000000 "
    "* events) FROM {table} WHERE hour >= make_timestamptz(?) AND hour < make_timestamptz(?)"
)
SAMPLE = (
    "SELECT epoch_us(hour::TIMESTAMPTZ), source, event_name, events, people FROM {table} "
    "WHERE hour = make_timestamptz(?) ORDER BY source, event_name"
)


def read_store(store: Store, sql: str, params: list[object]) -> list[list[Any]]:
    text = sql.format(table=store.table)
    if store.python is None:
        con = duckdb.connect(str(store.path), read_only=True)
        try:
            con.execute("SET TimeZone = 'UTC'")
            rows = con.execute(text, params).fetchall()
        finally:
            con.close()
        return [[int(v) if isinstance(v, int) else v for v in row] for row in rows]
    return [list(row) for row in peer_sql(store.python, store.path, [(text, params)])]


def check_outputs(stores: list[Store], samples: list[datetime]) -> list[str]:
    """Every tool's output must be the same; return lines describing what was compared."""
    lines = []
    reference = stores[0]
    for store in stores:
        start, end = store.span
        got = read_store(store, FINGERPRINT, [us(start), us(end)])
        want = read_store(reference, FINGERPRINT, [us(start), us(end)])
        assert got == want, f"{store.label} differs over {start}..{end}: {got} != {want}"
        rows, events, people, _ = got[0]
        lines.append(
            f"  {store.label:<34} {rows:>8,} rows, {events:>11,} events, "
            f"{people:>11,} sum(people) over {iso(start)}..{iso(end)}"
        )
    for hour in samples:
        want = read_store(reference, SAMPLE, [us(hour)])
        assert want, f"no output for the sampled hour {hour}"
        for store in stores:
            if not store.span[0] <= hour < store.span[1]:
                continue
            got = read_store(store, SAMPLE, [us(hour)])
            assert got == want, f"{store.label} differs for {hour}: {got[:3]} != {want[:3]}"
        covering = [s.label for s in stores if s.span[0] <= hour < s.span[1]]
        lines.append(
            f"  sampled hour {iso(hour)}: {len(want)} rows, {sum(r[3] for r in want):,} events, "
            f"identical in all {len(covering)} outputs; the busiest:"
        )
        for row in sorted(want, key=lambda r: -int(r[3]))[:5]:
            lines.append(f"    {row[1]:<8} {row[2]:<22} events {row[3]:>6,}  people {row[4]:>6,}")
    return lines


# -- profiling ---------------------------------------------------------------------


#: Where a run's time can go, as (file, function, label): picked from a cProfile.
PHASES = (
    ("workspace.py", "graph", "load the pipeline graph (read and parse the SQL files)"),
    ("planner.py", "due", "planner.due: which intervals are due"),
    ("leases.py", "__enter__", "take the lease (run state write, start the renewer thread)"),
    ("leases.py", "__exit__", "release the lease (join the renewer, run state write)"),
    ("runs.py", "interrupted", "run state: mark runs of dead processes"),
    ("runs.py", "start_run", "run state: insert the run (and a new version)"),
    ("runs.py", "succeed", "run state: run succeeded, interval done"),
    ("runner.py", "_in_engine", "in the engine, one transaction: compute, check, publish"),
    ("duckdb.py", "stage", "  compute: CREATE TEMP TABLE AS the query (with profiling)"),
    ("runner.py", "_check_times", "  check every row's time is inside the interval"),
    ("audits.py", "check_staged", "  audits as SQL on the staged output"),
    ("runner.py", "_publish", "  publish: delete the interval, insert from the staged output"),
    ("runner.py", "_compute", "compute through Arrow: engine.select (a Python pipeline)"),
    ("audits.py", "run_audits", "audits in Arrow (a Python pipeline, custom SQL audits)"),
)


def profile_phases(profiler: cProfile.Profile, total: str) -> list[str]:
    """Cumulative seconds of the known phases of a run, and the top functions by own time."""
    stats = pstats.Stats(profiler)
    raw: dict[tuple[str, int, str], tuple[int, int, float, float, object]] = stats.stats  # type: ignore[attr-defined]
    whole = sum(tt for _, _, tt, _, _ in raw.values())
    lines = [f"  {total}: {whole * 1000:.1f} ms under cProfile"]
    for file, function, label in PHASES:
        seconds = sum(
            v[3] for k, v in raw.items() if k[0].endswith("/" + file) and k[2] == function
        )
        if seconds:
            lines.append(f"    {seconds * 1000:7.1f} ms  {label}")
    own = sorted(raw.items(), key=lambda kv: -kv[1][2])[:8]
    lines.append("    by own time: " + ", ".join(
        f"{Path(k[0]).name}:{k[2]} {v[2] * 1000:.1f} ms" for k, v in own
    ))  # fmt: skip
    return lines


#: The steps of `headwater run --due` as the CLI takes them, each timed without a profiler.
CLI_STEPS = r"""
import json, sys, time
t = [time.perf_counter()]
from pathlib import Path
import headwater.cli.main
t.append(time.perf_counter())
from headwater.runtime.workspace import Workspace, engine_for, state_for
from headwater.runtime import operations
from headwater.runtime.client import find_server
from headwater.config.project import load_project
t.append(time.perf_counter())
project = load_project(Path(sys.argv[1]))
assert find_server(project.data_dir) is None
t.append(time.perf_counter())
engine = engine_for(project)
t.append(time.perf_counter())
state = state_for(project)
t.append(time.perf_counter())
workspace = Workspace(project, engine, state)
result = operations.call(workspace, "due", {"deliver": True}, None)
t.append(time.perf_counter())
workspace.close()
t.append(time.perf_counter())
print(json.dumps({"steps": [b - a for a, b in zip(t, t[1:])], "ran": len(result["runs"])}))
"""
CLI_STEP_NAMES = (
    "import headwater.cli.main (typer, rich, headwater.config)",
    "import what the run command loads (workspace, run state, store, ...)",
    "load headwater.toml, look for a running server",
    "engine_for: DuckDBEngine.open",
    "state_for: StateStore (SQLAlchemy engine, Alembic upgrade check)",
    "operations.call('due'): the workspace itself",
    "close the workspace (deliverer, run state, store)",
)


def profile_cli(folder: Path) -> list[str]:
    """Where a `headwater run --due` process spends its time, step by step."""
    bare = run_cli([sys.executable, "-c", "pass"], cwd=folder).seconds
    whole = run_cli([HEADWATER_CLI, "-p", folder, "run", "--due"], cwd=folder).seconds
    done = run_cli([sys.executable, "-c", CLI_STEPS, folder], cwd=folder)
    result = json.loads(done.stdout.strip().splitlines()[-1])
    lines = [
        f"  `headwater run --due`, nothing due: {whole * 1000:.0f} ms wall; the same steps "
        f"timed one by one in a new process ({done.seconds * 1000:.0f} ms wall):",
        f"    {bare * 1000:7.1f} ms  python startup (python -c pass)",
    ]
    for name, seconds in zip(CLI_STEP_NAMES, result["steps"], strict=True):
        lines.append(f"    {seconds * 1000:7.1f} ms  {name}")
    lines.append("  " + import_times(folder))
    return lines


def import_times(cwd: Path) -> str:
    """What the CLI's imports cost per package (python -X importtime, cumulative)."""
    code = (
        "import headwater.cli.main, headwater.state, headwater.runtime.workspace, "
        "headwater.runtime.operations, headwater.runtime.client, headwater.store.duckdb"
    )
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", code],
        cwd=cwd, env=child_env(), capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    first: dict[str, int] = {}
    total = 0
    for line in done.stderr.splitlines():
        match = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if not match:
            continue
        cumulative, indent, name = int(match.group(2)), len(match.group(3)), match.group(4)
        if indent == 1:
            total += cumulative
        package = name.split(".")[0]
        if name == package:  # a package's own line includes everything it imported
            first[package] = max(first.get(package, 0), cumulative)
    top = sorted(first.items(), key=lambda kv: -kv[1])[:12]
    listed = ", ".join(f"{name} {us_ / 1000:.0f}" for name, us_ in top)
    return (
        f"imports: {total / 1000:.0f} ms in all; by package, ms including what each pulls "
        f"in (so they overlap): {listed}"
    )


# -- the run -----------------------------------------------------------------------


@dataclass
class Setup:
    rows: int
    days: int
    new_hours: int
    repeats: int
    work: Path
    timeline: Timeline
    notes: list[str] = field(default_factory=list)
    load: tuple[float, float, float] = field(default_factory=os.getloadavg)


def prepare_data(setup: Setup) -> tuple[Path, list[Path]]:
    """The history store, and one Parquet file per new hour."""
    tl = setup.timeline
    hours = [tl.start + i * HOUR for i in range(tl.history_hours)] + tl.new_hours
    counts = hour_counts(setup.rows, len(hours))
    history = setup.work / "history.duckdb"
    log(f"generating {sum(counts):,} events over {len(hours)} hours into {history}")
    seconds, _ = timed(
        lambda: generate(history, hours[: tl.history_hours], counts[: tl.history_hours], 0)
    )
    new_store = setup.work / "new-hours.duckdb"
    generate(
        new_store,
        hours[tl.history_hours :],
        counts[tl.history_hours :],
        sum(counts[: tl.history_hours]),
    )
    parquets = []
    con = duckdb.connect(str(new_store))
    try:
        con.execute("SET TimeZone = 'UTC'")
        for hour in tl.new_hours:
            path = setup.work / f"new-{hour:%Y%m%dT%H}.parquet"
            con.execute(
                f"COPY (SELECT * FROM events WHERE received_at >= make_timestamptz({us(hour)}) "
                f"AND received_at < make_timestamptz({us(hour + HOUR)}) ORDER BY received_at) "
                f"TO '{path}' (FORMAT parquet)"
            )
            parquets.append(path)
    finally:
        con.close()
    setup.rows = sum(counts)
    size = history.stat().st_size / 1e6
    setup.notes.append(
        f"events: {setup.rows:,} ({sum(counts[: tl.history_hours]):,} of history + "
        f"{sum(counts[tl.history_hours :]):,} in {len(tl.new_hours)} new hours, "
        f"{min(counts):,}-{max(counts):,} per hour), generated through DuckDBEngine in "
        f"{seconds:.1f} s; store file {size:,.0f} MB"
    )
    return history, parquets


def peer_store(peer: Peer, history: Path, target: Path, setup: Setup) -> str:
    """Give a peer its copy of the history: the file itself, or via Parquet if its DuckDB
    cannot read this one's file. Returns how."""
    shutil.copyfile(history, target)
    try:
        peer_sql(peer.python, target, [("SELECT count(*) FROM events", [])])
        return "file copied as it is"
    except SystemExit as exc:
        if "version number" not in str(exc) and "newer version" not in str(exc):
            raise
    target.unlink()
    export = setup.work / "history.parquet"
    con = duckdb.connect(str(history), read_only=True)
    try:
        con.execute("SET TimeZone = 'UTC'")
        ddl = con.execute("SELECT sql FROM duckdb_tables() WHERE table_name = 'events'").fetchall()
        if not export.exists():
            con.execute(f"COPY (FROM events) TO '{export}' (FORMAT parquet)")
    finally:
        con.close()
    peer_sql(
        peer.python,
        target,
        [
            (ddl[0][0], []),
            ("INSERT INTO events SELECT * FROM read_parquet(?)", [str(export)]),
            ("CHECKPOINT", []),
        ],
    )
    return "its DuckDB cannot open a DuckDB 2.x file: imported from a Parquet export"


EVENTS_FINGERPRINT = (
    "SELECT count(*), min(epoch_us(received_at)), max(epoch_us(received_at)), "
    "sum(epoch_us(received_at) // 1000000) FROM {table}"
)


def verify_copy(label: str, python: Path | None, path: Path, expected: list[object]) -> None:
    """The copy holds the same events (count, first and last arrival, sum of arrivals)."""
    store = Store(label, path, "events", python, (datetime.min, datetime.max))
    got = read_store(store, EVENTS_FINGERPRINT, [])[0]
    assert got == expected, f"{label}'s copy of the events differs: {got} != {expected}"


def count_ran(output: str, pattern: str) -> int:
    match = re.search(pattern, output)
    if match is None:
        raise SystemExit(f"unexpected output:\n{output[-2000:]}")
    return int(match.group(1))


def intervals_ran(output: str) -> int:
    """Intervals a `headwater run` reports: it says "Nothing is due" rather than "Ran 0"."""
    if re.search(r"^Nothing is due\b", output, re.MULTILINE):
        return 0
    return count_ran(output, r"Ran (\d+) interval")


def last_full_hour() -> datetime:
    return datetime.now(UTC).replace(minute=0, second=0, microsecond=0)


def bench(args: argparse.Namespace, work: Path) -> None:
    from headwater.store.duckdb import DuckDBEngine

    now = datetime.now(UTC)
    end = now.replace(minute=0, second=0, microsecond=0)
    backfill_end = end - args.new_hours * HOUR
    timeline = Timeline(backfill_end - args.days * 24 * HOUR, backfill_end, end)
    setup = Setup(args.rows, args.days, args.new_hours, args.repeats, work, timeline)
    tools = set(args.tools.split(","))
    minutes_left = 60 - now.minute
    if minutes_left < 20 and not args.quick:
        log(f"note: the hour turns in {minutes_left} min; clock-driven runs then find it due")

    peers = [p for p in (DBT, SQLMESH) if p.name in tools]
    for peer in peers:
        ensure_peer(peer)

    history, parquets = prepare_data(setup)
    expected = read_store(
        Store("history", history, "events", None, (now, now)), EVENTS_FINGERPRINT, []
    )[0]

    rows: dict[str, Row] = {}
    stores: list[Store] = []
    hw: HeadwaterInProcess | None = None
    bare: BareSQL | None = None
    full_span = (timeline.start, timeline.end)
    history_span = (timeline.start, timeline.backfill_end)
    versions = {
        "headwater": peer_version(Path(sys.executable), "headwater"),
        "duckdb": duckdb.__version__,
    }

    # -- copies and projects (untimed) --
    hw_dir, cli_dir = work / "headwater-inprocess", work / "headwater-cli"
    hwb_dir, clib_dir = work / "headwater-inprocess-batched", work / "headwater-cli-batched"
    batch = args.batch_size or timeline.history_hours
    if "headwater" in tools:
        for folder in (hw_dir, cli_dir):
            store = headwater_project(folder, history)
            verify_copy("headwater", None, store, expected)
        rows["hw"] = Row("Headwater, in-process service")
        rows["cli"] = Row("Headwater, `headwater` CLI")
        for folder in (hwb_dir, clib_dir):
            store = headwater_project(folder, history, batch)
            verify_copy("headwater", None, store, expected)
        rows["hwb"] = Row("Headwater in-process, batched")
        rows["clib"] = Row("Headwater CLI, batched")
    sql_path, proc_path = work / "bare.duckdb", work / "bare-process.duckdb"
    if "sql" in tools:
        shutil.copyfile(history, sql_path)
        rows["sql"] = Row("bare SQL, open connection")
        rows["sqlproc"] = Row("bare SQL, new python process")
    dbt_dir, mesh_dir = work / "dbt", work / "sqlmesh"
    for peer, folder in ((DBT, dbt_dir), (SQLMESH, mesh_dir)):
        if peer not in peers:
            continue
        folder.mkdir()
        db = folder / WAREHOUSE
        how = peer_store(peer, history, db, setup)
        verify_copy(peer.name, peer.python, db, expected)
        peer_duckdb = peer_version(peer.python, "duckdb")
        if peer is DBT:
            dbt_project(folder, db, timeline.start)
            versions["dbt"] = (
                f"dbt-core {peer_version(peer.python, 'dbt-core')}, dbt-duckdb "
                f"{peer_version(peer.python, 'dbt-duckdb')} (DuckDB {peer_duckdb}; {how})"
            )
            rows["dbt"] = Row("dbt-duckdb (`dbt run`)")
        else:
            sqlmesh_project(folder, db, timeline.start)
            versions["sqlmesh"] = (
                f"SQLMesh {peer_version(peer.python, 'sqlmesh')} (DuckDB {peer_duckdb}; {how})"
            )
            rows["sqlmesh"] = Row("SQLMesh (`sqlmesh run`)")

    # Warm-ups, untimed: bytecode compiled, dbt's parse cache written, as in a live project.
    if "headwater" in tools:
        run_cli([HEADWATER_CLI, "-p", cli_dir, "pipelines"], cwd=cli_dir)
    if "sql" in tools:
        run_cli([sys.executable, "-c", "import duckdb"], cwd=work)
    if SQLMESH in peers:
        run_cli([SQLMESH.executable, "-p", mesh_dir, "info"], cwd=mesh_dir)
    dbt_cmd: list[str | Path] = [DBT.executable]
    dbt_flags: list[str | Path] = ["--profiles-dir", dbt_dir, "--project-dir", dbt_dir]
    mesh_cmd: list[str | Path] = [SQLMESH.executable, "-p", mesh_dir]
    hours = timeline.history_hours

    # -- 1. history --
    log(f"backfilling {hours} hours")
    if "headwater" in tools:
        hw = HeadwaterInProcess(hw_dir)
        hw.now = timeline.backfill_end + timedelta(minutes=1)
        seconds, results = timed(
            lambda: hw.service.backfill(PIPELINE, timeline.start, timeline.backfill_end)
        )
        assert len(results) == hours, len(results)
        rows["hw"].backfills.append((f"service.backfill, {hours} intervals", seconds))
        done = run_cli(
            [HEADWATER_CLI, "-p", cli_dir, "backfill", PIPELINE,
             "--start", iso(timeline.start), "--end", iso(timeline.backfill_end)],
            cwd=cli_dir, timeout=BACKFILL_TIMEOUT,
        )  # fmt: skip
        assert count_ran(done.stdout, r"Backfilled (\d+) intervals") == hours
        rows["cli"].backfills.append((f"headwater backfill, {hours} intervals", done.seconds))
        log(f"headwater: {rows['hw'].backfills[0][1]:.1f} s in-process, {done.seconds:.1f} s CLI")
        batched = HeadwaterInProcess(hwb_dir)
        batched.now = hw.now
        seconds, results = timed(
            lambda: batched.service.backfill(PIPELINE, timeline.start, timeline.backfill_end)
        )
        batched.close()
        assert len(results) == hours, len(results)
        runs_made = math.ceil(hours / batch)
        rows["hwb"].backfills.append(
            (f"service.backfill, batch_size {batch}: {runs(runs_made)}", seconds)
        )
        done = run_cli(
            [HEADWATER_CLI, "-p", clib_dir, "backfill", PIPELINE,
             "--start", iso(timeline.start), "--end", iso(timeline.backfill_end)],
            cwd=clib_dir, timeout=BACKFILL_TIMEOUT,
        )  # fmt: skip
        assert count_ran(done.stdout, r"Backfilled (\d+) intervals") == hours
        rows["clib"].backfills.append(
            (f"headwater backfill, batch_size {batch}: {runs(runs_made)}", done.seconds)
        )
        log(f"headwater, batch_size {batch}: {seconds:.1f} s in-process, {done.seconds:.1f} s CLI")
    if "sql" in tools:
        bare = BareSQL(sql_path)

        def loop() -> None:
            assert bare is not None
            for i in range(hours):
                bare.run(timeline.start + i * HOUR, timeline.start + (i + 1) * HOUR)

        seconds, _ = timed(loop)
        rows["sql"].backfills.append((f"{hours} transactions", seconds))
        seconds, _ = timed(lambda: bare.once(timeline.start, timeline.backfill_end))
        rows["sql"].backfills.append(("one statement", seconds))
        # The new-process variant runs on its own copy: the open connection locks this one.
        bare.con.execute("CHECKPOINT")
        shutil.copyfile(sql_path, proc_path)
    if DBT in peers:
        run_cli([*dbt_cmd, "parse", *dbt_flags], cwd=dbt_dir)  # what a project has anyway
        done = run_cli(
            [*dbt_cmd, "run", "-s", PIPELINE, *dbt_flags], cwd=dbt_dir, timeout=BACKFILL_TIMEOUT
        )
        rows["dbt"].backfills.append(("first run: one query", done.seconds))
        done = run_cli(
            [*dbt_cmd, "run", "-s", f"{PIPELINE}_mb", *dbt_flags,
             "--event-time-start", iso(timeline.start),
             "--event-time-end", iso(timeline.backfill_end)],
            cwd=dbt_dir, timeout=BACKFILL_TIMEOUT,
        )  # fmt: skip
        batches = count_ran(done.stdout, r"Batch \d+ of (\d+)")
        assert batches == hours, f"dbt microbatch ran {batches} batches"
        rows["dbt"].backfills.append((f"microbatch, {batches} batches", done.seconds))
        log(f"dbt: {rows['dbt'].backfills}")
    if SQLMESH in peers:
        done = run_cli(
            [*mesh_cmd, "plan", "--auto-apply", "--no-prompts",
             "--execution-time", iso(timeline.backfill_end + timedelta(minutes=1))],
            cwd=mesh_dir, timeout=BACKFILL_TIMEOUT,
        )  # fmt: skip
        rows["sqlmesh"].backfills.append(("sqlmesh plan: one batch", done.seconds))
        log(f"sqlmesh: {done.seconds:.1f} s")

    # -- 2. new hours, one at a time --
    for hour, parquet in zip(timeline.new_hours, parquets, strict=True):
        log(f"new hour {iso(hour)}")
        if hw is not None:
            hw.append(parquet)
            engine = DuckDBEngine.open(cli_dir / ".headwater" / "events.duckdb")
            engine.execute("INSERT INTO events SELECT * FROM read_parquet(?)", [str(parquet)])
            engine.close()
        if bare is not None:
            bare.append(parquet)
            with contextlib.closing(duckdb.connect(str(proc_path))) as con:
                con.execute("INSERT INTO events SELECT * FROM read_parquet(?)", [str(parquet)])
        for peer, folder in ((DBT, dbt_dir), (SQLMESH, mesh_dir)):
            if peer in peers:
                peer_sql(
                    peer.python,
                    folder / WAREHOUSE,
                    [("INSERT INTO events SELECT * FROM read_parquet(?)", [str(parquet)])],
                )
        if hw is not None:
            hw.now = hour + HOUR + timedelta(minutes=1)
            seconds, results = timed(hw.service.run_due)
            assert [r.interval.start for r in results] == [hour], results
            rows["hw"].incremental.append(seconds)
            done = run_cli(
                [HEADWATER_CLI, "-p", cli_dir, "run", PIPELINE,
                 "--start", iso(hour), "--end", iso(hour + HOUR)],
                cwd=cli_dir,
            )  # fmt: skip
            assert intervals_ran(done.stdout) == 1
            rows["cli"].incremental.append(done.seconds)
        if bare is not None:
            started = time.perf_counter()
            bare.run(hour, hour + HOUR)
            rows["sql"].incremental.append(time.perf_counter() - started)
            done = run_cli(bare_process(proc_path, hour, hour + HOUR), cwd=work)
            rows["sqlproc"].incremental.append(done.seconds)
        if DBT in peers:
            done = run_cli([*dbt_cmd, "run", "-s", PIPELINE, *dbt_flags], cwd=dbt_dir)
            rows["dbt"].incremental.append(done.seconds)
        if SQLMESH in peers:
            done = run_cli([*mesh_cmd, "run", "--end", iso(hour + HOUR)], cwd=mesh_dir)
            rows["sqlmesh"].incremental.append(done.seconds)

    # -- 3. nothing new --
    log("runs with nothing new")
    due_cmd: list[str | Path] = [HEADWATER_CLI, "-p", cli_dir, "run", "--due"]
    caught_up_to = last_full_hour()
    if hw is not None:
        hw.now = timeline.end + timedelta(minutes=1)
        # Clock-driven CLIs first catch up with any hour that turned since the data were made.
        caught_up = run_cli(due_cmd, cwd=cli_dir)
        extra = intervals_ran(caught_up.stdout)
        if extra:
            setup.notes.append(f"headwater run --due first caught up {extra} empty hour(s)")
    if SQLMESH in peers:
        run_cli([*mesh_cmd, "run"], cwd=mesh_dir)
    empty = (timeline.end + 2 * HOUR, timeline.end + 3 * HOUR)
    for _ in range(args.repeats):
        if hw is not None:
            seconds, results = timed(hw.service.run_due)
            assert results == [], results
            rows["hw"].idle.append(seconds)
            done = run_cli(due_cmd, cwd=cli_dir)
            if intervals_ran(done.stdout) and last_full_hour() != caught_up_to:
                # The real clock turned an hour since the catch-up, and that hour fell due:
                # not a run with nothing new, so it is timed again.
                caught_up_to = last_full_hour()
                done = run_cli(due_cmd, cwd=cli_dir)
            assert intervals_ran(done.stdout) == 0, done.stdout
            rows["cli"].idle.append(done.seconds)
        if bare is not None:
            seconds, _ = timed(lambda: bare.run(*empty))
            rows["sql"].idle.append(seconds)
            done = run_cli(bare_process(proc_path, *empty), cwd=work)
            rows["sqlproc"].idle.append(done.seconds)
        if DBT in peers:
            done = run_cli([*dbt_cmd, "run", "-s", PIPELINE, *dbt_flags], cwd=dbt_dir)
            rows["dbt"].idle.append(done.seconds)
        if SQLMESH in peers:
            done = run_cli([*mesh_cmd, "run"], cwd=mesh_dir)
            rows["sqlmesh"].idle.append(done.seconds)

    # -- 4. profiles (after the measurements, so they perturb nothing) --
    profiles: list[str] = []
    if hw is not None:
        last = timeline.new_hours[-1]
        profiler = cProfile.Profile()
        profiler.enable()
        hw.service.run(PIPELINE, last, last + HOUR)  # the same work as the incremental run
        profiler.disable()
        profiles += profile_phases(profiler, "in-process, one hour (service.run of the last again)")
        profiler = cProfile.Profile()
        profiler.enable()
        hw.service.run_due()
        profiler.disable()
        profiles += profile_phases(profiler, "in-process, nothing due (service.run_due)")
        hw.close()
        profiles += profile_cli(cli_dir)
    if bare is not None:
        bare.close()

    # -- 5. same numbers everywhere --
    if "headwater" in tools:
        for label, folder in (("Headwater in-process", hw_dir), ("Headwater CLI", cli_dir)):
            path = folder / ".headwater" / "events.duckdb"
            stores.append(Store(label, path, PIPELINE, None, full_span))
        for label, folder in (
            ("Headwater in-process, batched", hwb_dir),
            ("Headwater CLI, batched", clib_dir),
        ):
            path = folder / ".headwater" / "events.duckdb"
            stores.append(Store(label, path, PIPELINE, None, history_span))
    if "sql" in tools:
        stores += [
            Store("bare SQL", sql_path, PIPELINE, None, full_span),
            Store("bare SQL, new process", proc_path, PIPELINE, None, full_span),
            Store("bare SQL, one statement", sql_path, f"{PIPELINE}_once", None, history_span),
        ]
    if DBT in peers:
        db = dbt_dir / WAREHOUSE
        stores += [
            Store("dbt-duckdb delete+insert", db, f"main.{PIPELINE}", DBT.python, full_span),
            Store("dbt-duckdb microbatch", db, f"main.{PIPELINE}_mb", DBT.python, history_span),
        ]
    if SQLMESH in peers:
        db = mesh_dir / WAREHOUSE
        stores.append(Store("SQLMesh", db, f"analytics.{PIPELINE}", SQLMESH.python, full_span))
    middle = timeline.start + (hours // 2) * HOUR
    checks = check_outputs(stores, [middle, timeline.new_hours[-1]])

    report(args, setup, versions, rows, checks, profiles)


def report(
    args: argparse.Namespace,
    setup: Setup,
    versions: dict[str, str],
    rows: dict[str, Row],
    checks: list[str],
    profiles: list[str],
) -> None:
    tl = setup.timeline
    print()
    print("Pipeline benchmark: hourly_event_counts (events and distinct people per hour, source,")
    print("event name), the same job and the same events in every tool")
    print()
    print("Conditions")
    print(f"  machine     {os.cpu_count()} CPUs, {platform.machine()}, {platform.platform()}")
    print(f"  python      {platform.python_version()}")
    print(
        f"  load        1-minute load average {setup.load[0]:.2f} at the start, "
        f"{os.getloadavg()[0]:.2f} at the end (other work on the machine perturbs the figures)"
    )
    print(f"  headwater   {versions['headwater']} (DuckDB {versions['duckdb']})")
    for key in ("dbt", "sqlmesh"):
        if key in versions:
            print(f"  {key:<11} {versions[key]}")
    print(f"  history     {setup.days} days = {tl.history_hours} hours, {iso(tl.start)} .. "
          f"{iso(tl.backfill_end)} UTC")  # fmt: skip
    print(f"  new hours   {len(tl.new_hours)}, up to {iso(tl.end)} (the last full hour)")
    for note in setup.notes:
        print(f"  {note}")
    if args.quick:
        print(f"  {QUICK_NOTE}")
    print()
    print(
        f"Wall time. 'one new hour': median of {runs(len(tl.new_hours))}, each after one hour "
        f"of events arrived; 'nothing new': median of {runs(setup.repeats)} with nothing due "
        "(range in brackets)."
    )
    print()
    width = 32
    header = f"{'one new hour':<30} {'nothing new':<30} history ({tl.history_hours} hours)"
    print(f"  {'':<{width}} {header}")
    for row in rows.values():
        fills = "; ".join(f"{fmt_seconds(s)} ({what})" for what, s in row.backfills) or "-"
        print(
            f"  {row.label:<{width}} {fmt_spread(row.incremental):<30} "
            f"{fmt_spread(row.idle):<30} {fills}"
        )
    print()
    print("  How each runs:")
    print("    Headwater in-process: Workspace.run_due() on an open store and metadata")
    print("      (the scheduler inside `headwater up`); history: service.backfill.")
    print("    Headwater CLI: `headwater run hourly_event_counts --start H --end H+1h` per new")
    print("      hour (the CLI takes no clock: --due would run every hour up to the real now);")
    print("      nothing new: `headwater run --due`; history: `headwater backfill`. The CLI")
    print("      also delivers what it ran, as the command does: the example's files sink")
    print("      writes each hour to exports/ as Parquet (720 files for 30 days), which the")
    print("      in-process figures and the peers do not.")
    print("    bare SQL: BEGIN; DELETE the hour; INSERT ... SELECT; COMMIT (nothing new: an")
    print("      empty hour). New process: python -c, import duckdb, connect, that, exit.")
    print("    dbt: `dbt run -s hourly_event_counts`, delete+insert on hour, is_incremental()")
    print("      reads received_at >= max(hour) + 1 hour. History: the model's first run (one")
    print("      query over all of it) and dbt's own hourly backfill, a microbatch model run with")
    print("      --event-time-start/--event-time-end (one delete+insert per hour).")
    print("    Headwater, batch_size: the same pipeline with batch_size in its header, on copies")
    print("      of the history: service.backfill and `headwater backfill` (one query per batch).")
    print("    SQLMesh: `sqlmesh run --end H+1h` per new hour, `sqlmesh run` when nothing is new.")
    print("      History: `sqlmesh plan --auto-apply` (default batch_size: all missing hours in")
    print("      one query, then one delete+insert).")
    print()
    if args.quick:
        print(QUICK_NOTE)
        print()
    print("Recorded figures (reference machine, full run; for scale, not from this run)")
    for what, figure in REFERENCE_FIGURES:
        print(f"  {what:<58} {figure}")
    print()
    print("Targets")
    verdicts = targets(rows)
    for line in verdicts:
        print(f"  {line}")
    print()
    print("Same numbers in every tool")
    for line in checks:
        print(line)
    if profiles and (args.profile or any("MISSED" in v for v in verdicts)):
        print()
        print("Where Headwater's time goes")
        for line in profiles:
            print(line)


def targets(rows: dict[str, Row]) -> list[str]:
    lines = []

    def ratio(
        name: str, mine: float | None, theirs: float | None, limit: float, strict: bool
    ) -> None:
        if mine is None or theirs is None:
            return
        value = mine / theirs
        ok = value < limit if strict else value <= limit
        sign = "<" if strict else "<="
        verdict = "met" if ok else "MISSED"
        lines.append(f"{name:<58} {value:6.2f}  (target {sign} {limit:g})  {verdict}")

    hw, cli = rows.get("hw"), rows.get("cli")
    dbt, mesh = rows.get("dbt"), rows.get("sqlmesh")
    sql, proc = rows.get("sql"), rows.get("sqlproc")
    for mine, label in ((cli, "CLI"), (hw, "in-process")):
        if mine is None:
            continue
        if dbt is not None:
            ratio(f"nothing new: Headwater {label} / dbt-duckdb", median(mine.idle),
                  median(dbt.idle), TARGET_OVERHEAD_VS_DBT, False)  # fmt: skip
        if mesh is not None:
            ratio(f"nothing new: Headwater {label} / SQLMesh", median(mine.idle),
                  median(mesh.idle), TARGET_OVERHEAD_VS_SQLMESH, True)  # fmt: skip
    if hw is not None and sql is not None:
        ratio(
            "one new hour: Headwater in-process / bare SQL, open connection",
            median(hw.incremental),
            median(sql.incremental),
            TARGET_INCREMENTAL_VS_SQL,
            False,
        )
    if cli is not None and proc is not None:
        ratio(
            "one new hour: Headwater CLI / bare SQL, new process",
            median(cli.incremental),
            median(proc.incremental),
            TARGET_INCREMENTAL_VS_SQL,
            False,
        )
    mesh_fill = _backfill(mesh)
    for mine, label in ((rows.get("clib"), "CLI"), (rows.get("hwb"), "in-process")):
        if mine is not None:
            ratio(f"history: Headwater {label}, batched / SQLMesh", _backfill(mine), mesh_fill,
                  TARGET_BACKFILL_VS_SQLMESH, False)  # fmt: skip
    if lines:
        lines.append("(the like-for-like pairs: CLI against the peers' CLIs; in-process against")
        lines.append(" the open connection; the other pairs are given for scale)")
    return lines


def _backfill(row: Row | None) -> float | None:
    """The first backfill figure of a tool (SQLMesh's plan, Headwater's batched fill)."""
    return row.backfills[0][1] if row is not None and row.backfills else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument(
        "--quick",
        action="store_true",
        help="5,000 events over 1 day, 1 new hour, 1 repeat; Headwater and bare SQL only, "
        "unless --tools names the peers",
    )
    parser.add_argument("--rows", type=int, help="events in all (default 5,000,000)")
    parser.add_argument("--days", type=int, help="days of history to backfill (default 30)")
    parser.add_argument("--new-hours", type=int, help="hours arriving after the backfill (3)")
    parser.add_argument("--repeats", type=int, help="runs with nothing new per tool (3)")
    parser.add_argument(
        "--tools",
        help="comma-separated subset of headwater,sql,dbt,sqlmesh (all; --quick: headwater,sql)",
    )
    parser.add_argument(
        "--batch-size",
        type=int,
        help="batch_size of Headwater's batched backfills (default: all of history at once)",
    )
    parser.add_argument("--workdir", type=Path, help="keep the stores and projects here")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    parser.add_argument("--profile", action="store_true", help="print profiles even if targets met")
    args = parser.parse_args(argv)
    # The peers are left out of a quick run by default: installing them needs the package
    # index, and their CLIs alone take tens of seconds.
    defaults = (
        (5_000, 1, 1, 1, "headwater,sql")
        if args.quick
        else (5_000_000, 30, 3, 3, "headwater,sql,dbt,sqlmesh")
    )
    names = ("rows", "days", "new_hours", "repeats", "tools")
    for name, default in zip(names, defaults, strict=True):
        if getattr(args, name) is None:
            setattr(args, name, default)
    if args.new_hours < 1 or args.days < 1 or args.repeats < 1:
        parser.error("--days, --new-hours and --repeats must be at least 1")
    if args.batch_size is not None and args.batch_size < 1:
        parser.error("--batch-size must be at least 1")
    unknown = set(args.tools.split(",")) - {"headwater", "sql", "dbt", "sqlmesh"}
    if unknown:
        parser.error(f"unknown tools: {', '.join(sorted(unknown))}")
    if args.workdir is not None and args.workdir.exists() and any(args.workdir.iterdir()):
        parser.error(f"{args.workdir} is not empty")
    keep = args.keep or args.workdir is not None
    work = args.workdir or Path(tempfile.mkdtemp(prefix="hw-pipelines-"))
    work.mkdir(parents=True, exist_ok=True)
    # A SIGTERM unwinds like Ctrl-C, so the temporary folder is removed.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        bench(args, work)
    finally:
        if keep:
            print(f"\nkept: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    with contextlib.suppress(KeyboardInterrupt):
        sys.exit(main())
