"""A hot PostgreSQL store offloaded into a warehouse, end to end.

The collectors' side (projects, ``headwater --env prod serve collector`` child
processes, client threads that fail over when one is SIGKILLed) is
``test_collectors_postgres``'s, imported from there; this module adds a
``[environments.prod.warehouse]`` and checks what reaches it:

* two collectors under load, one SIGKILLed, offloaded by ``headwater --env prod
  run --due`` into a real Spark warehouse (Parquet files read here with pyarrow):
  every acknowledged event exactly once, the failed events, spans that tile time
  and count the warehouse's rows, and nothing changed by a second run; then the
  same hot store offloaded in process into BigQuery through the recording client
  (BigQuery cannot run here): every acknowledged event once in the last load of its
  hourly partition, no query billed;
* events of several past hours offloaded into BigQuery through the recording client:
  hourly partitions loaded with WRITE_TRUNCATE, no query billed, nothing loaded twice;
* ``run --due`` SIGKILLed again and again in the middle of offloading two days of
  events into a PostgreSQL warehouse, then run to completion: no interval missing
  or loaded twice, and the dead process's lease does not hold up the next run.
"""

from __future__ import annotations

import bisect
import itertools
import json
import random
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pyarrow as pa
import pyarrow.dataset as ds
import pytest

from headwater.config.project import load_project
from headwater.runtime.workspace import Workspace
from headwater.state import StateStore
from headwater.state.offload import LEASE, Offloader
from headwater.store import schema
from headwater.store.bigquery.engine import BigQueryEngine
from headwater.store.engine import FLOOR_STALE_SECONDS
from tests.bigquery_fake import PROJECT, FakeClient
from tests.conftest import wait_for
from tests.engines.test_collectors_postgres import (
    HEADWATER,
    HOUR,
    SCHEMA,
    Collector,
    LoadRun,
    Prod,
    _past_rows,
    _run_load,
    event_row,
    ingest,
    make_prod,
)
from tests.pg import PostgresServer

METADATA = f"{SCHEMA}_metadata"
Span = tuple[datetime, datetime, int, int]  # interval_start, interval_end, events, failed


# -- the project: a prod store and a warehouse ------------------------------------------


class OffloadProd(Prod):
    """A ``prod`` environment with a warehouse; it tells :attr:`started` which collectors
    :func:`_run_load` starts, so a thread of this module can send to them too."""

    def __init__(self, base: Prod) -> None:
        super().__init__(base.root, base.key, base.url)
        self.started: list[Collector] = []
        self.up = threading.Event()

    def collectors(self, *names: str) -> list[Collector]:
        started = super().collectors(*names)
        self.started = started
        self.up.set()
        return started

    def spans(self) -> list[Span]:
        """The ``offloads`` rows, oldest first."""
        return [
            (start, end, int(events), int(failed))
            for start, end, events, failed in self.rows(
                f"SELECT interval_start, interval_end, events, failed_events "
                f"FROM {METADATA}.offloads ORDER BY interval_start"
            )
        ]

    def offloads(self) -> int:
        """How many spans are recorded (0 before the metadata exists)."""
        found = self.rows("SELECT to_regclass(%s)", [f"{METADATA}.offloads"])
        if found[0][0] is None:
            return 0
        [(count,)] = self.rows(f"SELECT count(*) FROM {METADATA}.offloads")
        return int(count)

    def due(self, timeout: float = 120.0) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*HEADWATER, "--project", str(self.root), "--env", "prod", "run", "--due"],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=timeout,
            check=False,
        )

    def spawn_due(self, name: str) -> subprocess.Popen[bytes]:
        with (self.root / f"{name}.log").open("wb") as log:
            return subprocess.Popen(
                [*HEADWATER, "--project", str(self.root), "--env", "prod", "run", "--due"],
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
            )


def make_offload_prod(server: PostgresServer, folder: Path, warehouse: str) -> OffloadProd:
    """A project whose ``prod`` store is PostgreSQL (``test_collectors_postgres``'s), with
    ``[environments.prod.warehouse]`` holding the lines of ``warehouse``."""
    prod = OffloadProd(make_prod(server, folder))
    with (prod.root / "headwater.toml").open("a", encoding="utf-8") as toml:
        toml.write("\n[environments.prod.warehouse]\n" + warehouse)
    return prod


def no_pipelines(prod: Prod) -> None:
    """Take the example pipelines out: the offload is under test, not them."""
    for path in (prod.root / "pipelines").iterdir():
        path.unlink()


def assert_tiled(spans: Sequence[Span]) -> None:
    """The spans follow one another with no gap or overlap."""
    assert spans, "nothing was offloaded"
    for (_s, end, *_a), (start, _e, *_b) in itertools.pairwise(spans):
        assert start == end, f"spans do not tile: one ends {end}, the next starts {start}"
    for start, end, *_ in spans:
        assert start < end, f"an empty span {start} .. {end}"


def per_span(spans: Sequence[Span], times: Sequence[datetime]) -> list[int]:
    """How many of ``times`` fall in each span (and asserts none falls outside them)."""
    counts = [0] * len(spans)
    starts = [s[0] for s in spans]
    outside = 0
    for moment in times:
        index = bisect.bisect_right(starts, moment) - 1
        if index < 0 or moment >= spans[index][1]:
            outside += 1
        else:
            counts[index] += 1
    assert outside == 0, f"{outside} warehouse rows arrived outside every offloaded span"
    return counts


# -- 1. two collectors, one SIGKILLed, offloaded into Spark -------------------------------


@dataclass
class _Invalid:
    """A client that sends batches of invalid events (no identity): each is stored in
    ``failed_events`` with its payload, where its marker is found."""

    acked: set[str] = field(default_factory=set)
    errors: list[str] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self, prod: OffloadProd) -> None:
        try:
            if not prod.up.wait(60):
                return
            urls = [c.url for c in prod.started]
            index = 1  # the survivor (b) first, then a; a dead one is left for good
            with httpx.Client(auth=(prod.key, ""), timeout=10.0) as http:
                for seq in range(10_000):
                    if self.stop.is_set():
                        return
                    markers = [f"bad-{seq}-{i}" for i in range(2)]
                    body = {"batch": [{"type": "track", "event": "No Identity",
                                       "messageId": m} for m in markers]}  # fmt: skip
                    try:
                        response = http.post(f"{urls[index]}/v1/batch", json=body)
                    except httpx.TransportError:
                        index = 1 - index
                        time.sleep(0.05)
                        continue
                    if response.status_code >= 500:
                        index = 1 - index
                        continue
                    answer = response.json()
                    if response.status_code != 200 or len(answer["rejected"]) != 2:
                        raise AssertionError(f"{response.status_code}: {answer}")
                    self.acked.update(markers)
                    time.sleep(0.05)
        except Exception as exc:
            self.errors.append(repr(exc))


def _warehouse_table(folder: Path, table: str, columns: list[str]) -> pa.Table:
    """A table of the Spark warehouse, read with pyarrow (hidden files are skipped)."""
    if not (folder / table).exists():
        return pa.table({c: [] for c in columns})
    return ds.dataset(folder / table, format="parquet", partitioning="hive").to_table(
        columns=columns
    )


def _files(folder: Path) -> dict[str, tuple[int, int]]:
    return {
        str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_two_collectors_one_sigkilled_offloaded_into_spark(
    pg_server: PostgresServer, tmp_path: Path
) -> None:
    warehouse = tmp_path / "warehouse"
    prod = make_offload_prod(
        pg_server,
        tmp_path,
        f'engine = "spark"\nwarehouse = "{warehouse}"\noffload_interval = "10s"\n',
    )
    no_pipelines(prod)
    invalid = _Invalid()
    sender = threading.Thread(target=invalid.run, args=(prod,), daemon=True)
    sender.start()
    try:
        loaded: LoadRun = _run_load(prod)
    finally:
        invalid.stop.set()
        prod.up.set()
        sender.join(30)
    ledger = loaded.ledger
    where = f"(seed {loaded.seed}, failed attempts {dict(ledger.outcomes)})"
    assert ledger.errors == [], ledger.errors[:3]
    assert invalid.errors == [], invalid.errors[:3]
    assert loaded.survivor_exit == 0
    assert ledger.acks_after_kill > 0, where
    assert ledger.failovers > 0, where
    assert invalid.acked, "no batch of invalid events was answered"

    # The killed collector's floor stays until it is stale; the survivor's is retired.
    floors = prod.floors()
    assert set(floors) == {loaded.killed_pid}, floors
    killed_floor, killed_seen = floors[loaded.killed_pid]
    hot = prod.rows(f"SELECT source, message_id, received_at FROM {SCHEMA}.events")
    hot_failed = prod.rows(f"SELECT id, payload, received_at FROM {SCHEMA}.failed_events")
    last_arrival = max(r[2] for r in [*hot, *hot_failed])

    # While the killed collector's floor holds, nothing at or past it may be offloaded.
    early = prod.due()
    early_end = datetime.now(UTC)
    assert early.returncode == 0, early.stdout + early.stderr
    early_spans = prod.spans()
    if early_end < killed_seen + timedelta(seconds=FLOOR_STALE_SECONDS - 1):
        assert early_spans, f"the first run offloaded nothing:\n{early.stdout}"
        assert early_spans[-1][1] <= killed_floor, (
            f"offloaded up to {early_spans[-1][1]}, past the live floor {killed_floor}"
        )

    # Once the floor is stale and the last arrival's interval has ended, all of it goes.
    engine = prod.engine()
    try:
        wait_for(
            "the killed collector's floor to go stale",
            lambda: engine.floors is not None and engine.floors.lowest(FLOOR_STALE_SECONDS) is None,
            timeout=FLOOR_STALE_SECONDS + 15,
        )
    finally:
        engine.close()
    wait_for(
        "the last arrival's interval to end",
        lambda: datetime.now(UTC) >= last_arrival + timedelta(seconds=10),
        timeout=15,
    )
    result = prod.due()
    assert result.returncode == 0, result.stdout + result.stderr
    if not early_spans or early_spans[-1][1] <= last_arrival:
        # (A slow machine can make the early pass late enough to move everything already.)
        assert "Offloaded" in result.stdout, result.stdout

    spans = prod.spans()
    assert_tiled(spans)
    assert spans[: len(early_spans)] == early_spans, "a span recorded before was changed"
    assert spans[-1][1] > last_arrival, f"progress {spans[-1][1]} is not past {last_arrival}"

    events = _warehouse_table(warehouse, "events", ["source", "message_id", "received_at"])
    stored = Counter(zip(events["source"].to_pylist(), events["message_id"].to_pylist(),
                         strict=True))  # fmt: skip
    twice = {k: n for k, n in stored.items() if n > 1}
    assert twice == {}, f"events twice in the warehouse {where}: {list(twice)[:5]}"
    ids = {m for (_s, m) in stored}
    missing = ledger.acked - ids
    assert not missing, f"{len(missing)} acknowledged events not in the warehouse {where}"
    invented = ids - ledger.sent
    assert not invented, f"warehouse events nobody sent: {sorted(invented)[:5]}"
    assert Counter((s, m) for s, m, _r in hot) == stored, "the warehouse differs from the store"

    failed = _warehouse_table(warehouse, "failed_events", ["id", "payload", "received_at"])
    assert sorted(failed["id"].to_pylist()) == sorted(r[0] for r in hot_failed)
    markers = {json.loads(p)["messageId"] for p in failed["payload"].to_pylist()}
    assert invalid.acked <= markers, sorted(invalid.acked - markers)[:5]

    counted = per_span(spans, events["received_at"].to_pylist())
    assert counted == [s[2] for s in spans], "a span's count differs from its rows"
    assert per_span(spans, failed["received_at"].to_pylist()) == [s[3] for s in spans]

    # Again: nothing to load. At most a new empty span for the time that went by.
    files = _files(warehouse / "events"), _files(warehouse / "failed_events")
    again = prod.due()
    assert again.returncode == 0, again.stdout + again.stderr
    assert "Offloaded" not in again.stdout, again.stdout
    assert (_files(warehouse / "events"), _files(warehouse / "failed_events")) == files
    later = prod.spans()
    assert later[: len(spans)] == spans
    assert all(s[2] == s[3] == 0 for s in later[len(spans) :]), later[len(spans) :]
    assert_tiled(later)

    # The same hot store offloaded into BigQuery through the recording client (hourly
    # partitions; the collectors are gone, so every hour up to the next is whole): the last
    # load of each partition holds every acknowledged event exactly once, with no query.
    fake = FakeClient()
    hot_engine = prod.engine()
    state = StateStore.in_folder(tmp_path / "bigquery-metadata")
    bq = BigQueryEngine.open(PROJECT, "headwater", None, 10**12, partition="HOUR", client=fake)
    after = last_arrival.replace(minute=0, second=0, microsecond=0) + 2 * HOUR
    try:
        offloader = Offloader(
            hot_engine, bq, state.offloads, state.leases, every=HOUR,
            retain=timedelta(days=7), floor=lambda: after, clock=lambda: after,
        )  # fmt: skip
        offloader.run()
    finally:
        state.close()
        hot_engine.close()
    assert fake.real_queries == [], [q.sql for q in fake.real_queries]
    last_load: dict[str, pa.Table] = {}
    for call in fake.loads:
        assert call.config.write_disposition == "WRITE_TRUNCATE"
        last_load[call.destination] = call.table
    loaded = Counter(
        m for name, table in last_load.items() if ".events$" in name
        for m in table["message_id"].to_pylist()
    )  # fmt: skip
    assert {m for m, n in loaded.items() if n > 1} == set()
    assert ledger.acked <= set(loaded), f"{len(ledger.acked - set(loaded))} missing {where}"
    assert sum(loaded.values()) == len(hot)


# -- 2. into BigQuery through the recording client ---------------------------------------


@pytest.mark.timeout(120)
def test_offload_into_bigquery_loads_each_hour_once(
    pg_server: PostgresServer, tmp_path: Path
) -> None:
    prod = make_offload_prod(pg_server, tmp_path, 'engine = "bigquery"\noffload_interval = "1h"\n')
    top = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    rows = _past_rows(top)  # 36 events an hour, 6 to 2 hours ago
    failed = pa.Table.from_pylist(
        [{"id": f"bad-{h}", "source": "web", "received_at": top - h * HOUR + timedelta(minutes=5),
          "code": "missing_identity", "field": "userId", "message": "no identity",
          "payload": "{}"} for h in (3, 5)],
        schema=schema.FAILED_EVENTS,
    )  # fmt: skip
    hot = prod.engine()
    fake = FakeClient()
    bigquery = BigQueryEngine.open(None, "hw", None, 10**9, partition="HOUR", client=fake)
    state = StateStore.beside_postgres(prod.url, METADATA)
    workspace = Workspace(load_project(prod.root, "prod"), bigquery, state, store=hot)
    try:
        assert all(ingest(hot, rows, failed))
        assert not any(ingest(hot, rows[::5]))  # sent again: duplicates, not stored

        queries, jobs = len(fake.real_queries), len(fake.jobs)
        result = workspace.offload()
        assert result is not None
        assert fake.real_queries[queries:] == [], "the offload billed queries"
        loads = fake.loads
        assert loads, "nothing was loaded"

        last: dict[str, pa.Table] = {}
        for call in loads:
            assert call.config.write_disposition == "WRITE_TRUNCATE", call
            _table, _, decorator = call.destination.rpartition("$")
            assert len(decorator) == 10, call.destination
            assert decorator.isdigit(), call.destination
            hour = datetime.strptime(decorator, "%Y%m%d%H").replace(tzinfo=UTC)
            received = call.table["received_at"].to_pylist()
            assert all(hour <= r < hour + HOUR for r in received), call.destination
            last[call.destination] = call.table

        events = [t for name, t in last.items() if name.rpartition("$")[0].endswith(".events")]
        loaded = Counter(
            (s, m) for t in events for s, m in zip(t["source"].to_pylist(),
                                                  t["message_id"].to_pylist(), strict=True)
        )  # fmt: skip
        assert loaded == Counter((r["source"], r["message_id"]) for r in rows)
        hours = {name.rpartition("$")[2] for name in last if ".events$" in name}
        assert hours == {f"{top - h * HOUR:%Y%m%d%H}" for h in range(2, 7)}
        bad = [t for name, t in last.items() if ".failed_events$" in name]
        assert sorted(i for t in bad for i in t["id"].to_pylist()) == ["bad-3", "bad-5"]

        spans = [(o.interval.start, o.interval.end, o.events, o.failed_events)
                 for o in state.offloads.spans()]  # fmt: skip
        assert_tiled(spans)
        assert sum(s[2] for s in spans) == len(rows)
        assert sum(s[3] for s in spans) == 2
        assert spans[-1][1] > top - 2 * HOUR

        jobs = len(fake.jobs)
        queries = len(fake.real_queries)
        assert workspace.offload() is not None
        assert len(fake.jobs) == jobs, "a second offload made jobs"
        assert len(fake.real_queries) == queries
    finally:
        workspace.close()


# -- 3. run --due SIGKILLed while offloading, then run to completion ----------------------

_HOURS = 48
_PER_HOUR = 500


def _lease(prod: Prod) -> tuple[str, datetime] | None:
    found = prod.rows(
        f"SELECT owner, expires_at FROM {METADATA}.leases WHERE pipeline = %s", [LEASE]
    )
    return (str(found[0][0]), found[0][1]) if found else None


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_offloader_sigkilled_mid_load_then_run_again(
    pg_server: PostgresServer, tmp_path: Path
) -> None:
    prod = make_offload_prod(
        pg_server,
        tmp_path,
        'engine = "postgres"\nurl = "${HW_TEST_PROD_URL}"\nschema = "hw_warehouse"\n'
        'offload_interval = "30m"\n',
    )
    no_pipelines(prod)
    seed = random.randrange(2**32)
    rng = random.Random(seed)
    top = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    first = top - _HOURS * HOUR
    hot = prod.engine()
    try:
        for h in range(_HOURS):
            rows = [
                event_row(f"k-{h}-{i}", first + h * HOUR + timedelta(seconds=rng.randrange(3600),
                          microseconds=i), source=("web", "backend")[i % 2])
                for i in range(_PER_HOUR)
            ]  # fmt: skip
            bad = pa.Table.from_pylist(
                [{"id": f"bad-{h}", "source": "web", "received_at": first + h * HOUR,
                  "code": "missing_identity", "field": "userId", "message": "m",
                  "payload": "{}"}] if h % 7 == 0 else [],
                schema=schema.FAILED_EVENTS,
            )  # fmt: skip
            assert all(ingest(hot, rows, bad))
    finally:
        hot.close()

    # (how, spans recorded once killed, whether the dead process still held the lease)
    kills: list[tuple[str, int, bool]] = []
    slow_takeovers: list[float] = []
    for attempt in range(6):
        before = prod.offloads()
        process = prod.spawn_due(f"due-{attempt}")
        started = time.monotonic()
        try:
            if attempt % 2 == 0:
                how = "on the first new span"
                wait_for("the offload to record a span",
                         lambda b=before, p=process: p.poll() is not None or prod.offloads() > b,
                         timeout=30)  # fmt: skip
                if process.poll() is None and before:
                    slow_takeovers.append(time.monotonic() - started)
                time.sleep(rng.uniform(0, 0.5))  # mid-way through the next
            else:
                how = "after a random delay"
                # A random moment, but never more than a few spans in: how fast the
                # offload goes varies by machine, and later attempts need work left.
                deadline = started + rng.uniform(0.5, 4.0)
                while (time.monotonic() < deadline and process.poll() is None
                       and prod.offloads() < before + 6):  # fmt: skip
                    time.sleep(0.05)
            if process.poll() is not None:
                break  # it finished: nothing left to interrupt
            process.send_signal(signal.SIGKILL)
        finally:
            if process.poll() is None:
                process.kill()
            process.wait(30)
        lease = _lease(prod)
        held = lease is not None and lease[0].split(":")[1] == str(process.pid)
        kills.append((how, prod.offloads(), held and lease[1] > datetime.now(UTC)))
    where = f"(seed {seed}, kills {kills})"
    assert len(kills) >= 3, f"the offload finished before it could be killed {where}"
    assert any(k[2] for k in kills), f"no kill left the offload's lease held {where}"
    # A new run took the dead process's lease over at once (its TTL is 60 s).
    assert all(t < 20 for t in slow_takeovers), f"slow takeovers {slow_takeovers} {where}"

    began = time.monotonic()
    result = prod.due()
    assert result.returncode == 0, result.stdout + result.stderr
    assert time.monotonic() - began < 60, "the last run waited on a stale lease"
    lease = _lease(prod)
    assert lease is None or lease[1] <= datetime.now(UTC), f"lease left held: {lease}"

    spans = prod.spans()
    assert_tiled(spans)
    assert spans[0][0] <= first, spans[0]
    assert spans[-1][1] >= top, spans[-1]

    def keys(table: str) -> Counter[tuple[str, str]]:
        return Counter(
            (str(s), str(m)) for s, m in prod.rows(f"SELECT source, message_id FROM {table}.events")
        )

    warehouse = keys("hw_warehouse")
    twice = {k: n for k, n in warehouse.items() if n > 1}
    assert twice == {}, f"loaded twice {where}: {list(twice)[:5]}"
    assert warehouse == keys(SCHEMA), f"the warehouse differs from the store {where}"
    assert len(warehouse) == _HOURS * _PER_HOUR

    arrived = [r for (r,) in prod.rows("SELECT received_at FROM hw_warehouse.events")]
    assert per_span(spans, arrived) == [s[2] for s in spans], where
    hot_arrived = [r for (r,) in prod.rows(f"SELECT received_at FROM {SCHEMA}.events")]
    assert per_span(spans, hot_arrived) == [s[2] for s in spans], where
    bad_arrived = [r for (r,) in prod.rows("SELECT received_at FROM hw_warehouse.failed_events")]
    assert per_span(spans, bad_arrived) == [s[3] for s in spans], where
    assert sorted(i for (i,) in prod.rows("SELECT id FROM hw_warehouse.failed_events")) == sorted(
        f"bad-{h}" for h in range(0, _HOURS, 7)
    )
