"""Predictions served to a product's PostgreSQL: a scoring pipeline delivered to a real
PostgreSQL server (tests/pg.py) by the deliverer, into a table keyed by the person that
holds each one's latest live prediction (``latest`` of the sink).

The scores come from real scikit-learn models trained here, on a real DuckDB store; what
PostgreSQL holds is read back with psycopg.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
import pytest

from headwater.config.project import load_project
from headwater.core.errors import HeadwaterError
from headwater.runtime.validation import validate_project
from headwater.runtime.workspace import Workspace
from headwater.state import StateStore
from headwater.store.duckdb import DuckDBEngine
from tests.models.support import (
    DAYS,
    FEATURES,
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
    train,
    version_of,
    workspace,
    write_project,
)

#: A user seen on the first day only: their latest prediction is that day's.
GONE = {
    "message_id": "gone-1",
    "source": "web",
    "type": "track",
    "event": "Session Summary",
    "user_id": "u900",
    "timestamp": DAYS[0] + timedelta(hours=3),
    "received_at": DAYS[0] + timedelta(hours=3),
    "properties": json.dumps(dict.fromkeys(FEATURES, 0.5)),
}


@pytest.fixture
def store(tmp_path: Path) -> Iterator[tuple[DuckDBEngine, StateStore]]:
    engine = DuckDBEngine.open(tmp_path / "store" / "events.duckdb")
    metadata = StateStore.in_folder(tmp_path / "metadata")
    ingest(engine, [*feature_rows(), GONE])
    try:
        yield engine, metadata
    finally:
        metadata.close()
        engine.close()


def _project(root: Path, latest: str = '{ churn_scores = ["user_id"] }') -> Path:
    sink = f'\n[sinks.app]\ntype = "postgres"\nurl = "${{APP_URL}}"\nlatest = {latest}\n'
    scores = SCORES_SQL.replace('model = "churn"', 'model = "churn"\nsinks = ["app"]')
    return write_project(
        root,
        model_table(shadow="models/churn-v2.onnx") + sink,
        {"features.sql": FEATURES_SQL, "churn_scores.sql": scores},
    )


def _deliver(root: Path, engine: DuckDBEngine, metadata: StateStore) -> None:
    # Deliveries fall due by the wall clock; the runs' workspace is on the test's clock.
    results = Workspace(load_project(root), engine, metadata).deliver()
    assert results
    assert [r.error for r in results] == [None] * len(results)


def _served(url: str) -> dict[str, dict[str, Any]]:
    with psycopg.connect(url) as con, con.cursor(row_factory=psycopg.rows.dict_row) as cur:
        rows = cur.execute('SELECT * FROM "churn_scores"').fetchall()
        key = cur.execute(
            "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid "
            "AND a.attnum = ANY(i.indkey) WHERE i.indrelid = 'churn_scores'::regclass "
            "AND i.indisprimary"
        ).fetchall()
    assert [k["attname"] for k in key] == ["user_id"]
    return {r["user_id"]: r for r in rows}


def _probabilities(model: Any, day: datetime) -> dict[str, float]:
    """``predict_proba`` of ``model`` on each user's features of ``day``, computed here."""
    found = expected(model, [*feature_rows(), GONE])
    return {user: p for (user, at), p in found.items() if at == day}


def test_the_sink_holds_each_users_latest_live_prediction_and_an_older_interval_never_overwrites_it(
    tmp_path: Path,
    store: tuple[DuckDBEngine, StateStore],
    pg_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("APP_URL", pg_url)
    engine, metadata = store
    root = _project(tmp_path / "project")
    artifact = root / "models" / "churn.joblib"
    first = train(seed=1)
    save_joblib(first, artifact)
    save_onnx(train(seed=3, c=0.1), root / "models" / "churn-v2.onnx")
    shadow = version_of(root / "models" / "churn-v2.onnx")
    ws = workspace(root, engine, metadata)
    ws.backfill("churn_scores", DAYS[0], NOW)
    _deliver(root, engine, metadata)

    served = _served(pg_url)
    assert len(served) == USERS + 1
    last = DAYS[-1]
    assert {u: r["day"] for u, r in served.items() if u != "u900"} == dict.fromkeys(
        (f"u{k:03d}" for k in range(USERS)), last
    )
    assert served["u900"]["day"] == DAYS[0]
    assert {(r["model_version"], r["shadow"]) for r in served.values()} == {
        (version_of(artifact), False)
    }
    want = _probabilities(first, last)
    users = sorted(want)
    np.testing.assert_allclose(
        [served[u]["churn_probability"] for u in users], [want[u] for u in users], rtol=1e-12
    )
    # The shadow version scored the same rows into the store's table, and none was sent.
    assert engine.query('SELECT COUNT(*) AS n FROM "churn_scores" WHERE shadow')["n"][
        0
    ].as_py() == (USERS * len(DAYS) + 1)
    assert shadow not in {r["model_version"] for r in served.values()}

    # A new model re-scores the first day only: that older interval is delivered again and
    # changes only the user whose latest it is.
    old = version_of(artifact)
    second = train(seed=2, c=0.05)
    save_joblib(second, artifact)
    new = version_of(artifact)
    ws.run("churn_scores", DAYS[0], DAYS[1])
    _deliver(root, engine, metadata)
    after = _served(pg_url)
    assert after["u900"]["model_version"] == new
    assert after["u900"]["churn_probability"] == pytest.approx(
        _probabilities(second, DAYS[0])["u900"], rel=1e-12
    )
    assert {r["model_version"] for u, r in after.items() if u != "u900"} == {old}
    assert {u: r["day"] for u, r in after.items()} == {u: r["day"] for u, r in served.items()}

    # Re-scoring the last day moves every user to the new version.
    ws.run("churn_scores", DAYS[-1], DAYS[-1] + timedelta(days=1))
    _deliver(root, engine, metadata)
    final = _served(pg_url)
    assert {r["model_version"] for r in final.values()} == {new}
    want = _probabilities(second, last)
    np.testing.assert_allclose(
        [final[u]["churn_probability"] for u in users], [want[u] for u in users], rtol=1e-12
    )


def test_a_latest_key_the_rows_do_not_have_is_a_dead_letter_naming_the_column(
    tmp_path: Path,
    store: tuple[DuckDBEngine, StateStore],
    pg_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("APP_URL", pg_url)
    engine, metadata = store
    root = _project(tmp_path / "project", '{ churn_scores = ["person_id"] }')
    save_joblib(train(seed=1), root / "models" / "churn.joblib")
    save_onnx(train(seed=3, c=0.1), root / "models" / "churn-v2.onnx")
    workspace(root, engine, metadata).backfill("churn_scores", DAYS[0], DAYS[1])
    results = Workspace(load_project(root), engine, metadata).deliver()
    assert results
    assert {r.status for r in results} == {"dead"}
    assert all("no column person_id" in (r.error or "") for r in results)


def test_an_empty_latest_key_is_a_config_error(tmp_path: Path) -> None:
    root = _project(tmp_path / "project", "{ churn_scores = [] }")
    with pytest.raises(HeadwaterError, match=r"latest\.churn_scores must name the table's key"):
        load_project(root)


def test_a_pipeline_without_a_key_may_go_to_a_sink_that_keys_it_by_latest(tmp_path: Path) -> None:
    root = _project(tmp_path / "project")
    scores = root / "pipelines" / "churn_scores.sql"
    scores.write_text(scores.read_text().replace('key = ["day", "user_id", "model_version"]\n', ""))
    assert validate_project(load_project(root)).problems == []

    other = _project(tmp_path / "other", '{ features = ["user_id"] }')
    scores = other / "pipelines" / "churn_scores.sql"
    scores.write_text(scores.read_text().replace('key = ["day", "user_id", "model_version"]\n', ""))
    (problem,) = validate_project(load_project(other)).problems
    assert "upserted by key, and this pipeline declares no key" in problem.message
