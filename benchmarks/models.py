"""Model scoring benchmark: a million feature rows scored by Headwater against the model's
own ``predict_proba`` on a NumPy array of the same rows, and against a per-row loop.

Run from the repository root::

    .venv/bin/python benchmarks/models.py            # 1,000,000 rows: about a minute
    .venv/bin/python benchmarks/models.py --quick    # 20,000 rows: a few seconds
    .venv/bin/python benchmarks/models.py --rows 5000000 --keep

A project on the embedded DuckDB store makes the features (8 columns, by a SQL
pipeline over ``range()``); two scikit-learn models are trained on a sample of them
(a HistGradientBoostingClassifier, the usual tabular model, and a
LogisticRegression, so cheap that any overhead shows) and saved with joblib. For
each model:

* ``predict_proba``: the model on a NumPy matrix already built (the floor);
* ``Headwater scorer``: the same rows as an Arrow table through the scoring path a
  pipeline uses (features to a matrix per batch, the model, outputs and tags appended);
* the ratio to the target is of CPU seconds (the best of ``--repeats``): the models run
  on one thread, so on an idle machine CPU time is the wall time, and on a shared one
  the wall time also measures the neighbours (both are printed);
* ``per-row loop``: ``predict_proba`` one row at a time, as a hand-written script does,
  timed on a sample and extrapolated to every row;
* for the gradient boosting model, the whole scoring pipeline run on DuckDB (query,
  score, audit, publish, record).

The models' thread pools (OpenMP, BLAS) are limited to ``--threads`` (1 by default) for
every measure alike. Peak memory is the growth of the process's peak resident set
(VmHWM, reset before each measure through ``/proc/self/clear_refs``). The scores of Headwater and of
``predict_proba`` are compared: the benchmark fails if they differ.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib
import numpy as np
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.linear_model import LogisticRegression
from threadpoolctl import threadpool_limits

from headwater.config.project import load_project
from headwater.process.models import ModelCatalog, ModelSettings
from headwater.runtime.workspace import Workspace
from headwater.state import StateStore
from headwater.store.duckdb import DuckDBEngine

QUICK_NOTE = (
    "QUICK RUN (--quick): every measure at a tiny size, to check that the benchmark runs; "
    "its figures mean nothing"
)
FEATURES = [f"f{i}" for i in range(1, 9)]
TARGET_RATIO = 1.3

FEATURES_SQL = """\
/* headwater
description = "Benchmark features: eight numbers per row, made by range()."
schedule = "@monthly"
kind = "full"
key = ["id"]
*/
SELECT
  range AS id,
  {columns}
FROM range({rows})
"""

SCORES_SQL = """\
/* headwater
schedule = "@monthly"
kind = "full"
model = "churn"
*/
SELECT id, {features} FROM features
"""


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def _status(field: str) -> int:
    """A field of /proc/self/status in bytes (``VmHWM``, ``VmRSS``)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    return 0


def measured(work: Callable[[], Any], repeats: int = 1) -> tuple[Any, float, float, float]:
    """``work()``, its best wall seconds of ``repeats``, the most MB the peak resident set
    grew by in one of them, and its best CPU seconds (this process's, all threads)."""
    best, cpu, peak, result = float("inf"), float("inf"), 0.0, None
    for _ in range(repeats):
        result = None
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
        before = _status("VmRSS")
        started, started_cpu = time.perf_counter(), time.process_time()
        result = work()
        best = min(best, time.perf_counter() - started)
        cpu = min(cpu, time.process_time() - started_cpu)
        peak = max(peak, max(_status("VmHWM") - before, 0) / 1e6)
    return result, best, peak, cpu


@dataclass
class Row:
    model: str
    path: str
    seconds: float
    peak_mb: float | None
    note: str = ""
    cpu_seconds: float | None = None


def make_project(root: Path, rows: int) -> None:
    columns = ",\n  ".join(
        f"CAST(hash(range * {k + 1}) % 20000 AS DOUBLE) / 1000 - 10 AS {name}"
        for k, name in enumerate(FEATURES)
    )
    (root / "pipelines").mkdir(parents=True)
    (root / "pipelines" / "features.sql").write_text(
        FEATURES_SQL.format(columns=columns, rows=rows), "utf-8"
    )
    (root / "headwater.toml").write_text(
        textwrap.dedent(
            f"""\
            [project]
            name = "bench"
            dialect = "duckdb"

            [models.churn]
            path = "models/hgb.joblib"
            inputs = {FEATURES!r}
            outputs = ["churn_probability"]
            """
        ).replace("'", '"'),
        "utf-8",
    )


def train(features: np.ndarray[Any, Any], root: Path) -> dict[str, Any]:
    """The two models, fitted on a sample with made-up labels, saved with joblib."""
    rng = np.random.default_rng(5)
    sample = features[rng.choice(len(features), min(len(features), 20_000), replace=False)]
    labels = (sample[:, 0] - sample[:, 1] + 0.5 * sample[:, 2] * sample[:, 3] / 10
              + rng.normal(scale=2, size=len(sample)) > 0)  # fmt: skip
    models = {
        "hgb": HistGradientBoostingClassifier(max_iter=100, random_state=0).fit(sample, labels),
        "logistic": LogisticRegression().fit(sample, labels),
    }
    (root / "models").mkdir()
    for name, model in models.items():
        joblib.dump(model, root / "models" / f"{name}.joblib")
    return models


def bench(
    args: argparse.Namespace, work: Path
) -> tuple[list[Row], list[tuple[str, str, str, str]]]:
    root = work / "project"
    make_project(root, args.rows)
    engine = DuckDBEngine.open(root / ".headwater" / "events.duckdb")
    metadata = StateStore.in_folder(root / ".headwater")
    rows: list[Row] = []
    summary: list[tuple[str, str, str, str]] = []
    try:
        ws = Workspace(load_project(root), engine, metadata)
        log(f"making {args.rows:,} feature rows")
        ws.run("features", now=True)
        table = engine.query(f'SELECT id, {", ".join(FEATURES)} FROM "features" ORDER BY id')
        matrix = np.column_stack([table[name].to_numpy() for name in FEATURES])
        models = train(matrix, root)
        catalog = ModelCatalog(
            {
                name: ModelSettings(
                    path=f"models/{name}.joblib",
                    inputs=FEATURES,
                    outputs=["churn_probability"],
                )
                for name in models
            },
            root,
        )
        now = datetime.now(UTC)
        for name, model in models.items():
            log(f"{name}: predict_proba on NumPy")
            floor, floor_s, floor_mb, floor_cpu = measured(
                lambda m=model: m.predict_proba(matrix)[:, 1], args.repeats
            )
            scorer = catalog.get(name)
            scorer.score(table.slice(0, 1000), now)  # loaded once, as in a running process
            log(f"{name}: the Headwater scorer")
            scored, scored_s, scored_mb, scored_cpu = measured(
                lambda s=scorer: s.score(table, now), args.repeats
            )
            difference = float(np.max(np.abs(scored["churn_probability"].to_numpy() - floor)))
            if difference > 1e-12:
                raise SystemExit(
                    f"{name}: Headwater's scores differ from predict_proba by {difference}"
                )
            sample = matrix[: args.loop_rows]
            log(f"{name}: a per-row loop over {len(sample):,} rows")
            _, loop_s, _, _ = measured(
                lambda m=model, rows=sample: [m.predict_proba(r.reshape(1, -1))[0, 1] for r in rows]
            )
            per_row = loop_s / len(sample)
            ratio = scored_cpu / floor_cpu
            rows += [
                Row(name, "predict_proba (NumPy)", floor_s, floor_mb, cpu_seconds=floor_cpu),
                Row(name, "Headwater scorer", scored_s, scored_mb,
                    f"{ratio:.2f}x predict_proba in CPU, {scored_s / floor_s:.2f}x in wall time",
                    cpu_seconds=scored_cpu),
                Row(name, "per-row loop", per_row * len(matrix), None,
                    f"extrapolated from {len(sample):,} rows; "
                    f"{per_row * len(matrix) / scored_s:,.0f}x Headwater"),
            ]  # fmt: skip
            summary.append(
                (f"{name}: scorer / predict_proba", f"{ratio:.2f}x", f"<= {TARGET_RATIO}x",
                 "met" if ratio <= TARGET_RATIO else "missed")
            )  # fmt: skip
        (root / "pipelines" / "scores.sql").write_text(
            SCORES_SQL.format(features=", ".join(FEATURES)), "utf-8"
        )
        log("the scoring pipeline on DuckDB")
        _, run_s, run_mb, run_cpu = measured(lambda: ws.run("scores", now=True))
        published = engine.query('SELECT COUNT(*) AS n FROM "scores"')["n"][0].as_py()
        if published != args.rows:
            raise SystemExit(f"the pipeline published {published} rows, not {args.rows}")
        rows.append(Row("hgb", "pipeline run (DuckDB)", run_s, run_mb,
                        "query, score, publish, record", cpu_seconds=run_cpu))  # fmt: skip
    finally:
        metadata.close()
        engine.close()
    return rows, summary


def report(
    args: argparse.Namespace, rows: list[Row], summary: list[tuple[str, str, str, str]]
) -> None:
    if args.quick:
        print(QUICK_NOTE)
    print(f"Scoring {args.rows:,} feature rows (8 features), {os.cpu_count()} cores, "
          f"load average {os.getloadavg()[0]:.1f}, Python {sys.version.split()[0]}, "
          f"{args.threads} thread(s) for the models, "
          f"best of {args.repeats} runs (the per-row loop and the pipeline: one)")  # fmt: skip
    print()
    header = (f"{'model':<10} {'path':<24} {'seconds':>9} {'CPU s':>8} {'rows/s':>13} "
              f"{'peak MB':>8}  note")  # fmt: skip
    print(header)
    print("-" * len(header))
    for row in rows:
        peak = f"{row.peak_mb:8.0f}" if row.peak_mb is not None else f"{'':>8}"
        cpu = f"{row.cpu_seconds:8.3f}" if row.cpu_seconds is not None else f"{'':>8}"
        print(f"{row.model:<10} {row.path:<24} {row.seconds:9.3f} {cpu} "
              f"{args.rows / row.seconds:13,.0f} {peak}  {row.note}")  # fmt: skip
    print()
    print("Summary against the targets:")
    print(f"{'measure':<34} {'measured':>9} {'target':>8}  result")
    print("-" * 62)
    for measure, value, target, result in summary:
        print(f"{measure:<34} {value:>9} {target:>8}  {result}")
    if args.quick:
        print(QUICK_NOTE)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 rows, to check it runs")
    parser.add_argument("--rows", type=int, help="feature rows (1,000,000)")
    parser.add_argument("--loop-rows", type=int, help="rows the per-row loop is timed on (2,000)")
    parser.add_argument("--repeats", type=int, help="best of how many runs of each measure (3)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="threads of the models' pools, OpenMP and BLAS (1: on a shared machine, more "
        "measure its load rather than the code)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder")
    args = parser.parse_args(argv)
    args.repeats = args.repeats or (1 if args.quick else 3)
    args.rows = args.rows or (20_000 if args.quick else 1_000_000)
    args.loop_rows = min(args.loop_rows or (200 if args.quick else 2_000), args.rows)
    work = Path(tempfile.mkdtemp(prefix="hw-models-"))
    try:
        with threadpool_limits(limits=args.threads):
            rows, summary = bench(args, work)
    finally:
        if args.keep:
            log(f"kept {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    report(args, rows, summary)
    return 0


if __name__ == "__main__":
    sys.exit(main())
