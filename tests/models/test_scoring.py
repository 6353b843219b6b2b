"""Scoring pipelines on DuckDB: predictions equal scikit-learn's own, every row tagged,
a swapped artifact is a new version that status counts and a backfill re-scores, and a
shadow version scores beside the live one."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from headwater.state import StateStore
from headwater.store.duckdb import DuckDBEngine
from tests.models.support import (
    DAYS,
    NOW,
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


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[DuckDBEngine, StateStore]]:
    engine = DuckDBEngine.open(tmp_path / "store" / "events.duckdb")
    metadata = StateStore.in_folder(tmp_path / "metadata")
    ingest(engine, feature_rows())
    try:
        yield engine, metadata
    finally:
        metadata.close()
        engine.close()


def _version(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def test_joblib_predictions_equal_predict_proba_and_carry_model_version_and_scored_at(
    tmp_path: Path, store: tuple[DuckDBEngine, StateStore]
) -> None:
    engine, metadata = store
    root = write_project(tmp_path / "project", model_table())
    model = train()
    artifact = save_joblib(model, root / "models" / "churn.joblib")
    ws = workspace(root, engine, metadata)
    ws.backfill("churn_scores", DAYS[0], NOW)

    table = engine.query('SELECT * FROM "churn_scores"')
    assert table.num_rows == USERS * len(DAYS)
    got, want = scored(table), expected(model, feature_rows())
    assert got.keys() == want.keys()
    keys = sorted(want)
    np.testing.assert_allclose([got[k] for k in keys], [want[k] for k in keys], rtol=1e-12)
    assert set(table["model"].to_pylist()) == {"churn"}
    assert set(table["model_version"].to_pylist()) == {_version(artifact)}
    assert table["scored_at"].null_count == 0
    assert table.schema.names[-6:] == [
        "f4", "churn_probability", "model", "model_version", "shadow", "scored_at",
    ]  # fmt: skip


def test_onnx_predictions_equal_predict_proba(
    tmp_path: Path, store: tuple[DuckDBEngine, StateStore]
) -> None:
    engine, metadata = store
    root = write_project(tmp_path / "project", model_table("models/churn.onnx"))
    model = train()
    artifact = save_onnx(model, root / "models" / "churn.onnx")
    workspace(root, engine, metadata).backfill("churn_scores", DAYS[0], NOW)

    table = engine.query('SELECT * FROM "churn_scores"')
    got, want = scored(table), expected(model, feature_rows())
    keys = sorted(want)
    # onnxruntime computes in float32, as the model was exported.
    np.testing.assert_allclose([got[k] for k in keys], [want[k] for k in keys], atol=1e-5)
    assert set(table["model_version"].to_pylist()) == {_version(artifact)}
