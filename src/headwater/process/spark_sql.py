"""Where sqlglot's BigQuery → Spark translation runs but answers differently.

Each rewrite takes one node of a BigQuery pipeline's tree and returns what
Spark needs to give BigQuery's answer and type (tests/conformance runs
BigQuery's documented answers on every engine). A construct Spark cannot
answer as BigQuery does raises :class:`~headwater.process.errors.Untranslatable`,
and the pipeline is refused at load.
"""

from __future__ import annotations

from typing import ClassVar

from sqlglot import exp

from headwater.process import bigquery_sql, portable_sql
from headwater.process.portable_sql import (
    call,
    fixed_offset,
    integer,
    minus,
    modulo,
    number,
    text,
    times,
)

#: Spark's DAYOFWEEK of each day BigQuery may start a week on (Sunday is 1).
_WEEKDAYS = {
    day: number
    for number, day in enumerate(
        ["SUNDAY", "MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY"], 1
    )
}


def weeks_from_their_first_day(node: exp.Expression) -> exp.Expression:
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


def json_through_variant(node: exp.Expression) -> exp.Expression:
    """sqlglot writes BigQuery's JSON functions as Spark's GET_JSON_OBJECT, which
    returns objects and arrays where JSON_VALUE gives NULL, and strings unquoted where
    JSON_QUERY keeps them JSON; Spark has no JSON_EXTRACT_ARRAY at all. Spark's
    VARIANT tells the kinds of JSON value apart: JSON_VALUE is the scalar at the path
    as text, JSON_QUERY the JSON text at the path, JSON_EXTRACT_ARRAY the array's
    elements as JSON text (NULL when the path holds no array)."""
    if not isinstance(node, exp.JSONExtractScalar | exp.JSONExtract | exp.JSONExtractArray):
        return node
    document = exp.Anonymous(
        this="TRY_PARSE_JSON", expressions=[node.this.copy().transform(json_through_variant)]
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


def order_after_qualify(node: exp.Expression) -> exp.Expression:
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


class SparkCalendar(portable_sql.Calendar):
    """BigQuery's calendar on Spark's date functions (the session is in UTC)."""

    _DIRECT: ClassVar[dict[str, str]] = {
        "YEAR": "YEAR",
        "QUARTER": "QUARTER",
        "MONTH": "MONTH",
        "DAY": "DAYOFMONTH",
        "DAYOFYEAR": "DAYOFYEAR",
        "DAYOFWEEK": "DAYOFWEEK",
        "HOUR": "HOUR",
        "MINUTE": "MINUTE",
        "SECOND": "SECOND",
        "ISOWEEK": "WEEKOFYEAR",
    }

    def part(self, name: str, value: exp.Expression) -> exp.Expression | None:
        if name in self._DIRECT:
            return integer(call(self._DIRECT[name], value))
        if name == "ISOYEAR":
            return integer(call("DATE_PART", exp.Literal.string("YEAROFWEEK"), value))
        seconds = call("DATE_PART", exp.Literal.string("SECOND"), value)
        if name == "MILLISECOND":
            return modulo(integer(exp.Floor(this=times(seconds, number(1000)))), number(1000))
        if name == "MICROSECOND":
            return modulo(integer(times(seconds, number(1000000))), number(1000000))
        return None

    def days(self, later: exp.Expression, earlier: exp.Expression) -> exp.Expression:
        return integer(call("DATEDIFF", later, earlier))

    def days_before(self, day: exp.Expression, count: exp.Expression) -> exp.Expression:
        return call("DATE_SUB", day, exp.cast(count, exp.DataType.Type.INT))

    def local(self, instant: exp.Expression, zone: exp.Expression) -> exp.Expression:
        aware = exp.cast(instant, exp.DataType.Type.TIMESTAMP)
        shifted = call("FROM_UTC_TIMESTAMP", aware, _zone(zone))
        return exp.cast(shifted, exp.DataType.Type.TIMESTAMPNTZ)

    def instant(self, civil: exp.Expression, zone: exp.Expression) -> exp.Expression:
        naive = exp.cast(civil, exp.DataType.Type.TIMESTAMP)
        return call("TO_UTC_TIMESTAMP", naive, _zone(zone))

    def civil(self, value: exp.Expression) -> exp.Expression:
        return exp.cast(value, exp.DataType.Type.TIMESTAMPNTZ)

    def micros(self, civil: exp.Expression) -> exp.Expression:
        # Read as UTC, the session's zone.
        return call("UNIX_MICROS", exp.cast(civil, exp.DataType.Type.TIMESTAMP))

    def back_by(
        self, instant: exp.Expression, later: exp.Expression, earlier: exp.Expression
    ) -> exp.Expression:
        # Civil times read as UTC (the session's zone) differ by the elapsed time between.
        def micros(value: exp.Expression) -> exp.Expression:
            return call("UNIX_MICROS", exp.cast(value, exp.DataType.Type.TIMESTAMP))

        taken = minus(micros(later), micros(earlier))
        return call("TIMESTAMP_MICROS", minus(micros(instant), taken))

    def parse(self, value: exp.Expression, tokens: list[str], safe: bool) -> exp.Expression | str:
        pattern = []
        for token in tokens:
            if not token.startswith("%"):
                pattern.append("'" + token.replace("'", "''") + "'")
            elif token in _DATETIME_PATTERN:
                pattern.append(_DATETIME_PATTERN[token])
            else:
                return token
        if not any(t in tokens for t in ("%Y", "%y")):
            return "a format without a year"
        name = "TRY_TO_TIMESTAMP" if safe else "TO_TIMESTAMP"
        parsed = call(name, value, exp.Literal.string("".join(pattern)))
        return exp.cast(parsed, exp.DataType.Type.TIMESTAMPNTZ)

    def truncate(self, civil: exp.Expression, name: str) -> exp.Expression:
        truncated = call("DATE_TRUNC", exp.Literal.string(name), exp.cast(civil, "TIMESTAMP"))
        return exp.cast(truncated, exp.DataType.Type.TIMESTAMPNTZ)


#: Spark's datetime patterns of BigQuery's elements; Spark cannot parse day names.
_DATETIME_PATTERN = {
    "%Y": "yyyy",
    "%y": "yy",
    "%m": "MM",
    "%d": "dd",
    "%-d": "d",
    "%e": "d",
    "%H": "HH",
    "%I": "hh",
    "%M": "mm",
    "%S": "ss",
    "%f": "SSSSSS",
    "%p": "a",
    "%j": "DDD",
    "%b": "MMM",
    "%B": "MMMM",
}

CALENDAR = portable_sql.calendar_fixes(SparkCalendar())


def _zone(zone: exp.Expression) -> exp.Expression:
    """A zone as Spark reads it: an offset BigQuery takes ('UTC+5:30', '-7') as +HH:MM."""
    minutes = fixed_offset(zone)
    if not minutes:
        return zone
    sign = "-" if minutes < 0 else "+"
    hours, rest = divmod(abs(minutes), 60)
    return text(f"{sign}{hours:02d}:{rest:02d}")


def datetime_is_without_zone(node: exp.Expression) -> exp.Expression:
    """BigQuery's DATETIME (sqlglot's TIMESTAMP) is a civil time: Spark's TIMESTAMP_NTZ
    (its TIMESTAMP is an instant). Runs before the rewrites that write Spark's own."""
    if isinstance(node, exp.DataType) and node.this == exp.DataType.Type.TIMESTAMP:
        return exp.DataType.build("TIMESTAMP_NTZ", dialect="spark")
    if isinstance(node, exp.TimestampFromParts) and not isinstance(node.parent, exp.Cast):
        return exp.cast(node, exp.DataType.Type.TIMESTAMPNTZ)  # DATETIME(y, m, d, h, mi, s)
    return node


def results_as_in_bigquery(node: exp.Expression) -> exp.Expression:
    """CEIL and FLOOR of a number are FLOAT64 (Spark's are BIGINT); a TIMESTAMP as text
    ends in its zone, +00; NUMERIC / NUMERIC keeps 9 decimals (Spark's keeps 6 when both
    have 38 digits: computed in FLOAT64, as DuckDB does)."""
    numeric = (exp.DataType.Type.DOUBLE, exp.DataType.Type.FLOAT, *exp.DataType.INTEGER_TYPES)
    if (
        isinstance(node, exp.Ceil | exp.Floor)
        and portable_sql.is_type(node.this, *numeric)
        and not isinstance(node.parent, exp.Cast)
    ):
        return exp.cast(node, exp.DataType.Type.DOUBLE)
    if (
        isinstance(node, exp.Cast)
        and node.to.is_type(*exp.DataType.TEXT_TYPES)
        and portable_sql.is_type(node.this, exp.DataType.Type.TIMESTAMPTZ)
    ):
        return exp.DPipe(this=node.copy(), expression=exp.Literal.string("+00"))
    if (
        isinstance(node, exp.Div)
        and portable_sql.is_type(node.this, exp.DataType.Type.DECIMAL)
        and portable_sql.is_type(node.expression, exp.DataType.Type.DECIMAL)
    ):
        double = exp.DataType.Type.DOUBLE
        return exp.Div(
            this=exp.cast(node.this.copy(), double),
            expression=exp.cast(node.expression.copy(), double),
            typed=True,
        )
    return node


def empty_date_ranges(node: exp.Expression) -> exp.Expression:
    """GENERATE_DATE_ARRAY(start, end) is empty when end is before start (Spark's
    SEQUENCE fails)."""
    if not isinstance(node, exp.GenerateDateArray) or node.meta.get("hw_ranged"):
        return node
    node.meta["hw_ranged"] = True
    step = node.args.get("step")
    backward = isinstance(step, exp.Interval) and step.this.name.startswith("-")
    start, end = node.args["start"].copy(), node.args["end"].copy()
    wrong_way = (
        exp.LT(this=start, expression=end) if backward else exp.GT(this=start, expression=end)
    )
    empty = exp.cast(exp.Array(expressions=[]), exp.DataType.build("ARRAY<DATE>"))
    return exp.Case(ifs=[exp.If(this=wrong_way, true=empty)], default=node)


def hexadecimal_integers(node: exp.Expression) -> exp.Expression:
    """SAFE_CAST('0x1F' AS INT64) is 31 in BigQuery; Spark's TRY_CAST gives NULL."""
    if not (
        isinstance(node, exp.TryCast)
        and node.to.is_type(*exp.DataType.INTEGER_TYPES)
        and (node.this.is_string or portable_sql.is_type(node.this, *exp.DataType.TEXT_TYPES))
    ) or node.meta.get("hw_hex"):
        return node
    node.meta["hw_hex"] = True
    text = exp.Trim(this=node.this.copy())

    def matches(pattern: str) -> exp.Expression:
        return exp.RegexpLike(this=text.copy(), expression=exp.Literal.string(pattern))

    digits = call("REGEXP_EXTRACT", text.copy(), exp.Literal.string("([0-9a-fA-F]+)$"), number(1))
    value = exp.TryCast(this=call("CONV", digits, number(16), number(10)), to=node.to.copy())
    return exp.Case(
        ifs=[
            exp.If(this=matches("^[+]?0[xX][0-9a-fA-F]{1,15}$"), true=value.copy()),
            exp.If(this=matches("^-0[xX][0-9a-fA-F]{1,15}$"), true=exp.Neg(this=value)),
        ],
        default=node,
    )


#: In order; each sees the tree the one before left.
def distinct_string_agg_as_a_set(node: exp.Expression) -> exp.Expression:
    """STRING_AGG(DISTINCT x, sep [ORDER BY x [DESC]]) joins the sorted set of ``x``:
    Spark's LISTAGG(DISTINCT …) fails beside another DISTINCT aggregate (a ClassCastException
    in its distinct-aggregate rewrite). NULL over no values, as in BigQuery."""
    if not isinstance(node, exp.GroupConcat):
        return node
    inner, order = node.this, None
    if isinstance(inner, exp.Order):
        inner, order = inner.this, inner.expressions
    if not (isinstance(inner, exp.Distinct) and len(inner.expressions) == 1):
        return node
    value = inner.expressions[0]
    if order and (len(order) != 1 or order[0].this != value):
        return node  # ordered by another expression: as sqlglot writes it
    values = call("COLLECT_SET", value.copy())
    joined: exp.Expression = call("ARRAY_SORT", values)
    if order and order[0].args.get("desc"):
        joined = call("REVERSE", joined)
    separator = node.args.get("separator") or text(",")
    empty = exp.EQ(this=call("SIZE", values.copy()), expression=number(0))
    return exp.Case(
        ifs=[exp.If(this=empty, true=exp.null())],
        default=call("ARRAY_JOIN", joined, separator.copy()),
    )


def row_number_without_order(node: exp.Expression) -> exp.Expression:
    """ROW_NUMBER() OVER ([PARTITION BY …]) numbers the rows in any order, as BigQuery
    does; Spark refuses a ROW_NUMBER without ORDER BY, so it orders by a constant."""
    if (
        isinstance(node, exp.Window)
        and isinstance(node.this, exp.RowNumber)
        and node.args.get("order") is None
        and node.args.get("alias") is None  # OVER w: the named window says its order
    ):
        node.set("order", exp.Order(expressions=[exp.Ordered(this=number(1))]))
    return node


FIXES = (
    row_number_without_order,
    distinct_string_agg_as_a_set,
    portable_sql.round_float_exactly,
    datetime_is_without_zone,
    *CALENDAR,
    results_as_in_bigquery,
    empty_date_ranges,
    hexadecimal_integers,
    weeks_from_their_first_day,
    json_through_variant,
    order_after_qualify,
    *bigquery_sql.SPARK,
)
