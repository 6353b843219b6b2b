"""BigQuery's documented answers on every engine, east and west of UTC.

Every case of ``tests/conformance/corpus/*.py`` (:class:`~tests.conformance.case.Case`)
is one test per engine and time zone: ``test_case[<case>-<engine>-<zone>]``. The
query is parsed as BigQuery's SQL and rendered for the engine as a pipeline is
at load (``sql.parse``, ``sql.render``), and run with ``Engine.select``.

- An engine not in ``case.refused`` must give ``case.expect``: the same rows in
  the same order, each value of the same kind (int, float, Decimal, str, bytes,
  bool, date, naive datetime for DATETIME, datetime in UTC for TIMESTAMP, list,
  dict), Decimals equal by value, floats within 1e-9.
- An engine in ``case.refused`` must refuse the query at load: a
  ``PipelineError`` with a line of the query, and the message naming a construct
  written on that line.

The process's ``TZ`` must be set before DuckDB, the driver or Spark's JVM start,
so each zone's cases run in one subprocess (``tests/conformance/worker.py``),
started when the first of its tests runs, on the engines and cases selected (so
``-k duckdb`` opens no JVM). One Spark session and one PostgreSQL database per
zone; the PostgreSQL server is the session's ``pg_server``.
"""

from __future__ import annotations

import math
import os
import pickle
import re
import subprocess
import sys
from collections.abc import Callable
from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from tests.conformance.case import Case
from tests.conformance.worker import Outcome, load_corpus
from tests.engines.conftest import ENGINE_NAMES, new_database

ROOT = Path(__file__).resolve().parents[2]
ZONES = ("Asia/Seoul", "America/Los_Angeles")
TOLERANCE = 1e-9
CORPUS = list(load_corpus())
#: Words that name no construct; a refusal must name one written on its line.
_NOT_CONSTRUCTS = {"SELECT", "FROM", "WHERE", "WITH", "AND", "NOT", "NULL", "ORDER", "UNION",
                   "ALL", "TRUE", "FALSE", "GROUP", "LIMIT", "THEN", "ELSE", "WHEN", "CASE",
                   "END", "DISTINCT"}  # fmt: skip


def _params() -> list[Any]:
    return [
        pytest.param(topic, case, engine, zone, id=f"{case.name}-{engine}-{zone}")
        for zone in ZONES
        for topic, case in CORPUS
        for engine in ENGINE_NAMES
    ]


@pytest.fixture(scope="session")
def outcomes(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Callable[[str], dict[tuple[str, str], Outcome]]:
    """The outcomes of one zone's selected cases, run on first use."""
    selected: dict[str, dict[str, set[str]]] = {}
    for item in request.session.items:
        spec = getattr(item, "callspec", None)
        if spec is not None and item.originalname == "test_case":
            zone, engine, case = spec.params["zone"], spec.params["engine"], spec.params["case"]
            selected.setdefault(zone, {}).setdefault(engine, set()).add(case.name)
    done: dict[str, dict[tuple[str, str], Outcome]] = {}

    def run(zone: str) -> dict[tuple[str, str], Outcome]:
        if zone not in done:
            done[zone] = _run_zone(zone, selected[zone], request, tmp_path_factory)
        return done[zone]

    return run


def _run_zone(
    zone: str,
    cases: dict[str, set[str]],
    request: pytest.FixtureRequest,
    tmp_path_factory: pytest.TempPathFactory,
) -> dict[tuple[str, str], Outcome]:
    folder = tmp_path_factory.mktemp(f"corpus-{zone.replace('/', '-')}")
    engines = {}
    for name in ENGINE_NAMES:  # in the conftest's order
        if name in cases:
            if name == "postgres":
                engines[name] = new_database(request.getfixturevalue("pg_server"))
            else:
                engines[name] = str(folder / name)
                (folder / name).mkdir()
    job, out = folder / "job.pickle", folder / "out.pickle"
    job.write_bytes(pickle.dumps({"engines": engines, "cases": cases}))
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "TZ": zone, "PYTHONPATH": path}
    done = subprocess.run(
        [sys.executable, "-m", "tests.conformance.worker", str(job), str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900, check=False,
    )  # fmt: skip
    if done.returncode != 0 or not out.exists():
        raise AssertionError(
            f"the {zone} worker failed ({done.returncode}):\n{done.stderr[-5000:]}"
        )
    result: dict[tuple[str, str], Outcome] = pickle.loads(out.read_bytes())["outcomes"]
    return result


@pytest.mark.timeout(900)
@pytest.mark.parametrize(("topic", "case", "engine", "zone"), _params())
def test_case(
    topic: str,
    case: Case,
    engine: str,
    zone: str,
    outcomes: Callable[[str], dict[tuple[str, str], Outcome]],
) -> None:
    outcome = outcomes(zone)[case.name, engine]
    where = f"{topic}.{case.name} on {engine}, TZ={zone}"
    if engine in case.refused:
        assert outcome["kind"] == "refused", (
            f"{where}: BigQuery's answer is not expected here, so the query must be refused "
            f"at load, but it {_describe(outcome)}"
        )
        _assert_names_construct(case.sql, outcome, where)
        return
    assert outcome["kind"] == "rows", f"{where}: {_describe(outcome)}\n{case.sql}"
    mismatch = difference(case.expect, outcome["rows"])
    assert mismatch is None, (
        f"{where}: {mismatch}\nexpected {case.expect!r}\n     got {outcome['rows']!r}\n"
        f"types {outcome['types']}\nBigQuery: {case.sql}\n{engine}: {outcome['sql']}\n"
        f"(see {case.source})"
    )


def test_corpus_is_well_formed() -> None:
    names = [case.name for _, case in CORPUS]
    assert len(CORPUS) > 0
    assert len(names) == len(set(names)), sorted(n for n in names if names.count(n) > 1)
    for topic, case in CORPUS:
        assert re.fullmatch(r"[a-z0-9_]+", case.name), f"{topic}: name {case.name!r}"
        assert case.source.startswith("https://cloud.google.com/bigquery/docs/"), case.name
        assert case.refused <= set(ENGINE_NAMES), case.name
        assert all(isinstance(row, tuple) for row in case.expect), case.name


def _describe(outcome: Outcome) -> str:
    if outcome["kind"] == "refused":
        return f"was refused: {outcome['message']}"
    if outcome["kind"] == "error":
        return f"failed on the engine: {outcome['message']}\nrendered: {outcome['sql']}"
    return f"ran and gave {outcome['rows']!r}\nrendered: {outcome['sql']}"


def _assert_names_construct(sql: str, outcome: Outcome, where: str) -> None:
    line = outcome["line"]
    lines = sql.splitlines()
    assert isinstance(line, int), f"{where}: the refusal has no line: {outcome['message']}"
    assert 1 <= line <= len(lines), f"{where}: line {line} is not in the query"
    words = set(re.findall(r"[A-Z_][A-Z_0-9]{2,}", lines[line - 1].upper())) - _NOT_CONSTRUCTS
    message = outcome["message"].upper()
    assert any(word in message for word in words), (
        f"{where}: the refusal names nothing written on line {line} "
        f"({lines[line - 1].strip()!r}): {outcome['message']}"
    )


def difference(expected: list[tuple[object, ...]], got: list[tuple[object, ...]]) -> str | None:
    """Where ``got`` differs from ``expected``, or ``None`` when it is the same answer."""
    if len(got) != len(expected):
        return f"{len(got)} rows, expected {len(expected)}"
    for number, (want, have) in enumerate(zip(expected, got, strict=True), start=1):
        if len(have) != len(want):
            return f"row {number} has {len(have)} columns, expected {len(want)}"
        for column, (a, b) in enumerate(zip(want, have, strict=True), start=1):
            if not same(a, b):
                return f"row {number}, column {column}: {b!r} ({type(b).__name__}), expected {a!r}"
    return None


def same(want: object, have: object) -> bool:
    """The same value of the same kind (see the module's docstring)."""
    if want is None or have is None:
        return want is have
    if isinstance(want, bool) or isinstance(have, bool):
        return type(want) is type(have) and want == have
    if isinstance(want, float):
        if type(have) is not float:
            return False
        if math.isnan(want) or math.isnan(have):
            return math.isnan(want) and math.isnan(have)
        return math.isclose(want, have, rel_tol=TOLERANCE, abs_tol=TOLERANCE)
    if isinstance(want, datetime):
        return (
            type(have) is datetime
            and (want.tzinfo is None) == (have.tzinfo is None)
            and want == have
        )
    if isinstance(want, list):
        return (
            isinstance(have, list)
            and len(have) == len(want)
            and all(same(a, b) for a, b in zip(want, have, strict=True))
        )
    if isinstance(want, dict):
        return (
            isinstance(have, dict)
            and list(have) == list(want)
            and all(same(want[k], have[k]) for k in want)
        )
    if isinstance(want, int | Decimal | str | bytes | date | time):
        return type(have) is type(want) and want == have
    raise TypeError(f"a case expects a {type(want).__name__}: not a kind the corpus compares")
