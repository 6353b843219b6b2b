"""Train the churn model on the user_features pipeline's output and save it as ONNX.

    headwater query "SELECT * FROM user_features" --format csv > features.csv
    python train.py features.csv

Writes models/churn.onnx, the artifact [models.churn] in headwater.toml names. Its
version is the hash of those bytes: training again writes a new version, and the
scoring pipeline's intervals become stale until they are scored again.
"""

from __future__ import annotations

import csv
import sys
from pathlib import Path

import numpy as np
from skl2onnx import to_onnx
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

#: The features, in the order [models.churn] inputs lists them.
INPUTS = ["sessions", "events", "days_active", "days_since_seen"]


def train(path: Path, out: Path) -> float:
    """Fit on the features in the CSV at ``path``, save to ``out``; the training accuracy."""
    with path.open(newline="") as file:
        rows = list(csv.DictReader(file))
    features = np.array([[float(row[name]) for name in INPUTS] for row in rows], np.float32)
    labels = np.array([row["cancelled"].lower() == "true" for row in rows])
    model = make_pipeline(StandardScaler(), LogisticRegression()).fit(features, labels)
    onnx = to_onnx(model, features[:1], options={"zipmap": False}, target_opset=17)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_bytes(onnx.SerializeToString())
    return float(model.score(features, labels))


if __name__ == "__main__":
    here = Path(__file__).resolve().parent
    accuracy = train(Path(sys.argv[1]), here / "models" / "churn.onnx")
    print(f"wrote models/churn.onnx (training accuracy {accuracy:.2f})")
