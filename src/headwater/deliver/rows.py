"""An interval's rows as published, read back from the engine in a stable order.

The deliverer reads what it delivers from the engine's table rather than from
the run that made it, so a delivery needs nothing a crash could lose, and a
resumed webhook delivery cuts the same batches (and sends the same
idempotency keys) as the attempt before.
"""

from __future__ import annotations

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
    name = exp.table_(output.name, quoted=True)
    dialect = engine.dialect
    shape = engine.select(exp.select("*").from_(name).limit(0).sql(dialect), {})
    columns = shape.table.column_names
    order = list(output.key) or columns
    query = (
        exp.select("*")
        .from_(name)
        .order_by(*[exp.Ordered(this=exp.column(c, quoted=True), nulls_first=True) for c in order])
    )
    if {"model_version", "shadow"} <= set(columns):
        # A scored output's shadow rows (a model version scored beside the live one) are
        # for comparing in SQL; the services a sink feeds get the live version's only.
        query = query.where(exp.Not(this=exp.column("shadow", quoted=True)))
    params: dict[str, object] = {}
    bounds = span(output, interval)
    if bounds is not None and output.time_column is not None:
        column = exp.column(output.time_column, quoted=True)
        query = query.where(
            exp.and_(
                exp.GTE(this=column, expression=exp.Placeholder(this="start")),
                exp.LT(this=column, expression=exp.Placeholder(this="end")),
            )
        )
        params = {"start": bounds.start, "end": bounds.end}
        if output.time_column in columns and pa.types.is_date(
            shape.table.schema.field(output.time_column).type
        ):
            # A DATE column compares with DATE bounds (BigQuery has no implicit cast).
            params = {"start": bounds.start.date(), "end": bounds.end.date()}
    return engine.select(query.sql(dialect), params).table
