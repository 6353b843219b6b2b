"""Each kind of model through the scoring path, without a store: regressors, classifiers
without probabilities, multi-class probabilities, callables; and loading once per version."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from sklearn.linear_model import LinearRegression, LogisticRegression
from sklearn.svm import LinearSVC

from headwater.process.models import ModelCatalog, ModelError, ModelSettings
from headwater.process.models.predictors import predictor
from tests.models.support import FEATURES, save_joblib, training_data

AT = datetime(2026, 12, 1, tzinfo=UTC)


def _catalog(root: Path, outputs: list[str], **values: str) -> ModelCatalog:
    settings = ModelSettings(inputs=list(FEATURES), outputs=outputs, **values)  # type: ignore[arg-type]
    return ModelCatalog({"m": settings}, root)


def _rows(count: int = 300) -> tuple[np.ndarray, pa.Table]:
    x, _ = training_data(9, count)
    table = pa.table({"id": pa.array(range(count), pa.int32())})
    for index, name in enumerate(FEATURES):
        table = table.append_column(name, pa.array(x[:, index]))
    return x, table


def test_a_regressor_gives_its_predictions(tmp_path: Path) -> None:
    x, y = training_data(1)
    model = LinearRegression().fit(x, y * 3.5)
    save_joblib(model, tmp_path / "m.joblib")
    rows, table = _rows()
    scored = _catalog(tmp_path, ["value"], path="m.joblib").get("m").score(table, AT)
    np.testing.assert_allclose(scored["value"].to_numpy(), model.predict(rows), rtol=1e-12)
    assert scored["id"].to_pylist() == list(range(300))
    assert scored.schema.field("id").type == pa.int32()


def test_a_classifier_without_probabilities_gives_its_labels(tmp_path: Path) -> None:
    x, y = training_data(1)
    labels = np.where(y == 1, "churns", "stays")
    model = LinearSVC().fit(x, labels)
    save_joblib(model, tmp_path / "m.joblib")
    rows, table = _rows()
    scored = _catalog(tmp_path, ["label"], path="m.joblib").get("m").score(table, AT)
    assert scored.schema.field("label").type == pa.string()
    assert scored["label"].to_pylist() == model.predict(rows).tolist()


def test_a_multiclass_model_gives_one_probability_per_output(tmp_path: Path) -> None:
    x, _ = training_data(1)
    classes = np.digitize(x[:, 0], [-0.5, 0.5])
    model = LogisticRegression().fit(x, classes)
    save_joblib(model, tmp_path / "m.joblib")
    rows, table = _rows()
    names = ["low", "middle", "high"]
    scored = _catalog(tmp_path, names, path="m.joblib").get("m").score(table, AT)
    want = model.predict_proba(rows)
    for index, name in enumerate(names):
        np.testing.assert_allclose(scored[name].to_numpy(), want[:, index], rtol=1e-12)
    with pytest.raises(ModelError, match="gives 3 columns and outputs names 2"):
        _catalog(tmp_path, ["low", "high"], path="m.joblib").get("m").load()


def test_a_callable_gives_its_columns_of_their_types(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "rules.py").write_text(
        "import pyarrow as pa\nimport pyarrow.compute as pc\n\n\n"
        "def score(batch):\n"
        "    risky = pc.greater(batch['f1'], 0)\n"
        "    points = pc.cast(pc.floor(batch['f2']), pa.int64())\n"
        "    return pa.table({'risky': risky, 'points': points})\n",
        "utf-8",
    )
    rows, table = _rows()
    model = _catalog(tmp_path, ["risky", "points"], function="rules:score").get("m")
    scored = model.score(table, AT)
    assert scored.schema.field("risky").type == pa.bool_()
    assert scored.schema.field("points").type == pa.int64()
    assert scored["risky"].to_pylist() == (rows[:, 0] > 0).tolist()
    assert model.live.source.startswith("rules:score (")


def test_a_version_loads_once_and_a_new_file_is_a_new_version(tmp_path: Path) -> None:
    x, y = training_data(1)
    path = save_joblib(LogisticRegression().fit(x, y), tmp_path / "m.joblib")
    catalog = _catalog(tmp_path, ["p"], path="m.joblib")
    first = catalog.get("m")
    again = catalog.get("m")
    assert again.version == first.version
    inputs, outputs = first.inputs, first.outputs
    assert predictor(first.live, inputs, outputs) is predictor(again.live, inputs, outputs)

    save_joblib(LogisticRegression(C=0.01).fit(x, y), path)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    changed = catalog.get("m")
    assert changed.version != first.version
    assert predictor(changed.live, inputs, outputs) is not predictor(first.live, inputs, outputs)


def test_two_functions_of_one_module_are_two_models(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "rules.py").write_text(
        "import pyarrow as pa\nimport pyarrow.compute as pc\n\n\n"
        "def double(batch):\n    return pa.table({'p': pc.multiply(batch['f1'], 2.0)})\n\n\n"
        "def negate(batch):\n    return pa.table({'p': pc.negate(batch['f1'])})\n",
        "utf-8",
    )
    rows, table = _rows(10)
    doubled = _catalog(tmp_path, ["p"], function="rules:double").get("m").score(table, AT)
    negated = _catalog(tmp_path, ["p"], function="rules:negate").get("m").score(table, AT)
    np.testing.assert_allclose(doubled["p"].to_numpy(), rows[:, 0] * 2)
    np.testing.assert_allclose(negated["p"].to_numpy(), -rows[:, 0])
    # Each its own version: a live function and its shadow's rows are told apart.
    assert doubled["model_version"][0] != negated["model_version"][0]


def test_a_callable_that_builds_its_output_from_a_list_is_typed_by_what_it_gives(
    tmp_path: Path,
) -> None:
    """``pa.array([])`` of an empty batch is of type null: the type comes from a row."""
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "flat.py").write_text(
        "import pyarrow as pa\n\n\n"
        "def half(batch):\n"
        "    return pa.record_batch({'q': pa.array([0.5] * batch.num_rows)})\n\n\n"
        "def labels(batch):\n    return pa.table({'q': ['x'] * batch.num_rows})\n",
        "utf-8",
    )
    _, table = _rows(5)
    scored = _catalog(tmp_path, ["q"], function="flat:half").get("m").score(table, AT)
    assert scored.schema.field("q").type == pa.float64()
    assert scored["q"].to_pylist() == [0.5] * 5
    labelled = _catalog(tmp_path, ["q"], function="flat:labels").get("m").score(table, AT)
    assert labelled["q"].to_pylist() == ["x"] * 5


def test_a_callable_giving_other_columns_than_outputs_names_them(tmp_path: Path) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "wide.py").write_text(
        "import pyarrow as pa\n\n\n"
        "def wide(batch):\n"
        "    n = batch.num_rows\n"
        "    return pa.table({'q': pa.array([1.0] * n, pa.float64()),"
        " 'r': pa.array([2.0] * n, pa.float64())})\n",
        "utf-8",
    )
    _, table = _rows(5)
    with pytest.raises(ModelError, match=r"returned columns q, r; outputs are q \(not r\)"):
        _catalog(tmp_path, ["q"], function="wide:wide").get("m").score(table, AT)
    with pytest.raises(ModelError, match=r"outputs are q, r, s \(no s\)"):
        _catalog(tmp_path, ["q", "r", "s"], function="wide:wide").get("m").score(table, AT)


def test_a_callable_may_hand_its_inputs_back_beside_its_outputs_and_take_booleans(
    tmp_path: Path,
) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "appended.py").write_text(
        "import pyarrow as pa\n\n\n"
        "def score(batch):\n"
        "    flags = batch.column('flag').to_pylist()\n"
        "    return batch.append_column('q', pa.array([0.9 if f else 0.1 for f in flags]))\n",
        "utf-8",
    )
    table = pa.table({"id": [1, 2], "flag": [True, False]})
    settings = ModelSettings(inputs=["flag"], outputs=["q"], function="appended:score")  # type: ignore[arg-type]
    scored = ModelCatalog({"m": settings}, tmp_path).get("m").score(table, AT)
    assert scored["q"].to_pylist() == [0.9, 0.1]
    assert scored.column_names[:3] == ["id", "flag", "q"]
