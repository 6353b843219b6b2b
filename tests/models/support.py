"""A scoring project for the model tests: events carrying four features, a features
pipeline, a scoring pipeline, and real scikit-learn models trained here."""

from __future__ import annotations

import hashlib
import json
import random
import textwrap
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pyarrow as pa
from skl2onnx import to_onnx
from sklearn.linear_model import LogisticRegression

from headwater.config.project import load_project
from headwater.runtime.workspace import Workspace
from headwater.state import StateStore
from headwater.store import schema
from headwater.store.engine import Engine, IngestBatch

FEATURES = ("f1", "f2", "f3", "f4")
DAY = timedelta(days=1)
DAYS = [datetime(2026, 11, 2, tzinfo=UTC) + k * DAY for k in range(3)]
#: The clock: every day of DAYS has ended and arrived.
NOW = datetime(2026, 11, 5, 6, tzinfo=UTC)
USERS = 40

FEATURES_SQL = """\
/* headwater
schedule = "@daily"
kind = "incremental"
time_column = "day"
key = ["day", "user_id"]
*/
SELECT
  TIMESTAMP_TRUNC(received_at, DAY) AS day,
  user_id,
  CAST(JSON_VALUE(properties, '$.f1') AS FLOAT64) AS f1,
  CAST(JSON_VALUE(properties, '$.f2') AS FLOAT64) AS f2,
  CAST(JSON_VALUE(properties, '$.f3') AS FLOAT64) AS f3,
  CAST(JSON_VALUE(properties, '$.f4') AS FLOAT64) AS f4
FROM events
WHERE received_at >= @start AND received_at < @end
"""

SCORES_SQL = """\
/* headwater
schedule = "@daily"
kind = "incremental"
time_column = "day"
model = "churn"
key = ["day", "user_id", "model_version"]
audits = [
  { not_null = ["churn_probability"] },
  { sql = "SELECT * FROM output WHERE churn_probability < 0 OR churn_probability > 1" },
]
*/
SELECT day, user_id, f1, f2, f3, f4
FROM features
WHERE day >= @start AND day < @end
"""


def training_data(seed: int, rows: int = 600) -> tuple[np.ndarray[Any, Any], np.ndarray[Any, Any]]:
    """Synthetic features (three decimals, as the events carry them) and labels."""
    rng = np.random.default_rng(seed)
    x = np.round(rng.normal(size=(rows, len(FEATURES))), 3)
    y = (x @ np.array([1.5, -2.0, 0.7, 0.0]) + rng.normal(scale=0.5, size=rows) > 0).astype(int)
    return x, y


def train(seed: int = 1, c: float = 1.0) -> LogisticRegression:
    x, y = training_data(seed)
    return LogisticRegression(C=c).fit(x, y)


def save_joblib(model: object, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    joblib.dump(model, path)
    return path


def save_onnx(model: LogisticRegression, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    sample = np.zeros((1, len(FEATURES)), dtype=np.float32)
    onnx = to_onnx(model, sample, options={"zipmap": False}, target_opset=17)
    path.write_bytes(onnx.SerializeToString())
    return path


def version_of(path: Path, function: str | None = None) -> str:
    """A model file's version as Headwater names it: the hash of its bytes (a callable's:
    and of its ``function``'s name after a NUL), shortened."""
    suffix = b"" if function is None else b"\x00" + function.encode()
    return hashlib.sha256(path.read_bytes() + suffix).hexdigest()[:16]


def model_table(path: str = "models/churn.joblib", **extra: str) -> str:
    lines = [
        "[models.churn]",
        f'path = "{path}"',
        f"inputs = {json.dumps(list(FEATURES))}",
        'outputs = ["churn_probability"]',
        *(f'{key} = "{value}"' for key, value in extra.items()),
    ]
    return "\n".join(lines) + "\n"


def write_project(root: Path, models: str, pipelines: dict[str, str] | None = None) -> Path:
    """A project with the features and scores pipelines (or ``pipelines``)."""
    (root / "pipelines").mkdir(parents=True, exist_ok=True)
    (root / "headwater.toml").write_text(
        '[project]\nname = "churn"\n\n[pipelines]\nmax_catchup = 1000\n\n' + models, "utf-8"
    )
    chosen = pipelines or {"features.sql": FEATURES_SQL, "churn_scores.sql": SCORES_SQL}
    for name, text in chosen.items():
        (root / "pipelines" / name).write_text(textwrap.dedent(text), "utf-8")
    return root


def feature_rows(seed: int = 7) -> list[dict[str, Any]]:
    """One event per user per day, its features in ``properties``."""
    rng = random.Random(seed)
    rows = []
    for day in DAYS:
        for user in range(USERS):
            values = {name: round(rng.uniform(-3, 3), 3) for name in FEATURES}
            at = day + timedelta(hours=1 + user % 20, seconds=user)
            rows.append(
                {
                    "message_id": f"{day:%d}-{user}",
                    "source": "web",
                    "type": "track",
                    "event": "Session Summary",
                    "user_id": f"u{user:03d}",
                    "timestamp": at,
                    "received_at": at,
                    "properties": json.dumps(values),
                }
            )
    return rows


def ingest(engine: Engine, rows: Sequence[dict[str, Any]]) -> None:
    events = pa.Table.from_pylist(list(rows), schema=schema.EVENTS)
    engine.ingest(IngestBatch(events, schema.FAILED_EVENTS.empty_table()))


def workspace(root: Path, engine: Engine, metadata: StateStore) -> Workspace:
    return Workspace(load_project(root), engine, metadata, clock=lambda: NOW, sleep=lambda _: None)


def expected(model: Any, rows: Sequence[dict[str, Any]]) -> dict[tuple[str, datetime], float]:
    """``predict_proba`` of ``model`` on the events' features, computed here."""
    keys = [(r["user_id"], r["received_at"].replace(hour=0, minute=0, second=0)) for r in rows]
    matrix = np.array([[json.loads(r["properties"])[f] for f in FEATURES] for r in rows])
    probabilities = model.predict_proba(matrix)[:, 1]
    return dict(zip(keys, probabilities.tolist(), strict=True))


def scored(table: pa.Table, *, shadow: bool | None = False) -> dict[tuple[str, datetime], float]:
    """The scores table as (user, day) -> probability (the live rows by default)."""
    found = {}
    for row in table.to_pylist():
        if shadow is not None and bool(row["shadow"]) != shadow:
            continue
        day = row["day"].astimezone(UTC)
        found[(row["user_id"], day)] = row["churn_probability"]
    return found
