"""``headwater models``, ``status`` and ``run`` on a scoring project, through the command."""

from __future__ import annotations

import json
from pathlib import Path

from headwater.store.duckdb import DuckDBEngine
from tests.conftest import run_cli
from tests.models.support import (
    feature_rows,
    ingest,
    model_table,
    save_joblib,
    train,
    version_of,
    write_project,
)

SPAN = ("--start", "2026-11-02", "--end", "2026-11-05")


def test_models_lists_each_version_with_the_intervals_it_scored(tmp_path: Path) -> None:
    root = write_project(tmp_path / "project", model_table())
    engine = DuckDBEngine.open(root / ".headwater" / "events.duckdb")
    try:
        ingest(engine, feature_rows())
    finally:
        engine.close()
    artifact = save_joblib(train(seed=1), root / "models" / "churn.joblib")
    first = version_of(artifact)
    run_cli(root, "backfill", "churn_scores", *SPAN)

    shown = run_cli(root, "models").stdout
    line = next(line for line in shown.splitlines() if first in line)
    assert "live" in line
    assert "churn_scores: 3 intervals 2026-11-02 .. 2026-11-05" in line
    assert "models/churn.joblib" in line

    save_joblib(train(seed=2, c=0.05), artifact)
    second = version_of(artifact)
    status = run_cli(root, "status").stdout
    assert f"churn_scores: 3 intervals scored by model churn {first} -> {second};" in status, status
    run_cli(root, "run", "churn_scores", *SPAN)

    report = json.loads(run_cli(root, "models", "--json").stdout)
    assert report["declared"] == {
        "churn": {"live": second, "shadow": None, "error": None, "hint": None}
    }
    versions = {v["version"]: v for v in report["versions"]}
    assert [s["intervals"] for s in versions[first]["scored"]] == []
    assert [s["intervals"] for s in versions[second]["scored"]] == [3]
    assert versions[second]["size"] == artifact.stat().st_size
    shown = run_cli(root, "models").stdout
    assert "replaced" in next(line for line in shown.splitlines() if first in line)


def test_models_says_why_a_model_does_not_load(tmp_path: Path) -> None:
    root = write_project(tmp_path / "project", model_table())
    result = run_cli(root, "models")
    assert "model churn does not load" in result.stderr
    assert "models/churn.joblib does not exist" in result.stderr
