"""Where sqlglot's BigQuery → DuckDB translation runs but answers differently.

Each rewrite takes one node of a BigQuery pipeline's tree and returns what
DuckDB needs to give BigQuery's answer and type (tests/conformance runs
BigQuery's documented answers on every engine). A construct DuckDB cannot
answer as BigQuery does raises :class:`~headwater.process.errors.Untranslatable`,
and the pipeline is refused at load.
"""

from __future__ import annotations

from typing import ClassVar

from sqlglot import exp

from headwater.process import bigquery_sql, portable_sql
from headwater.process.portable_sql import (
    call,
    floor_division,
    integer,
    modulo,
    number,
    plus,
    times,
)


def safe_cast_text_to_integer(node: exp.Expression) -> exp.Expression:
    """BigQuery casts text to INT64 only when it is an integer literal ('2', '-0x1F');
    DuckDB's casts also take '2.5' (rounding it) and '1e3', and not '-0x1F'. SAFE_CAST
    gives NULL for any other text; CAST fails on it, as BigQuery's does (DuckDB's CAST
    made '6.7' a 7)."""
    if not (
        isinstance(node, exp.Cast)  # TRY_CAST too
        and node.to.is_type(*exp.DataType.INTEGER_TYPES)
        and (
            isinstance(node.this, exp.JSONExtractScalar)
            or node.this.is_string
            or portable_sql.is_type(node.this, *exp.DataType.TEXT_TYPES)
        )
    ):
        return node
    text = exp.Trim(this=node.this.copy())

    def matches(pattern: str) -> exp.Expression:
        return call("REGEXP_FULL_MATCH", text.copy(), exp.Literal.string(pattern))

    safe = isinstance(node, exp.TryCast)

    def cast(value: exp.Expression) -> exp.Expression:
        # Out of INT64's range: NULL for SAFE_CAST, DuckDB's conversion error for CAST.
        return (exp.TryCast if safe else exp.Cast)(this=value, to=node.to.copy())

    unsigned = exp.Anonymous(this="LTRIM", expressions=[text.copy(), exp.Literal.string("+-")])
    refused = None
    if not safe:
        said = exp.DPipe(
            this=exp.DPipe(this=exp.Literal.string("Bad int64 value: "), expression=text.copy()),
            expression=exp.Literal.string(
                " (CAST of text to INT64 takes an integer, as in BigQuery: SAFE_CAST gives "
                "NULL instead, CAST(CAST(x AS FLOAT64) AS INT64) rounds)"
            ),
        )
        refused = exp.Case(
            ifs=[exp.If(this=exp.Is(this=text.copy(), expression=exp.Null()), true=exp.Null())],
            default=call("ERROR", said),
        )
    return exp.Case(
        ifs=[
            exp.If(this=matches(r"[+-]?[0-9]+"), true=cast(text.copy())),
            exp.If(this=matches(r"\+?0[xX][0-9a-fA-F]+"), true=cast(unsigned.copy())),
            exp.If(this=matches(r"-0[xX][0-9a-fA-F]+"), true=exp.Neg(this=cast(unsigned))),
        ],
        default=refused,
    )


def diff_in_whole_units(node: exp.Expression) -> exp.Expression:
    """TIMESTAMP_DIFF counts whole units; DuckDB's DATE_DIFF counts boundaries crossed,
    its DATE_SUB whole units. TIMESTAMP_DIFF(a, b, part) = DATE_SUB(part, b, a)."""
    if isinstance(node, exp.TimestampDiff):
        unit = exp.Literal.string(node.unit.name if node.unit else "DAY")
        return exp.Anonymous(this="DATE_SUB", expressions=[unit, node.expression, node.this])
    return node


def count_if_is_int64(node: exp.Expression) -> exp.Expression:
    """COUNTIF is INT64 in BigQuery; DuckDB's COUNT_IF is a HUGEINT. Over a window the
    window is cast (a cast between the function and its OVER is not SQL)."""
    if isinstance(node.parent, exp.Cast):
        return node
    if isinstance(node, exp.Window) and isinstance(node.this, exp.CountIf):
        return exp.cast(node, exp.DataType.Type.BIGINT)
    if isinstance(node, exp.CountIf) and not isinstance(node.parent, exp.Window):
        return exp.cast(node, exp.DataType.Type.BIGINT)
    return node


class DuckDBCalendar(portable_sql.StandardCalendar):
    """BigQuery's calendar on DuckDB's date functions (the session is in UTC)."""

    _DIRECT: ClassVar[dict[str, str]] = {
        "YEAR": "YEAR",
        "QUARTER": "QUARTER",
        "MONTH": "MONTH",
        "DAY": "DAY",
        "DAYOFYEAR": "DAYOFYEAR",
        "HOUR": "HOUR",
        "MINUTE": "MINUTE",
        "SECOND": "SECOND",
        "ISOWEEK": "WEEK",
        "ISOYEAR": "ISOYEAR",
    }

    def micros(self, civil: exp.Expression) -> exp.Expression:
        return call("EPOCH_US", exp.cast(civil, exp.DataType.Type.TIMESTAMP))

    def part(self, name: str, value: exp.Expression) -> exp.Expression | None:
        if name in self._DIRECT:
            return integer(call(self._DIRECT[name], value))
        if name == "DAYOFWEEK":
            return integer(plus(call("DAYOFWEEK", value), number(1)))
        if name == "MILLISECOND":
            return integer(modulo(call("MILLISECOND", value), number(1000)))
        if name == "MICROSECOND":
            return integer(modulo(call("MICROSECOND", value), number(1000000)))
        return None

    def parse(self, value: exp.Expression, tokens: list[str], safe: bool) -> exp.Expression | str:
        # DuckDB's STRPTIME reads BigQuery's elements (as sqlglot normalises them), but
        # not %Q, %G, %V, %u, %U, %W, %E…, or zones: the date would differ.
        for token in tokens:
            if token.startswith("%") and token not in _STRPTIME:
                return token
        fmt = "".join("%-d" if t == "%e" else t for t in tokens)
        if not any(t in tokens for t in ("%Y", "%y", "%E4Y")):
            # BigQuery's year is 1970 when the format has none; DuckDB's 1900.
            value = exp.DPipe(this=exp.Literal.string("1970 "), expression=value)
            fmt = "%Y " + fmt
        return call("TRY_STRPTIME" if safe else "STRPTIME", value, exp.Literal.string(fmt))


_STRPTIME = frozenset(
    {
        *("%Y", "%y", "%E4Y", "%m", "%d", "%-d", "%e", "%H", "%I", "%M", "%S", "%f", "%p"),
        *("%j", "%b", "%B", "%a", "%A", "%%", "%n", "%t"),
    }
)

CALENDAR = portable_sql.calendar_fixes(DuckDBCalendar())


def unix_time(node: exp.Expression) -> exp.Expression:
    """UNIX_SECONDS and UNIX_MILLIS round down to the whole unit (DuckDB's EPOCH and
    EPOCH_MS round to the nearest); TIMESTAMP_MILLIS and TIMESTAMP_MICROS are
    TIMESTAMPs (DuckDB's are without a zone)."""
    if isinstance(node, exp.UnixSeconds | exp.UnixMillis | exp.UnixMicros):
        micros = call("EPOCH_US", exp.cast(node.this.copy(), exp.DataType.Type.TIMESTAMPTZ))
        if isinstance(node, exp.UnixMicros):
            return micros
        return floor_division(micros, 1000000 if isinstance(node, exp.UnixSeconds) else 1000)
    if isinstance(node, exp.UnixToTime):
        scale = node.args.get("scale")
        factor = {"3": 1000, "6": 1}.get(scale.name if scale is not None else "")
        if factor is None:
            return node
        micros = integer(times(node.this.copy(), number(factor)))
        naive = call("MAKE_TIMESTAMP", micros)
        return exp.AtTimeZone(this=naive, zone=exp.Literal.string("UTC"))
    return node


def utc_by_arithmetic(node: exp.Expression) -> exp.Expression:
    """Moves between a TIMESTAMP and its civil time in UTC as microseconds since the
    epoch, not through DuckDB's time zone library: BigQuery's calendar functions are in
    UTC unless given a zone, and DuckDB looks every value up in ICU's calendar for the
    session's zone even when that is UTC, 8-14x slower on a column (TIMESTAMP_TRUNC by
    hour over 5M events: 810 -> 59 ms). The answers are the same for every finite
    instant DuckDB stores (``infinity`` becomes NULL); the store's sessions are in UTC.

    Rewritten: ``x AT TIME ZONE 'UTC'`` where ``x`` is cast to TIMESTAMPTZ (the calendar's
    civil time) or to TIMESTAMP (its instant), and DATE or DATETIME of a TIMESTAMP column
    or expression known to be one (the session's zone)."""
    if isinstance(node, exp.AtTimeZone) and _is_utc(node.args.get("zone")):
        # An instant or a civil time, by what the operand is once rewritten.
        value = _within(node.this)
        if _is(value, exp.DataType.Type.TIMESTAMPTZ, "MAKE_TIMESTAMPTZ"):
            return _civil_utc(value)
        if _is(value, exp.DataType.Type.TIMESTAMP, "MAKE_TIMESTAMP"):
            return call("MAKE_TIMESTAMPTZ", call("EPOCH_US", value))
        return node
    instant = exp.DataType.Type.TIMESTAMPTZ
    if isinstance(node, exp.Date) and not node.expressions:
        # DATE(ts, 'UTC') left whole inside another calendar function's rewrite.
        if _is_utc(node.args.get("zone")):
            this = exp.cast(_within(node.this), instant)
            return exp.cast(_civil_utc(this), exp.DataType.Type.DATE)
        if not node.args.get("zone") and portable_sql.is_type(node.this, instant):
            return exp.cast(_civil_utc(_within(node.this)), exp.DataType.Type.DATE)
    if isinstance(node, exp.Cast) and portable_sql.is_type(node.this, instant):
        if _cast_to(node, exp.DataType.Type.DATE):
            return exp.cast(_civil_utc(_within(node.this)), exp.DataType.Type.DATE)
        if _cast_to(node, exp.DataType.Type.TIMESTAMP):
            return _civil_utc(_within(node.this))
    return node


def _within(node: exp.Expression) -> exp.Expression:
    """A copy of ``node`` rewritten: the tree's transform does not descend into the
    node that replaced another, so a rewrite does its operand's itself."""
    return node.copy().transform(utc_by_arithmetic)


def _is_utc(zone: exp.Expression | None) -> bool:
    return isinstance(zone, exp.Literal) and zone.is_string and zone.name.upper() == "UTC"


def _cast_to(node: exp.Expression, kind: exp.DType) -> bool:
    return isinstance(node, exp.Cast) and node.to.is_type(kind) and not node.to.expressions


def _is(node: exp.Expression, kind: exp.DType, function: str) -> bool:
    """Whether ``node`` is certainly of ``kind``: cast to it, or made by ``function``."""
    made = isinstance(node, exp.Anonymous) and node.name.upper() == function
    return made or _cast_to(node, kind)


def _civil_utc(instant: exp.Expression) -> exp.Expression:
    """The civil time in UTC (a TIMESTAMP without zone) of TIMESTAMPTZ ``instant``."""
    return call("MAKE_TIMESTAMP", call("EPOCH_US", instant))


def like_escapes_with_backslash(node: exp.Expression) -> exp.Expression:
    r"""BigQuery's LIKE takes a backslash as its escape (``'100\%'`` is a percent sign);
    DuckDB's has none unless one is named, and matched the backslash itself."""
    if isinstance(node, exp.Like) and not isinstance(node.parent, exp.Escape):
        return exp.Escape(this=node, expression=exp.Literal.string("\\"))
    return node


def qualify_reads_shadowing_aliases(node: exp.Expression) -> exp.Expression:
    """QUALIFY of a SELECT whose GROUP BY an alias shadowing a column was moved to (see
    ``portable_sql.group_by_select_alias``) reads that alias, as in BigQuery."""
    if isinstance(node, exp.Select) and (qualify := node.args.get("qualify")) is not None:
        portable_sql.read_aliases(qualify, node.meta.get("hw_shadowing") or {})
    return node


#: In order; each sees the tree the one before left.
FIXES = (
    qualify_reads_shadowing_aliases,
    like_escapes_with_backslash,
    *CALENDAR,
    unix_time,
    diff_in_whole_units,
    count_if_is_int64,
    safe_cast_text_to_integer,
    *bigquery_sql.DUCKDB,
    utc_by_arithmetic,
)
