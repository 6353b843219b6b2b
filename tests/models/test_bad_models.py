"""Every way a model can be wrong is a terminal error that names the model, its version and
(for a bad row) the first bad row; nothing is published."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from sklearn.linear_model import LogisticRegression

from headwater.core.errors import TerminalError
from headwater.process.models import ModelError
from headwater.state import StateStore
from headwater.store.duckdb import DuckDBEngine
from tests.models.support import (
    DAYS,
    FEATURES,
    FEATURES_SQL,
    NOW,
    SCORES_SQL,
    model_table,
    save_joblib,
    save_onnx,
    train,
    training_data,
    version_of,
    workspace,
    write_project,
)


def _fails(root: Path, store: tuple[DuckDBEngine, StateStore], *needles: str) -> TerminalError:
    """Backfill the scores: it fails with a terminal error saying each of ``needles``, and
    the scores table has no row and no interval done."""
    engine, metadata = store
    ws = workspace(root, engine, metadata)
    with pytest.raises(TerminalError) as caught:
        ws.backfill("churn_scores", DAYS[0], NOW)
    text = str(caught.value)
    for needle in needles:
        assert needle in text, text
    assert "churn_scores" not in engine.list_tables()
    assert metadata.runs.intervals("churn_scores") == {}
    # A run that failed is no use of a model version: the registry has none.
    assert metadata.models.versions() == []
    return caught.value


def _selecting(tmp_path: Path, features: str) -> tuple[Path, Path]:
    """A project whose scoring query selects ``features`` instead of f1, f2, f3, f4, and its
    model (trained, saved with joblib): the project's folder and the artifact."""
    scores = SCORES_SQL.replace("f1, f2, f3, f4", features)
    root = write_project(
        tmp_path / "project",
        model_table(),
        {"features.sql": FEATURES_SQL, "churn_scores.sql": scores},
    )
    return root, save_joblib(train(), root / "models" / "churn.joblib")


def test_a_missing_artifact_names_the_model_and_the_path(
    tmp_path: Path, store: tuple[DuckDBEngine, StateStore]
) -> None:
    root = write_project(tmp_path / "project", model_table())
    error = _fails(root, store, "model churn", "models/churn.joblib does not exist")
    assert error.hint is not None
    assert "[models.churn]" in error.hint


@pytest.mark.parametrize("name", ["churn.joblib", "churn.onnx"])
def test_a_corrupt_artifact_names_the_model_and_itsversion_of(
    name: str, tmp_path: Path, store: tuple[DuckDBEngine, StateStore]
) -> None:
    root = write_project(tmp_path / "project", model_table(f"models/{name}"))
    path = root / "models" / name
    path.parent.mkdir(parents=True)
    path.write_bytes(b"\x80\x04 this is not a model" * 10)
    _fails(root, store, "model churn", f"(version {version_of(path)})", "models/" + name)


@pytest.mark.parametrize("save", [save_joblib, save_onnx])
def test_a_model_of_another_feature_count_is_refused(
    save: object, tmp_path: Path, store: tuple[DuckDBEngine, StateStore]
) -> None:
    suffix = "joblib" if save is save_joblib else "onnx"
    root = write_project(tmp_path / "project", model_table(f"models/churn.{suffix}"))
    x, y = training_data(1)
    narrow = LogisticRegression().fit(x[:, :3], y)
    path = root / "models" / f"churn.{suffix}"
    if save is save_joblib:
        save_joblib(narrow, path)
    else:
        from skl2onnx import to_onnx

        path.parent.mkdir(parents=True, exist_ok=True)
        onnx = to_onnx(narrow, x[:1, :3].astype(np.float32), options={"zipmap": False})
        path.write_bytes(onnx.SerializeToString())
    _fails(root, store, "model churn", f"(version {version_of(path)})",
           "takes 3 features and inputs names 4")  # fmt: skip


def test_a_model_trained_on_other_feature_names_is_refused(
    tmp_path: Path, store: tuple[DuckDBEngine, StateStore]
) -> None:
    root = write_project(tmp_path / "project", model_table())
    x, y = training_data(1)
    frame = pd.DataFrame(x, columns=["f1", "f2", "f4", "f3"])
    path = save_joblib(LogisticRegression().fit(frame, y), root / "models" / "churn.joblib")
    _fails(root, store, f"(version {version_of(path)})",
           "trained on features f1, f2, f4, f3, inputs names f1, f2, f3, f4")  # fmt: skip


def test_a_model_trained_on_the_same_feature_names_scores(
    tmp_path: Path, store: tuple[DuckDBEngine, StateStore]
) -> None:
    engine, metadata = store
    root = write_project(tmp_path / "project", model_table())
    x, y = training_data(1)
    model = LogisticRegression().fit(pd.DataFrame(x, columns=list(FEATURES)), y)
    save_joblib(model, root / "models" / "churn.joblib")
    workspace(root, engine, metadata).backfill("churn_scores", DAYS[0], NOW)
    assert engine.query('SELECT COUNT(*) AS n FROM "churn_scores"')["n"][0].as_py() > 0


def test_a_feature_of_text_is_refused_before_scoring(
    tmp_path: Path, store: tuple[DuckDBEngine, StateStore]
) -> None:
    root, path = _selecting(tmp_path, "CAST(f1 AS STRING) AS f1, f2, f3, f4")
    _fails(root, store, "churn_scores", f"model churn (version {version_of(path)})",
           "feature f1 is string; a model takes numbers")  # fmt: skip


def test_a_query_without_a_feature_is_refused(
    tmp_path: Path, store: tuple[DuckDBEngine, StateStore]
) -> None:
    root, _ = _selecting(tmp_path, "f1, f2, f3")
    _fails(root, store, "model churn", "the query does not give feature f4")


def test_a_null_feature_names_the_first_bad_row(
    tmp_path: Path, store: tuple[DuckDBEngine, StateStore]
) -> None:
    root, path = _selecting(tmp_path, "f1, f2, IF(user_id = 'u007', NULL, f3) AS f3, f4")
    error = _fails(root, store, f"model churn (version {version_of(path)})",
                   "feature f3 is NULL", "first bad row: {", "user_id='u007'")  # fmt: skip
    assert isinstance(error, ModelError)
    assert error.row is not None
    assert error.row["user_id"] == "u007"


def test_a_model_that_raises_on_a_batch_names_the_first_bad_row(
    tmp_path: Path, store: tuple[DuckDBEngine, StateStore]
) -> None:
    # LogisticRegression refuses NaN: the batch fails, and bisection finds the row.
    root, path = _selecting(
        tmp_path, "f1, IF(user_id = 'u023', IEEE_DIVIDE(0, 0), f2) AS f2, f3, f4"
    )
    error = _fails(root, store, f"model churn (version {version_of(path)})",
                   "the model raised ValueError", "NaN")  # fmt: skip
    assert isinstance(error, ModelError)
    assert error.row is not None
    assert error.row["user_id"] == "u023"
    assert error.pipeline == "churn_scores"


def test_a_callable_that_raises_names_its_first_bad_row(
    tmp_path: Path, store: tuple[DuckDBEngine, StateStore]
) -> None:
    table = model_table().replace('path = "models/churn.joblib"', 'function = "rules:score"')
    root = write_project(tmp_path / "project", table)
    module = root / "models" / "rules.py"
    module.parent.mkdir(parents=True)
    module.write_text(
        textwrap.dedent(
            """\
            import pyarrow as pa
            import pyarrow.compute as pc


            def score(batch: pa.RecordBatch) -> pa.RecordBatch:
                if pc.any(pc.greater(batch["f1"], 2.0)).as_py():
                    raise ArithmeticError("f1 out of range")
                return pa.record_batch(
                    {"churn_probability": pc.divide(pc.add(batch["f2"], 3.0), 6.0)}
                )
            """
        ),
        "utf-8",
    )
    error = _fails(root, store, f"model churn (version {version_of(module, 'score')})",
                   "ArithmeticError: f1 out of range")  # fmt: skip
    assert isinstance(error, ModelError)
    assert error.row is not None
    assert error.row["f1"] > 2.0


def test_an_undeclared_model_sets_its_pipeline_apart(
    tmp_path: Path, store: tuple[DuckDBEngine, StateStore]
) -> None:
    root = write_project(tmp_path / "project", "")
    error = _fails(root, store, "model churn", "is not declared in headwater.toml")
    assert error.hint is not None
    assert "[models.churn]" in error.hint


UNDECLARED_PY = """\
import pyarrow as pa

from headwater.process import Context, pipeline


@pipeline(schedule="@daily", kind="incremental", time_column="day", inputs=["features"])
def churn_scores(ctx: Context) -> pa.Table:
    return ctx.score("SELECT day, user_id, f1, f2, f3, f4 FROM features "
                     "WHERE day >= @start AND day < @end", "churn")
"""


def test_a_python_pipeline_using_a_model_it_does_not_name_fails_with_the_fix(
    tmp_path: Path, store: tuple[DuckDBEngine, StateStore]
) -> None:
    root = write_project(
        tmp_path / "project",
        model_table(),
        {"features.sql": FEATURES_SQL, "churn_scores.py": UNDECLARED_PY},
    )
    save_joblib(train(), root / "models" / "churn.joblib")
    error = _fails(root, store, "uses model 'churn' without naming it in models")
    assert error.hint is not None
    assert '@pipeline(models=["churn"])' in error.hint


def test_a_python_pipeline_with_a_model_header_key_is_refused(
    tmp_path: Path, store: tuple[DuckDBEngine, StateStore]
) -> None:
    text = UNDECLARED_PY.replace('inputs=["features"]', 'inputs=["features"], model="churn"')
    root = write_project(
        tmp_path / "project",
        model_table(),
        {"features.sql": FEATURES_SQL, "churn_scores.py": text},
    )
    save_joblib(train(), root / "models" / "churn.joblib")
    error = _fails(root, store, "model = ... is a SQL pipeline's header key")
    assert error.hint is not None
    assert '@pipeline(models=["churn"])' in error.hint


def test_a_run_that_fails_its_audits_records_no_use_and_the_next_success_does(
    tmp_path: Path, store: tuple[DuckDBEngine, StateStore]
) -> None:
    scores = SCORES_SQL.replace("audits = [", "audits = [\n  { row_count = { min = 1000000 } },", 1)
    root = write_project(
        tmp_path / "project",
        model_table(),
        {"features.sql": FEATURES_SQL, "churn_scores.sql": scores},
    )
    artifact = save_joblib(train(), root / "models" / "churn.joblib")
    _fails(root, store, "row_count")

    (root / "pipelines" / "churn_scores.sql").write_text(SCORES_SQL)
    engine, metadata = store
    workspace(root, engine, metadata).backfill("churn_scores", DAYS[0], NOW)
    (seen,) = metadata.models.versions()
    assert (seen.version, seen.intervals) == (version_of(artifact), len(DAYS))
