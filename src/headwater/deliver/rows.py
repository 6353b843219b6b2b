"""An interval's rows as published, read back from the engine in a stable order.

The deliverer reads what it delivers from the engine's table rather than from
the run that made it, so a delivery needs nothing a crash could lose, and a
resumed webhook delivery cuts the same batches (and sends the same
idempotency keys) as the attempt before.
"""

from __future__ import annotations

import functools

import pyarrow as pa
from sqlglot import exp

from headwater.core.types import Interval, Output
from headwater.store.engine import Engine


def span(output: Output, interval: Interval) -> Interval | None:
    """The interval a delivery covers; ``None`` for a full output (its whole table)."""
    return interval if output.time_column is not None else None


def interval_rows(engine: Engine, output: Output, interval: Interval) -> pa.Table:
    """``output``'s rows of ``interval`` (all of them for a full output), ordered by the key,
    else by every column; of a scored output, the live model version's rows only."""
    dialect = engine.dialect
    shape = engine.select(_shape_query(output.name, dialect), {}).table
    bounds = span(output, interval)
    query = _rows_query(
        output.name,
        output.key,
        output.time_column if bounds is not None else None,
        tuple(shape.column_names),
        dialect,
    )
    params: dict[str, object] = {}
    if bounds is not None and output.time_column is not None:
        params = {"start": bounds.start, "end": bounds.end}
        if output.time_column in shape.column_names and pa.types.is_date(
            shape.schema.field(output.time_column).type
        ):
            # A DATE column compares with DATE bounds (BigQuery has no implicit cast).
            params = {"start": bounds.start.date(), "end": bounds.end.date()}
    return engine.select(query, params).table


@functools.lru_cache(maxsize=256)
def _shape_query(name: str, dialect: str) -> str:
    """The query for ``name``'s columns (no rows), made once: sqlglot takes a millisecond,
    as long as reading a small interval back."""
    return exp.select("*").from_(exp.table_(name, quoted=True)).limit(0).sql(dialect)


@functools.lru_cache(maxsize=256)
def _rows_query(
    name: str,
    key: tuple[str, ...],
    time_column: str | None,
    columns: tuple[str, ...],
    dialect: str,
) -> str:
    """The query for an interval's rows (``$start``, ``$end``) of a table with ``columns``,
    or all of them without a ``time_column``: made once per table shape."""
    order = list(key) or list(columns)
    query = (
        exp.select("*")
        .from_(exp.table_(name, quoted=True))
        .order_by(*[exp.Ordered(this=exp.column(c, quoted=True), nulls_first=True) for c in order])
    )
    if {"model_version", "shadow"} <= set(columns):
        # A scored output's shadow rows (a model version scored beside the live one) are
        # for comparing in SQL; the services a sink feeds get the live version's only.
        query = query.where(exp.Not(this=exp.column("shadow", quoted=True)))
    if time_column is not None:
        column = exp.column(time_column, quoted=True)
        query = query.where(
            exp.and_(
                exp.GTE(this=column, expression=exp.Placeholder(this="start")),
                exp.LT(this=column, expression=exp.Placeholder(this="end")),
            )
        )
    return query.sql(dialect)
