"""Scoring pipelines on DuckDB: predictions equal scikit-learn's own, every row tagged,
a swapped artifact is a new version that status counts and a backfill re-scores, and a
shadow version scores beside the live one."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq

from headwater.config.project import load_project
from headwater.runtime.apply import apply
from headwater.runtime.plan import make_plan
from headwater.runtime.workspace import Workspace
from headwater.serve.query import Dataset, rows_query
from headwater.state import StateStore
from headwater.store.duckdb import DuckDBEngine
from tests.models.support import (
    DAYS,
    FEATURES_SQL,
    NOW,
    SCORES_SQL,
    USERS,
    expected,
    feature_rows,
    model_table,
    save_joblib,
    save_onnx,
    scored,
    train,
    version_of,
    workspace,
    write_project,
)


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
    assert set(table["model_version"].to_pylist()) == {version_of(artifact)}
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
    assert set(table["model_version"].to_pylist()) == {version_of(artifact)}


def test_a_swapped_artifact_is_a_new_version_that_status_counts_plan_lists_and_a_rerun_rescores(
    tmp_path: Path, store: tuple[DuckDBEngine, StateStore]
) -> None:
    engine, metadata = store
    root = write_project(tmp_path / "project", model_table())
    artifact = root / "models" / "churn.joblib"
    first = train(seed=1)
    save_joblib(first, artifact)
    ws = workspace(root, engine, metadata)
    ws.backfill("churn_scores", DAYS[0], NOW)
    old_version = version_of(artifact)
    before = {s.name: s for s in ws.status()}["churn_scores"]
    assert (before.intervals_done, before.intervals_changed) == (3, 0)

    second = train(seed=2, c=0.05)
    save_joblib(second, artifact)
    new_version = version_of(artifact)
    assert new_version != old_version
    after = {s.name: s for s in ws.status()}["churn_scores"]
    assert (after.intervals_done, after.intervals_changed) == (3, 3)
    changes = [(c.model, c.shadow, c.old_version, c.new_version) for c in after.model_changes]
    assert changes == [("churn", False, old_version, new_version)]
    assert [c.intervals for c in after.model_changes] == [3]

    plan = make_plan(ws, [])
    assert [c.name for c in plan.changes] == ["churn_scores"]
    (recompute,) = [r for r in plan.recompute if r.pipeline == "churn_scores"]
    assert recompute.intervals == 3

    ws.run("churn_scores", DAYS[0], DAYS[-1] + (DAYS[1] - DAYS[0]))
    table = engine.query('SELECT * FROM "churn_scores"')
    assert set(table["model_version"].to_pylist()) == {new_version}
    got, want = scored(table), expected(second, feature_rows())
    keys = sorted(want)
    np.testing.assert_allclose([got[k] for k in keys], [want[k] for k in keys], rtol=1e-12)
    assert {s.name: s for s in ws.status()}["churn_scores"].intervals_changed == 0

    versions = metadata.models.versions("churn")
    assert [v.version for v in versions] == [old_version, new_version]
    assert [v.intervals for v in versions] == [0, 3]
    assert versions[1].size == artifact.stat().st_size
    assert versions[1].sha256 == hashlib.sha256(artifact.read_bytes()).hexdigest()
    assert versions[1].source == "models/churn.joblib"


def test_shadow_rows_score_the_same_rows_beside_the_live_ones(
    tmp_path: Path, store: tuple[DuckDBEngine, StateStore]
) -> None:
    engine, metadata = store
    root = write_project(tmp_path / "project", model_table(shadow="models/churn-v2.onnx"))
    live, candidate = train(seed=1), train(seed=3, c=0.1)
    live_path = save_joblib(live, root / "models" / "churn.joblib")
    shadow_path = save_onnx(candidate, root / "models" / "churn-v2.onnx")
    ws = workspace(root, engine, metadata)
    ws.backfill("churn_scores", DAYS[0], NOW)

    table = engine.query('SELECT * FROM "churn_scores"')
    assert table.num_rows == 2 * USERS * len(DAYS)
    rows = table.to_pylist()
    assert {(r["shadow"], r["model_version"]) for r in rows} == {
        (False, version_of(live_path)),
        (True, version_of(shadow_path)),
    }
    live_rows, shadow_rows = scored(table), scored(table, shadow=True)
    assert live_rows.keys() == shadow_rows.keys()
    want_live, want_shadow = expected(live, feature_rows()), expected(candidate, feature_rows())
    keys = sorted(want_live)
    np.testing.assert_allclose([live_rows[k] for k in keys], [want_live[k] for k in keys])
    np.testing.assert_allclose(
        [shadow_rows[k] for k in keys], [want_shadow[k] for k in keys], atol=1e-5
    )
    versions = {v.version: v for v in metadata.models.versions("churn")}
    assert [s.shadow for s in versions[version_of(shadow_path)].scored] == [True]
    assert versions[version_of(shadow_path)].intervals == 3


def test_sinks_get_the_live_rows_and_shadow_rows_stay_in_the_table(
    tmp_path: Path, store: tuple[DuckDBEngine, StateStore]
) -> None:
    engine, metadata = store
    scores = SCORES_SQL.replace('model = "churn"', 'model = "churn"\nsinks = ["lake"]')
    root = write_project(
        tmp_path / "project",
        model_table(shadow="models/churn-v2.onnx")
        + '\n[sinks.lake]\ntype = "files"\nurl = "lake"\nformat = "parquet"\n',
        {"features.sql": FEATURES_SQL, "churn_scores.sql": scores},
    )
    live_path = save_joblib(train(seed=1), root / "models" / "churn.joblib")
    save_onnx(train(seed=3, c=0.1), root / "models" / "churn-v2.onnx")
    ws = workspace(root, engine, metadata)
    ws.backfill("churn_scores", DAYS[0], NOW)
    # Deliveries fall due by the wall clock; the workspace above runs on the test's.
    results = Workspace(load_project(root), engine, metadata).deliver()
    assert results
    assert all(r.error is None for r in results)

    delivered = pq.read_table(sorted((root / "lake").rglob("*.parquet")))
    assert delivered.num_rows == USERS * len(DAYS)
    assert set(delivered["shadow"].to_pylist()) == {False}
    assert set(delivered["model_version"].to_pylist()) == {version_of(live_path)}
    table = engine.query('SELECT COUNT(*) AS n FROM "churn_scores" WHERE shadow')
    assert table["n"][0].as_py() == USERS * len(DAYS)


def test_the_read_api_serves_the_live_rows_only(
    tmp_path: Path, store: tuple[DuckDBEngine, StateStore]
) -> None:
    engine, metadata = store
    root = write_project(tmp_path / "project", model_table(shadow="models/churn-v2.onnx"))
    live_path = save_joblib(train(seed=1), root / "models" / "churn.joblib")
    save_onnx(train(seed=3, c=0.1), root / "models" / "churn-v2.onnx")
    workspace(root, engine, metadata).backfill("churn_scores", DAYS[0], NOW)
    columns = engine.query('SELECT * FROM "churn_scores" LIMIT 0').schema
    dataset = Dataset("churn_scores", ("day", "user_id"), columns, engine)

    select, _, _ = rows_query(dataset, {"user_id": "u001"}, page_size=100, max_page_size=100)
    page = engine.select(select.query.sql(engine.dialect), select.params).table
    assert page.num_rows == len(DAYS)
    assert set(page["shadow"].to_pylist()) == {False}
    assert set(page["model_version"].to_pylist()) == {version_of(live_path)}


def test_apply_rescores_a_swapped_model_beside_the_live_table_and_the_registry_follows(
    tmp_path: Path, store: tuple[DuckDBEngine, StateStore]
) -> None:
    engine, metadata = store
    root = write_project(tmp_path / "project", model_table())
    artifact = save_joblib(train(seed=1), root / "models" / "churn.joblib")
    ws = workspace(root, engine, metadata)
    ws.backfill("churn_scores", DAYS[0], NOW)
    old = version_of(artifact)
    second = train(seed=2, c=0.05)
    save_joblib(second, artifact)
    new = version_of(artifact)

    plan = make_plan(ws, [])
    assert [(c.name, c.breaking) for c in plan.changes] == [("churn_scores", False)]
    apply(ws, plan, commit=None, dirty=False, applied_by="test", sleep=lambda _: None)

    table = engine.query('SELECT * FROM "churn_scores"')
    assert set(table["model_version"].to_pylist()) == {new}
    got, want = scored(table), expected(second, feature_rows())
    keys = sorted(want)
    np.testing.assert_allclose([got[k] for k in keys], [want[k] for k in keys], rtol=1e-12)
    versions = {v.version: v for v in metadata.models.versions("churn")}
    assert versions[old].intervals == 0
    assert [(s.pipeline, s.intervals) for s in versions[new].scored] == [("churn_scores", 3)]
