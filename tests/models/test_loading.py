"""Artifacts are read (and hashed) when the pipelines load, and loaded only to score:
``status`` and ``plan`` load no estimator or ONNX session, a pass does not hash an
unchanged file again, and a URL's stamp is reused for a short while."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from headwater.core.errors import TerminalError
from headwater.process.models import ModelCatalog, ModelSettings
from headwater.process.models import catalog as catalog_module
from headwater.process.models.predictors import _LOADED
from headwater.runtime.plan import make_plan
from headwater.state import StateStore
from headwater.store.duckdb import DuckDBEngine
from tests.models.support import (
    DAYS,
    FEATURES,
    NOW,
    model_table,
    save_joblib,
    save_onnx,
    train,
    version_of,
    workspace,
    write_project,
)


def _loaded(sha256_prefix: str) -> bool:
    """Whether this process holds a loaded predictor of that version."""
    return any(key[1].startswith(sha256_prefix) for key in _LOADED)


def test_status_and_plan_load_no_artifact_and_a_run_does(
    tmp_path: Path, store: tuple[DuckDBEngine, StateStore]
) -> None:
    engine, metadata = store
    root = write_project(tmp_path / "project", model_table("models/churn.onnx"))
    artifact = root / "models" / "churn.onnx"
    save_onnx(train(seed=1), artifact)
    ws = workspace(root, engine, metadata)
    ws.backfill("churn_scores", DAYS[0], NOW)

    save_onnx(train(seed=2, c=0.05), artifact)
    new = version_of(artifact)
    assert {s.name: s for s in ws.status()}["churn_scores"].intervals_changed == 3
    plan = make_plan(ws, [])
    assert [c.name for c in plan.changes] == ["churn_scores"]
    assert not _loaded(new)

    ws.run("churn_scores", DAYS[0], DAYS[1])
    assert _loaded(new)


def test_an_artifact_that_does_not_load_fails_the_run_not_status(
    tmp_path: Path, store: tuple[DuckDBEngine, StateStore]
) -> None:
    engine, metadata = store
    root = write_project(tmp_path / "project", model_table())
    artifact = root / "models" / "churn.joblib"
    save_joblib(train(seed=1), artifact)
    ws = workspace(root, engine, metadata)
    ws.backfill("churn_scores", DAYS[0], NOW)

    old = version_of(artifact)
    artifact.write_bytes(b"not a pickle")
    version = version_of(artifact)
    assert {s.name: s for s in ws.status()}["churn_scores"].intervals_changed == 3
    refused = rf"model churn \(version {version}\).*cannot be loaded"
    with pytest.raises(TerminalError, match=refused):
        ws.run("churn_scores", DAYS[0], DAYS[1])
    # Nothing of the failed run replaced what the old version published.
    table = engine.query('SELECT model_version FROM "churn_scores"')
    assert set(table["model_version"].to_pylist()) == {old}


def test_an_unchanged_file_is_read_and_hashed_once(tmp_path: Path) -> None:
    save_joblib(train(seed=1), tmp_path / "m.joblib")
    settings = ModelSettings(path="m.joblib", inputs=list(FEATURES), outputs=["p"])
    catalog = ModelCatalog({"m": settings}, tmp_path)
    first = catalog.get("m")
    first_version = first.version
    again = catalog.get("m")
    assert again.live is first.live
    assert "sha256" in again.live.__dict__  # the hash is kept with the bytes it is of
    assert again.version == first_version


def test_a_url_artifact_is_stamped_at_most_every_few_seconds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = save_joblib(train(seed=1), tmp_path / "m.joblib")
    first = version_of(path)
    settings = ModelSettings(path=f"file://{path}", inputs=list(FEATURES), outputs=["p"])
    catalog = ModelCatalog({"m": settings}, tmp_path)
    monkeypatch.setattr(catalog_module, "URL_STAMP_SECONDS", 3600.0)
    assert catalog.get("m").version == first

    save_joblib(train(seed=2, c=0.05), path)
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    second = version_of(path)
    assert second != first
    # Within the stamp's lifetime the store is not asked: the bytes read before score.
    assert catalog.get("m").version == first
    monkeypatch.setattr(catalog_module, "URL_STAMP_SECONDS", 0.0)
    assert catalog.get("m").version == second
