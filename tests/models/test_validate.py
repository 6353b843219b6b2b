"""``headwater validate`` on scoring pipelines: the query's own columns are checked, and the
columns a model appends (named in headwater.toml, which validate does not read for them)
are not reported missing, in the header or in the pipelines that read the scores."""

from __future__ import annotations

import shutil
from pathlib import Path

from headwater.process.validate import validate

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "churn"

READER = """\
/* headwater
kind = "full"
*/
SELECT COUNT(*) AS at_risk FROM churn_scores WHERE churn_probability > 0.5 AND NOT shadow
"""


def test_the_example_and_a_reader_of_its_scores_validate(tmp_path: Path) -> None:
    folder = tmp_path / "pipelines"
    shutil.copytree(EXAMPLE / "pipelines", folder)
    (folder / "at_risk.sql").write_text(READER, "utf-8")
    report = validate(folder, "bigquery", "duckdb")
    assert report.problems == []
    assert report.files == 3


def test_a_wrong_feature_column_is_still_found(tmp_path: Path) -> None:
    folder = tmp_path / "pipelines"
    shutil.copytree(EXAMPLE / "pipelines", folder)
    scores = folder / "churn_scores.sql"
    scores.write_text(scores.read_text().replace("days_active,", "days_actve,"), "utf-8")
    report = validate(folder, "bigquery", "duckdb")
    assert [p.pipeline for p in report.problems] == ["churn_scores"]
    assert "days_actve" in report.problems[0].message


def test_a_model_not_declared_is_named_at_its_header_line(tmp_path: Path) -> None:
    folder = tmp_path / "pipelines"
    shutil.copytree(EXAMPLE / "pipelines", folder)
    report = validate(folder, "bigquery", "duckdb", models=["churn_v2"])
    (problem,) = report.problems
    assert problem.pipeline == "churn_scores"
    assert problem.message.startswith("scores with model churn, which is not a [models.churn]")
    assert problem.line == 5
    assert problem.hint is not None
    assert '[models.churn] with path = "models/churn.onnx"' in problem.hint
