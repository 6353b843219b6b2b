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

import functools
import hashlib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel, ParseError, UnsupportedError

from headwater.process import duckdb_sql, portable_sql, postgres_sql, spark_sql
from headwater.process.errors import PipelineError, Untranslatable
from headwater.store import schema

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


def foreign_cast(sql: str, dialect: str) -> int | None:
    r"""The line of a ``::`` cast in BigQuery SQL (DuckDB's and PostgreSQL's spelling, which
    sqlglot's BigQuery parser takes all the same), else ``None``.

    >>> foreign_cast("SELECT 1,\n  x::INTEGER, '::' AS s FROM t", "bigquery")
    2
    """
    if dialect != "bigquery" or "::" not in sql:
        return None
    from sqlglot import TokenType

    try:
        tokens = sqlglot.tokenize(sql, read=dialect)
    except sqlglot.errors.TokenError:
        return None  # the parse says what is wrong
    return next((t.line for t in tokens if t.token_type == TokenType.DCOLON), None)


#: What to write for a ``::`` cast in BigQuery SQL.
CAST_HINT = (
    "the project's SQL is BigQuery's ([project] dialect = \"bigquery\" in headwater.toml): "
    "write CAST(x AS INT64) (or SAFE_CAST)"
)


def parse(sql: str, dialect: str, path: str) -> Query:
    """Parse one SELECT; errors name the file and line."""
    if (line := foreign_cast(sql, dialect)) is not None:
        raise PipelineError(
            "`::` is DuckDB's and PostgreSQL's cast, not BigQuery's",
            path=path,
            line=line,
            hint=CAST_HINT,
        )
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
        if isinstance(table.this, exp.Identifier) and (table.name not in ctes or table.db)
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


def render(
    query: Query,
    engine_dialect: str,
    *,
    pretty: bool = False,
    tables: Mapping[str, str] | None = None,
) -> str:
    """The SQL the engine runs: unqualified table names, ``@start``/``@end`` as parameters;
    ``tables`` reads some inputs from other tables (an input's next version, built beside
    it by ``headwater apply``)."""
    tree = cast(exp.Expression, query.expression.copy())
    ctes = {cte.alias_or_name for cte in tree.find_all(exp.CTE)}
    for table in tree.find_all(exp.Table):
        if tables and table.name in tables and (table.name not in ctes or table.db):
            table.set("this", exp.to_identifier(tables[table.name]))
        table.set("db", None)
        table.set("catalog", None)
    if query.dialect == "bigquery" and engine_dialect in _NO_STAR_EXCEPT:
        tree = tree.transform(_expand_event_stars, copy=False)
    if query.dialect == "bigquery":
        portable_sql.annotate(tree)
    try:
        for fix in FIXES.get((query.dialect, engine_dialect), ()):
            tree = tree.transform(fix, copy=False)
    except Untranslatable as exc:
        line, column = _place(query.source, exc.node) or (None, None)
        raise PipelineError(
            f"{exc.construct} cannot run on {engine_dialect} as BigQuery runs it: {exc.reason}",
            path=query.path,
            line=line or _line(query.source, exc.construct.split("(", 1)[0]),
            column=column,
            hint=exc.hint,
        ) from None
    try:
        return tree.sql(dialect=engine_dialect, pretty=pretty, unsupported_level=ErrorLevel.RAISE)
    except UnsupportedError as exc:
        line, column = _refused_at(query, engine_dialect) or (None, None)
        raise PipelineError(
            f"cannot translate to {engine_dialect}: {exc}",
            path=query.path,
            line=line,
            column=column,
            hint="write that construct another way in BigQuery SQL "
            "(docs/pipelines.md, 'BigQuery SQL on every engine', lists what each engine refuses)",
        ) from None


#: Engines without BigQuery's ``* EXCEPT (...)`` and ``* REPLACE (...)``.
_NO_STAR_EXCEPT = frozenset({"postgres", "spark"})
#: The columns of the tables every project has, in order: what their ``*`` stands for.
_BUILTIN_COLUMNS = {
    "events": tuple(schema.EVENTS.names),
    "failed_events": tuple(schema.FAILED_EVENTS.names),
}


def _expand_event_stars(node: exp.Expression) -> exp.Expression:
    """``e.* EXCEPT (user_id)`` or ``* REPLACE (x AS c)`` over ``events`` or
    ``failed_events``, whose columns are known, as the column list it stands for, for
    engines that have no EXCEPT or REPLACE; over other tables it is left as written (and
    refused by the engine's rewrites)."""
    if not isinstance(node, exp.Select):
        return node
    sources: dict[str, str] = {}
    # A WITH of the same name stands for something else.
    shadowed = {cte.alias_or_name for cte in node.root().find_all(exp.CTE)}
    from_ = node.args.get("from") or node.args.get("from_")
    for item in [from_.this] if from_ is not None else []:
        if isinstance(item, exp.Table):
            sources[item.alias_or_name] = item.name
    for join in node.args.get("joins") or []:
        if isinstance(join.this, exp.Table):
            sources[join.this.alias_or_name] = join.this.name
    expanded: list[exp.Expr] = []
    changed = False
    for item in node.expressions:
        star = item.this if isinstance(item, exp.Column) else item
        qualifier = item.table if isinstance(item, exp.Column) else None
        if not (
            isinstance(star, exp.Star) and (star.args.get("except_") or star.args.get("replace"))
        ):
            expanded.append(item)
            continue
        if qualifier:
            table = sources.get(qualifier)
        else:
            table = next(iter(sources.values())) if len(sources) == 1 else None
        columns = None if table in shadowed else _BUILTIN_COLUMNS.get(table or "")
        if columns is None:
            expanded.append(item)
            continue
        dropped = {c.name.lower() for c in star.args.get("except_") or []}
        replaced = {a.alias.lower(): a.this for a in star.args.get("replace") or []}
        for name in columns:
            if name in dropped:
                continue
            column = exp.column(name, table=qualifier or None)
            if name in replaced:
                expanded.append(exp.alias_(replaced[name].copy(), name))
            else:
                expanded.append(column)
        changed = True
    if changed:
        node.set("expressions", expanded)
    return node


def _place(source: str, node: exp.Expr) -> tuple[int, int] | None:
    """The line and column where ``node`` was written (its tokens carry their offsets)."""
    starts = [n.meta["start"] for n in node.walk() if isinstance(n.meta.get("start"), int)]
    if not starts:
        return None
    start = min(starts)
    return source.count("\n", 0, start) + 1, start - source.rfind("\n", 0, start)


def _refused_at(query: Query, engine_dialect: str) -> tuple[int, int] | None:
    """Where the innermost construct the engine's dialect refuses was written, found by
    rendering each node alone."""
    refused: list[tuple[int, exp.Expr]] = []
    for node in query.expression.walk():
        try:
            node.sql(dialect=engine_dialect, unsupported_level=ErrorLevel.RAISE)
        except UnsupportedError:
            refused.append((sum(1 for _ in node.walk()), node))
        except Exception:  # noqa: S112 - a fragment may not render alone; try the next
            continue
    for _, node in sorted(refused, key=lambda pair: pair[0]):
        place = _place(query.source, node)
        if place is not None:
            return place
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


def _named_parameters(node: exp.Expression) -> exp.Expression:
    """@start and $start become sqlglot's named placeholder, which each engine binds by
    name: PostgreSQL's driver as ``%(start)s``, Spark as ``:start`` (sqlglot would
    write Spark's ``${start}``, which is text substitution, not a parameter)."""
    if isinstance(node, exp.Parameter | exp.Placeholder) and node.name in PARAMETERS:
        return exp.Placeholder(this=node.name)
    return node


#: The rewrites of each (pipeline dialect, engine dialect), in order; each engine's own
#: are in its module (duckdb_sql, postgres_sql, spark_sql).
FIXES = {
    ("bigquery", "duckdb"): (*portable_sql.FIXES, _date_stays_date, *duckdb_sql.FIXES),
    ("bigquery", "postgres"): (
        *portable_sql.FIXES,
        *postgres_sql.FIXES,
        _date_stays_date,
        _named_parameters,
    ),
    ("bigquery", "spark"): (*portable_sql.FIXES, _named_parameters, *spark_sql.FIXES),
    ("duckdb", "postgres"): (_named_parameters,),
}


@functools.lru_cache(maxsize=512)
def internal(text: str, engine_dialect: str) -> str:
    """One of Headwater's own queries, written in DuckDB's SQL with ``$name`` parameters,
    in the engine's dialect (values stay named parameters). Made once per text: the
    planner asks for the same few on every pass, and sqlglot takes a millisecond.

    >>> internal("SELECT min(t) FROM events WHERE r >= $start", "postgres")
    'SELECT MIN(t) FROM events WHERE r >= %(start)s'
    """
    tree = sqlglot.parse_one(text, read="duckdb")
    for fix in FIXES.get(("duckdb", engine_dialect), ()):
        tree = tree.transform(fix, copy=False)
    return tree.sql(dialect=engine_dialect)


#: Units TIMESTAMP_TRUNC in a zone was corrected for (the hour a clock turns back).
_FINER_THAN_DAY = frozenset({"HOUR", "MINUTE", "SECOND", "MILLISECOND", "MICROSECOND"})


def corrections(query: Query) -> str:
    r"""The corrections of the translation to the engines whose answers differ from earlier
    releases' for this query, as part of its version: the pipelines they change show as
    made by an older version (``headwater status``, ``plan``) and are rebuilt, and no
    other pipeline's version moves.

    >>> corrections(parse("SELECT LOWER(u) AS u FROM t GROUP BY u", "bigquery", "x.sql"))
    '\x00group-by-alias'
    >>> corrections(parse("SELECT DATE(ts) AS day FROM t GROUP BY day", "bigquery", "x.sql"))
    ''
    >>> corrections(parse("SELECT DIV(n - 1, 7) AS w FROM t", "bigquery", "x.sql"))
    '\x00div-operands'
    >>> corrections(parse("SELECT CAST(n AS NUMERIC) / 8 AS e FROM t", "bigquery", "x.sql"))
    '\x00numeric-by-integer'
    >>> havana = "SELECT TIMESTAMP_TRUNC(ts, DAY, 'America/Havana') AS d FROM t"
    >>> corrections(parse(havana, "bigquery", "x.sql"))
    '\x00earlier-instant'
    >>> corrections(parse(havana.replace("America/Havana", "Europe/Berlin"), "bigquery", "x.sql"))
    ''
    """
    if query.dialect != "bigquery":
        return ""
    tree = cast(exp.Expression, query.expression.copy())
    portable_sql.annotate(tree)  # types, for the corrections that depend on them
    marks = []
    if any(
        portable_sql.shadowing_aliases(select)
        for select in tree.find_all(exp.Select)
        if select.args.get("group") is not None
    ):
        marks.append("group-by-alias")
    if any(
        isinstance(like.expression, exp.Literal) and "\\" in like.expression.name
        for like in tree.find_all(exp.Like)
    ):
        marks.append("like-escape")
    if any(
        trunc.args.get("zone") is not None
        and trunc.args.get("unit") is not None
        and trunc.args["unit"].name.upper() in _FINER_THAN_DAY
        for trunc in tree.find_all(exp.TimestampTrunc)
    ):
        marks.append("trunc-in-zone")
    if any(
        isinstance(operand, exp.Binary | exp.Unary) and not isinstance(operand, exp.Paren)
        for div in tree.find_all(exp.IntDiv)
        for operand in (div.this, div.expression)
    ):
        marks.append("div-operands")
    if any(
        portable_sql.is_type(div.this, *exp.DataType.INTEGER_TYPES)
        != portable_sql.is_type(div.expression, *exp.DataType.INTEGER_TYPES)
        and portable_sql.is_type(div.this, exp.DataType.Type.DECIMAL, *exp.DataType.INTEGER_TYPES)
        and portable_sql.is_type(
            div.expression, exp.DataType.Type.DECIMAL, *exp.DataType.INTEGER_TYPES
        )
        for div in tree.find_all(exp.Div)
    ):
        marks.append("numeric-by-integer")
    zoned = (exp.Timestamp, exp.StrToTime, exp.TimestampTrunc, exp.Date, exp.TimeToStr)
    zones = [
        *(node.args["zone"] for node in tree.find_all(*zoned) if node.args.get("zone")),
        *(node.args["zone"] for node in tree.find_all(exp.AtTimeZone)),
        *(node.expression for node in tree.find_all(exp.Datetime) if node.expression),
    ]
    if any(portable_sql.fixed_offset(zone) not in (None, 0) for zone in zones):
        marks.append("offset-zone")
    if any(
        portable_sql.fixed_offset(node.args["zone"]) is None
        and (not isinstance(node, exp.TimestampTrunc) or _day_start_repeats(node))
        for node in tree.find_all(exp.Timestamp, exp.StrToTime, exp.TimestampTrunc)
        if node.args.get("zone") is not None
    ):
        marks.append("earlier-instant")
    return "".join(f"\x00{mark}" for mark in marks)


@functools.lru_cache(maxsize=64)
def _repeats_midnight(zone: str) -> bool:
    """Whether the clock in ``zone`` shows some midnight twice (it turns back across it),
    1970 to 2037; an unknown zone is taken to."""
    try:
        tz = ZoneInfo(zone)
    except (ValueError, ZoneInfoNotFoundError):
        return True
    week = datetime(1970, 1, 1)
    offset = week.replace(tzinfo=tz).utcoffset()
    while week.year < 2038:
        # A week the offset changes in is looked at day by day (no zone changes twice in one).
        later = (week + timedelta(days=7)).replace(tzinfo=tz).utcoffset()
        if later != offset:
            for day in (week + timedelta(days=n) for n in range(8)):
                # Shown twice: the first reading (fold 0) has the larger offset. A
                # skipped midnight (Santiago's) has the smaller, and changes nothing.
                first = day.replace(tzinfo=tz).utcoffset()
                second = day.replace(tzinfo=tz, fold=1).utcoffset()
                if first is not None and second is not None and first > second:
                    return True
            offset = later
        week += timedelta(days=7)
    return False


def _day_start_repeats(trunc: exp.Expression) -> bool:
    """Whether a TIMESTAMP_TRUNC to a day or longer can start at a time its zone's clock
    shows twice (a zone that is not a literal may be any)."""
    if trunc.args["unit"].name.upper() in _FINER_THAN_DAY:
        return False
    zone = trunc.args["zone"]
    if not (isinstance(zone, exp.Literal) and zone.is_string):
        return True
    return _repeats_midnight(zone.name)


def version(text: str) -> str:
    """A short stable hash of what a pipeline runs."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


#: How engines name what they refuse: quoted ("x", 'x', Spark's `x`), or a function by name
#: (PostgreSQL's ``function f(text) does not exist``, DuckDB's ``Function with name f``).
_NAMED = re.compile(r'"([^"]+)"|\'([^\']+)\'|`([^`]+)`|function (\w+)\(|with name (\w+)')


def locate(source: str, message: str) -> int | None:
    """The first line of ``source`` that holds a name an engine's error message names.

    >>> locate("SELECT\\n  f(x)\\nFROM t", "function f(text) does not exist")
    2
    """
    for match in _NAMED.finditer(message):
        found = _line(source, next(group for group in match.groups() if group))
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
