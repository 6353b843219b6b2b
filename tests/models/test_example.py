"""``examples/churn``, the whole path as its README runs it: events through the collector,
the features pipeline, ``train.py`` on its output, the scoring pipeline, and the
prediction read through the read API."""

from __future__ import annotations

import hashlib
import importlib.util
import re
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path
from types import ModuleType

import numpy as np
import onnxruntime as ort

from tests.conftest import HEADWATER, Project, Server, run_cli

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "churn"
INPUTS = ["sessions", "events", "days_active", "days_since_seen"]


def _module(path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(f"churn_example_{path.stem}", path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _secret(pattern: str, text: str) -> str:
    found = re.findall(pattern, text)
    assert len(found) == 1, text
    return str(found[0])


def test_events_to_features_to_model_to_scores_served_by_the_read_api(tmp_path: Path) -> None:
    # As a newcomer starts: `headwater init --example churn`, which copies the example
    # and makes its source and read-API consumer.
    root = tmp_path / "churn"
    made = subprocess.run(
        [*HEADWATER, "init", str(root), "--example", "churn", "--source", "app"],
        capture_output=True, text=True, check=True, timeout=120,
    )  # fmt: skip
    key = _secret(r"hw_wk_[A-Za-z0-9_-]+", made.stdout + made.stderr)
    token = _secret(r"hw_ct_[A-Za-z0-9_-]+", made.stdout + made.stderr)
    copied = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
    example = sorted(
        str(p.relative_to(EXAMPLE))
        for p in EXAMPLE.rglob("*")
        if p.is_file() and p.suffix not in (".onnx", ".pyc")
    )
    assert set(example) <= set(copied)
    assert not (root / "models" / "churn.onnx").exists()  # train.py makes it

    server = Server(Project(root, key)).start()
    try:
        simulate = _module(root / "simulate.py")
        midnight = datetime.now(UTC).replace(hour=0, minute=0, second=0, microsecond=0)
        sent = simulate.events(midnight)
        assert simulate.send(server.url, key, sent) == len(sent)

        run_cli(root, "run", "user_features", "--now")
        csv = run_cli(root, "query", "SELECT * FROM user_features", "--format", "csv").stdout
        (root / "features.csv").write_text(csv, "utf-8")
        trained = subprocess.run(
            [sys.executable, str(root / "train.py"), str(root / "features.csv")],
            capture_output=True, text=True, check=True, timeout=300,
        )  # fmt: skip
        assert "wrote models/churn.onnx" in trained.stdout

        run_cli(root, "run", "churn_scores", "--now")
        with server.client() as http:
            answer = http.get(
                "/api/v1/datasets/churn_scores/rows/u0007",
                headers={"Authorization": f"Bearer {token}"},
            )
        assert answer.status_code == 200, answer.text
        row = answer.json()["row"]
    finally:
        server.stop()

    artifact = (root / "models" / "churn.onnx").read_bytes()
    assert row["model"] == "churn"
    assert row["model_version"] == hashlib.sha256(artifact).hexdigest()[:16]
    assert row["shadow"] is False
    # The same prediction computed here, from the served features, by onnxruntime itself.
    session = ort.InferenceSession(artifact, providers=["CPUExecutionProvider"])
    features = np.array([[row[name] for name in INPUTS]], np.float32)
    (probabilities,) = session.run(["probabilities"], {session.get_inputs()[0].name: features})
    assert abs(row["churn_probability"] - float(probabilities[0, 1])) < 1e-6
    assert 0 <= row["churn_probability"] <= 1
    models = run_cli(root, "models").stdout
    assert "churn_scores: 1 intervals" in models
