"""``headwater validate`` as CI or an editor runs it, and ``headwater query`` in the
project's dialect. (tests/test_validate.py is about validating events at ingest.)"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest

from tests.conftest import Project

#: An incremental pipeline without time_column, which a run would refuse at load.
NO_TIME_COLUMN = """/* headwater
kind = "incremental"
*/
SELECT TIMESTAMP_TRUNC(received_at, HOUR) AS hour, COUNT(*) AS n
FROM events
WHERE received_at >= @start AND received_at < @end
GROUP BY hour
"""

#: Two unknown columns: a typo of an events column, and an event property.
UNKNOWN_COLUMNS = """/* headwater
schedule = "@daily"
*/
SELECT
  user_idd,
  plan,
  COUNT(*) AS events
FROM events
GROUP BY 1, 2
"""

#: time_column and key naming columns the query does not output, and a sink nobody declared.
WRONG_HEADER_COLUMNS = """/* headwater
kind = "incremental"
time_column = "hour"
key = ["hour", "plan"]
sinks = ["crm"]
*/
SELECT TIMESTAMP_TRUNC(received_at, HOUR) AS hr, COUNT(*) AS n
FROM events
WHERE received_at >= @start AND received_at < @end
GROUP BY hr
"""

PYTHON_PIPELINE = """import pyarrow as pa

from headwater.process import Context, pipeline


@pipeline(schedule="@daily", inputs=["events"]{schema})
def scores(ctx: Context) -> pa.Table:
    return pa.table({{"user_id": ["u1"], "{column}": [1]}})
"""


def _write(project: Project, files: dict[str, str]) -> None:
    for name, text in files.items():
        (project.root / "pipelines" / name).write_text(text)


def _lines(output: str, project: Project) -> list[str]:
    """The problems and the summary, without their fixes, paths as from the project's folder
    (the tests run elsewhere; a path outside the working folder is printed whole)."""
    output = output.replace(f"{project.root}/", "")
    return [line for line in output.splitlines() if line and not line.startswith("    ")]


def test_every_problem_of_every_file_is_reported_in_one_run(project: Project) -> None:
    _write(
        project,
        {
            "syntax_error.sql": "SELECT event,\n  FROM events WHERE\n",
            "unknown_columns.sql": UNKNOWN_COLUMNS,
            "reads_nothing.sql": "SELECT user_id FROM hourly_event_count\n",
            "no_time_column.sql": NO_TIME_COLUMN,
            "wrong_header.sql": WRONG_HEADER_COLUMNS,
            # A Python pipeline's output is unknown: its readers' columns are not guessed at.
            "scores.py": PYTHON_PIPELINE.format(schema="", column="score"),
            "reads_scores.sql": "SELECT user_id, anything_at_all FROM scores\n",
        },
    )
    result = project.cli("validate", check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    out = result.stdout
    problems = _lines(out, project)[:-1]
    assert problems == [
        "pipelines/no_time_column.sql:2:1: an incremental pipeline needs time_column, the "
        "output column holding each row's time",
        "pipelines/reads_nothing.sql:1:21: reads hourly_event_count, which is neither a table "
        "nor a pipeline",
        "pipelines/syntax_error.sql:2:15: the SQL does not parse: Required keyword: 'this' "
        "missing for <class 'sqlglot.expressions.query.Where'>",
        "pipelines/unknown_columns.sql:5:3: events has no column user_idd (nearest: user_id)",
        "pipelines/unknown_columns.sql:6:3: events has no column plan (nearest: type)",
        "pipelines/wrong_header.sql:3:1: time_column names hour, which is not a column of the "
        "output (each row's time)",
        "pipelines/wrong_header.sql:4:1: key names hour, which is not a column of the output "
        "(the output's key)",
        "pipelines/wrong_header.sql:4:1: key names plan, which is not a column of the output "
        "(the output's key)",
        "pipelines/wrong_header.sql:5:1: sinks names crm, which is not a [sinks.crm] table in "
        "headwater.toml (declared: files)",
    ], out
    assert _lines(out, project)[-1] == (
        "9 problems in 5 of 9 pipeline files (bigquery SQL for the duckdb engine)."
    )
    # The fixes: the nearest name, and where an event property lives, in the project's dialect.
    assert "    fix: did you mean user_id?" in out
    assert (
        "    fix: if it is an event property, it lives in the JSON column properties (traits in "
        "traits, the rest in context): write JSON_VALUE(properties, '$.plan'), or "
        "JSON_VALUE(traits, '$.plan') for a trait"
    ) in out
    assert "    fix: did you mean hourly_event_counts?" in out
    assert "    fix: did you mean hr?" in out
    assert 'e.g. time_column = "hour"' in out

    editor = project.cli("validate", "--json", check=False)
    assert editor.returncode == 1
    found = json.loads(editor.stdout.replace(f"{project.root}/", ""))
    assert len(found) == 9
    assert set(found[0]) == {"file", "line", "column", "message", "hint", "pipeline"}
    plan = next(p for p in found if p["message"].startswith("events has no column plan"))
    assert (plan["file"], plan["line"], plan["column"], plan["pipeline"]) == (
        "pipelines/unknown_columns.sql", 6, 3, "unknown_columns",
    )  # fmt: skip
    assert "JSON_VALUE(properties, '$.plan')" in plan["hint"]
    # Nothing was opened: no data folder, no store.
    assert not project.data_dir.exists()


def test_a_clean_project_exits_0_with_one_line(project: Project) -> None:
    result = project.cli("validate")
    assert result.stdout == (
        "2 pipeline files checked, no problems (bigquery SQL for the duckdb engine).\n"
    )
    assert json.loads(project.cli("validate", "--json").stdout) == []
    assert not project.data_dir.exists()


def test_a_field_of_a_json_column_and_a_cycle(project: Project) -> None:
    _write(
        project,
        {
            "dotted.sql": "SELECT properties.plan AS plan,\n  COUNT(*) AS n FROM events GROUP BY 1",
            "first.sql": "SELECT n FROM second",
            "second.sql": "SELECT n FROM first",
        },
    )
    result = project.cli("validate", check=False)
    assert result.returncode == 1
    assert _lines(result.stdout, project)[:-1] == [
        "pipelines/dotted.sql:1:8: properties.plan reads a field of properties, which holds "
        "JSON text, not a struct",
        "pipelines/first.sql:1:15: pipelines read each other in a cycle: first -> second -> first",
    ], result.stdout
    assert "    fix: read it with JSON_VALUE(properties, '$.plan')\n" in result.stdout


def test_env_picks_the_engine_dialect_without_reaching_the_engine(project: Project) -> None:
    # Nothing listens on port 1: a connection attempt would fail (or hang), not validate.
    project.configure(
        '[environments.shared.store]\nengine = "postgres"\n'
        'url = "postgresql://headwater@127.0.0.1:1/nowhere"\n'
        '[environments.warehouse.store]\nengine = "bigquery"\nproject = "nobody-at-all"\n'
    )
    _write(
        project,
        {
            "names.sql": '/* headwater\nschedule = "@daily"\n*/\nSELECT\n  source,\n'
            "  JSON_QUERY(properties, '$.cart') AS cart\nFROM events\n"
        },
    )
    assert project.cli("validate").returncode == 0  # DuckDB has it
    began = time.monotonic()
    result = project.cli("validate", "--env", "shared", check=False)
    assert time.monotonic() - began < 30
    assert result.returncode == 1, result.stdout + result.stderr
    assert _lines(result.stdout, project) == [
        "pipelines/names.sql:6:3: JSON_QUERY cannot run on postgres as BigQuery runs it: "
        "PostgreSQL keeps the JSON text as written (spaces included) where BigQuery writes it "
        "compactly",
        "1 problem in 1 of 3 pipeline files (bigquery SQL for the postgres engine).",
    ]
    # BigQuery without credentials: its own dialect, nothing to translate.
    assert project.cli("validate", "--env", "warehouse").stdout == (
        "3 pipeline files checked, no problems (bigquery SQL for the bigquery engine).\n"
    )
    # The option before the command picks it too.
    assert project.cli("--env", "shared", "validate", check=False).returncode == 1
    assert not project.data_dir.exists()


def test_a_broken_headwater_toml_is_one_problem_for_an_editor(project: Project) -> None:
    project.configure("[pipelines]\nfolder = 3\n")
    result = project.cli("validate", "--json", check=False)
    assert result.returncode == 1
    (problem,) = json.loads(result.stdout)
    assert problem["file"].endswith("headwater.toml")
    assert problem["pipeline"] is None
    plain = project.cli("validate", check=False)
    assert plain.returncode == 1
    assert plain.stderr.startswith("Error: ")


@pytest.mark.parametrize(
    ("sql", "answer"),
    [
        ("SELECT SAFE_DIVIDE(1, 0) AS r", [{"r": None}]),
        ("SELECT FORMAT_DATE('%Y', DATE '2025-01-02') AS y", [{"y": "2025"}]),
        ("SELECT COUNT(*) AS n FROM `my-project.analytics.events`", [{"n": 0}]),
        (
            "SELECT table_name FROM headwater.INFORMATION_SCHEMA.TABLES "
            "WHERE table_name = 'events'",
            [{"table_name": "events"}],
        ),
        # INT64, as in a pipeline (DuckDB's sum is a HUGEINT, written as text in JSON).
        ("SELECT SUM(x) AS s FROM UNNEST([1, 2, 3]) AS x", [{"s": 6}]),
    ],
    ids=["safe_divide", "format_date", "qualified-name", "information_schema", "sum"],
)
def test_query_takes_bigquery_sql_on_the_duckdb_store(
    shared_project: Project, sql: str, answer: list[dict[str, object]]
) -> None:
    result = shared_project.cli("query", sql, "--format", "json")
    assert json.loads(result.stdout) == answer


def test_query_says_which_dialect_it_takes(shared_project: Project) -> None:
    # DuckDB's own cast syntax is not BigQuery's.
    for text in ("SELECT 1::INTEGER AS x FROM events WHERE", "SELECT '5'::INTEGER AS x"):
        result = shared_project.cli("query", text, check=False)
        assert result.returncode == 1, result.stdout
        assert result.stderr.startswith("Error: query failed: the query is not BigQuery SQL")
        assert '[project] dialect = "bigquery"' in result.stderr


def test_a_duckdb_dialect_project_queries_in_duckdb_sql(tmp_path: Path) -> None:
    from headwater.cli.scaffold import init_project

    root = tmp_path / "duck"
    project = Project(root=root, key=init_project(root))
    toml = root / "headwater.toml"
    toml.write_text(toml.read_text().replace('dialect = "bigquery"', 'dialect = "duckdb"'))
    result = project.cli("query", "SELECT [1, 2][1] AS first, 7 // 2 AS half", "-f", "json")
    assert json.loads(result.stdout) == [{"first": 1, "half": 3}]


def test_a_python_pipeline_declares_its_output_for_its_readers_and_its_runs(
    project: Project,
) -> None:
    declared = ', schema=pa.schema({"user_id": pa.string(), "score": pa.float64()})'
    _write(
        project,
        {
            "scores.py": PYTHON_PIPELINE.format(schema=declared, column="score"),
            "top.sql": "SELECT user_id, scor FROM scores WHERE score > 0.5\n",
        },
    )
    result = project.cli("validate", check=False)
    assert _lines(result.stdout, project)[0] == (
        "pipelines/top.sql:1:17: scores has no column scor (nearest: score)"
    )
    # A run publishes the declared types (the function returned integers) ...
    day = ("--start", "2026-11-01", "--end", "2026-11-02")
    project.cli("run", "scores", *day)
    assert project.query("SELECT score FROM scores").to_pylist() == [{"score": 1.0}]
    # ... and fails when the function's columns are not the declared ones.
    _write(project, {"scores.py": PYTHON_PIPELINE.format(schema=declared, column="points")})
    failed = project.cli("run", "scores", *day, check=False)
    assert failed.returncode == 1
    assert (
        "the output's columns are not the declared schema (score missing; points not declared)"
    ) in failed.stderr
    assert project.query("SELECT score FROM scores").to_pylist() == [{"score": 1.0}]


GOLDEN = Path(__file__).parent / "golden" / "transpile"


@pytest.mark.parametrize("engine", ["duckdb", "spark", "bigquery"])
def test_the_golden_bigquery_idioms_have_no_problems(tmp_path: Path, engine: str) -> None:
    # Valid SQL must validate: a checker that cries wolf is switched off in CI.
    from headwater.process.validate import validate

    for source in GOLDEN.glob("*.bigquery.sql"):
        (tmp_path / source.name.replace(".bigquery", "")).write_text(source.read_text())
    (tmp_path / "uses.sql").write_text(
        "WITH s AS (SELECT user_id, LAG(received_at) OVER (PARTITION BY user_id "
        "ORDER BY received_at) AS prev FROM events)\n"
        "SELECT s.user_id, f.code, COUNTIF(s.prev IS NULL) AS firsts, ANY_VALUE(q.person) AS p\n"
        "FROM s JOIN failed_events AS f ON f.source = s.user_id\n"
        "LEFT JOIN `qualify` AS q ON q.person = s.user_id\n"
        "WHERE EXISTS (SELECT 1 FROM events e WHERE e.user_id = s.user_id)\n"
        "GROUP BY 1, 2 HAVING firsts > 0 ORDER BY firsts DESC\n"
    )
    report = validate(tmp_path, "bigquery", engine)
    assert report.files == len(list(GOLDEN.glob("*.bigquery.sql"))) + 1
    assert report.problems == []


def test_a_broken_header_does_not_hide_the_sql_problems_of_its_file(project: Project) -> None:
    _write(
        project,
        {
            # A typo in a key, and a column that is no column.
            "typo.sql": '/* headwater\nkindd = "full"\n*/\nSELECT user_id, plan FROM events\n',
            # A header that is not TOML, and SQL that does not parse.
            "both.sql": "/* headwater\nkind = \n*/\nSELECT event,\n  FROM events WHERE\n",
            # The header alone is broken: one problem, not two.
            "header_only.sql": '/* headwater\nschedul = "@daily"\n*/\nSELECT event FROM events\n',
        },
    )
    result = project.cli("validate", check=False)
    assert result.returncode == 1, result.stdout + result.stderr
    problems = [p for p in _lines(result.stdout, project)[:-1] if "pipelines/" in p]
    assert [p.split(": ", 1)[0] for p in problems] == [
        "pipelines/both.sql:2:8",
        "pipelines/both.sql:5:15",
        "pipelines/header_only.sql:2:1",
        "pipelines/typo.sql:2:1",
        "pipelines/typo.sql:4:17",
    ], problems
    assert "unknown header key `kindd`" in problems[3]
    assert "events has no column plan" in problems[4]
    assert "the SQL does not parse" in problems[1]
