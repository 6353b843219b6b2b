"""What range of each input a pipeline reads, relative to its interval.

A pipeline that reads ``daily_revenue`` over ``[@start - 6 days, @end)`` must run
again for an interval whenever any of those seven days is re-published, not only
the day of the interval. The bounds are read from the SQL: every comparison, in
the ``WHERE`` or a join's ``ON`` of the ``SELECT`` that reads the table, between
the table's time column and an expression of ``@start`` or ``@end`` (shifted by
``DATE_SUB``, ``TIMESTAMP_ADD``, ``INTERVAL`` arithmetic and the like, cast or
truncated to a date). Each bound is kept as a small expression and evaluated on
each interval's actual bounds, so months and weeks come out as the calendar has
them. A read whose bounds cannot be told is taken as reading everything (never
less than the truth: staleness may over-run, it may not miss); the header's
``reads`` says otherwise where the SQL cannot::

    reads = { daily_revenue = ["-6d", "0d"] }    # [start - 6 days, end + 0)

>>> import sqlglot
>>> reads = table_reads(sqlglot.parse_one(
...     "SELECT * FROM d WHERE day >= DATE_SUB(@start, INTERVAL 6 DAY) AND day < @end",
...     read="bigquery"))
>>> window(reads["d"], "day", Interval(datetime(2025, 3, 8, tzinfo=UTC),
...                                     datetime(2025, 3, 9, tzinfo=UTC)))
Interval(start=datetime.datetime(2025, 3, 2, 0, 0, tzinfo=datetime.timezone.utc), \
end=datetime.datetime(2025, 3, 9, 0, 0, tzinfo=datetime.timezone.utc))
"""

from __future__ import annotations

import calendar
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from sqlglot import exp

from headwater.core.types import Interval

#: The column of a declared range: it holds on whatever column the input is by.
ANY_COLUMN = "*"
#: The earliest and latest times a window can name: "everything before / after".
EARLIEST = datetime(1, 1, 2, tzinfo=UTC)
LATEST = datetime(9999, 12, 30, tzinfo=UTC)

_FIXED = {
    "MICROSECOND": timedelta(microseconds=1),
    "MILLISECOND": timedelta(milliseconds=1),
    "SECOND": timedelta(seconds=1),
    "MINUTE": timedelta(minutes=1),
    "HOUR": timedelta(hours=1),
    "DAY": timedelta(days=1),
    "WEEK": timedelta(days=7),
}
_MONTHS = {"MONTH": 1, "QUARTER": 3, "YEAR": 12}
_WEEKDAYS = ["MONDAY", "TUESDAY", "WEDNESDAY", "THURSDAY", "FRIDAY", "SATURDAY", "SUNDAY"]


# -- bounds: expressions of @start and @end ------------------------------------------


@dataclass(frozen=True)
class Param:
    name: str  # "start" or "end"

    def at(self, interval: Interval) -> datetime:
        return interval.start if self.name == "start" else interval.end


@dataclass(frozen=True)
class Shift:
    of: Bound
    count: int
    unit: str

    def at(self, interval: Interval) -> datetime:
        return shift(self.of.at(interval), self.count, self.unit)


@dataclass(frozen=True)
class Trunc:
    of: Bound
    unit: str

    def at(self, interval: Interval) -> datetime:
        return truncate(self.of.at(interval), self.unit)


@dataclass(frozen=True)
class Ceil:
    """The first ``unit`` boundary after a value a truncation to ``unit`` stays below:
    ``trunc(t, unit) < b`` means ``t < Ceil(b)``; with ``<=``, ``t`` below the boundary
    after ``b``'s own unit."""

    of: Bound
    unit: str
    inclusive: bool

    def at(self, interval: Interval) -> datetime:
        value = self.of.at(interval)
        start = truncate(value, self.unit)
        if start == value and not self.inclusive:
            return value
        step = "WEEK" if self.unit.startswith("WEEK") or self.unit == "ISOWEEK" else self.unit
        return shift(start, 1, step)


Bound = Param | Shift | Trunc | Ceil


def shift(moment: datetime, count: int, unit: str) -> datetime:
    """``moment`` moved by ``count`` units; a month keeps its day, or the month's last."""
    if unit in _FIXED:
        return moment + count * _FIXED[unit]
    months = moment.year * 12 + moment.month - 1 + count * _MONTHS[unit]
    year, month = divmod(months, 12)
    day = min(moment.day, calendar.monthrange(year, month + 1)[1])
    return moment.replace(year=year, month=month + 1, day=day)


def truncate(moment: datetime, unit: str) -> datetime:
    """The start of the ``unit`` holding ``moment`` (weeks as BigQuery starts them)."""
    if unit == "MICROSECOND":
        return moment
    if unit == "MILLISECOND":
        return moment.replace(microsecond=moment.microsecond // 1000 * 1000)
    if unit == "SECOND":
        return moment.replace(microsecond=0)
    if unit == "MINUTE":
        return moment.replace(second=0, microsecond=0)
    if unit == "HOUR":
        return moment.replace(minute=0, second=0, microsecond=0)
    day = moment.replace(hour=0, minute=0, second=0, microsecond=0)
    if unit == "DAY":
        return day
    if unit.startswith("WEEK") or unit == "ISOWEEK":
        first = "MONDAY" if unit == "ISOWEEK" else unit.removeprefix("WEEK_") or "SUNDAY"
        back = (day.weekday() - _WEEKDAYS.index(first)) % 7
        return day - timedelta(days=back)
    if unit == "MONTH":
        return day.replace(day=1)
    if unit == "QUARTER":
        return day.replace(day=1, month=(day.month - 1) // 3 * 3 + 1)
    return day.replace(day=1, month=1)  # YEAR


# -- reads: the bounds on each table ----------------------------------------------------


@dataclass(frozen=True)
class Limit:
    """``column`` compared with ``bound``: the lowest value read, or the highest."""

    column: str
    side: Literal["lower", "upper"]
    bound: Bound
    inclusive: bool


#: One table's reads: for each place the query reads it, the limits put on it there.
Reads = tuple[tuple[Limit, ...], ...]


def table_reads(query: exp.Expression) -> dict[str, Reads]:
    """Each table the query reads, by name: the limits on each of its reads."""
    found: dict[str, list[tuple[Limit, ...]]] = {}
    ctes = {cte.alias_or_name for cte in query.find_all(exp.CTE)}
    for table in query.find_all(exp.Table):
        if not isinstance(table.this, exp.Identifier) or (table.name in ctes and not table.db):
            continue
        select = table.find_ancestor(exp.Select)
        limits = tuple(_limits(select, table)) if select is not None else ()
        found.setdefault(table.name, []).append(limits)
    return {name: tuple(reads) for name, reads in found.items()}


def declared(offsets: tuple[timedelta, timedelta], column: str) -> Reads:
    """The reads a header declares: ``[start + first, end + second)``."""
    lower = Shift(Param("start"), offsets[0] // _FIXED["MICROSECOND"], "MICROSECOND")
    upper = Shift(Param("end"), offsets[1] // _FIXED["MICROSECOND"], "MICROSECOND")
    return ((Limit(column, "lower", lower, True), Limit(column, "upper", upper, False)),)


def window(reads: Reads, column: str, interval: Interval) -> Interval:
    """The range of ``column`` that ``reads`` cover when run for ``interval``: the union
    of each read's range, each read's range the intersection of its limits."""
    lowest, highest = LATEST, EARLIEST
    for limits in reads or ((),):
        lower, upper = EARLIEST, LATEST
        for limit in limits:
            if limit.column not in (column, ANY_COLUMN):
                continue
            try:
                value = limit.bound.at(interval)
            except (OverflowError, ValueError):
                continue  # out of the calendar's range: no limit on this side
            if limit.side == "lower":
                lower = max(lower, value)
            else:
                upper = min(upper, value + timedelta(microseconds=1) if limit.inclusive else value)
        lowest, highest = min(lowest, lower), max(highest, upper)
    return Interval(lowest, max(highest, lowest))


def _limits(select: exp.Select, table: exp.Table) -> Iterable[Limit]:
    """The limits on ``table``'s time column among the conditions that every row of this
    SELECT meets: the conjuncts of its WHERE and of its joins' ON."""
    conditions: list[exp.Expression] = []
    where = select.args.get("where")
    if where is not None:
        conditions.append(where.this)
    for join in select.args.get("joins") or []:
        if join.args.get("on") is not None and not join.side:
            conditions.append(join.args["on"])
    sources = _sources(select)
    for condition in conditions:
        for part in _conjuncts(condition):
            yield from _compare(part, table, sources)


def _sources(select: exp.Select) -> dict[str, exp.Expression]:
    """What each name in this SELECT's FROM and joins stands for."""
    found: dict[str, exp.Expression] = {}
    from_ = select.args.get("from") or select.args.get("from_")
    items = [from_.this] if from_ is not None else []
    items += [join.this for join in select.args.get("joins") or []]
    for item in items:
        found[item.alias_or_name] = item
    return found


def _conjuncts(node: exp.Expression) -> Iterable[exp.Expression]:
    while isinstance(node, exp.Paren):
        node = node.this
    if isinstance(node, exp.And):
        yield from _conjuncts(node.this)
        yield from _conjuncts(node.expression)
    else:
        yield node


_FLIP: dict[type[exp.Expression], type[exp.Expression]] = {
    exp.GT: exp.LT,
    exp.GTE: exp.LTE,
    exp.LT: exp.GT,
    exp.LTE: exp.GTE,
}


def _compare(
    node: exp.Expression, table: exp.Table, sources: dict[str, exp.Expression]
) -> Iterable[Limit]:
    if isinstance(node, exp.Between):
        found = _column(node.this, table, sources)
        if found is None:
            return
        column, unit = found
        low, high = _bound(node.args["low"]), _bound(node.args["high"])
        if low is not None:
            yield Limit(column, "lower", low, True)
        if high is not None:
            yield _upper(column, high, True, unit)
        return
    if type(node) not in _FLIP:
        return
    left, right, kind = node.this, node.expression, type(node)
    found = _column(left, table, sources)
    if found is None:
        left, right, kind = right, left, _FLIP[kind]
        found = _column(left, table, sources)
        if found is None:
            return
    column, unit = found
    bound = _bound(right)
    if bound is None:
        return
    if kind in (exp.GT, exp.GTE):
        # trunc(t) >= b holds t >= b too: t is never before its truncation.
        yield Limit(column, "lower", bound, True)
    else:
        yield _upper(column, bound, kind is exp.LTE, unit)


def _upper(column: str, bound: Bound, inclusive: bool, unit: str | None) -> Limit:
    """The upper limit on ``t`` of ``t < b`` (``<=``), or of ``trunc(t, unit) < b``."""
    if unit is None:
        return Limit(column, "upper", bound, inclusive)
    return Limit(column, "upper", Ceil(bound, unit, inclusive), False)


def _column(
    node: exp.Expression, table: exp.Table, sources: dict[str, exp.Expression]
) -> tuple[str, str | None] | None:
    """The name of ``table``'s column that ``node`` is, or truncates (``DATE(t)``,
    ``TIMESTAMP_TRUNC(t, HOUR)``, ``CAST(t AS DATE)``), and the unit it truncates to."""
    unit: str | None = None
    to_date = isinstance(node, exp.Cast) and node.to.is_type(exp.DataType.Type.DATE)
    if to_date or (isinstance(node, exp.Date | exp.TsOrDsToDate) and not node.args.get("zone")):
        node, unit = node.this, "DAY"
    elif isinstance(node, exp.DateTrunc | exp.TimestampTrunc | exp.DatetimeTrunc):
        unit = _unit(node.args.get("unit"))
        if unit is None or node.args.get("zone"):
            return None  # (in a zone, the boundaries are not UTC's)
        node = node.this
    if not _names(node, table, sources):
        return None
    return node.name, unit


def _names(node: exp.Expression, table: exp.Table, sources: dict[str, exp.Expression]) -> bool:
    """Whether ``node`` is certainly a column of ``table`` (qualified by its name or alias,
    or unqualified where the SELECT reads nothing else)."""
    if not isinstance(node, exp.Column):
        return False
    if node.table:
        return sources.get(node.table) is table
    return len(sources) == 1 and next(iter(sources.values())) is table


def _bound(node: exp.Expression) -> Bound | None:
    """``node`` as an expression of @start or @end, or None when it is not one."""
    if isinstance(node, exp.Paren):
        return _bound(node.this)
    if isinstance(node, exp.Parameter | exp.Placeholder) and node.name in ("start", "end"):
        return Param(node.name)
    if isinstance(node, exp.Cast | exp.TryCast):
        inner = _bound(node.this)
        if inner is None:
            return None
        return Trunc(inner, "DAY") if node.to.is_type(exp.DataType.Type.DATE) else inner
    if isinstance(node, exp.Date | exp.TsOrDsToDate) and not node.args.get("zone"):
        inner = _bound(node.this)
        return Trunc(inner, "DAY") if inner is not None else None
    if isinstance(node, exp.Timestamp | exp.Datetime) and len(node.args) <= 1:
        return _bound(node.this)
    if isinstance(node, exp.DateTrunc | exp.TimestampTrunc | exp.DatetimeTrunc):
        if node.args.get("zone"):
            return None
        inner, unit = _bound(node.this), _unit(node.args.get("unit"))
        return Trunc(inner, unit) if inner is not None and unit is not None else None
    if isinstance(
        node,
        exp.DateSub | exp.DateAdd | exp.TimestampSub | exp.TimestampAdd | exp.DatetimeSub
        | exp.DatetimeAdd,
    ):  # fmt: skip
        sign = -1 if isinstance(node, exp.DateSub | exp.TimestampSub | exp.DatetimeSub) else 1
        return _shifted(_bound(node.this), node.expression, node.args.get("unit"), sign)
    if isinstance(node, exp.Add | exp.Sub) and isinstance(node.expression, exp.Interval):
        sign = -1 if isinstance(node, exp.Sub) else 1
        interval = node.expression
        return _shifted(_bound(node.this), interval.this, interval.args.get("unit"), sign)
    return None


def _shifted(
    inner: Bound | None, amount: exp.Expression | None, unit: exp.Expression | None, sign: int
) -> Bound | None:
    name = _unit(unit)
    if inner is None or amount is None or name is None or name.startswith("WEEK_"):
        return None
    try:
        count = int(str(amount.name if isinstance(amount, exp.Literal) else amount.sql()))
    except ValueError:
        return None
    if name not in _FIXED and name not in _MONTHS:
        return None
    return Shift(inner, sign * count, name)


def _unit(unit: exp.Expression | None) -> str | None:
    if unit is None:
        return "DAY"
    if isinstance(unit, exp.WeekStart):
        return f"WEEK_{unit.name.upper()}"
    name = unit.name.upper()
    return name if name in _FIXED or name in _MONTHS or name == "ISOWEEK" else None


__all__ = ["Ceil", "Limit", "Reads", "declared", "shift", "table_reads", "truncate", "window"]
