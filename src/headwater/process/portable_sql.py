"""Rewrites every engine needs to give BigQuery's answer, and the types they rely on.

BigQuery's SQL differs from DuckDB's, PostgreSQL's and Spark's in ways sqlglot
keeps as written: a literal ``2.5`` is FLOAT64 (a DECIMAL elsewhere), NUMERIC has
9 digits after the point (a bare DECIMAL has 3 in DuckDB, 0 in Spark), a string
literal stands for a DATE where a date is expected. These rewrites run before
each engine's own (process/duckdb_sql.py, postgres_sql.py, spark_sql.py), on a
tree whose nodes carry BigQuery's types where they can be known
(:func:`annotate`): literals, casts and the columns of the query's own CTEs and
UNNESTs. A column of a stored table has no known type, and keeps the engine's
own behaviour.
"""

from __future__ import annotations

import itertools

from sqlglot import exp
from sqlglot.optimizer.annotate_types import annotate_types
from sqlglot.optimizer.qualify import qualify

_KEY = "hw_node"


def annotate(tree: exp.Expression) -> None:
    """Set BigQuery's type on each node of ``tree`` whose type can be inferred.

    The inference needs the query qualified (every column bound to its source),
    which rewrites the query; so it runs on a copy and the types come back to
    ``tree`` by node, leaving the SQL as written.
    """
    numbers = itertools.count()
    for node in tree.walk():
        node.meta[_KEY] = next(numbers)
    try:
        qualified = qualify(
            tree.copy(),
            dialect="bigquery",
            validate_qualify_columns=False,
            quote_identifiers=False,
            identify=False,
        )
        annotate_types(qualified, dialect="bigquery")
    except Exception:  # no inference: every type stays unknown
        return
    types = {
        node.meta[_KEY]: node.type
        for node in qualified.walk()
        if _KEY in node.meta and node.type is not None
    }
    for node in tree.walk():
        found = types.get(node.meta.pop(_KEY, None))
        if found is not None and not found.is_type(exp.DataType.Type.UNKNOWN):
            node.type = found


def is_type(node: exp.Expression, *kinds: exp.DataType.Type) -> bool:
    """Whether ``node`` is known to be of one of ``kinds`` (False when unknown)."""
    return node.type is not None and node.type.is_type(*kinds)


def float_literals(node: exp.Expression) -> exp.Expression:
    """A literal with a point or an exponent (``2.5``, ``1e3``) is FLOAT64 in BigQuery;
    DuckDB, PostgreSQL and Spark read it as a DECIMAL."""
    if (
        isinstance(node, exp.Literal)
        and not node.is_string
        and any(c in node.this for c in ".eE")
        and not isinstance(node.parent, exp.Cast)
    ):
        cast = exp.cast(node.copy(), exp.DataType.Type.DOUBLE)
        cast.type = exp.DataType.build("DOUBLE")
        return cast
    return node


def numeric_scale(node: exp.Expression) -> exp.Expression:
    """NUMERIC is DECIMAL(38, 9); BIGNUMERIC DECIMAL(76, 38) (sqlglot writes a bare DECIMAL)."""
    if isinstance(node, exp.DataType) and not node.expressions:
        if node.this == exp.DataType.Type.DECIMAL:
            return exp.DataType.build("DECIMAL(38, 9)")
        if node.this == exp.DataType.Type.BIGDECIMAL:
            return exp.DataType.build("DECIMAL(76, 38)")
    return node


def dates_from_text(node: exp.Expression) -> exp.Expression:
    """A string literal where BigQuery expects a DATE (``DATE_DIFF('2017-12-30', …)``)
    is that DATE; the engines would take it as text, or fail to choose a function."""
    places = {
        exp.DateTrunc: ("this",),
        exp.DateDiff: ("this", "expression"),
        exp.DateAdd: ("this",),
        exp.DateSub: ("this",),
        exp.GenerateDateArray: ("start", "end"),
        exp.LastDay: ("this",),
    }
    for kind, args in places.items():
        if isinstance(node, kind):
            for arg in args:
                value = node.args.get(arg)
                if isinstance(value, exp.Literal) and value.is_string:
                    date = exp.cast(value.copy(), exp.DataType.Type.DATE)
                    date.type = exp.DataType.build("DATE")
                    node.set(arg, date)
    return node


def ieee_divide(node: exp.Expression) -> exp.Expression:
    """IEEE_DIVIDE(x, y): ±inf or NaN where y is 0, which every engine refuses or makes NULL."""
    if not (isinstance(node, exp.Anonymous) and node.name.upper() == "IEEE_DIVIDE"):
        return node
    x, y = (exp.cast(a.copy(), exp.DataType.Type.DOUBLE) for a in node.expressions[:2])

    def special(text: str) -> exp.Expression:
        return exp.cast(exp.Literal.string(text), exp.DataType.Type.DOUBLE)

    zero = exp.Literal.number(0)
    by_zero = exp.Case(
        ifs=[
            exp.If(this=exp.GT(this=x.copy(), expression=zero.copy()), true=special("Infinity")),
            exp.If(this=exp.LT(this=x.copy(), expression=zero.copy()), true=special("-Infinity")),
        ],
        default=special("NaN"),
    )
    return exp.Case(
        ifs=[exp.If(this=exp.EQ(this=y.copy(), expression=zero), true=by_zero)],
        default=exp.Div(this=x, expression=y, typed=True),
    )


def safe_cast_text_to_bool(node: exp.Expression) -> exp.Expression:
    """SAFE_CAST(text AS BOOL) is TRUE for 'true' and FALSE for 'false' in any case, NULL
    otherwise; the engines also take 'yes', '1', 't', …"""
    if not (
        isinstance(node, exp.TryCast)
        and node.to.is_type(exp.DataType.Type.BOOLEAN)
        and (node.this.is_string or is_type(node.this, *exp.DataType.TEXT_TYPES))
    ):
        return node
    lowered = exp.Lower(this=node.this.copy())
    return exp.Case(
        ifs=[
            exp.If(this=exp.EQ(this=lowered, expression=exp.Literal.string("true")),
                   true=exp.true()),
            exp.If(this=exp.EQ(this=lowered.copy(), expression=exp.Literal.string("false")),
                   true=exp.false()),
        ],
    )  # fmt: skip


def rounding_is_float64(node: exp.Expression) -> exp.Expression:
    """ROUND, TRUNC, CEIL and FLOOR of an INT64 are FLOAT64 in BigQuery; the engines keep
    the integer type."""
    if isinstance(node, exp.Round | exp.Ceil | exp.Floor | exp.Trunc) and is_type(
        node.this, *exp.DataType.INTEGER_TYPES
    ):
        node.set("this", exp.cast(node.this.copy(), exp.DataType.Type.DOUBLE))
    return node


#: In order; each sees the tree the one before left.
FIXES = (
    float_literals,
    numeric_scale,
    dates_from_text,
    ieee_divide,
    safe_cast_text_to_bool,
    rounding_is_float64,
)
