"""A case of the conformance corpus: a BigQuery query and the answer BigQuery's docs give.

Each topic module in ``tests/conformance/corpus/`` holds ``CASES: list[Case]``;
``tests/conformance/test_corpus.py`` runs every case on every engine, in a time
zone east and one west of UTC, and compares the rows with :attr:`Case.expect`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime


@dataclass(frozen=True)
class Case:
    """A BigQuery SELECT and its answer.

    ``sql`` is one SELECT in BigQuery's SQL, its data inline (``WITH`` /
    ``UNNEST``), with an ORDER BY wherever more than one row comes back.
    ``expect`` is its rows as Python values: None, int (INT64), float (FLOAT64),
    Decimal (NUMERIC, BIGNUMERIC), str, bytes, bool, date, datetime (TIMESTAMP
    with ``tzinfo=UTC``; DATETIME without), list (ARRAY), dict (STRUCT). The
    comparison is strict on the kind of each value (an int is not a float, nor a
    Decimal, nor text), Decimals compare by value, floats to 1e-9.

    ``source`` is the URL of BigQuery's documentation the answer comes from.
    ``refused`` names the engines that cannot give this answer: there, rendering
    the query must raise a ``PipelineError`` with the line of the construct and
    its name, and nothing runs.
    """

    name: str
    sql: str
    expect: list[tuple[object, ...]]
    source: str
    refused: frozenset[str] = frozenset()


def ts(text: str) -> datetime:
    """A TIMESTAMP as ``expect`` holds it: ``ts("2024-01-02 03:04:05.123456")`` in UTC."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)
