"""Where sqlglot's BigQuery → PostgreSQL translation runs but answers differently.

Each rewrite takes one node of a BigQuery pipeline's tree and returns what
PostgreSQL needs to give BigQuery's answer (the conformance tests run the
golden pipelines on both engines and compare with BigQuery's semantics).
"""

from __future__ import annotations

from typing import ClassVar, cast

import sqlglot
from sqlglot import exp

from headwater.process import bigquery_sql, portable_sql
from headwater.process.errors import Untranslatable
from headwater.process.portable_sql import (
    integer,
    modulo,
    number,
    plus,
    times,
)

_SCALAR_KINDS = ("string", "number", "boolean")
_SECONDS = {
    "DAY": 86400.0,
    "HOUR": 3600.0,
    "MINUTE": 60.0,
    "SECOND": 1.0,
    "MILLISECOND": 0.001,
    "MICROSECOND": 0.000001,
}
_INTEGER = r"^\s*[+-]?[0-9]{1,18}\s*$"
_HEX = r"^\s*[+-]?0[xX][0-9a-fA-F]{1,15}\s*$"
_FLOAT = (
    r"^\s*[+-]?(([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?"
    r"|[iI][nN][fF]([iI][nN][iI][tT][yY])?|[nN][aA][nN])\s*$"
)


def _path_keys(path: exp.Expression) -> list[exp.Expression] | None:
    """``$.a.b[0]`` as the arguments of ``json_extract_path`` ('a', 'b', '0'); ``None`` for
    paths it cannot express (wildcards, filters)."""
    if not isinstance(path, exp.JSONPath):
        return None
    keys: list[exp.Expression] = []
    for part in path.expressions:
        if isinstance(part, exp.JSONPathRoot):
            continue
        if isinstance(part, exp.JSONPathKey) and isinstance(part.this, str):
            keys.append(exp.Literal.string(part.this))
        elif isinstance(part, exp.JSONPathSubscript) and isinstance(part.this, int):
            keys.append(exp.Literal.string(str(part.this)))
        else:
            return None
    return keys


def _func(name: str, *args: exp.Expression) -> exp.Anonymous:
    return exp.Anonymous(this=name, expressions=list(args))


def json_value_is_scalar(node: exp.Expression) -> exp.Expression:
    """JSON_VALUE gives NULL for an object or array; json_extract_path_text gives its text."""
    if not isinstance(node, exp.JSONExtractScalar):
        return node
    keys = _path_keys(node.expression)
    if keys is None:
        return node
    value = _func("JSON_EXTRACT_PATH", node.this.copy(), *[k.copy() for k in keys])
    text = _func("JSON_EXTRACT_PATH_TEXT", node.this.copy(), *keys)
    scalar = exp.In(
        this=_func("JSON_TYPEOF", value),
        expressions=[exp.Literal.string(kind) for kind in _SCALAR_KINDS],
    )
    return exp.Case(ifs=[exp.If(this=scalar, true=text)])


def approx_count_is_exact(node: exp.Expression) -> exp.Expression:
    """PostgreSQL has no approximate distinct count; the exact one is a valid answer."""
    if isinstance(node, exp.ApproxDistinct):
        return exp.Count(this=exp.Distinct(expressions=[node.this.copy()]))
    return node


def weeks_start_on_their_day(node: exp.Expression) -> exp.Expression:
    """BigQuery's WEEK starts on Sunday (or the named day); PostgreSQL's on Monday."""
    if not isinstance(node, exp.DateTrunc):
        return node
    unit = node.args.get("unit")
    day = "SUNDAY"
    if isinstance(unit, exp.WeekStart):
        day = unit.this.name.upper()
    elif not (isinstance(unit, exp.Var | exp.Literal) and unit.name.upper() == "WEEK"):
        return node
    days = ["SUNDAY", "MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY"]
    if day not in days:
        return node
    date = exp.cast(node.this.copy(), exp.DataType.Type.DATE)
    dow = exp.cast(exp.Extract(this=exp.var("DOW"), expression=date.copy()), "INT")
    # Days since the week's first day: (dow - first + 7) % 7.
    back = exp.Mod(
        this=exp.Paren(
            this=exp.Add(
                this=exp.Sub(this=dow, expression=exp.Literal.number(days.index(day))),
                expression=exp.Literal.number(7),
            )
        ),
        expression=exp.Literal.number(7),
    )
    return exp.Paren(this=exp.Sub(this=date, expression=exp.Paren(this=back)))


def diff_in_whole_units(node: exp.Expression) -> exp.Expression:
    """TIMESTAMP_DIFF(a, b, part): whole parts between them, truncated toward zero."""
    if not isinstance(node, exp.TimestampDiff):
        return node
    unit = (node.unit.name if node.unit else "DAY").upper()
    if unit not in _SECONDS:
        return node
    seconds = exp.Extract(
        this=exp.var("EPOCH"),
        expression=exp.Paren(
            this=exp.Sub(this=node.this.copy(), expression=node.expression.copy())
        ),
    )
    ratio = exp.Div(this=seconds, expression=exp.Literal.number(_SECONDS[unit]))
    return exp.cast(_func("TRUNC", ratio), exp.DataType.Type.BIGINT)


def safe_cast_returns_null(node: exp.Expression) -> exp.Expression:
    """SAFE_CAST of text to a number: NULL when the text is not one, where CAST fails;
    hexadecimal integers ('0x1F', '-0x123') as BigQuery reads them; NULL for a NUMERIC
    out of its range (29 digits before the point)."""
    if not isinstance(node, exp.TryCast):
        return node
    text = exp.cast(node.this.copy(), exp.DataType.Type.TEXT)
    trimmed = exp.Trim(this=text.copy())

    def matches(pattern: str) -> exp.Expression:
        return exp.RegexpLike(this=text.copy(), expression=exp.Literal.string(pattern))

    if node.to.is_type(*exp.DataType.INTEGER_TYPES):
        digits = _func("SUBSTRING", trimmed.copy(), exp.Literal.string("[0-9a-fA-F]+$"))
        bits = exp.DPipe(
            this=exp.Literal.string("x"),
            expression=_func("LPAD", digits, exp.Literal.number(16), exp.Literal.string("0")),
        )
        hexadecimal = exp.cast(exp.cast(bits, "BIT(64)"), exp.DataType.Type.BIGINT)
        return exp.Case(
            ifs=[
                exp.If(this=matches(_INTEGER), true=exp.cast(trimmed, node.to.copy())),
                exp.If(this=matches(_HEX.replace("[+-]?", "[+]?")), true=hexadecimal.copy()),
                exp.If(this=matches(_HEX.replace("[+-]?", "-")), true=exp.Neg(this=hexadecimal)),
            ]
        )
    if not node.to.is_type(*exp.DataType.REAL_TYPES):
        return node
    condition: exp.Expression = matches(_FLOAT)
    if node.to.is_type(exp.DataType.Type.DECIMAL):
        size = exp.Abs(this=exp.cast(trimmed.copy(), exp.DataType.Type.DOUBLE))
        condition = exp.And(
            this=condition, expression=exp.LT(this=size, expression=exp.Literal.number("1e29"))
        )
    return exp.Case(ifs=[exp.If(this=condition, true=exp.cast(trimmed, node.to.copy()))])


def json_array_elements(node: exp.Expression) -> exp.Expression:
    """UNNEST(JSON_EXTRACT_ARRAY(x, path)): one row per element, none for a non-array."""
    if not isinstance(node, exp.Unnest) or len(node.expressions) != 1:
        return node
    inner = node.expressions[0]
    if not isinstance(inner, exp.JSONExtractArray):
        return node
    keys = _path_keys(inner.expression)
    if keys is None:
        return node
    # The root path ('$') is the JSON itself: JSON_EXTRACT_PATH takes at least one key.
    value = _func("JSON_EXTRACT_PATH", inner.this.copy(), *keys) if keys else inner.this.copy()
    is_array = exp.EQ(
        this=_func("JSON_TYPEOF", value.copy()), expression=exp.Literal.string("array")
    )
    array = exp.Case(ifs=[exp.If(this=is_array, true=value)])
    alias = node.args.get("alias")
    table_alias = alias.copy() if alias else None
    offset = node.args.get("offset")
    if not isinstance(offset, exp.Identifier):
        return exp.Table(this=_func("JSON_ARRAY_ELEMENTS", array), alias=table_alias)
    # WITH OFFSET AS pos: the elements' ordinality, from 1 (shifted where it is used).
    if table_alias is None:
        table_alias = exp.TableAlias(columns=[exp.to_identifier("value")])
    if not table_alias.name:
        table_alias.set("this", exp.to_identifier(f"_hw_{offset.name}"))
    table_alias.append("columns", offset.copy())
    table = exp.Table(this=_func("JSON_ARRAY_ELEMENTS", array), alias=table_alias, ordinality=True)
    table.meta[bigquery_sql.ORDINAL_OFFSET] = offset.name
    return table


def aggregate_types(node: exp.Expression) -> exp.Expression:
    """AVG is FLOAT64 in BigQuery, and SUM of INT64s an INT64; PostgreSQL's are numeric.
    Over a window, the window's value is cast (``CAST(AVG(x) OVER (…))``: a cast between
    the function and its OVER is not SQL). A SUM of a stored column, whose type is not
    known here, stays PostgreSQL's numeric."""
    if isinstance(node.parent, exp.Cast):
        return node
    if isinstance(node, exp.Window):
        kind = _bigquery_type(node.this)
        return node if kind is None else exp.cast(node, kind)
    kind = None if isinstance(node.parent, exp.Window) else _bigquery_type(node)
    return node if kind is None else exp.cast(node, kind)


def _bigquery_type(node: exp.Expression) -> exp.DType | None:
    """The type BigQuery gives aggregate ``node`` where PostgreSQL's differs."""
    if isinstance(node, exp.Avg):
        return exp.DataType.Type.DOUBLE
    if isinstance(node, exp.Sum) and portable_sql.is_type(node.this, *exp.DataType.INTEGER_TYPES):
        return exp.DataType.Type.BIGINT
    return None


class PostgresCalendar(portable_sql.StandardCalendar):
    """BigQuery's calendar on PostgreSQL's date functions (the session is in UTC)."""

    _DIRECT: ClassVar[dict[str, str]] = {
        "YEAR": "year",
        "QUARTER": "quarter",
        "MONTH": "month",
        "DAY": "day",
        "DAYOFYEAR": "doy",
        "HOUR": "hour",
        "MINUTE": "minute",
        "ISOWEEK": "week",
        "ISOYEAR": "isoyear",
    }

    def micros(self, civil: exp.Expression) -> exp.Expression:
        # EXTRACT(EPOCH) of a timestamp without zone is NUMERIC: exact to the microsecond.
        seconds = exp.Extract(
            this=exp.var("EPOCH"), expression=exp.cast(civil, exp.DataType.Type.TIMESTAMP)
        )
        return exp.cast(times(seconds, exp.Literal.number(1_000_000)), exp.DataType.Type.BIGINT)

    def _date_part(self, field: str, value: exp.Expression) -> exp.Expression:
        return exp.Floor(this=_func("DATE_PART", exp.Literal.string(field), value))

    def part(self, name: str, value: exp.Expression) -> exp.Expression | None:
        if name in self._DIRECT:
            return integer(self._date_part(self._DIRECT[name], value))
        if name == "SECOND":
            return integer(self._date_part("second", value))
        if name == "DAYOFWEEK":
            return plus(integer(self._date_part("dow", value)), number(1))
        if name == "MILLISECOND":
            return modulo(integer(self._date_part("milliseconds", value)), number(1000))
        if name == "MICROSECOND":
            return modulo(integer(self._date_part("microseconds", value)), number(1000000))
        return None

    def parse(self, value: exp.Expression, tokens: list[str], safe: bool) -> exp.Expression | str:
        if safe:
            return "PostgreSQL's TO_TIMESTAMP fails on text that does not match"
        pattern = []
        for token in tokens:
            if not token.startswith("%"):
                pattern.append('"' + token.replace('"', '\\"') + '"')
            elif token in _TO_TIMESTAMP:
                pattern.append(_TO_TIMESTAMP[token])
            else:
                return token
        if not any(t in tokens for t in ("%Y", "%y")):
            return "a format without a year"
        parsed = _func("TO_TIMESTAMP", value, exp.Literal.string("".join(pattern)))
        return exp.cast(
            exp.AtTimeZone(this=parsed, zone=exp.Literal.string("UTC")),
            exp.DataType.Type.TIMESTAMP,
        )


_TO_TIMESTAMP = {
    "%Y": "YYYY",
    "%y": "YY",
    "%m": "MM",
    "%d": "DD",
    "%-d": "DD",
    "%e": "DD",
    "%H": "HH24",
    "%I": "HH12",
    "%M": "MI",
    "%S": "SS",
    "%f": "US",
    "%p": "AM",
    "%j": "DDD",
    "%b": "Mon",
    "%B": "Month",
    "%a": "Dy",
    "%A": "Day",
}

CALENDAR = portable_sql.calendar_fixes(PostgresCalendar())


def unix_time(node: exp.Expression) -> exp.Expression:
    """UNIX_SECONDS/MILLIS/MICROS round down; TIMESTAMP_SECONDS/MILLIS/MICROS are exact."""
    scales = {exp.UnixSeconds: 1, exp.UnixMillis: 1000, exp.UnixMicros: 1000000}
    for kind, per_second in scales.items():
        if isinstance(node, kind):
            seconds = exp.Extract(
                this=exp.var("EPOCH"),
                expression=exp.cast(node.this.copy(), exp.DataType.Type.TIMESTAMPTZ),
            )
            return integer(exp.Floor(this=times(seconds, number(per_second))))
    if isinstance(node, exp.UnixToTime):
        scale = node.args.get("scale")
        unit = {"": "1 second", "0": "1 second", "3": "1 millisecond", "6": "1 microsecond"}
        step = unit.get(scale.name if scale is not None else "")
        if step is None:
            return node
        epoch = exp.cast(exp.Literal.string("1970-01-01 00:00:00+00"), "TIMESTAMPTZ")
        interval = exp.cast(exp.Literal.string(step), exp.DataType.Type.INTERVAL)
        return plus(epoch, times(node.this.copy(), interval))
    return node


def rounding_in_numeric(node: exp.Expression) -> exp.Expression:
    """ROUND of a FLOAT64 rounds half away from zero (PostgreSQL's of a double rounds half
    to even), and PostgreSQL has ROUND(x, n) and TRUNC(x, n) for NUMERIC only."""
    if isinstance(node, exp.Round | exp.Trunc) and portable_sql.is_type(
        node.this, exp.DataType.Type.DOUBLE, exp.DataType.Type.FLOAT
    ):
        inner = node.copy()
        inner.set("this", exp.cast(node.this.copy(), exp.DataType.Type.DECIMAL))
        return exp.cast(inner, exp.DataType.Type.DOUBLE)
    return node


def bool_to_integer(node: exp.Expression) -> exp.Expression:
    """CAST(BOOL AS INT64): PostgreSQL casts a boolean to INT but not to BIGINT."""
    if (
        isinstance(node, exp.Cast)
        and node.to.is_type(*exp.DataType.INTEGER_TYPES)
        and not node.to.is_type(exp.DataType.Type.INT)  # the cast this adds: done
        and portable_sql.is_type(node.this, exp.DataType.Type.BOOLEAN)
    ):
        as_int = exp.cast(node.this.copy(), exp.DataType.Type.INT)
        return exp.cast(as_int, node.to.copy())  # a new node: not rewritten again
    return node


def date_from_parts(node: exp.Expression) -> exp.Expression:
    """DATE(year, month, day) is PostgreSQL's MAKE_DATE."""
    if isinstance(node, exp.DateFromParts):
        args = [node.args[k].copy() for k in ("year", "month", "day")]
        return _func("MAKE_DATE", *args)
    return node


def safe_cast_to_time_refused(node: exp.Expression) -> exp.Expression:
    """PostgreSQL cannot try a cast to a date or time: the query fails on the first text
    that is not one."""
    if isinstance(node, exp.TryCast) and node.to.is_type(
        exp.DataType.Type.DATE,
        exp.DataType.Type.TIMESTAMP,
        exp.DataType.Type.TIMESTAMPTZ,
        exp.DataType.Type.DATETIME,
    ):
        raise Untranslatable(
            f"SAFE_CAST(… AS {node.to.sql('bigquery')})",
            node,
            "PostgreSQL has no cast to a date or time that gives NULL for text that is not one",
            "check the text first: IF(REGEXP_CONTAINS(x, r'^\\d{4}-\\d{2}-\\d{2}$'), "
            "CAST(x AS DATE), NULL)",
        )
    return node


_SERIES = sqlglot.parse_one(
    "ARRAY(SELECT CAST(_hw_day AS DATE) FROM GENERATE_SERIES(CAST(:start AS TIMESTAMP), "
    "CAST(:end AS TIMESTAMP), :step) AS _hw_series(_hw_day))",
    read="postgres",
)


def date_arrays(node: exp.Expression) -> exp.Expression:
    """GENERATE_DATE_ARRAY as an array of GENERATE_SERIES's days (empty when the step
    points away from the end)."""
    if not isinstance(node, exp.GenerateDateArray):
        return node
    step = node.args.get("step") or exp.Interval(this=exp.Literal.string("1"), unit=exp.var("DAY"))
    series = exp.replace_placeholders(
        _SERIES.copy(),
        start=node.args["start"].copy(),
        end=node.args["end"].copy(),
        step=step.copy(),
    )
    return cast(exp.Expression, series)


def derived_tables_named(node: exp.Expression) -> exp.Expression:
    """A subquery in FROM or JOIN without a name gets one: PostgreSQL before 16 refuses
    it ("subquery in FROM must have an alias"). Named by its place in its FROM clause, so
    two in one clause differ; a nested one may reuse a name (its own scope)."""
    if not isinstance(node, exp.Subquery) or node.alias:
        return node
    parent = node.parent
    if isinstance(parent, exp.From):
        place = 0
    elif isinstance(parent, exp.Join) and isinstance(parent.parent, exp.Select):
        place = 1 + parent.parent.args.get("joins", []).index(parent)
    else:
        return node
    node.set("alias", exp.TableAlias(this=exp.to_identifier(f"_hw_from{place}")))
    return node


#: In order; each sees the tree the one before left.
FIXES = (
    derived_tables_named,
    date_arrays,
    safe_cast_to_time_refused,
    date_from_parts,
    bool_to_integer,
    portable_sql.round_float_exactly,
    rounding_in_numeric,
    *CALENDAR,
    unix_time,
    bigquery_sql.postgres_json_text,
    aggregate_types,
    json_array_elements,
    json_value_is_scalar,
    approx_count_is_exact,
    weeks_start_on_their_day,
    diff_in_whole_units,
    safe_cast_returns_null,
    *bigquery_sql.POSTGRES,
)
