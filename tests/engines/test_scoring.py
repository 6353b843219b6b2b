"""Scoring pipelines in the conformance suite: the same features scored by the same model
(a SQL pipeline with ``model = "churn"`` and a Python one with ``ctx.score``, a live
joblib version and a shadow ONNX one) give the same predictions on every engine, equal to
scikit-learn's ``predict_proba`` on the same rows. On Spark the scoring runs on the
executors, through ``mapInArrow``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from headwater.process.models import Model, ModelCatalog, ModelError, ModelSettings
from headwater.state import StateStore
from tests.engines.conftest import ENGINE_NAMES, REFERENCE, open_engine
from tests.models.support import (
    DAYS,
    FEATURES_SQL,
    NOW,
    SCORES_SQL,
    USERS,
    expected,
    feature_rows,
    ingest,
    model_table,
    save_joblib,
    save_onnx,
    scored,
    train,
    workspace,
    write_project,
)

SCORES_PY = """\
import pyarrow as pa

from headwater.process import Context, pipeline


@pipeline(schedule="@daily", kind="incremental", time_column="day", inputs=["features"],
          models=["churn"], key=["day", "user_id", "model_version"])
def churn_scores_py(ctx: Context) -> pa.Table:
    assert ctx.model("churn").version
    return ctx.score("SELECT day, user_id, f1, f2, f3, f4 FROM features "
                     "WHERE day >= @start AND day < @end", "churn")
"""

Scores = dict[tuple[str, datetime], float]


@dataclass
class Outcome:
    sql: pa.Table
    python: pa.Table


@pytest.fixture(scope="module")
def outcomes(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Outcome]:
    folder = tmp_path_factory.mktemp("scoring")
    root = write_project(
        folder / "project",
        model_table(shadow="models/churn-v2.onnx"),
        {"features.sql": FEATURES_SQL, "churn_scores.sql": SCORES_SQL,
         "churn_scores_py.py": SCORES_PY},
    )  # fmt: skip
    save_joblib(train(seed=1), root / "models" / "churn.joblib")
    save_onnx(train(seed=3, c=0.1), root / "models" / "churn-v2.onnx")
    found = {}
    for name in ENGINE_NAMES:
        engine = open_engine(name, request, folder / name)
        metadata = StateStore.in_folder(folder / name / "metadata")
        try:
            ingest(engine, feature_rows())
            ws = workspace(root, engine, metadata)
            ws.backfill("churn_scores", DAYS[0], NOW)
            ws.backfill("churn_scores_py", DAYS[0], NOW)
            found[name] = Outcome(
                engine.query('SELECT * FROM "churn_scores"'),
                engine.query('SELECT * FROM "churn_scores_py"'),
            )
        finally:
            metadata.close()
            engine.close()
    return found


def _sorted(scores: Scores) -> list[float]:
    return [scores[k] for k in sorted(scores)]


@pytest.mark.parametrize("engine_name", ENGINE_NAMES)
@pytest.mark.parametrize("language", ["sql", "python"])
def test_live_predictions_equal_predict_proba(
    outcomes: dict[str, Outcome], engine_name: str, language: str
) -> None:
    table = getattr(outcomes[engine_name], language)
    assert table.num_rows == 2 * USERS * len(DAYS)
    want = expected(train(seed=1), feature_rows())
    got = scored(table)
    assert got.keys() == want.keys()
    np.testing.assert_allclose(_sorted(got), _sorted(want), rtol=1e-12)
    shadow = scored(table, shadow=True)
    want_shadow = expected(train(seed=3, c=0.1), feature_rows())
    np.testing.assert_allclose(_sorted(shadow), _sorted(want_shadow), atol=1e-5)


@pytest.mark.parametrize("engine_name", [n for n in ENGINE_NAMES if n != REFERENCE])
@pytest.mark.parametrize("language", ["sql", "python"])
def test_every_engine_scores_as_the_reference(
    outcomes: dict[str, Outcome], engine_name: str, language: str
) -> None:
    def rows(table: pa.Table) -> set[tuple[object, ...]]:
        return {
            (r["user_id"], r["day"].timestamp(), round(r["churn_probability"], 12),
             r["model"], r["model_version"], r["shadow"])
            for r in table.to_pylist()
        }  # fmt: skip

    reference = getattr(outcomes[REFERENCE], language)
    other = getattr(outcomes[engine_name], language)
    assert rows(other) == rows(reference)
    assert other.schema.names == reference.schema.names


RULES = """\
import pyarrow as pa
import pyarrow.compute as pc


def sizes(batch):
    # Each row's output: how many rows the model was called with.
    return pa.table({"called_with": pa.repeat(pa.scalar(batch.num_rows, pa.int64()),
                                              batch.num_rows)})


def refuses(batch):
    if pc.any(pc.equal(batch["f1"], 12345.0)).as_py():
        raise ValueError("f1 = 12345 is out of range")
    return pa.table({"called_with": pa.repeat(pa.scalar(batch.num_rows, pa.int64()),
                                              batch.num_rows)})
"""
#: One partition of 30,000 rows: Spark hands its Python worker batches of 10,000 (its
#: spark.sql.execution.arrow.maxRecordsPerBatch default).
SPARK_ROWS = "SELECT /*+ REPARTITION(1) */ CAST(id AS DOUBLE) AS f1 FROM range(30000)"


def _callable(folder: Path, function: str, batch_rows: int) -> Model:
    (folder / "models").mkdir(parents=True, exist_ok=True)
    (folder / "models" / "rules.py").write_text(RULES, "utf-8")
    settings = ModelSettings(
        function=f"rules:{function}", inputs=["f1"], outputs=["called_with"],
        batch_rows=batch_rows,
    )  # fmt: skip
    return ModelCatalog({"rules": settings}, folder).get("rules")


def _on_spark(
    request: pytest.FixtureRequest, folder: Path, function: str
) -> tuple[Model, pa.Table | ModelError]:
    """The callable model ``function`` (batch_rows 12,000) over SPARK_ROWS on Spark: the
    model, and the scored rows or the ModelError the run raised."""
    engine = open_engine("spark", request, folder / "spark")
    try:
        model = _callable(folder, function, 12_000)
        columns = engine.select(f"SELECT * FROM ({SPARK_ROWS}) AS q LIMIT 0", {}).table.schema
        scorer = model.scorer(columns, NOW)
        try:
            return model, engine.map_batches(SPARK_ROWS, {}, scorer, scorer.schema)
        except ModelError as exc:
            return model, exc
    finally:
        engine.close()


def test_spark_scores_batches_of_the_models_batch_rows(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    _, table = _on_spark(request, tmp_path, "sizes")
    assert isinstance(table, pa.Table)
    assert table.num_rows == 30_000
    # Regrouped to 12,000 rows a call (Spark's own batches are 10,000): 12,000 and what is
    # left of each regrouped part.
    assert max(table["called_with"].to_pylist()) == 12_000


def test_a_model_that_raises_on_an_executor_is_the_same_error_as_on_the_other_engines(
    request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    model, error = _on_spark(request, tmp_path, "refuses")
    assert isinstance(error, ModelError)
    assert (error.model, error.version, error.row) == ("rules", model.version, {"f1": 12345.0})
    assert "the model raised ValueError: f1 = 12345 is out of range" in str(error)
