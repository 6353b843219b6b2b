"""Runs corpus cases on engines in this process, whose time zone (``TZ``) the caller chose.

``python -m tests.conformance.worker JOB OUT`` reads a pickled job (the engines
to open, the cases to run), and writes a pickled ``{(case, engine): outcome}``.
The time zone must be set before DuckDB, the PostgreSQL driver or Spark's JVM
start, so ``test_corpus.py`` runs one of these per zone, as a subprocess.

An outcome is a dict: ``{"kind": "rows", "rows", "types", "sql"}`` for a query
that ran, ``{"kind": "refused", "message", "line"}`` for a ``PipelineError`` at
load (parse or render), ``{"kind": "error", "message", "sql"}`` for anything the
engine raised.
"""

from __future__ import annotations

import importlib
import pickle
import pkgutil
import sys
import time
import traceback
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from headwater.process.errors import PipelineError
from headwater.process.sql import parse, render
from headwater.store.engine import Engine
from tests.conformance import corpus
from tests.conformance.case import Case

Outcome = dict[str, Any]


def load_corpus() -> Iterator[tuple[str, Case]]:
    """Every case of ``tests/conformance/corpus``, with its topic (the module's name)."""
    for info in sorted(pkgutil.iter_modules(corpus.__path__), key=lambda i: i.name):
        module = importlib.import_module(f"{corpus.__name__}.{info.name}")
        for case in module.CASES:
            yield info.name, case


def open_engine(name: str, where: str) -> Engine:
    if name == "duckdb":
        from headwater.store.duckdb import DuckDBEngine

        return DuckDBEngine.open(Path(where) / "events.duckdb")
    if name == "postgres":
        from headwater.store.postgres import PostgresEngine

        return PostgresEngine.open(where, "headwater")
    if name == "spark":
        from headwater.store.spark import SparkEngine

        return SparkEngine.open(str(Path(where) / "warehouse"), "local[2]", {})
    raise ValueError(f"unknown engine {name!r}")


def run_case(engine: Engine, topic: str, case: Case) -> Outcome:
    try:
        query = parse(case.sql, "bigquery", f"corpus/{topic}.py:{case.name}")
        sql = render(query, engine.dialect)
    except PipelineError as exc:
        return {"kind": "refused", "message": str(exc), "line": exc.line, "hint": exc.hint}
    try:
        table = engine.select(sql, {}).table
    except Exception as exc:  # the engine's error is the outcome
        return {"kind": "error", "message": f"{type(exc).__name__}: {exc}", "sql": sql}
    columns = [column.to_pylist() for column in table.columns]
    return {
        "kind": "rows",
        "rows": list(zip(*columns, strict=True)) if columns else [],
        "types": [f"{f.name} {f.type}" for f in table.schema],
        "sql": sql,
    }


def main(job_path: str, out_path: str) -> None:
    job = pickle.loads(Path(job_path).read_bytes())
    wanted: dict[str, set[str]] = job["cases"]  # engine -> case names
    cases = list(load_corpus())
    outcomes: dict[tuple[str, str], Outcome] = {}
    timings: dict[str, float] = {}
    for name, where in job["engines"].items():
        started = time.monotonic()
        try:
            engine = open_engine(name, where)
        except Exception:  # reported per case
            failure = traceback.format_exc()
            for _, case in cases:
                if case.name in wanted[name]:
                    outcomes[case.name, name] = {"kind": "error", "message": failure, "sql": ""}
            continue
        chosen = [(topic, case) for topic, case in cases if case.name in wanted[name]]
        # Spark spends most of a small query planning it in the driver: a few at once.
        threads = 3 if name == "spark" else 1
        try:
            with ThreadPoolExecutor(threads) as pool:
                topics, chosen_cases = [t for t, _ in chosen], [c for _, c in chosen]
                done = pool.map(run_case, [engine] * len(chosen), topics, chosen_cases)
                for (_, case), outcome in zip(chosen, done, strict=True):
                    outcomes[case.name, name] = outcome
        finally:
            engine.close()
        timings[name] = time.monotonic() - started
    Path(out_path).write_bytes(pickle.dumps({"outcomes": outcomes, "timings": timings}))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
