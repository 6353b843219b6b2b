"""What a user watching Headwater sees: /metrics, JSON log lines, exit codes, status.

Real ``headwater`` processes throughout: events go straight into the project's
DuckDB file with past arrival times; ``headwater run --due`` runs under a pipe
(as under cron), so its stderr is JSON lines; ``headwater up`` is scraped over
loopback; webhooks go to a real receiver, or to a loopback port nothing
listens on.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from headwater.core.types import Interval
from headwater.process.errors import PipelineError
from headwater.process.graph import Graph
from headwater.runtime.metrics import StateMetrics
from headwater.state import StateStore
from headwater.state.leases import Lease
from headwater.store import schema
from headwater.store.duckdb import DuckDBEngine
from headwater.store.engine import IngestBatch
from tests.conftest import Project, Server, run_cli, wait_for
from tests.deliver.receiver import Receiver, Reply

DAY = timedelta(days=1)
SECRET = "whsec_observability_1"

GOOD = """\
/* headwater
schedule = "@daily"
kind = "incremental"
time = "received_at"
time_column = "day"
key = ["day", "event"]
sinks = {sinks}
*/
SELECT TIMESTAMP_TRUNC(received_at, DAY) AS day, event, COUNT(*) AS events
FROM events
WHERE received_at >= @start AND received_at < @end
GROUP BY day, event
"""

# Fails its audit on every interval: a terminal failure.
BAD = """\
/* headwater
schedule = "@daily"
kind = "incremental"
time = "received_at"
time_column = "day"
audits = [{ not_null = ["owner"] }]
*/
SELECT TIMESTAMP_TRUNC(received_at, DAY) AS day, CAST(NULL AS STRING) AS owner
FROM events
WHERE received_at >= @start AND received_at < @end
"""

TOTALS = """\
/* headwater
schedule = "@daily"
kind = "full"
*/
SELECT SUM(events) AS events FROM good
"""


def _today() -> datetime:
    return datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def _iso(moment: datetime) -> str:
    return moment.isoformat()


def _pipelines(project: Project, files: dict[str, str]) -> None:
    for path in (project.root / "pipelines").iterdir():
        path.unlink()
    for name, text in files.items():
        (project.root / "pipelines" / name).write_text(text)


def _good(sinks: Sequence[str]) -> str:
    return GOOD.format(sinks=json.dumps(list(sinks)))


def _ingest(project: Project, days: Sequence[datetime], per_day: int = 3) -> None:
    rows = [
        {
            "message_id": f"m-{day:%m%d}-{i}",
            "source": "web",
            "type": "track",
            "event": "Signed Up" if i % 2 else "Page Viewed",
            "user_id": f"u{i}",
            "timestamp": day + timedelta(hours=i + 1),
            "received_at": day + timedelta(hours=i + 1),
        }
        for day in days
        for i in range(per_day)
    ]
    engine = DuckDBEngine.open(project.data_dir / "events.duckdb")
    try:
        table = pa.Table.from_pylist(rows, schema=schema.EVENTS)
        engine.ingest(IngestBatch(table, schema.FAILED_EVENTS.empty_table()))
    finally:
        engine.close()


def _two_days(project: Project) -> list[datetime]:
    days = [_today() - 2 * DAY, _today() - DAY]
    _ingest(project, days)
    return days


def _json_lines(text: str) -> list[dict[str, Any]]:
    """Every line of ``text`` as JSON (each must be one)."""
    records = []
    for line in text.splitlines():
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            raise AssertionError(f"not a JSON line: {line!r}\nin:\n{text}") from None
    return records


def _refused_port() -> int:
    """A loopback port nothing listens on: connections are refused."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _webhook(project: Project, url: str, **options: object) -> None:
    values = {"type": "webhook", "url": url, "secret": "${HOOK_SECRET}", "batch_rows": 2,
              "timeout_seconds": 5, **options}  # fmt: skip
    lines = ["[delivery]", 'allow_hosts = ["localhost"]', "", "[sinks.hook]"]
    lines += [f"{k} = {json.dumps(v)}" for k, v in values.items()]
    project.configure("\n".join(lines) + "\n")


@pytest.fixture
def hooked(project: Project, monkeypatch: pytest.MonkeyPatch) -> Project:
    monkeypatch.setenv("HOOK_SECRET", SECRET)
    monkeypatch.delenv("HEADWATER_LOG_FORMAT", raising=False)
    return project


def _table(out: str, title: str | None = None) -> list[dict[str, str]]:
    """The rows of the rich table in ``out`` (the one after ``title``), by column title."""
    lines = out.splitlines()
    if title is not None:
        lines = lines[next(i for i, line in enumerate(lines) if title in line) :]
    header = next(line for line in lines if line.startswith("┃"))
    titles = [cell.strip() for cell in header.strip().strip("┃").split("┃")]
    rows = []
    for line in lines[lines.index(header) :]:
        if line.startswith("│"):
            cells = [cell.strip() for cell in line.strip().strip("│").split("│")]
            rows.append(dict(zip(titles, cells, strict=True)))
        elif line.startswith("└"):
            break
    return rows


# -- 2 and 3. JSON log lines; exit codes ------------------------------------------------


def test_run_due_under_a_pipe_logs_json_lines_and_exits_1_naming_the_failed_run(
    hooked: Project,
) -> None:
    _pipelines(hooked, {"good.sql": _good(["files"]), "bad.sql": BAD})
    days = _two_days(hooked)
    result = run_cli(hooked, "run", "--due", check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    records = _json_lines(result.stderr)
    for record in records:
        assert {"severity", "message", "time", "logger"} <= set(record), record
        moment = datetime.fromisoformat(record["time"])
        assert moment.utcoffset() == timedelta(0), record
        assert record["time"].endswith("Z"), record
        assert abs(datetime.now(UTC) - moment) < timedelta(minutes=5)

    runs = [r for r in records if r["logger"] == "headwater.process.runner"]
    good = sorted((r for r in runs if r["pipeline"] == "good"), key=lambda r: r["interval_start"])
    assert [(r["outcome"], r["severity"]) for r in good] == [("succeeded", "INFO")] * 2, runs
    assert [r["interval_start"] for r in good] == [_iso(d).replace("+00:00", "Z") for d in days]
    assert [r["interval_end"] for r in good] == [_iso(d + DAY).replace("+00:00", "Z") for d in days]
    assert all(r["rows"] == 2 and r["error"] is None for r in good), good
    assert all(isinstance(r["duration_ms"], int | float) and r["duration_ms"] > 0 for r in good)
    # A failed day does not stop the next: bad's intervals do not read each other.
    bad_runs = sorted(
        (r for r in runs if r["pipeline"] == "bad"), key=lambda r: r["interval_start"]
    )
    assert [r["interval_start"] for r in bad_runs] == [_iso(d).replace("+00:00", "Z") for d in days]
    for bad in bad_runs:
        assert (bad["outcome"], bad["severity"]) == ("failed", "ERROR"), bad
        assert "audit not_null(owner) failed" in bad["error"], bad
        assert bad["rows"] is None

    sent = [r for r in records if r["logger"] == "headwater.deliver.deliverer"]
    assert (
        sorted((r["sink"], r["pipeline"], r["outcome"], r["rows"]) for r in sent)
        == [("files", "good", "delivered", 2)] * 2
    ), sent
    assert {r["interval_start"] for r in sent} == {r["interval_start"] for r in good}

    # The failure, named on stderr as a record of its own, and the summary on stdout.
    named = [r for r in records if r["logger"] == "headwater.cli.pipelines" and
             r.get("pipeline") == "bad"]  # fmt: skip
    assert [r["severity"] for r in named] == ["ERROR", "ERROR"], named
    for record, day in zip(named, days, strict=True):
        assert f"run of bad {_iso(day)[:16]} failed" in record["message"], record
    assert "Ran 2 intervals" in result.stdout, result.stdout
    assert "Delivered good to files: 2 intervals, 4 rows." in result.stdout, result.stdout

    # Then bad waits for a new version, and a pass where nothing failed exits 0.
    last = run_cli(hooked, "run", "--due", check=False)
    assert last.returncode == 0, last.stdout + last.stderr


def test_log_format_can_be_forced_and_backfill_exits_1_naming_the_failed_run(
    hooked: Project, monkeypatch: pytest.MonkeyPatch
) -> None:
    _pipelines(hooked, {"good.sql": _good([]), "bad.sql": BAD})
    days = _two_days(hooked)
    window = ("--start", _iso(days[0]), "--end", _iso(_today()))
    monkeypatch.setenv("HEADWATER_LOG_FORMAT", "text")
    failed = run_cli(hooked, "backfill", "bad", *window, check=False)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    assert not failed.stderr.lstrip().startswith("{"), failed.stderr
    assert f"Error: run of bad {_iso(days[0])[:16]} failed" in failed.stderr, failed.stderr
    assert "audit not_null(owner) failed" in failed.stderr

    filled = run_cli(hooked, "backfill", "good", *window, check=False)
    assert filled.returncode == 0, filled.stdout + filled.stderr
    assert "Backfilled 2 intervals" in filled.stdout

    monkeypatch.setenv("HEADWATER_LOG_FORMAT", "json")
    forced = run_cli(hooked, "run", "good", *window, check=False)
    assert forced.returncode == 0, forced.stderr
    lines = _json_lines(forced.stderr)
    assert [r["outcome"] for r in lines if r.get("pipeline") == "good"] == ["succeeded"] * 2

    monkeypatch.setenv("HEADWATER_LOG_FORMAT", "yaml")
    wrong = run_cli(hooked, "status", check=False)
    assert wrong.returncode == 1
    assert "log format 'yaml' is not one of json, text" in wrong.stderr, wrong.stderr


def test_a_delivery_that_fails_makes_backfill_and_run_due_exit_1(hooked: Project) -> None:
    port = _refused_port()
    _webhook(hooked, f"http://localhost:{port}/hook", max_attempts=2, backoff_seconds=0.01,
             max_backoff_seconds=0.01)  # fmt: skip
    _pipelines(hooked, {"good.sql": _good(["hook"])})
    days = _two_days(hooked)
    window = ("--start", _iso(days[0]), "--end", _iso(_today()))

    filled = run_cli(hooked, "backfill", "good", *window, check=False)
    assert filled.returncode == 1, filled.stdout + filled.stderr
    assert "Backfilled 2 intervals" in filled.stdout
    named = [r for r in _json_lines(filled.stderr) if r["logger"] == "headwater.cli.pipelines"]
    assert sorted(r["interval_start"][:10] for r in named if r.get("sink") == "hook") == [
        f"{d:%Y-%m-%d}" for d in days
    ], named
    assert all("to hook failed: could not connect" in r["message"] for r in named[:2]), named
    assert "2 deliveries failed" in named[-1]["message"]
    attempts = [r for r in _json_lines(filled.stderr) if r["logger"].endswith("deliverer")]
    assert [(r["outcome"], r["severity"]) for r in attempts] == [("failed", "WARNING")] * 2

    # The next attempt is the last (max_attempts = 2): the rows become dead letters.
    again = run_cli(hooked, "run", "--due", check=False)
    assert again.returncode == 1, again.stdout + again.stderr
    assert "Dead letter for good" in again.stdout
    lines = [r for r in _json_lines(again.stderr) if r["logger"].endswith("deliverer")]
    letters = [r for r in lines if r.get("dead_letter")]  # a line per dead batch
    assert (
        sorted((r["batch"], r["rows"], r["severity"]) for r in letters) == [(0, 2, "ERROR")] * 2
    ), letters
    dead = [r for r in lines if "outcome" in r]  # then one per delivery
    assert [(r["outcome"], r["severity"]) for r in dead] == [("dead", "ERROR")] * 2, dead
    named = [r for r in _json_lines(again.stderr) if r["logger"] == "headwater.cli.pipelines"]
    assert any("became a dead letter" in r["message"] for r in named), named

    # Nothing left to try: nothing failed in this pass.
    assert run_cli(hooked, "run", "--due", check=False).returncode == 0


# -- 4. honest status ---------------------------------------------------------------------


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver(SECRET) as running:
        yield running


def test_status_after_a_replay_shows_the_replayed_intervals_delivered(
    hooked: Project, receiver: Receiver
) -> None:
    _webhook(hooked, receiver.url("/hook"), max_attempts=1)
    _pipelines(hooked, {"good.sql": _good(["hook"])})
    _two_days(hooked)
    receiver.rule = lambda request: Reply(400, body="no such field")
    run_cli(hooked, "run", "--due", check=False)  # dead letters: exits 1
    [before] = _table(run_cli(hooked, "status").stdout, "Deliveries")
    assert (before["delivered"], before["dead letters"]) == ("0", "2"), before

    receiver.rule = None
    replayed = run_cli(hooked, "replay").stdout
    assert "Replayed: 2 delivered" in replayed, replayed
    [after] = _table(run_cli(hooked, "status").stdout, "Deliveries")
    assert (after["delivered"], after["pending"], after["failed"], after["dead letters"]) == (
        "2", "0", "0", "0",
    ), after  # fmt: skip
    assert after["last error"] == ""
    store = StateStore.in_folder(hooked.data_dir)
    try:
        owed = store.deliveries.all("good")
    finally:
        store.close()
    assert [(d.status, d.rows_delivered) for d in owed] == [("delivered", 2)] * 2


def test_a_full_refresh_is_no_longer_stale_once_it_runs_again(hooked: Project) -> None:
    _pipelines(hooked, {"good.sql": _good([]), "totals.sql": TOTALS})
    days = _two_days(hooked)
    run_cli(hooked, "run", "--due")
    # An older tick of the full refresh, then its input published again.
    run_cli(hooked, "run", "totals", "--end", _iso(days[1]))
    run_cli(hooked, "run", "good", "--start", _iso(days[0]), "--end", _iso(days[1]))
    ran = run_cli(hooked, "run", "--due").stdout
    assert "Ran 1 interval" in ran, ran
    rows = {row["pipeline"]: row for row in _table(run_cli(hooked, "status").stdout)}
    assert (rows["totals"]["done"], rows["totals"]["stale"]) == ("1", "0"), rows["totals"]
    assert "Nothing is due" in run_cli(hooked, "run", "--due").stdout


def test_the_delivery_summary_counts_deliveries_the_server_made_meanwhile(
    hooked: Project,
) -> None:
    _pipelines(hooked, {"good.sql": _good(["files"])})
    hooked.configure("[delivery]\npoll_seconds = 0.05\n")
    days = [_today() - (4 - i) * DAY for i in range(4)]
    _ingest(hooked, days)
    server = Server(hooked).start()
    try:
        # The server's first pass runs and delivers the four days; then they run again
        # through it, and its delivery loop, woken by each published interval, delivers
        # most of them before the command asks.
        wait_for("the first pass's deliveries", lambda: _delivered(hooked) == 4)
        out = run_cli(hooked, "run", "good", "--start", _iso(days[0]), "--end",
                      _iso(_today())).stdout  # fmt: skip
    finally:
        assert server.stop() == 0
    assert "Ran 4 intervals" in out, out
    assert "Delivered good to files: 4 intervals, 8 rows." in out, out


def _delivered(project: Project) -> int:
    store = StateStore.in_folder(project.data_dir)
    try:
        return sum(d.status == "delivered" for d in store.deliveries.all("good"))
    finally:
        store.close()


# -- 1. /metrics of a real server ---------------------------------------------------------


def _scrape(server: Server) -> dict[str, dict[tuple[tuple[str, str], ...], float]]:
    """Every sample of /metrics by name, then by its labels."""
    with server.client() as client:
        answer = client.get("/metrics")
    assert answer.status_code == 200
    samples: dict[str, dict[tuple[tuple[str, str], ...], float]] = {}
    for family in text_string_to_metric_families(answer.text):
        for sample in family.samples:
            labels = tuple(sorted(sample.labels.items()))
            samples.setdefault(sample.name, {})[labels] = sample.value
    return samples


def _at(**labels: str) -> tuple[tuple[str, str], ...]:
    return tuple(sorted(labels.items()))


def test_metrics_count_runs_and_deliveries_of_every_process_on_the_run_state(
    hooked: Project,
) -> None:
    _pipelines(hooked, {"good.sql": _good(["files"]), "bad.sql": BAD})
    hooked.configure("[delivery]\npoll_seconds = 0.05\n")
    days = _two_days(hooked)
    # Another process first, as cron would: one run succeeds per day, one fails for good.
    assert run_cli(hooked, "run", "--due", check=False).returncode == 1
    server = Server(hooked).start()
    try:
        seen = _scrape(server)
        runs = seen["headwater_runs_total"]
        assert runs[_at(outcome="succeeded", pipeline="good")] == 2
        assert runs[_at(outcome="failed", pipeline="bad")] == 2  # each day, once
        assert seen["headwater_run_duration_seconds_count"][_at(pipeline="good")] == 2
        assert seen["headwater_run_duration_seconds_bucket"][_at(le="+Inf", pipeline="bad")] == 2
        assert seen["headwater_run_duration_seconds_sum"][_at(pipeline="good")] > 0
        missing = seen["headwater_intervals_missing"]
        assert (missing[_at(pipeline="good")], missing[_at(pipeline="bad")]) == (0, 2)
        assert seen["headwater_intervals_stale"][_at(pipeline="good")] == 0
        owed = seen["headwater_delivery_intervals"]
        where = {"pipeline": "good", "sink": "files"}
        assert owed[_at(**where, state="delivered")] == 2
        assert owed[_at(**where, state="dead")] == 0
        assert seen["headwater_dead_letters"][_at(**where)] == 0
        assert seen["headwater_run_state_up"][()] == 1
        assert "headwater_deliveries_total" not in seen  # none made by this process yet
        assert not any("offload" in name for name in seen)  # no offload: no such metric

        # Through the server now: a run of one interval again, delivered by the server.
        run_cli(hooked, "run", "good", "--start", _iso(days[0]), "--end", _iso(days[1]))
        seen = _scrape(server)
        assert seen["headwater_runs_total"][_at(outcome="succeeded", pipeline="good")] == 3
        assert seen["headwater_deliveries_total"][_at(**where, outcome="delivered")] == 1
        assert seen["headwater_delivered_rows_total"][_at(**where)] == 2
        assert seen["headwater_delivery_intervals"][_at(**where, state="delivered")] == 2
        # The collector's metrics are still there.
        assert "headwater_commit_seconds_count" in seen
    finally:
        assert server.stop() == 0


def test_runs_are_counted_once_each_whatever_order_they_finish_in(tmp_path: Path) -> None:
    """The server folds finished runs into its counts as it finds them: a run still going
    at one scrape is counted at the scrape after it ends, and nothing twice."""
    store = StateStore.in_folder(tmp_path)
    registry = CollectorRegistry()

    def broken() -> Graph:
        raise PipelineError("not loaded in this test", pipeline="-", path="-")

    registry.register(StateMetrics(store, broken, lambda: datetime.now(UTC)))

    def runs() -> dict[tuple[tuple[str, str], ...], float]:
        text = generate_latest(registry).decode()
        found = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                if sample.name == "headwater_runs_total":
                    found[tuple(sorted(sample.labels.items()))] = sample.value
        return found

    try:
        day = Interval(_today() - DAY, _today())
        slow = store.runs.start_run("a", "v1", day, "schedule", 1)
        quick = store.runs.start_run("b", "v1", day, "schedule", 1)
        store.runs.fail(quick, "busy", "transient")
        assert runs() == {_at(outcome="transient", pipeline="b"): 1}
        with Lease(store.leases, "a", timedelta(seconds=30)) as lease:
            store.runs.succeed(slow, "a", "v1", day, rows_read=1, rows_written=1,
                               record_interval=True, holder=lease.holder)  # fmt: skip
        again = store.runs.start_run("b", "v1", day, "schedule", 2)
        store.runs.fail(again, "audit failed", "terminal")
        assert runs() == {
            _at(outcome="transient", pipeline="b"): 1,
            _at(outcome="succeeded", pipeline="a"): 1,
            _at(outcome="failed", pipeline="b"): 1,
        }
        assert runs() == runs()  # a scrape with nothing new changes nothing
    finally:
        store.close()
