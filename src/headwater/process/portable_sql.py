"""Rewrites every engine needs to give BigQuery's answer, and the types they rely on.

BigQuery's SQL differs from DuckDB's, PostgreSQL's and Spark's in ways sqlglot
keeps as written: a literal ``2.5`` is FLOAT64 (a DECIMAL elsewhere), NUMERIC has
9 digits after the point (a bare DECIMAL has 3 in DuckDB, 0 in Spark), a string
literal stands for a DATE where a date is expected. These rewrites run before
each engine's own (process/duckdb_sql.py, postgres_sql.py, spark_sql.py), on a
tree whose nodes carry BigQuery's types where they can be known
(:func:`annotate`): literals, casts, the columns of the query's own CTEs and
UNNESTs, and the TIMESTAMP columns of ``events`` and ``failed_events``. A column of
another stored table has no known type, and keeps the engine's own behaviour.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable
from typing import cast

import pyarrow as pa
import sqlglot
from sqlglot import exp
from sqlglot.optimizer.annotate_types import annotate_types
from sqlglot.optimizer.qualify import qualify
from sqlglot.schema import MappingSchema

from headwater.process.errors import Untranslatable

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
    qualified = _typed(tree, _BUILTIN_SCHEMA)
    if qualified is None:  # a query the built-in tables' columns do not resolve
        qualified = _typed(tree, None)
    if qualified is None:  # no inference: every type stays unknown
        for node in tree.walk():
            node.meta.pop(_KEY, None)
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


def _typed(tree: exp.Expression, schema: MappingSchema | None) -> exp.Expression | None:
    """A qualified copy of ``tree`` with the types inferred, or None when it cannot be."""
    try:
        qualified = qualify(
            tree.copy(),
            dialect="bigquery",
            schema=schema,
            validate_qualify_columns=False,
            quote_identifiers=False,
            identify=False,
        )
        return annotate_types(qualified, dialect="bigquery", schema=schema)
    except Exception:
        return None


def _builtin_schema() -> MappingSchema:
    """The columns of ``events`` and ``failed_events``, typed only where every engine
    stores the type BigQuery has: their TIMESTAMPs. Text columns stay unknown (PostgreSQL
    keeps ``properties`` as jsonb, which a rewrite for STRING would misread)."""
    from headwater.store import schema

    tables: dict[str, object] = {
        table: {
            field.name: "TIMESTAMP" if pa.types.is_timestamp(field.type) else "UNKNOWN"
            for field in columns
        }
        for table, columns in (("events", schema.EVENTS), ("failed_events", schema.FAILED_EVENTS))
    }
    return MappingSchema(tables, dialect="bigquery")


_BUILTIN_SCHEMA = _builtin_schema()


def is_type(node: exp.Expression, *kinds: exp.DType) -> bool:
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
            raise Untranslatable(
                "BIGNUMERIC",
                node,
                "no engine's tables hold 76 digits (DuckDB, Spark and the store's Arrow "
                "columns stop at 38)",
                "use NUMERIC (38 digits, 9 after the point) or FLOAT64",
            )
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
    elif (
        isinstance(node, exp.Round)
        and node.args.get("decimals") is None
        and is_type(node.this, exp.DataType.Type.DECIMAL, exp.DataType.Type.BIGDECIMAL)
    ):
        # DuckDB's ROUND of a DECIMAL to no decimals is an integer.
        node.set("decimals", number(0))
        return exp.cast(node, exp.DataType.build("DECIMAL(38, 9)"))
    return node


#: Veltkamp's splitter for doubles (2^27 + 1): a double times it, less itself, splits it
#: into halves whose products are exact.
_SPLITTER = 134217729.0
#: Doubles from here on are spaced 2 apart: a scaled value this large is already whole.
_EXACT = 2.0**53
#: Past this, splitting a quotient (times 2^27 + 1) could overflow: the value is kept.
_HUGE = 1e290


def _split(value: float) -> tuple[float, float]:
    high = _SPLITTER * value
    high = high - (high - value)
    return high, value - high


def _product_error(value: str, scale: float, product: str) -> str:
    """SQL for the exact error of ``product``, the double ``value * scale`` as rounded
    (Dekker's two-product, over Veltkamp's halves of both factors)."""
    high, low = _split(scale)
    value_high = f"((_SPLITTER * {value}) - ((_SPLITTER * {value}) - {value}))"
    value_low = f"({value} - {value_high})"
    return (
        f"((({value_high} * {high!r} - {product}) + {value_high} * {low!r}"
        f" + {value_low} * {high!r}) + {value_low} * {low!r})"
    )


def _template(sql: str, **nodes: exp.Expression) -> exp.Expression:
    """``sql`` with each column named like a key of ``nodes`` replaced by that node."""
    tree = cast(exp.Expression, sqlglot.parse_one(sql, read="bigquery"))
    for column in list(tree.find_all(exp.Column)):
        if column.name in nodes:
            column.replace(nodes[column.name].copy())
    return tree


def round_exactly(value: exp.Expression, digits: int) -> exp.Expression:
    """``ROUND(value, digits)`` of a FLOAT64 as BigQuery rounds it: the double's exact value
    times 10^digits, half away from zero. PostgreSQL and Spark round the shortest decimal
    that reads back as the double: ``ROUND(2.675, 2)`` is 2.68 there, 2.67 in BigQuery and
    DuckDB (the double is 2.67499999999999982…). In double arithmetic only: ``y`` is the
    scaled value as rounded, and when it lands on a half, the sign of its rounding error
    (Dekker's exact product, or the exact remainder of a division) says which way the exact
    value lies.

    >>> round_exactly(exp.column("x"), 2).sql("postgres")[:57]
    'CASE WHEN ABS(x) >= 90071992547409.92 OR x IS NULL THEN x'
    """
    scale = 10.0 ** abs(digits)
    if digits >= 0:
        scaled = f"(v * {scale!r})"
        # x·p = y + e exactly; e has the sign of (exact - y).
        error = _product_error("v", scale, scaled)
        back = f"/ {scale!r}"
        # Scaled past 2^53, the double has no digit left to round at: it is its own answer.
        limit = _EXACT / scale
    else:
        scaled = f"(v / {scale!r})"
        # x - y·q, exactly (y·q by Dekker's product): the sign of (exact quotient - y), in
        # units of the quotient: its sign, and whether it reaches a half.
        product = f"({scaled} * {scale!r})"
        error = f"(((v - {product}) - {_product_error(scaled, scale, product)}) / {scale!r})"
        back = f"* {scale!r}"
        limit = _HUGE  # past it, the split's product could overflow
    whole = f"(CASE WHEN {scaled} >= 0 THEN FLOOR({scaled}) ELSE CEIL({scaled}) END)"
    part = f"ABS({scaled} - {whole})"
    # Past 2^52 the scaled value is whole and its error may be exactly a half (a tie).
    away = (
        f"({part} > 0.5 OR ({part} = 0.5 AND {error} * {scaled} >= 0)"
        f" OR ({part} = 0 AND {error} * SIGN({scaled}) >= 0.5))"
    )
    sql = (
        f"CASE WHEN ABS(v) >= {limit!r} OR v IS NULL THEN v "
        f"WHEN {away} THEN ({whole} + SIGN({scaled})) {back} ELSE {whole} {back} END"
    ).replace("_SPLITTER", repr(_SPLITTER))
    return _template(sql, v=value)


def round_float_exactly(node: exp.Expression) -> exp.Expression:
    """ROUND of a FLOAT64 to a literal number of digits, as :func:`round_exactly` (for the
    engines that round the shortest decimal: PostgreSQL, Spark)."""
    if not isinstance(node, exp.Round) or not is_type(
        node.this, exp.DataType.Type.DOUBLE, exp.DataType.Type.FLOAT
    ):
        return node
    decimals = node.args.get("decimals")
    sign, literal = 1, decimals
    if isinstance(literal, exp.Neg):
        sign, literal = -1, literal.this
    if decimals is None:
        digits = 0
    elif isinstance(literal, exp.Literal) and literal.is_int and int(literal.name) <= 15:
        digits = sign * int(literal.name)
    else:
        return node  # a number of digits not known at load: the engine's own ROUND
    # The value first: a ROUND inside it (ROUND(SUM(ROUND(x, 2)), 2)) is copied into the
    # rewrite, where this pass would not reach it.
    rounded = round_exactly(node.this.transform(round_float_exactly), digits)
    rounded.type = exp.DataType.build("DOUBLE")
    return rounded


def cast_float_to_integer(node: exp.Expression) -> exp.Expression:
    """CAST(FLOAT64 AS INT64) rounds half away from zero; DuckDB and PostgreSQL round half
    to even, Spark truncates."""
    if (
        isinstance(node, exp.Cast)
        and node.to.is_type(*exp.DataType.INTEGER_TYPES)
        and is_type(node.this, *exp.DataType.REAL_TYPES)
    ):
        rounded = exp.Round(this=node.this.copy())
        rounded.type = exp.DataType.build("DOUBLE")
        rounded.this.type = node.this.type
        node.set("this", rounded)
    return node


def division_operands_grouped(node: exp.Expression) -> exp.Expression:
    """DIV(a - 1, 3) divides ``a - 1``: an operand that is itself an operation keeps its
    parentheses (sqlglot writes the engines' ``//`` and ``DIV`` operators without them,
    so ``a - 1 // 3`` divided the 1)."""
    if isinstance(node, exp.IntDiv):
        for key in ("this", "expression"):
            operand = node.args.get(key)
            if isinstance(operand, exp.Binary | exp.Unary) and not isinstance(operand, exp.Paren):
                node.set(key, exp.paren(operand, copy=False))
    return node


def integer_results(node: exp.Expression) -> exp.Expression:
    """DIV of INT64s is an INT64 (PostgreSQL's DIV is NUMERIC); SIGN keeps its argument's
    type (DuckDB's SIGN is an integer, PostgreSQL's of an integer a float)."""
    if isinstance(node, exp.IntDiv) and not isinstance(node.parent, exp.Cast):
        return integer(node)
    if isinstance(node, exp.Sign) and not isinstance(node.parent, exp.Cast):
        if is_type(node.this, *exp.DataType.INTEGER_TYPES):
            return integer(node)
        if is_type(node.this, *exp.DataType.REAL_TYPES):
            return exp.cast(node, exp.DataType.Type.DOUBLE)
    return node


def numeric_results(node: exp.Expression) -> exp.Expression:
    """NUMERIC / NUMERIC is a NUMERIC rounded to 9 decimals (DuckDB's is a DOUBLE,
    PostgreSQL's has 20 decimals), and so is NUMERIC / INT64 or INT64 / NUMERIC, as in
    BigQuery (DuckDB's were DOUBLE); CAST(NUMERIC AS STRING) has no trailing zeros."""
    decimal = (exp.DataType.Type.DECIMAL,)
    exact = (*decimal, *exp.DataType.INTEGER_TYPES)
    if (
        isinstance(node, exp.Div)
        and is_type(node.this, *exact)
        and is_type(node.expression, *exact)
        and (is_type(node.this, *decimal) or is_type(node.expression, *decimal))
        and not isinstance(node.parent, exp.Cast)
    ):
        for key in ("this", "expression"):
            operand = node.args[key]
            if not is_type(operand, *decimal):
                node.set(key, exp.cast(operand, exp.DataType.build("DECIMAL(38, 9)")))
        return exp.cast(node, exp.DataType.build("DECIMAL(38, 9)"))
    if (
        isinstance(node, exp.Cast)
        and node.to.is_type(*exp.DataType.TEXT_TYPES)
        and is_type(node.this, *decimal)
    ):
        written = node.copy()
        has_point = exp.GT(
            this=exp.StrPosition(this=written.copy(), substr=text(".")), expression=number(0)
        )
        zeros = exp.Trim(this=written.copy(), expression=text("0"), position="TRAILING")
        point = exp.Trim(this=zeros, expression=text("."), position="TRAILING")
        return exp.Case(ifs=[exp.If(this=has_point, true=point)], default=written)
    return node


def format_of_null_is_null(node: exp.Expression) -> exp.Expression:
    """FORMAT with a NULL argument is NULL in BigQuery (but for ``%t`` and ``%T``, which
    write it); PostgreSQL's format() writes it as nothing, Spark's as ``null``."""
    if not isinstance(node, exp.Format) or node.meta.get("hw_nulls") or not node.expressions:
        return node
    node.meta["hw_nulls"] = True
    if isinstance(node.this, exp.Literal) and re.search(r"%[^%]*[tT]", node.this.name):
        return node
    # Its arguments first: a FORMAT inside one is not reached by this pass once replaced.
    for argument in list(node.expressions):
        argument.replace(argument.transform(format_of_null_is_null))
    nulls = [exp.Is(this=e.copy(), expression=exp.null()) for e in node.expressions]
    any_null = nulls[0] if len(nulls) == 1 else exp.or_(*nulls)
    return exp.Case(ifs=[exp.If(this=any_null, true=exp.null())], default=node)


def instr_forward_first(node: exp.Expression) -> exp.Expression:
    """INSTR with an occurrence, or a position not known to be positive, is refused: a
    negative position searches backwards from the end in BigQuery, and no engine's
    STRPOS takes an occurrence (PostgreSQL's rewrite dropped it, answering the first)."""
    if not isinstance(node, exp.StrPosition):
        return node
    occurrence, position = node.args.get("occurrence"), node.args.get("position")
    hint = "search again from past the first match: INSTR(SUBSTR(s, INSTR(s, t) + 1), t)"
    if occurrence is not None and not (
        isinstance(occurrence, exp.Literal) and occurrence.name == "1"
    ):
        raise Untranslatable(
            "INSTR(..., occurrence)", node, "no engine's STRPOS counts occurrences", hint
        )
    if position is not None and not (
        isinstance(position, exp.Literal) and position.is_int and int(position.name) > 0
    ):
        raise Untranslatable(
            "INSTR(..., position)",
            node,
            "a position that is not a positive whole number (a negative one searches "
            "backwards from the end) has no equivalent",
            "give a positive literal position, or SUBSTR the text first",
        )
    if occurrence is not None:
        node.set("occurrence", None)
    return node


def group_by_select_alias(node: exp.Expression) -> exp.Expression:
    """GROUP BY a name that is both an alias of the SELECT list and a column of FROM
    groups by the aliased expression in BigQuery ("those aliases override names in the
    corresponding FROM clause"); DuckDB, PostgreSQL and Spark take the column. So
    ``LOWER(user_id) AS user_id … GROUP BY user_id`` made a row per spelling there, and
    ``COALESCE(user_id, anonymous_id) AS user_id`` failed: the expression is grouped by
    (in ROLLUP, CUBE and GROUPING SETS too), and HAVING and QUALIFY, which see the alias
    in BigQuery, read it outside their aggregates (QUALIFY on DuckDB: ``duckdb_sql``).

    A column is known to be of FROM when the aliased expression reads a column of that
    name, or when the SELECT reads an event table, a CTE or a subquery that has it. Other
    aliases in GROUP BY mean the same on every engine and are left as written.

    >>> import sqlglot
    >>> q = sqlglot.parse_one("SELECT LOWER(u) AS u, COUNT(*) FROM t GROUP BY u", "bigquery")
    >>> q.transform(group_by_select_alias).sql("duckdb")
    'SELECT LOWER(u) AS u, COUNT(*) FROM t GROUP BY LOWER(u)'
    """
    if not isinstance(node, exp.Select) or node.args.get("group") is None:
        return node
    replaced = shadowing_aliases(node)
    if not replaced:
        return node
    for column in _grouped_columns(node.args["group"]):
        if column.name.lower() in replaced:
            column.replace(replaced[column.name.lower()].copy())
    # GROUPING(u) names a grouped expression, now the alias's (not in a subquery's scope).
    for grouping in list(node.find_all(exp.Grouping)):
        if grouping.find_ancestor(exp.Select) is node:
            for column in list(grouping.expressions):
                name = column.name.lower() if isinstance(column, exp.Column) else ""
                if name in replaced and not column.table:
                    column.replace(replaced[name].copy())
    # HAVING reads every alias (having_reads_aliases). QUALIFY: sqlglot writes it for
    # PostgreSQL and Spark as a subquery whose window reads the aliases already; DuckDB,
    # which has QUALIFY, takes them from here.
    node.meta["hw_shadowing"] = replaced
    return node


def read_aliases(tree: exp.Expression, aliases: dict[str, exp.Expression]) -> None:
    """The unqualified columns of ``tree`` named like ``aliases`` (lower case), outside
    aggregates, as the aliased expressions."""
    for column in _outside_aggregates(tree):
        if not column.table and column.name.lower() in aliases:
            column.replace(aliases[column.name.lower()].copy())


def having_reads_aliases(node: exp.Expression) -> exp.Expression:
    """HAVING may name an alias of the SELECT list in BigQuery (``COUNT(*) AS n … HAVING
    n > 100``), the alias over a column of the same name; PostgreSQL knows no aliases
    there ("column n does not exist"). Outside aggregates, the alias is written as its
    expression."""
    if not isinstance(node, exp.Select) or (having := node.args.get("having")) is None:
        return node
    aliases = {
        projection.alias.lower(): projection.this
        for projection in reversed(node.expressions)
        if isinstance(projection, exp.Alias)
        and projection.this.find(exp.Window) is None
        and not (
            isinstance(projection.this, exp.Column)
            and projection.this.name.lower() == projection.alias.lower()
        )
    }
    if aliases:
        read_aliases(having, aliases)
    return node


def shadowing_aliases(select: exp.Select) -> dict[str, exp.Expression]:
    """The aliases (lower case) that GROUP BY names and that shadow a column of FROM, each
    with its expression."""
    aliased: dict[str, exp.Expression] = {}
    for projection in select.expressions:
        if isinstance(projection, exp.Alias):
            aliased.setdefault(projection.alias.lower(), projection.this)
    known = _source_columns(select)
    found: dict[str, exp.Expression] = {}
    for column in _grouped_columns(select.args["group"]):
        name = column.name.lower()
        expression = aliased.get(name)
        if expression is None or expression.find(exp.AggFunc, exp.Window) is not None:
            continue  # not an alias, or one BigQuery refuses to group by
        if isinstance(expression, exp.Column) and expression.name.lower() == name:
            continue  # the column itself
        reads_it = any(c.name.lower() == name for c in expression.find_all(exp.Column))
        if reads_it or name in known:
            found[name] = expression
    return found


def _grouped_columns(group: exp.Expression) -> list[exp.Column]:
    """The unqualified columns GROUP BY names as a whole item: of its list, and of ROLLUP,
    CUBE and GROUPING SETS (not those inside an expression)."""
    holders = (exp.Group, exp.Rollup, exp.Cube, exp.GroupingSets, exp.Tuple, exp.Paren)
    return [
        column
        for column in group.find_all(exp.Column)
        if not column.table and isinstance(column.parent, holders)
    ]


def _outside_aggregates(tree: exp.Expression) -> list[exp.Column]:
    """The columns of ``tree`` not inside an aggregate's arguments (which read the rows
    before grouping) nor inside a subquery (its own scope)."""
    found: list[exp.Column] = []
    stack = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, exp.Column):
            found.append(node)
        elif not isinstance(node, exp.AggFunc | exp.Subquery | exp.Select):
            stack.extend(node.iter_expressions())
    return found


def _source_columns(select: exp.Select) -> set[str]:
    """The columns (lower case) of what ``select`` reads that can be known from the query
    alone: the event tables', and its CTEs' and subqueries' output names."""
    ctes = {cte.alias_or_name: cte.this for cte in select.root().find_all(exp.CTE)}
    found: set[str] = set()
    for clause in (
        select.args.get("from") or select.args.get("from_"),
        *select.args.get("joins", ()),
    ):
        source = clause.this if clause is not None else None
        names: list[str] = []
        if isinstance(source, exp.Table) and not source.db:
            query = ctes.get(source.name)
            if isinstance(query, exp.Query):
                names = query.named_selects
            else:
                names = list(_BUILTIN_COLUMNS.get(source.name, ()))
        elif isinstance(source, exp.Subquery) and isinstance(source.this, exp.Query):
            names = source.this.named_selects
        found.update(name.lower() for name in names)
    return found


#: The columns of the event tables, by table.
_BUILTIN_COLUMNS = {
    table: frozenset(_BUILTIN_SCHEMA.column_names(table)) for table in ("events", "failed_events")
}


#: In order; each sees the tree the one before left.
FIXES = (
    format_of_null_is_null,
    instr_forward_first,
    group_by_select_alias,
    having_reads_aliases,
    float_literals,
    numeric_scale,
    dates_from_text,
    ieee_divide,
    safe_cast_text_to_bool,
    rounding_is_float64,
    cast_float_to_integer,
    division_operands_grouped,
    integer_results,
    numeric_results,
)


# -- dates and times ------------------------------------------------------------------
#
# BigQuery's calendar functions are written once, below, over a few primitives each
# engine's module supplies (a Calendar): a date part of a date or time, the days
# between two dates, a date some days earlier, and the civil time of an instant in a
# zone and back. The store's session is in UTC on every engine, so an instant's parts
# are its parts in UTC, as in BigQuery.

_WEEKDAYS = ("SUNDAY", "MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY")
_DAY_OR_LONGER = ("DAY", "WEEK", "ISOWEEK", "MONTH", "QUARTER", "YEAR", "ISOYEAR")


def call(name: str, *args: exp.Expression) -> exp.Expression:
    return exp.Anonymous(this=name, expressions=list(args))


def integer(node: exp.Expression) -> exp.Expression:
    return exp.cast(node, exp.DataType.Type.BIGINT)


def text(value: str) -> exp.Literal:
    return exp.Literal.string(value)


def number(value: int) -> exp.Expression:
    return exp.Literal.number(value)


def plus(a: exp.Expression, b: exp.Expression) -> exp.Expression:
    return exp.Paren(this=exp.Add(this=a, expression=b))


def minus(a: exp.Expression, b: exp.Expression) -> exp.Expression:
    return exp.Paren(this=exp.Sub(this=a, expression=b))


def times(a: exp.Expression, b: exp.Expression) -> exp.Expression:
    return exp.Paren(this=exp.Mul(this=a, expression=b))


def modulo(a: exp.Expression, b: exp.Expression) -> exp.Expression:
    return exp.Paren(this=exp.Mod(this=a, expression=b))


#: Microseconds in each time part DATETIME_DIFF counts the boundaries of.
_MICROS_IN = {
    "HOUR": 3_600_000_000,
    "MINUTE": 60_000_000,
    "SECOND": 1_000_000,
    "MILLISECOND": 1_000,
    "MICROSECOND": 1,
}


def floor_division(a: exp.Expression, divisor: int) -> exp.Expression:
    """``floor(a / divisor)`` of an INT64 ``a`` of either sign, in integers (exact at any
    size): ``a`` less its floor remainder divides exactly, so truncation is the floor."""
    remainder = exp.Mod(
        this=exp.paren(plus(exp.Mod(this=a.copy(), expression=number(divisor)), number(divisor))),
        expression=number(divisor),
    )
    return integer(exp.IntDiv(this=exp.paren(minus(a, remainder)), expression=number(divisor)))


def part_of(unit: exp.Expression | None) -> tuple[str, int | None]:
    """A BigQuery date part as (name, first weekday 0-6 for WEEK parts, else None)."""
    if unit is None:
        return "DAY", None
    if isinstance(unit, exp.WeekStart):
        day = unit.name.upper()
        return "WEEK", _WEEKDAYS.index(day) if day in _WEEKDAYS else None
    name = unit.name.upper()
    if name == "WEEK":
        return "WEEK", 0
    if name == "ISOWEEK":
        return "ISOWEEK", 1
    return name, None


class Calendar:
    """One engine's primitives; every method returns a new expression."""

    #: Parts :meth:`part` gives directly, by BigQuery's name.
    def part(self, name: str, value: exp.Expression) -> exp.Expression | None:
        """EXTRACT(name FROM value) as an INT64, for YEAR, QUARTER, MONTH, DAY, DAYOFYEAR,
        DAYOFWEEK (1 = Sunday), HOUR, MINUTE, SECOND, MILLISECOND and MICROSECOND
        (within the second), ISOWEEK and ISOYEAR; None for a part it lacks."""
        raise NotImplementedError

    def days(self, later: exp.Expression, earlier: exp.Expression) -> exp.Expression:
        """The days from DATE ``earlier`` to DATE ``later``, an INT64."""
        raise NotImplementedError

    def days_before(self, day: exp.Expression, count: exp.Expression) -> exp.Expression:
        """The DATE ``count`` days before DATE ``day``."""
        raise NotImplementedError

    def local(self, instant: exp.Expression, zone: exp.Expression) -> exp.Expression:
        """The civil time (a DATETIME) of TIMESTAMP ``instant`` in ``zone``."""
        raise NotImplementedError

    def instant(self, civil: exp.Expression, zone: exp.Expression) -> exp.Expression:
        """The TIMESTAMP of DATETIME ``civil`` in ``zone``."""
        raise NotImplementedError

    def civil(self, value: exp.Expression) -> exp.Expression:
        """``value`` (a DATE, DATETIME or text) as a DATETIME."""
        raise NotImplementedError

    def back_by(
        self, instant: exp.Expression, later: exp.Expression, earlier: exp.Expression
    ) -> exp.Expression:
        """TIMESTAMP ``instant`` moved back by the time from DATETIME ``earlier`` to DATETIME
        ``later`` (less than a day), as a duration: no time zone is consulted."""
        raise NotImplementedError

    def micros(self, civil: exp.Expression) -> exp.Expression:
        """The microseconds from 1970-01-01 00:00 to DATETIME ``civil``, an INT64."""
        raise NotImplementedError

    def parse(self, value: exp.Expression, tokens: list[str], safe: bool) -> exp.Expression | str:
        """Text ``value`` read as a DATETIME by format ``tokens`` (:func:`elements`), NULL
        where it does not match if ``safe``; or the element the engine cannot read (or
        why it cannot parse)."""
        raise NotImplementedError

    def truncate(self, civil: exp.Expression, name: str) -> exp.Expression:
        """DATETIME ``civil`` truncated to part ``name`` (MICROSECOND … YEAR, not weeks)."""
        return exp.Anonymous(this="DATE_TRUNC", expressions=[text(name.lower()), civil])

    # -- built on the primitives --

    def date(self, value: exp.Expression) -> exp.Expression:
        return exp.cast(value, exp.DataType.Type.DATE)

    def weekday(self, value: exp.Expression) -> exp.Expression:
        """0 for Sunday … 6 for Saturday."""
        found = self.part("DAYOFWEEK", value)
        assert found is not None
        return minus(found, number(1))

    def week_start(self, day: exp.Expression, first: int) -> exp.Expression:
        """The DATE the week (starting on weekday ``first``) of DATE ``day`` starts on."""
        back = modulo(plus(minus(self.weekday(day.copy()), number(first)), number(7)), number(7))
        return self.days_before(day, back)

    def week_number(self, value: exp.Expression, first: int) -> exp.Expression:
        """BigQuery's WEEK(first): weeks start on ``first``; days before the year's first
        such day are in week 0."""
        doy = self.part("DAYOFYEAR", value.copy())
        assert doy is not None
        back = modulo(plus(minus(self.weekday(value), number(first)), number(7)), number(7))
        return floor_division(plus(minus(minus(doy, number(1)), back), number(7)), 7)

    def isoyear_start(self, day: exp.Expression) -> exp.Expression:
        """The Monday that starts ISO week 1 of the ISO year of DATE ``day``."""
        week = self.part("ISOWEEK", day.copy())
        assert week is not None
        return self.days_before(self.week_start(day, 1), times(minus(week, number(1)), number(7)))

    def extract(self, unit: exp.Expression, value: exp.Expression) -> exp.Expression | None:
        name, first = part_of(unit)
        if name == "DATE":
            return self.date(value)
        if name == "WEEK" and first is not None:
            return self.week_number(value, first)
        return self.part(name, value)

    def trunc_date(self, day: exp.Expression, unit: exp.Expression) -> exp.Expression | None:
        """DATE_TRUNC of DATE ``day`` for WEEK, WEEK(day), ISOWEEK and ISOYEAR; None for
        the parts the engine truncates as BigQuery does."""
        name, first = part_of(unit)
        if first is not None:
            return self.week_start(day, first)
        if name == "ISOYEAR":
            return self.isoyear_start(day)
        return None

    def diff(
        self, later: exp.Expression, earlier: exp.Expression, unit: exp.Expression | None
    ) -> exp.Expression | None:
        """DATE_DIFF and DATETIME_DIFF: the part boundaries between two DATEs or DATETIMEs
        (two times 10:59 and 11:00 are an HOUR apart)."""
        name, first = part_of(unit)
        if name in _MICROS_IN:
            size = _MICROS_IN[name]
            a_us, b_us = self.micros(self.civil(later)), self.micros(self.civil(earlier))
            if size == 1:
                return minus(a_us, b_us)
            return minus(floor_division(a_us, size), floor_division(b_us, size))
        a, b = self.date(later), self.date(earlier)
        if name == "DAY":
            return self.days(a, b)
        if first is not None:
            weeks = self.days(self.week_start(a, first), self.week_start(b, first))
            return floor_division(weeks, 7)
        if name == "ISOYEAR":
            return minus(self._part("ISOYEAR", a), self._part("ISOYEAR", b))
        if name in ("MONTH", "QUARTER", "YEAR"):
            size = {"MONTH": 12, "QUARTER": 4, "YEAR": 1}[name]

            def index(d: exp.Expression) -> exp.Expression:
                year = self._part("YEAR", d.copy())
                if name == "YEAR":
                    return year
                return plus(times(year, number(size)), self._part(name, d))

            return minus(index(a), index(b))
        return None

    def _part(self, name: str, value: exp.Expression) -> exp.Expression:
        found = self.part(name, value)
        assert found is not None
        return found


class StandardCalendar(Calendar):
    """The primitives SQL's standard gives (DuckDB and PostgreSQL): a DATE minus a DATE is
    days, a time zone is ``AT TIME ZONE``."""

    def days(self, later: exp.Expression, earlier: exp.Expression) -> exp.Expression:
        return integer(minus(later, earlier))

    def days_before(self, day: exp.Expression, count: exp.Expression) -> exp.Expression:
        return exp.cast(minus(day, exp.cast(count, exp.DataType.Type.INT)), exp.DataType.Type.DATE)

    def local(self, instant: exp.Expression, zone: exp.Expression) -> exp.Expression:
        aware = exp.cast(instant, exp.DataType.Type.TIMESTAMPTZ)
        minutes = fixed_offset(zone)
        if minutes == 0 and not _is_utc(zone):
            zone = text("UTC")  # '+00:00': DuckDB knows no such zone
        if minutes:
            # An offset is not a zone name here: PostgreSQL reads '+05:30' as POSIX
            # (west of UTC), DuckDB not at all.
            utc = exp.AtTimeZone(this=aware, zone=text("UTC"))
            return exp.Add(this=utc, expression=_minutes(minutes))
        # A copy: a zone written once may be read several times below (a node in two
        # places is rewritten in one of them by a later fix).
        return exp.AtTimeZone(this=aware, zone=zone.copy())

    def instant(self, civil: exp.Expression, zone: exp.Expression) -> exp.Expression:
        naive = exp.cast(civil, exp.DataType.Type.TIMESTAMP)
        minutes = fixed_offset(zone)
        if minutes == 0 and not _is_utc(zone):
            zone = text("UTC")  # '+00:00': DuckDB knows no such zone
        if minutes:
            shifted = exp.paren(exp.Sub(this=naive, expression=_minutes(minutes)))
            return exp.AtTimeZone(this=shifted, zone=text("UTC"))
        picked = exp.AtTimeZone(this=naive, zone=zone.copy())
        if minutes is not None or _size(naive) > _LARGEST_REPEATED:
            # A civil time written out eight times below: one already holding such a
            # conversion (nested, each level eight times the last) keeps the engine's
            # reading of a repeated time rather than grow the query without bound.
            return picked
        # BigQuery reads a civil time with the offset in force before a clock change, so a
        # time the clock shows twice is the earlier instant; AT TIME ZONE takes the later
        # one (a skipped time it reads as BigQuery does). The offset before a change is
        # the one three hours before the instant picked (no zone's clock turns back more,
        # or twice in three hours): the civil time less that offset is the earlier instant
        # when it reads back as the civil time, and otherwise the one picked is the only.
        before = exp.Sub(
            this=picked.copy(),
            expression=exp.Interval(this=exp.Literal.string("3"), unit=exp.var("HOUR")),
        )
        earlier = exp.Add(
            this=before, expression=exp.paren(minus(naive.copy(), self.local(before, zone)))
        )
        reads_back = exp.EQ(this=self.local(earlier.copy(), zone), expression=naive.copy())
        return exp.Case(ifs=[exp.If(this=reads_back, true=earlier)], default=picked)

    def civil(self, value: exp.Expression) -> exp.Expression:
        return exp.cast(value, exp.DataType.Type.TIMESTAMP)

    def back_by(
        self, instant: exp.Expression, later: exp.Expression, earlier: exp.Expression
    ) -> exp.Expression:
        # An interval of microseconds only, which a TIMESTAMPTZ loses as elapsed time.
        aware = exp.cast(instant, exp.DataType.Type.TIMESTAMPTZ)
        return exp.Sub(this=aware, expression=exp.paren(exp.Sub(this=later, expression=earlier)))


#: Units a truncation in a time zone takes off as elapsed time (BigQuery subtracts the
#: minutes and seconds of the civil time from the instant, for HOUR, and so on down).
_WITHIN_HOUR = frozenset({"HOUR", "MINUTE", "SECOND", "MILLISECOND", "MICROSECOND"})


def _is_utc(zone: exp.Expression) -> bool:
    return isinstance(zone, exp.Literal) and zone.is_string and zone.name.upper() == "UTC"


#: A zone written as an offset from UTC, as BigQuery reads one: [UTC](+|-)H[H][[:]MM].
_OFFSET = re.compile(r"(?:UTC)?([+-])(\d{1,2})(?::?(\d{2}))?", re.IGNORECASE)


def fixed_offset(zone: exp.Expression) -> int | None:
    """The minutes east of UTC of a zone written as a literal offset ('+05:30', 'UTC-8',
    '-0330'; 'UTC' is 0), else None (a zone's name, or not a literal).

    >>> [fixed_offset(text(z)) for z in ("+05:30", "UTC-8", "-0330", "utc", "Asia/Kolkata")]
    [330, -480, -210, 0, None]
    """
    if not (isinstance(zone, exp.Literal) and zone.is_string):
        return None
    if _is_utc(zone):
        return 0
    found = _OFFSET.fullmatch(zone.name)
    if found is None:
        return None
    sign, hours, minutes = found.groups()
    total = int(hours) * 60 + int(minutes or 0)
    return -total if sign == "-" else total


#: The most nodes a civil time may have for :meth:`StandardCalendar.instant` to repeat it.
_LARGEST_REPEATED = 150


def _size(node: exp.Expression) -> int:
    return sum(1 for _ in node.walk())


def _minutes(count: int) -> exp.Expression:
    return exp.Interval(this=exp.Literal.string(str(count)), unit=exp.var("MINUTE"))


def calendar_fixes(calendar: Calendar) -> tuple[Callable[[exp.Expression], exp.Expression], ...]:
    """The rewrites of BigQuery's calendar functions for an engine, over its primitives."""

    def inner(
        node: exp.Expression, fix: Callable[[exp.Expression], exp.Expression]
    ) -> exp.Expression:
        # A rewrite's result is not walked again, so what it takes in is rewritten first
        # (DATE(TIMESTAMP(civil, zone), zone)).
        operand: exp.Expression = node.this.copy().transform(fix, copy=False)
        return operand

    def extract(node: exp.Expression) -> exp.Expression:
        if not isinstance(node, exp.Extract):
            return node
        value = node.expression.copy()
        if isinstance(value, exp.AtTimeZone):
            # EXTRACT(part FROM ts AT TIME ZONE zone): the part of the civil time there.
            value = calendar.local(value.this, value.args["zone"])
        found = calendar.extract(node.this, value)
        if found is None:
            raise Untranslatable(
                f"EXTRACT({node.this.sql('bigquery')} FROM …)",
                node,
                "the engine has no such part",
                "compute the part from the ones every engine has (YEAR, MONTH, DAY, HOUR, …)",
            )
        return found

    def zones(node: exp.Expression) -> exp.Expression:
        zone = node.args.get("zone")
        if isinstance(node, exp.Date) and zone is not None:
            return calendar.date(calendar.local(inner(node, zones), zone.copy()))
        if isinstance(node, exp.TsOrDsToDatetime):
            if is_type(node.this, exp.DataType.Type.TIMESTAMPTZ):
                return calendar.local(inner(node, zones), text("UTC"))
            return calendar.civil(inner(node, zones))
        if isinstance(node, exp.Datetime) and not node.args.get("expressions"):
            if isinstance(node.expression, exp.Literal) and node.expression.is_string:
                return calendar.local(inner(node, zones), node.expression.copy())
            if node.expression is None and is_type(node.this, exp.DataType.Type.TIMESTAMPTZ):
                return calendar.local(inner(node, zones), text("UTC"))
        if isinstance(node, exp.Timestamp) and zone is not None:
            return calendar.instant(calendar.civil(inner(node, zones)), zone.copy())
        if isinstance(node, exp.Timestamp) and is_type(
            node.this, exp.DataType.Type.DATE, exp.DataType.Type.DATETIME
        ):
            return calendar.instant(calendar.civil(inner(node, zones)), text("UTC"))
        if isinstance(node, exp.Timestamp):
            return exp.cast(inner(node, zones), exp.DataType.Type.TIMESTAMPTZ)
        return node

    def truncation(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.DateTrunc):
            found = calendar.trunc_date(calendar.date(inner(node, truncation)), node.args["unit"])
            return found if found is not None else node
        if isinstance(node, exp.DatetimeTrunc | exp.TimestampTrunc):
            zone = node.args.get("zone")
            instant = isinstance(node, exp.TimestampTrunc)
            value = inner(node, truncation)
            if instant and zone is not None:
                value = calendar.local(value, zone.copy())
            elif instant:
                value = calendar.local(value, text("UTC"))
            day = calendar.trunc_date(calendar.date(value.copy()), node.args["unit"])
            unit = part_of(node.args["unit"])[0]
            if day is not None:
                truncated: exp.Expression = calendar.civil(day)
            else:
                truncated = calendar.truncate(value.copy(), unit)
            if instant and zone is not None and unit in _WITHIN_HOUR and not _is_utc(zone):
                # The civil time back to an instant would be ambiguous in the hour a clock
                # turns back (AT TIME ZONE takes the later one, after the input): the input
                # less what truncation took off its civil time keeps the input's offset.
                return calendar.back_by(inner(node, truncation), value, truncated)
            if instant:
                return calendar.instant(truncated, zone.copy() if zone is not None else text("UTC"))
            return truncated
        return node

    def differences(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.DateDiff | exp.DatetimeDiff):
            found = calendar.diff(node.this.copy(), node.expression.copy(), node.args.get("unit"))
            return found if found is not None else node
        return node

    def last_day_of_week(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.LastDay):
            first = part_of(node.args.get("unit") or exp.var("MONTH"))[1]
            if first is not None:
                start = calendar.week_start(calendar.date(node.this.copy()), first)
                return calendar.days_before(start, number(-6))
        return node

    def unix_dates(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.DateFromUnixDate):
            epoch = exp.cast(text("1970-01-01"), exp.DataType.Type.DATE)
            return calendar.days_before(epoch, exp.Neg(this=node.this.copy()))
        return node

    return (
        format_fix(calendar),
        parse_fix(calendar),
        extract,
        zones,
        truncation,
        differences,
        last_day_of_week,
        unix_dates,
    )


# -- FORMAT_DATE / FORMAT_DATETIME / FORMAT_TIMESTAMP --------------------------------
#
# Each element of the format becomes the text of a date part, so the answer is
# BigQuery's on every engine (their own format patterns differ in padding, names and
# quoting); the text between elements is kept as written.

_COMPOSITE = {
    "%c": "%a %b %e %H:%M:%S %Y",
    "%x": "%m/%d/%y",
    "%D": "%m/%d/%y",
    "%X": "%H:%M:%S",
    "%F": "%Y-%m-%d",
    "%T": "%H:%M:%S",
    "%R": "%H:%M",
    "%h": "%b",
}
_ELEMENT = re.compile(r"%E[1-6]S|%E\*S|%E4Y|%Ez|%-d|%.|[^%]+", re.DOTALL)
_MONTHS = ("January", "February", "March", "April", "May", "June", "July", "August",
           "September", "October", "November", "December")  # fmt: skip
_DAYS = ("Sunday", "Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday")


def elements(fmt: str) -> list[str]:
    """A BigQuery format string as its elements and the text between them."""
    expanded = fmt
    for _ in range(3):
        for short, long in _COMPOSITE.items():
            expanded = expanded.replace(short, long)
    return _ELEMENT.findall(expanded)


def _as_text(node: exp.Expression) -> exp.Expression:
    return exp.cast(node, exp.DataType.Type.TEXT)


def _padded(node: exp.Expression, width: int, pad: str = "0") -> exp.Expression:
    return call("LPAD", _as_text(node), number(width), text(pad))


def _named(index: exp.Expression, names: tuple[str, ...], length: int | None) -> exp.Expression:
    return exp.Case(
        this=index,
        ifs=[
            exp.If(this=number(k), true=text(name[:length] if length else name))
            for k, name in enumerate(names, start=1)
        ],
    )


def format_element(
    calendar: Calendar, value: exp.Expression, element: str, utc: bool
) -> exp.Expression | None:
    """The text of one format element of ``value``; None for one Headwater cannot write."""

    def part(name: str) -> exp.Expression:
        return calendar._part(name, value.copy())

    simple = {"%m": "MONTH", "%d": "DAY", "%H": "HOUR", "%M": "MINUTE", "%S": "SECOND",
              "%V": "ISOWEEK"}  # fmt: skip
    if element in simple:
        return _padded(part(simple[element]), 2)
    if element in ("%Y", "%E4Y"):
        return _padded(part("YEAR"), 4)
    if element == "%G":
        return _padded(part("ISOYEAR"), 4)
    if element == "%y":
        return _padded(modulo(part("YEAR"), number(100)), 2)
    if element == "%g":
        return _padded(modulo(part("ISOYEAR"), number(100)), 2)
    if element == "%C":
        return _padded(floor_division(part("YEAR"), 100), 2)
    if element in ("%e", "%-d"):  # sqlglot reads BigQuery's %e as %-d
        return _padded(part("DAY"), 2, " ")
    if element == "%k":
        return _padded(part("HOUR"), 2, " ")
    if element == "%j":
        return _padded(part("DAYOFYEAR"), 3)
    if element == "%Q":
        return _as_text(part("QUARTER"))
    if element == "%w":
        return _as_text(minus(part("DAYOFWEEK"), number(1)))
    if element == "%u":
        return _as_text(plus(modulo(plus(part("DAYOFWEEK"), number(5)), number(7)), number(1)))
    if element in ("%U", "%W"):
        return _padded(calendar.week_number(value.copy(), 0 if element == "%U" else 1), 2)
    if element in ("%I", "%l"):
        hour12 = plus(modulo(plus(part("HOUR"), number(11)), number(12)), number(1))
        return _padded(hour12, 2, "0" if element == "%I" else " ")
    if element == "%p":
        morning = exp.LT(this=part("HOUR"), expression=number(12))
        return exp.Case(ifs=[exp.If(this=morning, true=text("AM"))], default=text("PM"))
    if element in ("%b", "%B"):
        return _named(part("MONTH"), _MONTHS, 3 if element == "%b" else None)
    if element in ("%a", "%A"):
        return _named(part("DAYOFWEEK"), _DAYS, 3 if element == "%a" else None)
    if element == "%f":  # sqlglot reads BigQuery's %E6S as %S.%f
        return _padded(part("MICROSECOND"), 6)
    if element.startswith("%E") and element.endswith("S") and element[2].isdigit():
        digits = int(element[2])
        fraction = floor_division(part("MICROSECOND"), 10 ** (6 - digits))
        return exp.DPipe(
            this=exp.DPipe(this=_padded(part("SECOND"), 2), expression=text(".")),
            expression=_padded(fraction, digits),
        )
    constant = {"%%": "%", "%n": "\n", "%t": "\t"}
    if element in constant:
        return text(constant[element])
    if utc:
        constant = {"%z": "+0000", "%Z": "UTC", "%Ez": "+00:00"}
        if element in constant:
            return text(constant[element])
    return None


def format_time(
    calendar: Calendar, node: exp.TimeToStr, value: exp.Expression, utc: bool
) -> exp.Expression:
    fmt = node.args.get("format")
    if not (isinstance(fmt, exp.Literal) and fmt.is_string):
        raise Untranslatable(
            "a format that is not a string literal",
            node,
            "the format's elements are translated when the pipeline loads",
            "write the format as a literal: FORMAT_DATE('%Y-%m-%d', day)",
        )
    pieces: list[exp.Expression] = []
    for element in elements(fmt.name):
        if not element.startswith("%"):
            pieces.append(text(element))
            continue
        piece = format_element(calendar, value, element, utc)
        if piece is None:
            raise Untranslatable(
                f"the format element {element}",
                node,
                "Headwater writes the common elements only"
                + ("" if utc else "; a zone's name or offset only for UTC"),
                "use %Y %m %d %H %M %S %j %e %a %A %b %B %p %I %U %W %V %G %u %w %Q %E3S "
                "%E6S %F %T %c %x (and %z, %Z in UTC)",
            )
        pieces.append(piece)
    if not pieces:
        return text("")
    joined = pieces[0]
    for piece in pieces[1:]:
        joined = exp.DPipe(this=joined, expression=piece)
    # NULL in, NULL out (a format of literal text only would give the text).
    return exp.Case(
        ifs=[exp.If(this=exp.Is(this=value.copy(), expression=exp.null()), true=exp.null())],
        default=joined,
    )


def format_fix(calendar: Calendar) -> Callable[[exp.Expression], exp.Expression]:
    def fix(node: exp.Expression) -> exp.Expression:
        if not isinstance(node, exp.TimeToStr):
            return node
        zone = node.args.get("zone")
        value = node.this.copy()
        if isinstance(value, exp.TsOrDsToDate):
            value = calendar.date(value.this)
        elif isinstance(value, exp.TsOrDsToDatetime):
            value = calendar.civil(value.this)
        elif isinstance(value, exp.TsOrDsToTimestamp):
            value = exp.cast(value.this, exp.DataType.Type.TIMESTAMPTZ)
        utc = zone is None or (isinstance(zone, exp.Literal) and zone.name.upper() == "UTC")
        if zone is not None:
            value = calendar.local(value, zone.copy())
        return format_time(calendar, node, value, utc)

    return fix


# -- PARSE_DATE / PARSE_DATETIME / PARSE_TIMESTAMP ------------------------------------


def parse_fix(calendar: Calendar) -> Callable[[exp.Expression], exp.Expression]:
    """PARSE_* through the engine's own parser (:meth:`Calendar.parse`), to BigQuery's
    types: a DATE, a DATETIME, or a TIMESTAMP read in the zone given (UTC without one)."""

    def fix(node: exp.Expression) -> exp.Expression:
        safe = isinstance(node, exp.SafeFunc)
        inner = node.this if safe else node
        if not isinstance(inner, exp.StrToDate | exp.StrToTime | exp.ParseDatetime):
            return node
        fmt = inner.args.get("format")
        if not (isinstance(fmt, exp.Literal) and fmt.is_string):
            raise Untranslatable(
                "a format that is not a string literal",
                node,
                "the format's elements are translated when the pipeline loads",
                "write the format as a literal: PARSE_DATE('%Y-%m-%d', text)",
            )
        tokens = elements(fmt.name)
        civil = calendar.parse(inner.this.copy(), tokens, safe)
        if isinstance(civil, str):
            name = {exp.StrToDate: "PARSE_DATE", exp.StrToTime: "PARSE_TIMESTAMP"}.get(
                type(inner), "PARSE_DATETIME"
            )
            reason = civil if not civil.startswith("%") else f"it cannot read {civil}"
            raise Untranslatable(
                f"{'SAFE.' if safe else ''}{name}('{fmt.name}', …)",
                node,
                reason,
                "parse %Y %m %d %H %M %S and literal text, or use CAST(text AS DATE) for "
                "'YYYY-MM-DD'",
            )
        if isinstance(inner, exp.StrToDate):
            return calendar.date(civil)
        if isinstance(inner, exp.ParseDatetime):
            return civil
        zone = inner.args.get("zone")
        return calendar.instant(civil, zone.copy() if zone is not None else text("UTC"))

    return fix
