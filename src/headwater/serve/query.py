"""Turn a request's query string into one parameterised SELECT over a dataset.

Filters are typed by the dataset's Arrow schema: ``plan=pro`` (equals),
``plan__in=free,pro``, ``day__gte=2026-11-01`` and ``__gt``, ``__lt``,
``__lte``. Every value is parsed to its column's type and bound as a
parameter; column names come only from the schema. Pages are cut by keyset:
the cursor holds the last row's ordering values, and ordering always ends with
the dataset's key so it is total.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import date
from decimal import Decimal, InvalidOperation
from typing import Any, Protocol, cast

import pyarrow as pa
from sqlglot import exp

from headwater.core import jsonio
from headwater.core.clock import parse_utc
from headwater.serve.errors import ApiError
from headwater.store.engine import Selected
from headwater.store.schema import BUILTIN_TABLES, JSON_COLUMNS

RESERVED = frozenset({"order_by", "limit", "cursor", "format"})
OPERATORS: dict[str, Callable[[exp.Expression, exp.Expression], exp.Expression]] = {
    "eq": lambda c, v: exp.EQ(this=c, expression=v),
    "gt": lambda c, v: exp.GT(this=c, expression=v),
    "gte": lambda c, v: exp.GTE(this=c, expression=v),
    "lt": lambda c, v: exp.LT(this=c, expression=v),
    "lte": lambda c, v: exp.LTE(this=c, expression=v),
}
MAX_IN_VALUES = 100
#: The digits after a time's second.
_FRACTION = re.compile(r"\d:\d\d[.,](\d+)")


class Reader(Protocol):
    """What a dataset is read through: the engine, or a PostgreSQL sink."""

    dialect: str

    def select(self, sql: str, params: Mapping[str, object]) -> Selected: ...


@dataclass(frozen=True)
class Dataset:
    """A table the API serves: its name, key columns and schema, and where it is read."""

    name: str
    key: tuple[str, ...]
    schema: pa.Schema
    reader: Reader
    table: tuple[str, ...] = ()
    """(schema, table) when it is not the engine's table named ``name``."""
    collate: bool = False
    """Whether text is compared with ``COLLATE "C"``: a PostgreSQL database whose own
    collation is a language's (there the index no longer orders a page)."""

    def relation(self) -> exp.Table:
        if not self.table:
            return exp.table_(self.name, quoted=True)
        *db, name = self.table
        return exp.table_(name, db=db[0] if db else None, quoted=True)

    @property
    def scored(self) -> bool:
        """Whether it is a scored table, with shadow rows the API does not serve."""
        return {"model_version", "shadow"} <= set(self.schema.names)

    def served(self) -> exp.Select:
        """``SELECT *`` of the rows the API serves: a scored table's shadow rows (a model
        version scored beside the live one, ``shadow`` true) are for comparing in SQL, not
        for the product."""
        return served(self.relation(), scored=self.scored)

    def ordered(self, column: str) -> exp.Expression:
        """``column`` as it is compared and sorted: text byte by byte, as BigQuery and
        DuckDB compare it, also in a PostgreSQL database whose collation is a language's
        (under ``en_US`` 'a' sorts before 'B', and a sink's database is the user's)."""
        target = exp.column(column, quoted=True)
        if self.collate and pa.types.is_string(self.column_type(column)):
            return exp.Collate(this=target, expression=exp.Identifier(this="C", quoted=True))
        return target

    def column_type(self, column: str) -> pa.DataType:
        if column not in self.schema.names:
            raise ApiError(
                400,
                "unknown_column",
                f"{self.name} has no column {column!r}; columns: {', '.join(self.schema.names)}",
            )
        return self.schema.field(column).type


def served(relation: exp.Table, *, scored: bool) -> exp.Select:
    """``SELECT *`` of ``relation``'s rows the API serves (a scored table: not its shadow
    rows)."""
    query = exp.select("*").from_(relation)
    if scored:
        query = query.where(exp.Not(this=exp.column("shadow", quoted=True)))
    return query


@dataclass
class Select:
    """A SELECT under construction, with its bound parameters."""

    query: exp.Select
    params: dict[str, Any] = field(default_factory=dict)

    def bind(self, value: Any) -> exp.Placeholder:
        name = f"p{len(self.params)}"
        self.params[name] = value
        return exp.Placeholder(this=name)


def parse_value(dataset: Dataset, column: str, text: str) -> Any:
    """``text`` as a value of ``column``'s type; 400 naming both when it is not."""
    kind = dataset.column_type(column)
    if "\x00" in text:
        # PostgreSQL refuses the character in text and DuckDB matches nothing: a dataset
        # served from either answers the same.
        raise ApiError(
            400, "bad_filter", f"a value for {column} holds the NUL character (%00); no row does"
        )
    try:
        if pa.types.is_integer(kind):
            value = int(text)
            bits = kind.bit_width
            low, high = (
                (0, 2**bits - 1)
                if pa.types.is_unsigned_integer(kind)
                else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
            )
            if not low <= value <= high:
                raise ValueError(text)
            return value
        if pa.types.is_floating(kind):
            return float(text)
        if pa.types.is_decimal(kind):
            # Exact, as the column is: a float would round 0.1 and digits past 17.
            number = Decimal(text)
            if not number.is_finite():
                raise ValueError(text)
            return number
        if pa.types.is_boolean(kind):
            if text.lower() not in ("true", "false"):
                raise ValueError(text)
            return text.lower() == "true"
        if pa.types.is_timestamp(kind):
            fraction = _FRACTION.search(text)
            if fraction is not None and fraction.group(1).rstrip("0")[6:]:
                raise ApiError(
                    400,
                    "bad_filter",
                    f"{column} holds times to the microsecond; {text!r} is finer (give at "
                    "most 6 digits after the second)",
                )
            return parse_utc(text)
        if pa.types.is_date(kind):
            return date.fromisoformat(text)
    except (ValueError, InvalidOperation):
        raise ApiError(400, "bad_filter", f"{column} holds {kind}; {text!r} is not one") from None
    return text


def rows_query(
    dataset: Dataset, args: Mapping[str, str], *, page_size: int, max_page_size: int
) -> tuple[Select, list[tuple[str, bool]], int]:
    """The page's SELECT (one row more than the page), its ordering, and the page size."""
    select = Select(dataset.served())
    for name, text in args.items():
        if name in RESERVED:
            continue
        column, _, operator = name.partition("__")
        operator = operator or "eq"
        dataset.column_type(column)
        if dataset.name in BUILTIN_TABLES and column in JSON_COLUMNS:
            # Stored as JSON (jsonb on PostgreSQL): compared as parsed JSON, differently
            # by each store, never as the text a client would send.
            raise ApiError(
                400,
                "bad_filter",
                f"{column} holds JSON, which is not filtered by; a pipeline can take a field "
                f"into a column of its own (JSON_VALUE({column}, '$.plan') AS plan)",
            )
        target = exp.column(column, quoted=True)
        if operator == "in":
            values = [v for v in text.split(",") if v != ""]
            if not values or len(values) > MAX_IN_VALUES:
                raise ApiError(
                    400, "bad_filter", f"{name} takes 1 to {MAX_IN_VALUES} comma-separated values"
                )
            bound = [select.bind(parse_value(dataset, column, v)) for v in values]
            select.query = select.query.where(exp.In(this=target, expressions=bound))
        elif operator in OPERATORS:
            value = select.bind(parse_value(dataset, column, text))
            compared = target if operator == "eq" else dataset.ordered(column)
            select.query = select.query.where(OPERATORS[operator](compared, value))
        else:
            raise ApiError(
                400,
                "bad_filter",
                f"unknown operator {operator!r} in {name}; use column, column__in, "
                "column__gt, column__gte, column__lt or column__lte",
            )
    order = _ordering(dataset, args.get("order_by"))
    limit = _limit(args.get("limit"), page_size, max_page_size)
    if cursor := args.get("cursor"):
        select.query = select.query.where(_after(dataset, select, order, cursor))
    ordered = [
        exp.Ordered(this=dataset.ordered(c), desc=desc, nulls_first=False) for c, desc in order
    ]
    select.query = select.query.order_by(*ordered).limit(limit + 1)
    return select, order, limit


def encode_cursor(row: Mapping[str, Any], order: list[tuple[str, bool]]) -> str:
    """The page's last row, in the ordering it was read in (a cursor is refused in
    another ordering, where it would skip or repeat rows)."""
    after = {"order": _order_text(order), "after": [row[column] for column, _ in order]}
    return base64.urlsafe_b64encode(jsonio.dumps(after)).decode().rstrip("=")


def _order_text(order: list[tuple[str, bool]]) -> str:
    return ",".join(("-" if desc else "") + column for column, desc in order)


def _ordering(dataset: Dataset, order_by: str | None) -> list[tuple[str, bool]]:
    order: list[tuple[str, bool]] = []
    for item in (order_by or "").split(","):
        item = item.strip()
        if not item:
            continue
        desc = item.startswith("-")
        column = item[1:] if item[0] in "-+" else item  # one sign: "--n" names no column
        dataset.column_type(column)
        order.append((column, desc))
    # Ties broken by the key (or every column) so pages never skip or repeat rows.
    for column in dataset.key or tuple(dataset.schema.names):
        if column not in {c for c, _ in order}:
            order.append((column, False))
    return order


def _limit(text: str | None, page_size: int, max_page_size: int) -> int:
    if text is None:
        return page_size
    try:
        limit = int(text)
    except ValueError:
        limit = 0
    if not 1 <= limit <= max_page_size:
        raise ApiError(400, "bad_limit", f"limit is a whole number from 1 to {max_page_size}")
    return limit


def _after(
    dataset: Dataset, select: Select, order: list[tuple[str, bool]], cursor: str
) -> exp.Expression:
    """Rows after the cursor's row in ``order`` (NULLs sort last in both directions)."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        values = jsonio.loads(raw)
    except (binascii.Error, ValueError, jsonio.JSONDecodeError, RecursionError):
        # RecursionError: a forged cursor nested thousands deep.
        values = None
    if isinstance(values, dict):
        if values.get("order") != _order_text(order):
            raise ApiError(
                400,
                "bad_cursor",
                "the cursor was given for another order_by; send the order_by it came with, "
                "or start without it",
            )
        values = values.get("after")
    if not isinstance(values, list) or len(values) != len(order):
        raise ApiError(400, "bad_cursor", "the cursor is not one this API gave; start without it")
    try:
        typed = [
            None if v is None else parse_value(dataset, column, str(v))
            for (column, _), v in zip(order, values, strict=True)
        ]
    except ApiError:
        raise ApiError(
            400, "bad_cursor", "the cursor is not one this API gave; start without it"
        ) from None
    # (a, b) after (x, y)  ==  a after x  OR  (a = x AND b after y)
    condition: exp.Expression | None = None
    for (column, desc), value in reversed(list(zip(order, typed, strict=True))):
        target = exp.column(column, quoted=True)
        if value is None:
            after: exp.Expression = exp.false()
            same: exp.Expression = exp.Is(this=target, expression=exp.null())
        else:
            bound = select.bind(value)
            compared = dataset.ordered(column)
            beyond = (
                exp.LT(this=compared, expression=bound)
                if desc
                else exp.GT(this=compared, expression=bound)
            )
            after = cast(
                exp.Expression, exp.or_(beyond, exp.Is(this=target.copy(), expression=exp.null()))
            )
            same = exp.EQ(this=target.copy(), expression=bound.copy())
        condition = (
            after
            if condition is None
            else cast(exp.Expression, exp.or_(after, exp.and_(same, condition)))
        )
    assert condition is not None
    return exp.paren(condition)
