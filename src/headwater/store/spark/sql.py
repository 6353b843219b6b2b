"""Spark SQL around the engine: quoting, the tables a query names, rows a query scanned."""

from __future__ import annotations

from typing import Any

import sqlglot
from py4j.protocol import Py4JError
from pyspark.sql import DataFrame
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError


def quote(identifier: str) -> str:
    """Quote an identifier for Spark SQL.

    >>> quote("odd`name")
    '`odd``name`'
    """
    return "`" + identifier.replace("`", "``") + "`"


def referenced(sql: str) -> set[str] | None:
    """The tables ``sql`` names (without CTEs); ``None`` when sqlglot cannot tell (then every
    table is registered)."""
    try:
        statements = [s for s in sqlglot.parse(sql, read="spark") if s is not None]
    except (ParseError, TokenError):
        return None
    names: set[str] = set()
    for statement in statements:
        if isinstance(statement, exp.Command):
            return None
        ctes = {cte.alias_or_name for cte in statement.find_all(exp.CTE)}
        names.update(
            t.name
            for t in statement.find_all(exp.Table)
            if t.name and not t.db and t.name not in ctes
        )
    return names


def rows_scanned(frame: DataFrame) -> int | None:
    """Rows the file scans of an executed query read (Spark's ``numOutputRows`` of
    each Parquet scan, after row groups skipped by statistics)."""
    try:
        return _scan_rows(frame._jdf.queryExecution().executedPlan())
    except Py4JError:
        return None


def _scan_rows(node: Any) -> int:
    kind = node.getClass().getSimpleName()
    if kind == "AdaptiveSparkPlanExec":
        return _scan_rows(node.executedPlan())
    if kind.endswith("QueryStageExec"):
        return _scan_rows(node.plan())
    total = (
        int(node.metrics().apply("numOutputRows").value()) if kind == "FileSourceScanExec" else 0
    )
    children = node.children()
    return total + sum(_scan_rows(children.apply(i)) for i in range(children.size()))
