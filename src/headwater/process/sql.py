"""SQL pipelines through sqlglot: what a query reads, and the SQL an engine runs.

Pipelines are written in the project's dialect (BigQuery's or DuckDB's) and
transpiled to the engine's. ``@start`` and ``@end`` are the interval's bounds,
BigQuery's own query-parameter syntax; they stay parameters in every dialect,
so values are bound, never pasted. Table names may carry a BigQuery project
and dataset (``proj.analytics.events``): only the last part names the table,
so the SQL that runs in production also runs here.

>>> q = parse("SELECT COUNT(*) FROM p.ds.events WHERE received_at >= @start", "bigquery", "x")
>>> sorted(q.references), render(q, "duckdb")
(['events'], 'SELECT COUNT(*) FROM events WHERE received_at >= $start')
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from typing import cast

import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel, ParseError, UnsupportedError

from headwater.process import postgres_sql
from headwater.process.errors import PipelineError

PARAMETERS = frozenset({"start", "end"})
_TOKEN = re.compile(r"<Token token_type: [^,]+, text: ([^,]*),[^>]*>")


@dataclass(frozen=True)
class Query:
    """A parsed pipeline query and what it reads."""

    expression: exp.Query
    references: frozenset[str]
    parameters: frozenset[str]
    source: str
    path: str
    dialect: str


def parse(sql: str, dialect: str, path: str) -> Query:
    """Parse one SELECT; errors name the file and line."""
    try:
        statements = [s for s in sqlglot.parse(sql, read=dialect) if s is not None]
    except ParseError as exc:
        first = exc.errors[0] if exc.errors else {}
        description = _TOKEN.sub(r"'\1'", str(first.get("description", exc)))
        line, end = first.get("line"), first.get("col")
        # sqlglot reports the column where the offending token ends; point at its start.
        column = end - len(first.get("highlight") or "") + 1 if end else None
        raise PipelineError(
            f"the SQL does not parse: {description}",
            path=path,
            line=line,
            column=column if column and column > 0 else None,
        ) from None
    if len(statements) != 1:
        raise PipelineError(
            f"a pipeline holds exactly one query, found {len(statements)}", path=path
        )
    expression = statements[0]
    if not isinstance(expression, exp.Query):
        raise PipelineError(
            f"a pipeline is one SELECT (or WITH … SELECT), not {expression.key.upper()}",
            path=path,
            line=_line(sql, expression.key),
        )
    ctes = {cte.alias_or_name for cte in expression.find_all(exp.CTE)}
    # A table function in FROM (range(), unnest()) is a Table without a name: not an input.
    references = frozenset(
        table.name
        for table in expression.find_all(exp.Table)
        if isinstance(table.this, exp.Identifier) and table.name not in ctes
    )
    parameters = set()
    for parameter in expression.find_all(exp.Parameter, exp.Placeholder):
        name = parameter.name
        if name not in PARAMETERS:
            raise PipelineError(
                f"unknown parameter @{name}",
                path=path,
                line=_line(sql, f"@{name}"),
                hint="pipelines take @start and @end, the interval's bounds",
            )
        parameters.add(name)
    return Query(expression, references, frozenset(parameters), sql, path, dialect)


def render(query: Query, engine_dialect: str, *, pretty: bool = False) -> str:
    """The SQL the engine runs: unqualified table names, ``@start``/``@end`` as parameters."""
    tree = cast(exp.Expression, query.expression.copy())
    for table in tree.find_all(exp.Table):
        table.set("db", None)
        table.set("catalog", None)
    for fix in FIXES.get((query.dialect, engine_dialect), ()):
        tree = tree.transform(fix, copy=False)
    try:
        return tree.sql(dialect=engine_dialect, pretty=pretty, unsupported_level=ErrorLevel.RAISE)
    except UnsupportedError as exc:
        raise PipelineError(
            f"cannot translate to {engine_dialect}: {exc}",
            path=query.path,
            line=_unsupported_line(query, engine_dialect),
            hint="rewrite that construct, or set dialect to the engine's own in headwater.toml",
        ) from None


def _unsupported_line(query: Query, engine_dialect: str) -> int | None:
    """The line of the first function the engine's dialect refuses, found by trying each."""
    for node in query.expression.find_all(exp.Func):
        try:
            node.sql(dialect=engine_dialect, unsupported_level=ErrorLevel.RAISE)
        except UnsupportedError:
            written = node.sql(dialect=query.dialect).split("(", 1)[0]
            found = _line(query.source, written)
            if found is not None:
                return found
        except Exception:  # noqa: S112 - a fragment may not render alone; try the next
            continue
    return None


# Where sqlglot's translation runs but answers differently from BigQuery, these
# rewrite the tree first so the engine gives BigQuery's answer and type.


def _date_stays_date(node: exp.Expression) -> exp.Expression:
    """BigQuery's DATE_TRUNC and DATE_SUB return a DATE; DuckDB's a TIMESTAMP."""
    if not isinstance(node, exp.DateTrunc | exp.DateSub | exp.DateAdd):
        return node
    if isinstance(node.parent, exp.Cast) or isinstance(node.args.get("unit"), exp.WeekStart):
        return node  # already a DATE (sqlglot casts week-start truncation itself)
    return exp.cast(node, exp.DataType.Type.DATE)


def _safe_cast_text_to_integer(node: exp.Expression) -> exp.Expression:
    """BigQuery casts text to INT64 only when it is an integer literal ('2', '-0x1F');
    DuckDB's TRY_CAST also takes '2.5' (rounding it) and '1e3'."""
    if not (
        isinstance(node, exp.TryCast)
        and node.to.is_type(*exp.DataType.INTEGER_TYPES)
        and (isinstance(node.this, exp.JSONExtractScalar) or node.this.is_string)
    ):
        return node
    text = exp.Trim(this=node.this.copy())
    pattern = exp.Literal.string(r"[+-]?(0[xX][0-9a-fA-F]+|[0-9]+)")
    integral = exp.Anonymous(this="REGEXP_FULL_MATCH", expressions=[text, pattern])
    return exp.Case(ifs=[exp.If(this=integral, true=exp.TryCast(this=text.copy(), to=node.to))])


def _diff_in_whole_units(node: exp.Expression) -> exp.Expression:
    """TIMESTAMP_DIFF counts whole units; DuckDB's DATE_DIFF counts boundaries crossed,
    its DATE_SUB whole units. TIMESTAMP_DIFF(a, b, part) = DATE_SUB(part, b, a)."""
    if isinstance(node, exp.TimestampDiff):
        unit = exp.Literal.string(node.unit.name if node.unit else "DAY")
        return exp.Anonymous(this="DATE_SUB", expressions=[unit, node.expression, node.this])
    return node


def _count_if_is_int64(node: exp.Expression) -> exp.Expression:
    """COUNTIF is INT64 in BigQuery; DuckDB's COUNT_IF is a HUGEINT."""
    if isinstance(node, exp.CountIf) and not isinstance(node.parent, exp.Cast):
        return exp.cast(node, exp.DataType.Type.BIGINT)
    return node


def _named_parameters(node: exp.Expression) -> exp.Expression:
    """@start and $start become sqlglot's named placeholder, which each engine binds by
    name: PostgreSQL's driver as ``%(start)s``, Spark as ``:start`` (sqlglot would
    write Spark's ``${start}``, which is text substitution, not a parameter)."""
    if isinstance(node, exp.Parameter | exp.Placeholder) and node.name in PARAMETERS:
        return exp.Placeholder(this=node.name)
    return node


#: Spark's DAYOFWEEK of each day BigQuery may start a week on (Sunday is 1).
_WEEKDAYS = {
    day: number
    for number, day in enumerate(
        ["SUNDAY", "MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY"], 1
    )
}


def _weeks_from_their_first_day(node: exp.Expression) -> exp.Expression:
    """BigQuery's WEEK starts on Sunday (WEEK(day) on that day, ISOWEEK on Monday);
    Spark truncates weeks to Mondays only (sqlglot refuses other days, and Spark's
    TRUNC(d, 'ISOWEEK') is NULL). Step back from the day to the week's first day."""
    if not isinstance(node, exp.DateTrunc | exp.TimestampTrunc):
        return node
    unit = node.args.get("unit")
    if isinstance(unit, exp.WeekStart):
        first = _WEEKDAYS.get(unit.name.upper())
    else:
        first = 2 if unit is not None and unit.name.upper() == "ISOWEEK" else None
    if first is None:
        return node
    day = exp.cast(node.this.copy(), exp.DataType.Type.DATE)
    back = exp.Mod(
        this=exp.Paren(
            this=exp.Add(
                this=exp.Anonymous(this="DAYOFWEEK", expressions=[day.copy()]),
                expression=exp.Literal.number(7 - first),
            )
        ),
        expression=exp.Literal.number(7),
    )
    start = exp.Anonymous(this="DATE_SUB", expressions=[day, back])
    if isinstance(node, exp.TimestampTrunc):
        return exp.cast(start, exp.DataType.Type.TIMESTAMP)
    return start


def _json_through_variant(node: exp.Expression) -> exp.Expression:
    """sqlglot writes BigQuery's JSON functions as Spark's GET_JSON_OBJECT, which
    returns objects and arrays where JSON_VALUE gives NULL, and strings unquoted where
    JSON_QUERY keeps them JSON; Spark has no JSON_EXTRACT_ARRAY at all. Spark's
    VARIANT tells the kinds of JSON value apart: JSON_VALUE is the scalar at the path
    as text, JSON_QUERY the JSON text at the path, JSON_EXTRACT_ARRAY the array's
    elements as JSON text (NULL when the path holds no array)."""
    if not isinstance(node, exp.JSONExtractScalar | exp.JSONExtract | exp.JSONExtractArray):
        return node
    document = exp.Anonymous(
        this="TRY_PARSE_JSON", expressions=[node.this.copy().transform(_json_through_variant)]
    )
    path = node.expression.copy()
    if isinstance(node, exp.JSONExtractArray):
        items = exp.Anonymous(
            this="TRY_VARIANT_GET",
            expressions=[document, path, exp.Literal.string("ARRAY<VARIANT>")],
        )
        item = exp.to_identifier("_hw_item")
        as_json = exp.Anonymous(this="TO_JSON", expressions=[item.copy()])
        return exp.Anonymous(
            this="TRANSFORM", expressions=[items, exp.Lambda(this=as_json, expressions=[item])]
        )
    value = exp.Anonymous(this="VARIANT_GET", expressions=[document, path])
    if isinstance(node, exp.JSONExtract):
        return exp.Anonymous(this="TO_JSON", expressions=[value])
    kind = exp.Anonymous(this="SCHEMA_OF_VARIANT", expressions=[value.copy()])
    scalar = exp.Not(
        this=exp.RegexpLike(this=kind, expression=exp.Literal.string("^(OBJECT|ARRAY)"))
    )
    text = exp.Anonymous(
        this="VARIANT_GET",
        expressions=[value, exp.Literal.string("$"), exp.Literal.string("STRING")],
    )
    return exp.Case(ifs=[exp.If(this=scalar, true=text)])


def _order_after_qualify(node: exp.Expression) -> exp.Expression:
    """sqlglot writes QUALIFY for Spark as a filtered subquery and leaves the ORDER BY
    (and LIMIT) inside it, where Spark need not keep the order. Order the outer query
    instead, by output column; an ordering by anything else stays where it was."""
    if not (isinstance(node, exp.Select) and node.args.get("qualify") and node.args.get("order")):
        return node
    star = any(isinstance(p, exp.Star) for p in node.expressions)
    names = {p.alias_or_name for p in node.expressions}
    aliases = {p.this: p.alias for p in node.expressions if isinstance(p, exp.Alias)}
    ordered = []
    for item in node.args["order"].expressions:
        key = item.this
        if isinstance(key, exp.Column) and (key.name in names or star):
            outer: exp.Expression = exp.column(key.name, quoted=key.this.quoted)
        elif key in aliases:
            outer = exp.column(aliases[key])
        elif isinstance(key, exp.Literal) and key.is_int:
            outer = key.copy()
        else:
            return node
        moved = item.copy()
        moved.set("this", outer)
        ordered.append(moved)
    inner = node.copy()
    wrapper = exp.select("*").from_(inner.subquery("_ordered", copy=False))
    for clause in ("limit", "offset"):  # (a WITH goes to the top: sqlglot moves it for Spark)
        wrapper.set(clause, inner.args.get(clause))
        inner.set(clause, None)
    inner.set("order", None)
    return wrapper.order_by(*ordered, copy=False)


FIXES = {
    ("bigquery", "duckdb"): (
        _date_stays_date,
        _diff_in_whole_units,
        _count_if_is_int64,
        _safe_cast_text_to_integer,
    ),
    ("bigquery", "postgres"): (*postgres_sql.FIXES, _date_stays_date, _named_parameters),
    ("bigquery", "spark"): (
        _named_parameters,
        _weeks_from_their_first_day,
        _json_through_variant,
        _order_after_qualify,
    ),
    ("duckdb", "postgres"): (_named_parameters,),
}


def internal(text: str, engine_dialect: str) -> str:
    """One of Headwater's own queries, written in DuckDB's SQL with ``$name`` parameters,
    in the engine's dialect (values stay named parameters).

    >>> internal("SELECT min(t) FROM events WHERE r >= $start", "postgres")
    'SELECT MIN(t) FROM events WHERE r >= %(start)s'
    """
    tree = sqlglot.parse_one(text, read="duckdb")
    for fix in FIXES.get(("duckdb", engine_dialect), ()):
        tree = tree.transform(fix, copy=False)
    return tree.sql(dialect=engine_dialect)


def version(text: str) -> str:
    """A short stable hash of what a pipeline runs."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def locate(source: str, message: str) -> int | None:
    """The first line of ``source`` that holds a name quoted in an engine's error message."""
    for name in re.findall(r'"([^"]+)"|\'([^\']+)\'', message):
        found = _line(source, name[0] or name[1])
        if found is not None:
            return found
    return None


def _line(source: str, needle: str) -> int | None:
    if not needle:
        return None
    lowered = needle.lower()
    for number, line in enumerate(source.splitlines(), start=1):
        code = line.split("--", 1)[0]
        if lowered in code.lower():
            return number
    return None
