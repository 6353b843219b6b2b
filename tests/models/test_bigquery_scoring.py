"""Scoring on BigQuery, against the recording fake client (tests/bigquery_fake.py: BigQuery
cannot run here, so the client is a fake that records every job): the scoring query's
columns come from a dry run (free), not a billed ``LIMIT 0`` query, and its result is
scored a page at a time."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
from google.cloud import bigquery

from headwater.process.models import ModelCatalog, ModelSettings
from headwater.process.models.query import columns
from headwater.store.bigquery import BigQueryEngine
from tests.bigquery_fake import FakeClient
from tests.models.support import FEATURES, NOW, save_joblib, train, training_data

SQL = "SELECT user_id, f1, f2, f3, f4 FROM features WHERE day >= @start AND day < @end"
PARAMS = {"start": NOW, "end": NOW}
ROWS = 1_000
PAGE = 128
COUNTER = """\
import pyarrow as pa


def rows_seen(batch):
    # Each row's output: how many rows the model was called with.
    return pa.table({"called_with": pa.repeat(pa.scalar(batch.num_rows, pa.int64()),
                                              batch.num_rows)})
"""


def _engine() -> tuple[BigQueryEngine, FakeClient, pa.Table]:
    fake = FakeClient()
    x, _ = training_data(4, ROWS)
    features = pa.table(
        {"user_id": [f"u{k:04d}" for k in range(ROWS)]}
        | {name: x[:, i] for i, name in enumerate(FEATURES)}
    )
    fake.schemas = [
        ("FROM features", [
            bigquery.SchemaField("user_id", "STRING"),
            *(bigquery.SchemaField(name, "FLOAT64") for name in FEATURES),
        ]),
    ]  # fmt: skip
    fake.answers = [("FROM features", features)]
    fake.page_rows = PAGE
    return BigQueryEngine(fake, "analytics", 10**12), fake, features


def _catalog(root: Path, **values: object) -> ModelCatalog:
    settings = ModelSettings(inputs=list(FEATURES), **values)  # type: ignore[arg-type]
    return ModelCatalog({"churn": settings}, root)


def test_the_columns_come_from_a_dry_run_not_a_billed_query(tmp_path: Path) -> None:
    engine, fake, _ = _engine()
    found = columns(engine, SQL, PARAMS)
    assert found.names == ["user_id", *FEATURES]
    assert [found.field(n).type for n in FEATURES] == [pa.float64()] * len(FEATURES)
    assert found.field("user_id").type == pa.string()
    assert fake.real_queries == []
    (probe,) = fake.queries
    assert probe.dry
    assert probe.sql == SQL
    assert probe.params["start"] == ("TIMESTAMP", NOW)


def test_the_result_is_scored_a_page_at_a_time_and_equals_predict_proba(tmp_path: Path) -> None:
    engine, fake, features = _engine()
    model = train(seed=1)
    save_joblib(model, tmp_path / "models" / "churn.joblib")
    churn = _catalog(tmp_path, path="models/churn.joblib", outputs=["p"]).get("churn")
    scorer = churn.scorer(columns(engine, SQL, PARAMS), NOW)
    scored = engine.map_batches(SQL, PARAMS, scorer, scorer.schema)

    (result,) = fake.results
    assert result.pages_read == -(-ROWS // PAGE)
    assert [q.dry for q in fake.queries] == [True, True, False]  # probe, budget, the query
    want = model.predict_proba(np.column_stack([features[n].to_numpy() for n in FEATURES]))
    np.testing.assert_allclose(scored["p"].to_numpy(), want[:, 1], rtol=1e-12)
    assert scored["user_id"].to_pylist() == features["user_id"].to_pylist()
    assert set(scored["model_version"].to_pylist()) == {churn.version}

    (tmp_path / "models" / "counter.py").write_text(COUNTER, "utf-8")
    counter = _catalog(tmp_path, function="counter:rows_seen", outputs=["called_with"])
    counting = counter.get("churn").scorer(columns(engine, SQL, PARAMS), NOW)
    seen = engine.map_batches(SQL, PARAMS, counting, counting.schema)
    # Each page on its own: the model never had more than a page's rows at once.
    assert max(seen["called_with"].to_pylist()) == PAGE
    assert seen.num_rows == ROWS
