"""Pipeline definitions: headers, the graph, schedules, Python pipelines and audits.

Everything here is loaded from real files in a temporary folder, through the
same functions ``headwater up`` uses (``load_file``, ``load_graph``); audits run
on small Arrow tables through ``run_audits``. Schedules are pure functions of
UTC time.
"""

from __future__ import annotations

import itertools
import random
import sys
import textwrap
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.core.types import Interval
from headwater.process import schedule
from headwater.process.audits import run_audits
from headwater.process.definition import load_file
from headwater.process.errors import AuditFailed, GraphError, PipelineError
from headwater.process.graph import load_graph
from headwater.process.header import split_header
from headwater.process.python import Context, PythonPipeline
from headwater.process.settings import (
    AUDIT_KEYS,
    HEADER_KEYS,
    AcceptedValues,
    Audit,
    PipelineHeader,
    RowCount,
)


def utc(month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0) -> datetime:
    return datetime(2026, month, day, hour, minute, second, tzinfo=UTC)


def write(folder: Path, name: str, text: str) -> Path:
    path = folder / name
    path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
    return path


@pytest.fixture(autouse=True)
def forget_pipeline_modules() -> Iterator[None]:
    """Python pipelines are imported as ``headwater_pipelines.NAME``; do not leak them."""
    yield
    for name in [m for m in sys.modules if m.startswith("headwater_pipelines.")]:
        del sys.modules[name]


# -- headers ------------------------------------------------------------------------

VALID = """\
-- hourly counts, see docs/pipelines.md
/* headwater
description = "Events per hour."
schedule = "@hourly"
kind = "incremental"
time = "timestamp"
time_column = "hour"
start = "2026-01-01"
retries = 5
audits = [
  { not_null = ["hour"] },
  { unique = ["hour", "source"] },
  { accepted_values = { column = "source", values = ["web", "app", 1, true] } },
  { row_count = { min = 1, max = 100 } },
  { sql = "SELECT * FROM output WHERE events < 0" },
]
*/
SELECT TIMESTAMP_TRUNC(timestamp, HOUR) AS hour, source, COUNT(*) AS events
FROM events WHERE timestamp >= @start AND timestamp < @end GROUP BY 1, 2
"""


def test_a_valid_header_is_parsed_and_the_body_keeps_file_line_numbers() -> None:
    header, body = split_header(VALID, "pipelines/hourly.sql")
    assert header == PipelineHeader(
        description="Events per hour.",
        schedule="@hourly",
        kind="incremental",
        time="timestamp",
        time_column="hour",
        start="2026-01-01",
        retries=5,
        audits=[
            Audit(not_null=["hour"]),
            Audit(unique=["hour", "source"]),
            Audit(accepted_values=AcceptedValues("source", ["web", "app", 1, True])),
            Audit(row_count=RowCount(min=1, max=100)),
            Audit(sql="SELECT * FROM output WHERE events < 0"),
        ],
    )
    lines = body.splitlines()
    original = VALID.splitlines()
    select = original.index(next(line for line in original if line.startswith("SELECT")))
    assert len(lines) == len(original)
    assert lines[select] == original[select]
    assert "headwater" not in body
    assert all(not line for line in lines[:select])


def test_a_file_without_header_gets_the_defaults() -> None:
    text = "SELECT 1 AS x\n/* headwater\nkind = 'incremental'\n*/\n"
    header, body = split_header(text, "x.sql")
    # Only a header at the top counts; a later comment is part of the SQL.
    assert header == PipelineHeader()
    assert header.kind == "full"
    assert header.schedule == "@daily"
    assert body == text


def test_an_unknown_header_key_names_file_line_and_allowed_keys() -> None:
    text = '/* headwater\nschedule = "@hourly"\n\nschedul = "@daily"\n*/\nSELECT 1 AS x\n'
    with pytest.raises(PipelineError) as caught:
        split_header(text, "pipelines/typo.sql")
    error = caught.value
    assert error.path == "pipelines/typo.sql"
    assert error.line == 4
    assert str(error).startswith("pipelines/typo.sql:4: ")
    assert "schedul" in str(error)
    assert error.hint is not None
    for key in HEADER_KEYS:
        assert key in error.hint


def test_bad_toml_names_the_file_line() -> None:
    text = "-- note\n/* headwater\nschedule = '@hourly'\nkind = = 'full'\n*/\nSELECT 1 AS x\n"
    with pytest.raises(PipelineError) as caught:
        split_header(text, "pipelines/bad.sql")
    assert caught.value.line == 4
    assert caught.value.path == "pipelines/bad.sql"
    assert "not valid TOML" in str(caught.value)


def test_an_unknown_audit_key_names_its_line_and_the_audit_keys() -> None:
    text = textwrap.dedent(
        """\
        /* headwater
        audits = [
          { not_null = ["a"] },
          { uniq = ["a"] },
        ]
        */
        SELECT 1 AS a
        """
    )
    with pytest.raises(PipelineError) as caught:
        split_header(text, "pipelines/a.sql")
    error = caught.value
    assert "unknown audit key `uniq`" in str(error)
    assert error.line == 4
    assert error.hint is not None
    for key in AUDIT_KEYS:
        assert key in error.hint
    assert "schedule" not in error.hint


def test_a_bad_header_value_is_an_error_naming_the_key() -> None:
    with pytest.raises(PipelineError) as caught:
        split_header("/* headwater\nkind = 'sometimes'\n*/\nSELECT 1 AS x", "p.sql")
    assert "kind" in str(caught.value)
    assert caught.value.path == "p.sql"


def test_an_incremental_pipeline_needs_a_time_column(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "hourly.sql",
        """
        /* headwater
        kind = "incremental"
        */
        SELECT received_at FROM events WHERE received_at >= @start AND received_at < @end
        """,
    )
    with pytest.raises(PipelineError) as caught:
        load_file(path, "bigquery")
    assert caught.value.path == str(path)
    assert "time_column" in str(caught.value)
    assert caught.value.hint is not None
    assert "time_column" in caught.value.hint


BATCHED = """
/* headwater
schedule = "@hourly"
kind = "{kind}"
time_column = "hour"
batch_size = {size}
*/
SELECT TIMESTAMP_TRUNC(received_at, HOUR) AS hour, COUNT(*) AS n FROM events
WHERE received_at >= @start AND received_at < @end GROUP BY 1
"""


def test_batch_size_is_read_from_the_header(tmp_path: Path) -> None:
    path = write(tmp_path, "hourly.sql", BATCHED.format(kind="incremental", size=24))
    assert load_file(path, "bigquery").header.batch_size == 24


@pytest.mark.parametrize(
    ("kind", "size", "message"),
    [
        ("incremental", "0", "batch_size is 0; it is a number of intervals, 1 or more"),
        ("incremental", "-3", "batch_size is -3; it is a number of intervals, 1 or more"),
        ("incremental", '"24"', "batch_size"),
        ("incremental", "1.5", "batch_size"),
        ("full", "24", "batch_size is for incremental pipelines"),
    ],
)
def test_batch_size_is_a_positive_count_for_incremental_pipelines(
    tmp_path: Path, kind: str, size: str, message: str
) -> None:
    path = write(tmp_path, "hourly.sql", BATCHED.format(kind=kind, size=size))
    with pytest.raises(PipelineError) as caught:
        load_file(path, "bigquery")
    assert message in str(caught.value)
    assert caught.value.path == str(path)


@pytest.mark.parametrize(
    "where",
    ["WHERE received_at >= @start", "WHERE received_at < @end", ""],
    ids=["start-only", "end-only", "no-filter"],
)
def test_an_incremental_pipeline_must_filter_on_start_and_end(tmp_path: Path, where: str) -> None:
    path = write(
        tmp_path,
        "hourly.sql",
        f"""
        /* headwater
        kind = "incremental"
        time_column = "at"
        */
        SELECT received_at AS at FROM events {where}
        """,
    )
    with pytest.raises(PipelineError) as caught:
        load_file(path, "bigquery")
    assert "@start and @end" in str(caught.value)
    assert caught.value.hint is not None
    assert "@start" in caught.value.hint
    assert "@end" in caught.value.hint


def test_an_incremental_pipeline_that_filters_its_interval_loads(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "hourly.sql",
        """
        /* headwater
        schedule = "0,15,30,45 * * * *"
        kind = "incremental"
        time_column = "at"
        */
        SELECT received_at AS at FROM events WHERE received_at >= @start AND received_at < @end
        """,
    )
    pipeline = load_file(path, "bigquery")
    assert pipeline.name == "hourly"
    assert pipeline.incremental
    assert pipeline.kind == "sql"
    assert pipeline.inputs == frozenset({"events"})
    assert pipeline.header.schedule == "0,15,30,45 * * * *"


def test_a_step_schedule_in_a_sql_header_loads_or_says_why_not(tmp_path: Path) -> None:
    # "*/15" holds "*/", which ends the header's block comment. Either Headwater reads
    # it anyway, or its error must say so; "not valid TOML" alone sends people astray.
    path = write(tmp_path, "p.sql", '/* headwater\nschedule = "*/15 * * * *"\n*/\nSELECT 1 AS x\n')
    try:
        pipeline = load_file(path, "bigquery")
    except PipelineError as error:
        said = f"{error} {error.hint or ''}"
        assert "*/" in said, f"the error does not explain the '*/' in the schedule: {said}"
    else:
        assert pipeline.header.schedule == "*/15 * * * *"


@pytest.mark.parametrize(
    "cron", ["61 * * * *", "every hour", "* * *", "0 25 * * *", "@fortnightly", ""]
)
def test_a_bad_cron_schedule_is_refused(tmp_path: Path, cron: str) -> None:
    path = write(tmp_path, "p.sql", f"/* headwater\nschedule = {cron!r}\n*/\nSELECT 1 AS x\n")
    with pytest.raises(PipelineError) as caught:
        load_file(path, "bigquery")
    assert "not a cron expression" in str(caught.value)
    assert caught.value.path == str(path)
    assert caught.value.hint is not None


@pytest.mark.parametrize(
    "cron", ["@hourly", "@daily", "0,15,30,45 * * * *", "0 6 * * *", "@weekly"]
)
def test_good_cron_schedules_load(tmp_path: Path, cron: str) -> None:
    path = write(tmp_path, "p.sql", f"/* headwater\nschedule = {cron!r}\n*/\nSELECT 1 AS x\n")
    assert load_file(path, "bigquery").header.schedule == cron


def test_a_start_that_is_not_a_date_is_refused(tmp_path: Path) -> None:
    path = write(tmp_path, "p.sql", "/* headwater\nstart = 'yesterday'\n*/\nSELECT 1 AS x\n")
    with pytest.raises(PipelineError) as caught:
        load_file(path, "bigquery")
    assert "yesterday" in str(caught.value)


def test_a_naive_start_is_taken_as_utc(tmp_path: Path) -> None:
    path = write(tmp_path, "p.sql", "/* headwater\nstart = '2026-03-01'\n*/\nSELECT 1 AS x\n")
    assert load_file(path, "bigquery").start() == utc(3, 1)


def test_a_pipeline_cannot_be_named_after_a_builtin_table(tmp_path: Path) -> None:
    path = write(tmp_path, "events.sql", "SELECT 1 AS x\n")
    with pytest.raises(PipelineError, match="cannot be named events"):
        load_file(path, "bigquery")


# -- the graph --------------------------------------------------------------------------


def test_the_graph_orders_inputs_before_their_readers(tmp_path: Path) -> None:
    write(tmp_path, "sessions.sql", "SELECT user_id FROM events\n")
    write(tmp_path, "users.sql", "SELECT user_id FROM p.ds.sessions\n")
    write(tmp_path, "report.sql", "SELECT * FROM users JOIN sessions USING (user_id)\n")
    write(
        tmp_path,
        "scores.py",
        """
        from headwater.process.python import pipeline

        @pipeline(inputs=["report", "failed_events"])
        def scores(ctx):
            return ctx.table("report")
        """,
    )
    write(tmp_path, "_draft.sql", "SELECT * FROM nowhere\n")  # ignored: starts with _
    graph = load_graph(tmp_path, "bigquery")
    assert sorted(graph.pipelines) == ["report", "scores", "sessions", "users"]
    order = list(graph.order)
    for pipeline in graph:
        for parent in pipeline.inputs - {"events", "failed_events"}:
            assert order.index(parent) < order.index(pipeline.name)
    assert order == ["sessions", "users", "report", "scores"]
    assert graph.upstream("report") == ["sessions", "users"]
    assert graph.upstream("scores") == ["sessions", "users", "report"]
    assert graph.downstream("sessions") == ["users", "report", "scores"]
    assert graph.downstream("scores") == []
    assert len(graph) == 4
    assert graph["scores"].kind == "python"


def test_an_unknown_pipeline_name_suggests_the_nearest(tmp_path: Path) -> None:
    write(tmp_path, "sessions.sql", "SELECT user_id FROM events\n")
    graph = load_graph(tmp_path, "bigquery")
    with pytest.raises(PipelineError) as caught:
        graph["sesions"]
    assert caught.value.hint == "did you mean 'sessions'?"


@pytest.mark.parametrize(
    ("files", "cycle"),
    [
        ({"a": "b", "b": "a"}, "a -> b -> a"),
        ({"a": "b", "b": "c", "c": "a"}, "a -> b -> c -> a"),
        ({"a": "a"}, "a -> a"),
    ],
    ids=["two", "three", "self"],
)
def test_a_cycle_is_an_error_that_names_it(
    tmp_path: Path, files: dict[str, str], cycle: str
) -> None:
    write(tmp_path, "root.sql", "SELECT 1 AS x FROM events\n")
    for name, reads in files.items():
        write(tmp_path, f"{name}.sql", f"SELECT * FROM {reads} JOIN root ON TRUE\n")
    graph = load_graph(tmp_path, "bigquery")
    # Every pipeline of the cycle is set apart; what stands outside it still loads.
    assert sorted(graph.broken) == sorted(files)
    assert list(graph.pipelines) == ["root"]
    error = graph.broken["a"].error
    assert isinstance(error, GraphError)
    assert f"cycle: {cycle}" in str(error)
    assert error.hint is not None
    with pytest.raises(GraphError, match="cycle"):
        graph["a"]


@pytest.mark.parametrize(
    ("typo", "suggestion"),
    [("evnets", "events"), ("daily_actve_users", "daily_active_users")],
)
def test_a_missing_table_suggests_the_nearest_name(
    tmp_path: Path, typo: str, suggestion: str
) -> None:
    write(tmp_path, "daily_active_users.sql", "SELECT user_id FROM events\n")
    reader = write(tmp_path, "report.sql", f"SELECT * FROM analytics.{typo}\n")
    graph = load_graph(tmp_path, "bigquery")
    assert list(graph.pipelines) == ["daily_active_users"]
    error = graph.broken["report"].error
    assert isinstance(error, GraphError)
    assert repr(typo) in str(error)
    assert error.path == str(reader)
    assert error.pipeline == "report"
    assert error.hint == f"did you mean {suggestion!r}?"


def test_a_name_nothing_resembles_lists_the_known_names(tmp_path: Path) -> None:
    write(tmp_path, "report.sql", "SELECT * FROM zzzzzz\n")
    error = load_graph(tmp_path, "bigquery").broken["report"].error
    assert error.hint == "known names: events, failed_events, report"


#: A Python pipeline named users.
USERS_PY = """
from headwater.process.python import pipeline

@pipeline()
def users(ctx):
    return ctx.table("events")
"""


def test_two_files_with_the_same_name_are_an_error(tmp_path: Path) -> None:
    write(tmp_path, "users.sql", "SELECT user_id FROM events\n")
    write(tmp_path, "users.py", USERS_PY)
    graph = load_graph(tmp_path, "bigquery")
    error = graph.broken["users"].error
    assert "two pipelines are named users" in str(error)
    assert error.hint is not None
    assert "users.sql" in error.hint
    assert "users.py" in error.hint
    assert graph.outputs() == {}  # neither one is the users pipeline


def test_an_empty_or_missing_folder_is_an_empty_graph(tmp_path: Path) -> None:
    assert len(load_graph(tmp_path, "bigquery")) == 0
    assert len(load_graph(tmp_path / "missing", "bigquery")) == 0


# -- schedules --------------------------------------------------------------------------


def hours(start: datetime, count: int, step: timedelta) -> list[Interval]:
    return [Interval(start + i * step, start + (i + 1) * step) for i in range(count)]


@pytest.mark.parametrize(
    ("cron", "moment", "floor", "following"),
    [
        ("@hourly", utc(3, 1, 1, 0), utc(3, 1, 1, 0), utc(3, 1, 2, 0)),
        ("@hourly", utc(3, 1, 1, 0, 30), utc(3, 1, 1, 0), utc(3, 1, 2, 0)),
        ("@hourly", utc(3, 1, 1, 59, 59), utc(3, 1, 1, 0), utc(3, 1, 2, 0)),
        ("@hourly", utc(3, 1, 1, 0) + timedelta(microseconds=1), utc(3, 1, 1), utc(3, 1, 2)),
        ("@daily", utc(3, 1), utc(3, 1), utc(3, 2)),
        ("@daily", utc(2, 28, 23, 59), utc(2, 28), utc(3, 1)),
        ("@daily", utc(12, 31, 12), utc(12, 31), datetime(2027, 1, 1, tzinfo=UTC)),
        ("*/15 * * * *", utc(3, 1, 6, 15), utc(3, 1, 6, 15), utc(3, 1, 6, 30)),
        ("*/15 * * * *", utc(3, 1, 6, 14, 59), utc(3, 1, 6, 0), utc(3, 1, 6, 15)),
        ("*/15 * * * *", utc(3, 1, 23, 50), utc(3, 1, 23, 45), utc(3, 2, 0, 0)),
        ("0 6 * * *", utc(3, 1, 5, 59), utc(2, 28, 6), utc(3, 1, 6)),
        ("0 6 * * *", utc(3, 1, 6), utc(3, 1, 6), utc(3, 2, 6)),
        ("0 6 * * *", utc(3, 1, 6, 0, 1), utc(3, 1, 6), utc(3, 2, 6)),
    ],
)
def test_floor_and_following(
    cron: str, moment: datetime, floor: datetime, following: datetime
) -> None:
    assert schedule.floor(cron, moment) == floor
    assert schedule.following(cron, moment) == following
    assert schedule.interval_at(cron, moment) == Interval(floor, following)
    assert schedule.floor(cron, moment).utcoffset() == timedelta(0)
    assert schedule.following(cron, moment).utcoffset() == timedelta(0)


@pytest.mark.parametrize(
    "cron",
    ["@hourly", "@daily", "@midnight", "0 * * * *", "45 * * * *", "* * * * *", "30 23 * * *"],
)
def test_fixed_period_schedules_agree_with_croniter(cron: str) -> None:
    # These are computed by arithmetic, not croniter: hold them to croniter's answers,
    # before the epoch, on leap days and at each boundary to the microsecond.
    from croniter import croniter

    rng = random.Random(cron)
    span = int((datetime(2100, 1, 1) - datetime(1900, 1, 1)).total_seconds())
    moments = [datetime(1900, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(span))]
    moments += [
        datetime(2024, 2, 29, 23, 30, tzinfo=UTC),
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ]
    for moment in list(moments):
        tick = croniter(cron, moment).get_next(datetime)
        moments += [tick, tick - timedelta(microseconds=1), tick + timedelta(microseconds=1)]
    for _ in range(200):
        moments.append(datetime(1900, 1, 1, tzinfo=UTC) + timedelta(seconds=rng.randrange(span)))
    assert schedule._period(cron) is not None
    for moment in moments:
        expected_floor = (
            moment
            if croniter.match(cron, moment) and not (moment.second or moment.microsecond)
            else croniter(cron, moment).get_prev(datetime)
        )
        assert schedule.floor(cron, moment) == expected_floor, moment
        assert schedule.following(cron, moment) == croniter(cron, moment).get_next(datetime)
    start = moments[0]
    walked = croniter(cron, schedule.floor(cron, start))
    ticks = [schedule.floor(cron, start)] + [walked.get_next(datetime) for _ in range(50)]
    expected = [Interval(a, b) for a, b in itertools.pairwise(ticks)]
    assert schedule.intervals(cron, start, ticks[-1]) == expected


@pytest.mark.parametrize("cron", ["*/15 * * * *", "0 6 * * 1", "0 0 1 * *", "0 6,18 * * *"])
def test_other_schedules_are_walked_by_croniter(cron: str) -> None:
    assert schedule._period(cron) is None


def test_following_is_strictly_after_a_run_time() -> None:
    assert schedule.following("@hourly", utc(3, 1, 1)) == utc(3, 1, 2)
    assert schedule.following("0 6 * * *", utc(3, 1, 6)) == utc(3, 2, 6)


@pytest.mark.parametrize(
    ("cron", "start", "until", "expected"),
    [
        ("@hourly", utc(3, 1, 0, 30), utc(3, 1, 3), hours(utc(3, 1), 3, timedelta(hours=1))),
        ("@hourly", utc(3, 1, 0, 30), utc(3, 1, 2, 59), hours(utc(3, 1), 2, timedelta(hours=1))),
        ("@hourly", utc(3, 1, 0, 30), utc(3, 1, 0, 59), []),
        ("@daily", utc(2, 27, 12), utc(3, 2), hours(utc(2, 27), 3, timedelta(days=1))),
        (
            "*/15 * * * *",
            utc(3, 1, 6, 7),
            utc(3, 1, 7),
            hours(utc(3, 1, 6), 4, timedelta(minutes=15)),
        ),
        ("0 6 * * *", utc(3, 1, 5), utc(3, 3, 6), hours(utc(2, 28, 6), 3, timedelta(days=1))),
    ],
)
def test_intervals(cron: str, start: datetime, until: datetime, expected: list[Interval]) -> None:
    assert schedule.intervals(cron, start, until) == expected


@pytest.mark.parametrize(
    ("cron", "moment", "expected"),
    [
        ("@hourly", utc(3, 1, 2, 30), Interval(utc(3, 1, 1), utc(3, 1, 2))),
        ("@hourly", utc(3, 1, 2), Interval(utc(3, 1, 1), utc(3, 1, 2))),
        ("@daily", utc(3, 1, 0, 1), Interval(utc(2, 28), utc(3, 1))),
        ("*/15 * * * *", utc(3, 1, 0, 10), Interval(utc(2, 28, 23, 45), utc(3, 1))),
        ("0 6 * * *", utc(3, 1, 7), Interval(utc(2, 28, 6), utc(3, 1, 6))),
        ("0 6 * * *", utc(3, 1, 5), Interval(utc(2, 27, 6), utc(2, 28, 6))),
    ],
)
def test_latest_tick(cron: str, moment: datetime, expected: Interval) -> None:
    assert schedule.latest_tick(cron, moment) == expected


def test_schedules_are_utc_whatever_the_moment_zone() -> None:
    paris_winter = timezone(timedelta(hours=1))
    # 07:30 in Paris is 06:30 UTC: after the 06:00 UTC run, not before it.
    moment = datetime(2026, 3, 1, 7, 30, tzinfo=paris_winter)
    assert schedule.floor("0 6 * * *", moment) == utc(3, 1, 6)
    assert schedule.interval_at("@daily", datetime(2026, 3, 1, 0, 30, tzinfo=paris_winter)) == (
        Interval(utc(2, 28), utc(3, 1))
    )
    # Across New York's spring-forward (2026-03-08 02:00 local), hours stay UTC hours.
    new_york = ZoneInfo("America/New_York")
    found = schedule.intervals(
        "@hourly",
        datetime(2026, 3, 8, 0, 30, tzinfo=new_york),
        datetime(2026, 3, 8, 4, tzinfo=new_york),
    )
    assert found == hours(utc(3, 8, 5), 3, timedelta(hours=1))
    for interval in found:
        assert interval.start.utcoffset() == timedelta(0)
        assert interval.end.utcoffset() == timedelta(0)


@settings(max_examples=60, deadline=None)
@given(
    cron=st.sampled_from(["@hourly", "@daily", "*/15 * * * *", "0 6 * * *"]),
    offset=st.integers(min_value=0, max_value=400 * 24 * 3600 * 10**6),
)
def test_every_moment_lies_in_exactly_its_interval(cron: str, offset: int) -> None:
    moment = utc(1, 1) + timedelta(microseconds=offset)
    interval = schedule.interval_at(cron, moment)
    assert interval.start <= moment < interval.end
    assert schedule.floor(cron, moment) == interval.start
    assert schedule.following(cron, interval.start) == interval.end
    tick = schedule.latest_tick(cron, moment)
    assert tick.end == interval.start
    assert schedule.intervals(cron, tick.start, interval.start) == [tick]


# -- Python pipelines -------------------------------------------------------------------

DOCUMENTED = """
import pyarrow as pa

from headwater.process import Context, pipeline


@pipeline(schedule="@hourly", kind="incremental", time_column="hour", inputs=["events"])
def hourly(ctx: Context) -> pa.Table:
    return pa.table({"hour": [ctx.start], "pipeline": [ctx.pipeline]})
"""


class NoReader:
    def sql(self, query: str) -> pa.Table:
        raise AssertionError(query)

    def table(self, name: str) -> pa.Table:
        raise AssertionError(name)


def check_hourly(path: Path) -> None:
    pipeline = load_file(path, "bigquery")
    assert pipeline.name == path.stem
    assert pipeline.kind == "python"
    assert pipeline.incremental
    assert pipeline.inputs == frozenset({"events"})
    assert pipeline.header.schedule == "@hourly"
    assert pipeline.header.time_column == "hour"
    assert isinstance(pipeline.function, PythonPipeline)
    context = Context(pipeline.name, utc(3, 1, 1), utc(3, 1, 2), NoReader())
    assert pipeline.function(context).to_pylist() == [{"hour": utc(3, 1, 1), "pipeline": path.stem}]


def test_a_python_pipeline_written_as_documented_loads(tmp_path: Path) -> None:
    # docs/pipelines.md and headwater/process/python.py both import from headwater.process.
    check_hourly(write(tmp_path, "hourly.py", DOCUMENTED))


def test_a_python_pipeline_importing_the_decorator_module_loads(tmp_path: Path) -> None:
    text = DOCUMENTED.replace(
        "from headwater.process import Context, pipeline",
        "from headwater.process.python import Context, pipeline",
    )
    check_hourly(write(tmp_path, "hourly_direct.py", text))


def test_a_python_pipeline_takes_a_step_schedule(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "quarterly.py",
        """
        from headwater.process.python import pipeline

        @pipeline(schedule="*/15 * * * *", kind="incremental", time_column="at")
        def quarterly(ctx):
            return ctx.table("events")
        """,
    )
    pipeline = load_file(path, "bigquery")
    assert pipeline.header.schedule == "*/15 * * * *"
    assert pipeline.header.kind == "incremental"


@pytest.mark.parametrize("count", [0, 2])
def test_a_python_file_needs_exactly_one_pipeline(tmp_path: Path, count: int) -> None:
    functions = "".join(
        f"\n@pipeline()\ndef f{i}(ctx):\n    return ctx.table('events')\n" for i in range(count)
    )
    path = write(tmp_path, "many.py", f"from headwater.process.python import pipeline\n{functions}")
    with pytest.raises(PipelineError) as caught:
        load_file(path, "bigquery")
    assert f"exactly one @pipeline function, found {count}" in str(caught.value)
    assert caught.value.path == str(path)


def test_an_incremental_python_pipeline_needs_a_time_column(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "p.py",
        """
        from headwater.process.python import pipeline

        @pipeline(kind="incremental")
        def p(ctx):
            return ctx.table("events")
        """,
    )
    with pytest.raises(PipelineError, match="time_column"):
        load_file(path, "bigquery")


@pytest.mark.parametrize(
    ("text", "line", "kind"),
    [
        ("import os\n\nimport no_such_module_for_headwater_tests\n", 3, "ModuleNotFoundError"),
        ("x = 1\n\n\ndef g():\n    return 1 / 0\n\n\ng()\n", 5, "ZeroDivisionError"),
        ("import os\nx = (\n", 2, "SyntaxError"),
    ],
    ids=["missing-module", "raises", "syntax"],
)
def test_an_import_error_names_the_file_and_line(
    tmp_path: Path, text: str, line: int, kind: str
) -> None:
    path = write(tmp_path, "broken.py", text)
    with pytest.raises(PipelineError) as caught:
        load_file(path, "bigquery")
    error = caught.value
    assert kind in str(error)
    assert error.path == str(path)
    assert error.line == line, f"expected line {line}, got {error.line}: {error}"


def test_an_unknown_decorator_key_names_the_file_line_and_allowed_keys(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "typo.py",
        """
        from headwater.process.python import pipeline


        @pipeline(schedule="@hourly", shedule="@daily")
        def typo(ctx):
            return ctx.table("events")
        """,
    )
    with pytest.raises(PipelineError) as caught:
        load_file(path, "bigquery")
    error = caught.value
    assert "shedule" in str(error)
    assert error.hint is not None
    assert "schedule" in error.hint
    assert error.path == str(path), f"the error names {error.path!r}, not the file"
    assert error.line == 4


# -- audits -----------------------------------------------------------------------------

OUTPUT = pa.table(
    {
        "day": [utc(3, 1), utc(3, 1), utc(3, 2), None, utc(3, 3), utc(3, 3)],
        "plan": ["free", "pro", "free", "pro", None, "enterprise"],
        "active_users": [3, 2, 5, 1, 7, 9],
        "events": [10, 2, 6, 1, 7, 9],
        "paying": [False, True, False, True, None, True],
    }
)


def audit(*audits: Audit, output: pa.Table = OUTPUT) -> None:
    run_audits("dau", "pipelines/dau.sql", list(audits), output, "bigquery")


def failure(*audits: Audit, output: pa.Table = OUTPUT) -> AuditFailed:
    with pytest.raises(AuditFailed) as caught:
        audit(*audits, output=output)
    error = caught.value
    assert error.pipeline == "dau"
    assert f"failed on {error.count} row" in str(error)
    assert error.hint is not None
    assert "nothing was published" in error.hint
    return error


def test_passing_audits_raise_nothing() -> None:
    audit()
    audit(
        Audit(not_null=["active_users", "events"]),
        Audit(unique=["day", "plan"]),
        Audit(accepted_values=AcceptedValues("plan", ["free", "pro", "enterprise"])),
        Audit(accepted_values=AcceptedValues("paying", [True, False])),
        Audit(accepted_values=AcceptedValues("active_users", [1, 2, 3, 5, 7, 9])),
        Audit(row_count=RowCount(min=6, max=6)),
        Audit(row_count=RowCount(min=1)),
        Audit(row_count=RowCount(max=100)),
        Audit(sql="SELECT * FROM output WHERE active_users > events"),
        Audit(sql="SELECT * FROM output WHERE SAFE_CAST(plan AS INT64) IS NOT NULL"),
    )


def test_not_null_fails_with_the_count_and_the_rows() -> None:
    error = failure(Audit(not_null=["events"]), Audit(not_null=["day", "plan"]))
    assert error.audit == "not_null(day, plan)"
    assert error.count == 2
    assert sorted(str(row["plan"]) for row in error.sample) == ["None", "pro"]
    assert all(row["day"] is None or row["plan"] is None for row in error.sample)
    assert set(error.sample[0]) == set(OUTPUT.column_names)


def test_unique_fails_with_each_duplicated_key() -> None:
    error = failure(Audit(unique=["day"]))
    assert error.audit == "unique(day)"
    # 3-01 and 3-03 appear twice each: two duplicated keys.
    assert error.count == 2
    assert sorted((row["day"], row["copies"]) for row in error.sample) == [
        (utc(3, 1), 2),
        (utc(3, 3), 2),
    ]


def test_accepted_values_fails_on_other_values_but_not_null() -> None:
    error = failure(Audit(accepted_values=AcceptedValues("plan", ["free", "pro"])))
    assert error.audit == "accepted_values(plan)"
    assert error.count == 1
    assert [row["plan"] for row in error.sample] == ["enterprise"]
    numbers = failure(Audit(accepted_values=AcceptedValues("active_users", [1, 2, 3])))
    assert numbers.count == 3
    assert sorted(int(str(row["active_users"])) for row in numbers.sample) == [5, 7, 9]
    flags = failure(Audit(accepted_values=AcceptedValues("paying", [True])))
    assert flags.count == 2
    assert [row["paying"] for row in flags.sample] == [False, False]


@pytest.mark.parametrize(
    ("bounds", "low", "high"),
    [(RowCount(min=7), 7, None), (RowCount(max=5), None, 5), (RowCount(min=1, max=2), 1, 2)],
)
def test_row_count_fails_outside_its_bounds(
    bounds: RowCount, low: int | None, high: int | None
) -> None:
    error = failure(Audit(row_count=bounds))
    assert error.count == 1
    assert error.sample == [{"row_count": 6, "min": low, "max": high}]


def test_row_count_fails_on_an_empty_output() -> None:
    error = failure(Audit(row_count=RowCount(min=1)), output=OUTPUT.slice(0, 0))
    assert error.sample == [{"row_count": 0, "min": 1, "max": None}]


def test_custom_sql_fails_with_the_rows_it_returns() -> None:
    error = failure(Audit(sql="SELECT day, plan FROM output WHERE events = active_users"))
    assert error.count == 4
    assert len(error.sample) == 4
    assert {row["plan"] for row in error.sample} == {"pro", None, "enterprise"}
    assert all(set(row) == {"day", "plan"} for row in error.sample)
    assert error.audit.startswith("sql(SELECT day, plan FROM output")


def test_the_sample_is_bounded_but_the_count_is_not() -> None:
    many = pa.table({"x": [None] * 12, "y": list(range(12))})
    error = failure(Audit(not_null=["x"]), output=many)
    assert error.count == 12
    assert len(error.sample) == 5
    assert "12 rows" in str(error)


def test_the_first_failing_audit_is_reported() -> None:
    error = failure(
        Audit(not_null=["events"]),
        Audit(unique=["plan"]),
        Audit(row_count=RowCount(max=1)),
    )
    assert error.audit == "unique(plan)"


def test_an_audit_on_a_missing_column_is_a_pipeline_error_not_a_failure() -> None:
    with pytest.raises(PipelineError) as caught:
        audit(Audit(not_null=["dya"]))
    assert not isinstance(caught.value, AuditFailed)
    assert "dya" in str(caught.value)
    assert caught.value.hint is not None
    assert "day" in caught.value.hint


def test_an_audit_sql_that_is_not_a_select_is_refused() -> None:
    with pytest.raises(PipelineError, match="one SELECT") as caught:
        audit(Audit(sql="DELETE FROM output"))
    assert not isinstance(caught.value, AuditFailed)


# -- the header parser only ever raises PipelineError ------------------------------------

_KEYS = st.sampled_from(
    [*HEADER_KEYS, *AUDIT_KEYS, "bogus", "a.b", '"quoted key"', "audits.x", "[audits]"]
)
_VALUES = st.sampled_from(
    [
        "1", "-1", "99999999999999999999999", "1.5", "inf", "nan", "true", "'x'", '"@hourly"',
        "'incremental'", "'timestamp'", "2026-01-01", "2026-01-01T00:00:00Z", "12:00:00", "[]",
        "[1]", "['a']", "[{}]", "[{ not_null = ['a'] }]", "[{ bogus = 1 }]",
        "[{ row_count = { min = 'x' } }]",
        "[{ accepted_values = { column = 'a', values = [[1]] } }]",
        "[{ accepted_values = { column = 'a', values = [1], extra = 2 } }]", "{}", "{ a = 1 }",
        "'''x'''", "=", "", "'*/'",
    ]
)  # fmt: skip
_LINES = st.one_of(
    st.tuples(_KEYS, _VALUES).map(lambda kv: f"{kv[0]} = {kv[1]}"),
    st.text(max_size=30),
    _KEYS,
)


@settings(max_examples=400, deadline=None)
@given(inner=st.one_of(st.text(), st.lists(_LINES, max_size=8).map("\n".join)))
def test_the_header_parser_raises_only_pipeline_errors(inner: str) -> None:
    text = f"-- a pipeline\n/* headwater\n{inner}\n*/\nSELECT 1 AS x\n"
    outcome: PipelineError | tuple[PipelineHeader, str]
    try:
        outcome = split_header(text, "fuzz.sql")
    except PipelineError as error:
        outcome = error
    if isinstance(outcome, PipelineError):
        assert outcome.path == "fuzz.sql"
        assert outcome.line is None or 1 <= outcome.line <= text.count("\n") + 1
    else:
        header, body = outcome
        assert isinstance(header, PipelineHeader)
        assert body.count("\n") == text.count("\n")


def test_the_schema_revision_constant_is_alembics_head() -> None:
    # StateStore skips importing Alembic when the database is at SCHEMA_REVISION;
    # a new migration must move the constant too, or it would never run.
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from headwater.state import database as store

    config = Config()
    config.set_main_option("script_location", str(store._MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_current_head() == store.SCHEMA_REVISION


def test_an_audit_that_sets_two_checks_is_refused(tmp_path: Path) -> None:
    # One { ... } is one check; two in one table would silently run only the first.
    path = write(
        tmp_path,
        "p.sql",
        '/* headwater\naudits = [{ not_null = ["a"], unique = ["a"] }]\n*/\nSELECT 1 AS a\n',
    )
    with pytest.raises(PipelineError) as caught:
        load_file(path, "bigquery")
    assert "not_null, unique" in str(caught.value)
    assert caught.value.hint is not None


def test_two_files_with_one_name_are_named_when_one_does_not_load(tmp_path: Path) -> None:
    write(tmp_path, "users.py", USERS_PY)
    write(tmp_path, "users.sql", "SELEC user_id FROM events\n")
    error = load_graph(tmp_path, "bigquery").broken["users"].error
    assert "two pipelines are named users" in str(error)
