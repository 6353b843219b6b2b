"""Every benchmark's ``--quick`` run completes and prints its tables.

A benchmark nobody runs stops working without anyone noticing; the quick runs make
``make test`` notice. One test per ``benchmarks/*.py``: a new benchmark gets its test
without being listed, and fails until :data:`TABLES` says what it prints.

Each run gets its own temporary folder (``TMPDIR``), which must be empty when it ends:
a benchmark removes what it made. Its process group must be gone too: it stops what it
started.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCHMARKS = sorted((ROOT / "benchmarks").glob("*.py"))

#: What every quick run prints, with its conditions and again with its results.
QUICK_NOTE = "QUICK RUN (--quick):"


@dataclass(frozen=True)
class Table:
    """A table as a benchmark prints it: a line that starts with ``title``; within the next
    three lines one with the ``headings`` in that order (none: the title's line stands for
    them); and right after that line (and a rule of dashes, if any), a row."""

    title: str
    headings: tuple[str, ...] = ()


_SUMMARY = Table("Summary against the targets:", ("measure", "measured", "target", "result"))

#: Per benchmark, the tables its report must hold.
TABLES: dict[str, tuple[Table, ...]] = {
    "cli.py": (
        Table(
            "Wall time of each command",
            ("command", "p50 s", "min s", "x duckdb", "modules", "heavy"),
        ),
        Table("Targets"),
    ),
    "engines.py": (
        Table(
            "Throughput, closed loop, batches of 100 events",
            ("phase", "events/s", "req/s", "collectors", "postgres", "events/commit"),
        ),
        Table("Raw store ceiling:", ("raw ingest", "events/s", "rows", "p50 ms", "stored once")),
        Table(
            "Verification: events per phase tag in PostgreSQL",
            ("phase", "acknowledged", "stored", "extra", "check"),
        ),
        Table(
            "Pipelines, side by side",
            ("engine", "load", "backfill hourly", "backfill daily", "pass all", "pass ratio"),
        ),
        Table(
            "Offload rate: PostgreSQL hot store -> warehouse",
            ("run", "events", "seconds", "events/s", "time ratio", "warehouse loads s", "check"),
        ),
        Table(
            "BigQuery jobs per million events, direct path vs offload",
            ("path", "figures", "queries", "load jobs", "GB billed", "$ a day"),
        ),
        _SUMMARY,
    ),
    "ingest.py": (
        Table(
            "Throughput, closed loop, then the open-loop latency phase:",
            ("phase", "events/s", "req/s", "2xx", "events/commit", "VmHWM"),
        ),
        Table("Acknowledgement latency, open loop", ("p50", "p90", "p99", "max")),
        Table("Server resources", ("server", "RSS MB", "anon MB", "file MB", "cores")),
        Table("Raw store limit:", ("-row commits:", "events/s", "server best batch-100 / raw")),
        Table(
            "Checkpoint stalls:",
            ("events between", "checkpoints", "median ms", "max ms", "ms per 100k events"),
        ),
        Table(
            "Verification: COUNT(*) of the server's events",
            ("tag", "acknowledged", "stored", "extra", "check"),
        ),
        _SUMMARY,
    ),
    "models.py": (
        Table("Scoring", ("model", "path", "seconds", "rows/s", "peak MB")),
        _SUMMARY,
    ),
    "pipelines.py": (
        Table("Wall time.", ("one new hour", "nothing new", "history")),
        Table("Targets"),
        Table("Same numbers in every tool"),
    ),
    "serve.py": (
        Table("Point lookups, GET /api/v1/datasets/", ("p50", "p99", "max")),
        Table("Full dataset as Arrow", ("seconds", "rows/s")),
        Table("Webhook delivery"),
        Table("Targets"),
    ),
}

#: Seconds a quick run may take before it is stopped: generous, the machine is shared.
LIMITS = {"engines.py": 900}
LIMIT = 300


def find_table(lines: list[str], table: Table) -> str | None:
    """Why ``table`` is not in ``lines``, or ``None`` when it is."""
    starts = [i for i, line in enumerate(lines) if line.strip().startswith(table.title)]
    if not starts:
        return f"no line starts with {table.title!r}"
    pattern = re.compile(".*".join(re.escape(h) for h in table.headings))
    for start in starts:
        at = start
        if table.headings:
            found = [i for i in range(start + 1, start + 4) if pattern.search(_line(lines, i))]
            if not found:
                continue
            at = found[0]
        row = at + 1
        if _is_rule(_line(lines, row)):
            row += 1
        if _line(lines, row).strip() and not _is_rule(_line(lines, row)):
            return None
    return f"{table.title!r} is not followed by the headings {table.headings} and a row"


def _line(lines: list[str], i: int) -> str:
    return lines[i] if i < len(lines) else ""


def _is_rule(line: str) -> bool:
    return bool(line.strip()) and set(line.strip()) <= {"-", " "}


def _limit(script: Path) -> int:
    return LIMITS.get(script.name, LIMIT)


@pytest.mark.parametrize(
    "script",
    [pytest.param(s, id=s.stem, marks=pytest.mark.timeout(_limit(s) + 120)) for s in BENCHMARKS],
)
def test_quick_run_prints_its_tables(script: Path) -> None:
    tables = TABLES.get(script.name)
    assert tables, f"say in TABLES which tables {script.name} prints"
    # Short and reachable by the postgres user: PostgreSQL's socket and files go in here.
    scratch = Path(tempfile.mkdtemp(prefix="hwq-"))
    scratch.chmod(0o755)
    try:
        code, out, err, leftovers = _run(script, scratch)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    tail = f"\n--- stdout (end) ---\n{out[-4000:]}\n--- stderr (end) ---\n{err[-4000:]}"
    assert code == 0, f"{script.name} --quick exited with {code}{tail}"
    lines = out.splitlines()
    assert any(line.strip().startswith(QUICK_NOTE) for line in lines), (
        f"{script.name} --quick does not say it is a quick run{tail}"
    )
    missing = [why for table in tables if (why := find_table(lines, table)) is not None]
    assert not missing, f"{script.name} --quick: {'; '.join(missing)}{tail}"
    assert not leftovers, f"{script.name} --quick left behind {leftovers}"


def _run(script: Path, scratch: Path) -> tuple[int, str, str, list[str]]:
    """Run ``script --quick`` in its own process group; stop the group if it overruns."""
    env = {**os.environ, "TMPDIR": str(scratch), "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, str(script), "--quick"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = process.communicate(timeout=_limit(script))
    except subprocess.TimeoutExpired:
        # SIGTERM first: the benchmarks then stop their servers and remove their folders.
        process.send_signal(signal.SIGTERM)
        try:
            out, err = process.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            _kill_group(process.pid)
            out, err = process.communicate()
        pytest.fail(
            f"{script.name} --quick ran past {_limit(script)} s:\n{out[-4000:]}{err[-4000:]}"
        )
    leftovers = [path.name for path in scratch.iterdir()]
    if _group_alive(process.pid):
        _kill_group(process.pid)
        leftovers.append("processes it started, still running")
    return process.returncode, out, err, leftovers


def _group_alive(group: int, wait: float = 10.0) -> bool:
    deadline = time.monotonic() + wait
    while True:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return False
        if time.monotonic() > deadline:
            return True
        time.sleep(0.1)


def _kill_group(group: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(group, signal.SIGKILL)
