"""A Python pipeline that raises: the author sees their own lines, wherever the run happened.

Real ``headwater`` processes on a project made by ``headwater init``: ``run``
in the command's own process, then through a running ``headwater up``, and
``status`` reading the failed run back from the metadata.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from headwater.process.definition import load_file
from headwater.process.errors import PipelineError
from headwater.process.python import Context, raised
from headwater.state import StateStore
from headwater.store import schema
from headwater.store.duckdb import DuckDBEngine
from headwater.store.engine import IngestBatch
from tests.conftest import HEADWATER, Project, Server, run_cli

DAY = timedelta(days=1)
HOUR = timedelta(hours=1)

RATIO = """\
import pyarrow as pa

from headwater.process import Context, pipeline


def share(total: int, count: int) -> float:
    return total / count


@pipeline(schedule="@hourly", kind="full")
def ratio(ctx: Context) -> pa.Table:
    rows = ctx.sql("SELECT count(*) AS n FROM events")
    return pa.table({"share": [share(rows["n"][0].as_py(), 0)]})
"""

FLAKY = """\
import pyarrow as pa

from headwater.core.errors import TransientError
from headwater.process import Context, pipeline


@pipeline(schedule="@hourly", kind="full", retries=2)
def flaky(ctx: Context) -> pa.Table:
    raise TransientError("the upstream API answered 503")
"""

SNEAKY = """\
import pyarrow as pa

from headwater.process import Context, pipeline


@pipeline(schedule="@hourly", kind="full")
def sneaky(ctx: Context) -> pa.Table:
    return ctx.sql("SELECT * FROM hourly_event_counts")
"""

# What the run must show: the file and line of the division, its source line, the
# line that called it, and the exception; none of Headwater's own frames.
DIVISION = re.compile(r"ratio\.py:7: the pipeline raised ZeroDivisionError: division by zero")


def _pipeline(project: Project, name: str, text: str) -> Path:
    path = project.root / "pipelines" / f"{name}.py"
    path.write_text(text)
    return path


def _assert_own_traceback(said: str, path: Path) -> None:
    assert DIVISION.search(said), said
    assert f'File "{path}", line 13, in ratio' in said, said
    assert f'File "{path}", line 7, in share' in said, said
    assert "    return total / count" in said, said
    assert 'return pa.table({"share": [share(rows["n"][0].as_py(), 0)]})' in said, said
    for internal in ("runner.py", "service.py", "operations.py", "headwater/process"):
        assert internal not in said, f"{internal} in:\n{said}"


def _last_run(project: Project, name: str) -> tuple[str, str | None, str | None, int]:
    store = StateStore.in_folder(project.data_dir)
    try:
        runs = store.runs.runs(name, limit=10)
        last = runs[0]
        return last.status, last.error, last.error_kind, len(runs)
    finally:
        store.close()


@pytest.mark.timeout(120)
def test_a_raising_python_pipeline_shows_its_own_lines_in_run_and_status(
    project: Project,
) -> None:
    path = _pipeline(project, "ratio", RATIO)

    failed = run_cli(project, "run", "ratio", check=False)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    _assert_own_traceback(failed.stdout + failed.stderr, path)
    # The traceback is printed once, as the run fails; the last word names it in one line.
    assert failed.stdout.count("return total / count") == 1, failed.stdout
    assert "the pipeline raised ZeroDivisionError: division by zero" in failed.stderr
    assert "headwater run ratio" in failed.stderr, failed.stderr  # the fix

    status, error, kind, count = _last_run(project, "ratio")
    assert (status, kind, count) == ("failed", "terminal", 1)  # not retried
    assert error is not None
    _assert_own_traceback(error, path)

    shown = run_cli(project, "status").stdout
    _assert_own_traceback(shown, path)
    row = next(line for line in shown.splitlines() if line.startswith("│ ratio"))
    assert "ZeroDivisionError" in row, shown

    # Through a running server: the same lines reach the command over the control socket.
    server = Server(project).start()
    try:
        remote = run_cli(project, "run", "ratio", check=False)
        assert remote.returncode == 1, remote.stdout + remote.stderr
        _assert_own_traceback(remote.stdout + remote.stderr, path)
        _assert_own_traceback(run_cli(project, "status").stdout, path)
    finally:
        server.stop()
    # The server's scheduler may have run it too; every run recorded the same lines.
    status, error, kind, count = _last_run(project, "ratio")
    assert (status, kind) == ("failed", "terminal")
    assert count >= 2
    assert error is not None
    _assert_own_traceback(error, path)


@pytest.mark.timeout(120)
def test_on_a_terminal_the_traceback_is_printed_once_and_the_error_said_once(
    project: Project,
) -> None:
    """On a terminal the log is text on the same screen as the progress lines: the
    runner's line for the failed run (the traceback again) is not written there, and one
    failure is not counted in a second Error line."""
    _pipeline(project, "ratio", RATIO)
    main, child = os.openpty()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("HEADWATER_")}
        process = subprocess.run(
            [*HEADWATER, "--project", str(project.root), "run", "ratio"],
            stdin=child, stdout=child, stderr=child, timeout=90, env={**env, "COLUMNS": "200"},
            check=False,
        )  # fmt: skip
        os.close(child)
        child = -1
        chunks = []
        while True:
            try:
                chunk = os.read(main, 65536)
            except OSError:  # the terminal's other end is closed: all was read
                break
            if not chunk:
                break
            chunks.append(chunk)
    finally:
        os.close(main)
        if child >= 0:
            os.close(child)
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", b"".join(chunks).decode(errors="replace"))
    assert process.returncode == 1, text
    assert text.count("return total / count") == 1, text
    assert len(re.findall(r"(?m)^Error:", text.replace("\r", "\n"))) == 1, text
    assert "(shown above)" in text, text


@pytest.mark.timeout(120)
def test_a_transient_error_from_a_python_pipeline_is_retried_and_others_are_not(
    project: Project,
) -> None:
    text = (project.root / "headwater.toml").read_text()
    (project.root / "headwater.toml").write_text(
        text.replace("[pipelines]\n", "[pipelines]\nretry_backoff_seconds = 0.01\n", 1)
    )
    _pipeline(project, "flaky", FLAKY)
    failed = run_cli(project, "run", "flaky", check=False)
    assert failed.returncode == 1
    assert "the upstream API answered 503" in failed.stderr, failed.stderr
    status, error, kind, count = _last_run(project, "flaky")
    assert (status, kind, count) == ("failed", "transient", 3)  # the first try and 2 retries
    assert error == "the upstream API answered 503"


@pytest.mark.timeout(120)
def test_headwaters_own_refusal_inside_a_python_pipeline_names_the_calling_line(
    project: Project,
) -> None:
    path = _pipeline(project, "sneaky", SNEAKY)
    failed = run_cli(project, "run", "sneaky", check=False)
    said = failed.stdout + failed.stderr
    assert failed.returncode == 1, said
    assert f"{path}:8: reads hourly_event_counts without naming it in inputs" in said, said
    assert '    return ctx.sql("SELECT * FROM hourly_event_counts")' in said, said
    assert "@pipeline(inputs=[...])" in failed.stderr, failed.stderr  # its own fix, kept
    assert _last_run(project, "sneaky")[2] == "terminal"


def _documented_example() -> str:
    """The first Python block of docs/pipelines.md's Python section, as a reader copies it."""
    text = (Path(__file__).parents[2] / "docs" / "pipelines.md").read_text(encoding="utf-8")
    section = text[text.index("## Python pipelines") :]
    return section.split("```python\n", 1)[1].split("```", 1)[0]


@pytest.mark.timeout(120)
def test_the_documented_python_pipeline_runs_in_an_environment_without_its_sink(
    project: Project,
) -> None:
    # The example delivers to a PostgreSQL sink, crm, that qa does not have: it runs there.
    (project.root / "pipelines" / "pro_share.py").write_text(_documented_example())
    project.configure('[sinks.crm]\ntype = "postgres"\nurl = "${CRM_URL}"\n\n[environments.qa]\n')
    day = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0) - 2 * DAY
    people = {"u1": "pro", "u2": "free", "u3": "free", "u4": "pro", "u5": "team"}
    rows: list[dict[str, Any]] = [
        {
            "message_id": f"m-{user}",
            "source": "web",
            "type": "track",
            "event": "Page Viewed",
            "user_id": user,
            "timestamp": day + HOUR,
            "original_timestamp": day + HOUR,
            "received_at": day + HOUR,
            "properties": json.dumps({"plan": plan}),
        }
        for user, plan in people.items()
    ]
    store = project.data_dir / "qa" / "events.duckdb"
    store.parent.mkdir(parents=True)
    engine = DuckDBEngine.open(store)
    try:
        events = pa.Table.from_pylist(rows, schema=schema.EVENTS)
        engine.ingest(IngestBatch(events, schema.FAILED_EVENTS.empty_table()))
    finally:
        engine.close()

    window = ("--start", day.isoformat(), "--end", (day + DAY).isoformat())
    ran = run_cli(project, "--env", "qa", "backfill", "pro_share", *window)
    assert "Backfilled 2 intervals" in ran.stdout, ran.stdout  # its input first
    assert "Not delivered pro_share to crm: not in this environment" in ran.stdout, ran.stdout
    engine = DuckDBEngine.open(store, read_only=True)
    try:
        shares = engine.query("SELECT day, pro_share FROM pro_share").to_pylist()
    finally:
        engine.close()
    assert shares == [{"day": day, "pro_share": 2 / 5}]


LIBRARY = """\
import pyarrow as pa

from headwater.process import Context, pipeline


@pipeline(schedule="@hourly", kind="full")
def mixed(ctx: Context) -> pa.Table:
    return pa.table({"value": [1, "two"]})
"""


def test_a_librarys_frames_are_left_out_and_the_pipelines_line_kept(tmp_path: Path) -> None:
    path = tmp_path / "mixed.py"
    path.write_text(LIBRARY)
    pipeline = load_file(path, "bigquery")
    assert pipeline.function is not None
    start = datetime(2026, 11, 1, tzinfo=UTC)
    with pytest.raises(pa.ArrowException) as caught:
        pipeline.function(Context("mixed", start, start + HOUR, reader=None))  # type: ignore[arg-type]
    error = raised("mixed", path, caught.value)
    assert isinstance(error, PipelineError)
    assert error.line == 8
    assert error.message.startswith(f"{path}:8: the pipeline raised pyarrow.lib.Arrow")
    assert f'File "{path}", line 8, in mixed' in error.message
    assert '    return pa.table({"value": [1, "two"]})' in error.message
    assert "pyarrow/" not in error.message  # the library's own frames
    frames = [line for line in error.message.splitlines() if line.startswith("  File ")]
    assert frames == [f'  File "{path}", line 8, in mixed']


def _returning(name: str, body: str) -> str:
    """A Python pipeline ``name`` whose function is ``body``."""
    return (
        "import pyarrow as pa\n\nfrom headwater.process import Context, pipeline\n\n\n"
        '@pipeline(schedule="@hourly", kind="full")\n'
        f"def {name}(ctx: Context) -> pa.Table:\n    {body}\n"
    )


@pytest.mark.timeout(120)
@pytest.mark.parametrize(
    ("name", "body", "said", "fix"),
    [
        (
            "rows_of_dicts",
            'return [{"n": 1}]',
            "a Python pipeline returns a pyarrow.Table, got list",
            "pa.Table.from_pylist(rows)",
        ),
        (
            "mapped",
            "return ctx.map_batches('SELECT 1 AS n', lambda b: b, "
            "pa.schema([('n', pa.int64()), ('doubled', pa.int64())]))",
            "fn returned the columns n; the schema given declares doubled, which it lacks",
            "headwater run mapped",
        ),
    ],
)
def test_an_output_of_the_wrong_shape_says_what_it_was_and_the_fix(
    project: Project, name: str, body: str, said: str, fix: str
) -> None:
    _pipeline(project, name, _returning(name, body))
    failed = run_cli(project, "run", name, check=False)
    assert failed.returncode == 1, failed.stdout + failed.stderr
    out = " ".join((failed.stdout + failed.stderr).split())
    assert said in out, out
    assert fix in out, out
