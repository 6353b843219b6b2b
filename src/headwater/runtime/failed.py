"""``headwater failed``: refused events grouped by why, and fixed and replayed.

A replay reads the chosen failed events that are not replayed yet (``--code``,
``--where``: a predicate over ``failed_events``' columns), optionally rewrites
each payload with ``--fix`` (an expression over the row that gives the new
payload text), validates it by the collector's rules
(:mod:`headwater.collect.replay`) and commits what passes through the ingest
path: the events with ``received_at`` the time of the replay (offloads and
pipelines by arrival take them as new) and ``first_received_at`` when they first
arrived, and ``replayed_at`` set on their failed rows in the same transaction
(``IngestBatch.replayed``). Stored and marked together, a replay interrupted
anywhere leaves each failed event either replayed and marked or neither; made
again, it skips what is marked, and the dedupe by ``message_id`` drops an event
stored twice by two replays at once.

The events of erased people (on the suppression list, :mod:`headwater.collect.suppress`)
are dropped as the collector drops them, and counted as ``suppressed``; a failed event
left with no event is not marked replayed, so it is stored if the suppression is lifted.

``--where`` and ``--fix`` are written in the project's SQL dialect, as
pipelines are, and transpiled for the store by the pipelines' renderer. Each
must parse as one expression over the row: no statement, no subquery, no table,
no parameter, only ``failed_events``' columns, and only the scalar functions of
:data:`FUNCTIONS` (string, JSON, math, date and time, conditional, cast): a
function sqlglot does not know passes through to the store as written, and the
stores have functions that read other tables or files (PostgreSQL's
``query_to_xml``, ``pg_read_file``, ``dblink``; DuckDB's ``read_csv``), so
what is not known to be a function of the row is refused. It is placed in a
query built as a tree and run as a read of the store (read-only, checked by
parsing again).
"""

from __future__ import annotations

import os
import re
import socket
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from headwater.collect.replay import StillFailing, revalidate
from headwater.collect.suppress import Suppression
from headwater.collect.validate import EventRow, Validator
from headwater.collect.writer import Writer, rows_table
from headwater.core.clock import now_us, to_us
from headwater.core.errors import ConfigError
from headwater.process import sql
from headwater.store import schema
from headwater.store.engine import Engine, IngestBatch

#: Characters of a sample payload a listing shows.
SAMPLE_CHARS = 500
#: Failed events committed per transaction.
CHUNK = 200
#: Ids of still-failing events a group of the report names.
_IDS = 5
_CODE = re.compile(r"[a-z][a-z0-9_]*")
_TEXT = exp.DataType.build("TEXT")

#: The functions ``--where`` and ``--fix`` may call: scalar functions of their arguments
#: alone, by sqlglot's class (the same function in every dialect it renders).
FUNCTIONS: tuple[type[exp.Func], ...] = (
    # string
    exp.Concat, exp.ConcatWs, exp.Substring, exp.Length, exp.Lower, exp.Upper, exp.Trim,
    exp.Replace, exp.StrPosition, exp.RegexpReplace, exp.RegexpExtract, exp.RegexpLike,
    exp.Left, exp.Right, exp.Pad, exp.Reverse, exp.Initcap, exp.Split, exp.SplitPart,
    exp.Repeat, exp.StartsWith, exp.EndsWith, exp.Contains, exp.Chr, exp.Unicode, exp.Ascii,
    # JSON
    exp.JSONExtract, exp.JSONExtractScalar, exp.JSONBExtract, exp.JSONBExtractScalar,
    exp.JSONFormat, exp.ParseJSON, exp.JSONObject, exp.JSONArray, exp.JSONType, exp.JSONKeys,
    exp.JSONSet, exp.JSONRemove,
    # math
    exp.Abs, exp.Round, exp.Floor, exp.Ceil, exp.Sqrt, exp.Pow, exp.Ln, exp.Log, exp.Exp,
    exp.Sign, exp.Greatest, exp.Least, exp.SafeDivide,
    # date and time
    exp.Date, exp.Timestamp, exp.Datetime, exp.DateAdd, exp.DateSub, exp.DateDiff,
    exp.DatetimeAdd, exp.DatetimeSub, exp.DatetimeDiff, exp.TimestampAdd, exp.TimestampSub,
    exp.TimestampDiff, exp.DateTrunc, exp.TimestampTrunc, exp.DatetimeTrunc, exp.Extract,
    exp.CurrentDate, exp.CurrentTimestamp, exp.CurrentDatetime, exp.CurrentTime,
    exp.StrToTime, exp.StrToDate, exp.TimeToStr, exp.TimeStrToTime, exp.UnixToTime,
    exp.TimeToUnix, exp.TsOrDsToDate, exp.DateFromParts, exp.Day, exp.Month, exp.Year,
    exp.DayOfWeek,
    # conditional and cast
    exp.Case, exp.If, exp.Coalesce, exp.Nullif, exp.Cast, exp.TryCast,
)  # fmt: skip
#: The types a cast may name: a cast to another runs that type's input function.
_CAST_TYPES = frozenset(
    getattr(exp.DataType.Type, name)
    for name in (
        "TEXT", "VARCHAR", "CHAR", "NCHAR", "NVARCHAR", "BIGINT", "INT", "SMALLINT",
        "TINYINT", "UBIGINT", "UINT", "DOUBLE", "FLOAT", "DECIMAL", "BIGDECIMAL", "BOOLEAN",
        "DATE", "DATETIME", "TIME", "TIMETZ", "TIMESTAMP", "TIMESTAMPTZ", "TIMESTAMPLTZ",
        "JSON", "JSONB", "INTERVAL",
    )
)  # fmt: skip

#: Commits a replay's events (``received_at`` is stamped by it) and marks the failed events
#: with these ids replayed, in one transaction; returns (new events, duplicates).
Commit = Callable[[pa.Table, list[str]], tuple[int, int]]


class ReplayError(ConfigError):
    """A ``--where``, ``--fix`` or ``--code`` that cannot be used as given."""


def groups(store: Engine) -> list[dict[str, Any]]:
    """Failed events by code, field and source: how many, when, a message and a sample
    payload, and how many were replayed; the largest groups first."""
    payload = exp.cast(exp.column("payload"), _TEXT)
    # One character more than is shown: enough to tell that it was cut.
    sample = exp.Substring(this=payload, start=exp.Literal.number(1),
                           length=exp.Literal.number(SAMPLE_CHARS + 1))  # fmt: skip
    keys = [exp.column("code"), exp.column("field"), exp.column("source")]
    query = (
        exp.select(
            *keys,
            exp.func("COUNT", exp.Star()).as_("events"),
            exp.func("MIN", exp.column("received_at")).as_("first_received_at"),
            exp.func("MAX", exp.column("received_at")).as_("last_received_at"),
            exp.func("MIN", exp.column("message")).as_("message"),
            exp.func("MIN", sample).as_("sample"),
            exp.func("COUNT", exp.column("replayed_at")).as_("replayed"),
        )
        .from_("failed_events")
        .group_by(*keys)
        .order_by(exp.Ordered(this=exp.column("events"), desc=True), *keys)
    )
    found = store.query(query.sql(dialect=store.dialect))
    return [
        {
            **row,
            "events": int(row["events"]),
            "replayed": int(row["replayed"]),
            "sample": _truncated(row["sample"]),
        }
        for row in found.to_pylist()
    ]


def expression(text: str, dialect: str, option: str) -> exp.Expr:
    """``text`` as one SQL expression over a row of ``failed_events``, or a
    :class:`ReplayError` that says what is wrong with it."""
    columns = ", ".join(schema.FAILED_EVENTS.names)
    try:
        parsed = [node for node in sqlglot.parse(text, read=dialect) if node is not None]
    except (ParseError, TokenError) as exc:
        raise ReplayError(
            f"{option} does not parse as {dialect} SQL: {_first(exc)}",
            hint=f"write one expression over the columns {columns}",
        ) from None
    if len(parsed) != 1:
        raise ReplayError(
            f"{option} holds {len(parsed)} statements; it is one expression (no ';')",
            hint=f"write one expression over the columns {columns}",
        )
    node = parsed[0]
    refused = _refused(node)
    if refused is not None:
        raise ReplayError(
            f"{option} is one expression over the failed event's row, not {refused}",
            hint=f"use only the row's columns ({columns}), literals and functions",
        )
    _check_functions(node, dialect, option)
    for column in node.find_all(exp.Column):
        # Column names are case-insensitive in every engine's SQL (BigQuery's too).
        name, qualifier = column.name.lower(), column.table.lower()
        if name not in schema.FAILED_EVENTS.names or qualifier not in ("", "failed_events"):
            raise ReplayError(
                f"{option} names {column.sql(dialect=dialect)}, which is not a column of "
                "failed_events",
                hint=f"its columns are {columns}",
            )
    return node


def _check_functions(node: exp.Expr, dialect: str, option: str) -> None:
    """Refuse a function not in :data:`FUNCTIONS` (one sqlglot does not know above all:
    it would reach the store as written) and a cast to a type not in :data:`_CAST_TYPES`."""
    for part in node.walk():
        if isinstance(part, exp.Connector) or not isinstance(part, exp.Func):
            if isinstance(part, exp.DataType) and part.this not in _CAST_TYPES:
                raise ReplayError(
                    f"{option} casts to {part.sql(dialect=dialect)}, which a fix does not use",
                    hint="cast to a string, number, boolean, date/time or JSON type",
                )
            continue
        if isinstance(part, FUNCTIONS):
            continue
        name = part.name if isinstance(part, exp.Anonymous) else part.sql_name()
        raise ReplayError(
            f"{option} calls {name}, which is not one of the functions a fix may call",
            hint="use string, JSON, math, date/time and conditional functions and CAST "
            "(REPLACE, CONCAT, SUBSTR, LENGTH, STRPOS, REGEXP_REPLACE, JSON_VALUE, "
            "COALESCE, IF, CASE, ...) over the row's columns",
        )


def _refused(node: exp.Expr) -> str | None:
    """What in ``node`` makes it more than an expression over one row, in words."""
    for part in node.walk():
        if isinstance(part, exp.Query | exp.Subquery):
            return "a query or subquery"
        if isinstance(part, exp.Table | exp.From | exp.Join):
            return "a table"
        if isinstance(part, exp.DML | exp.DDL | exp.Command | exp.Transaction | exp.Set):
            return f"a {part.key.upper()} statement"
        if isinstance(part, exp.Parameter | exp.Placeholder):
            return "a parameter"
        if isinstance(part, exp.Star):
            return "*"
        if isinstance(part, exp.AggFunc | exp.Window):
            return "an aggregate or window function"
    return None


@dataclass(frozen=True)
class Choice:
    """Which failed events a replay takes, and the fix of their payloads."""

    code: str | None = None
    where: str | None = None
    fix: str | None = None


def chosen(store: Engine, dialect: str, choice: Choice) -> pa.Table:
    """The failed events ``choice`` takes that are not replayed yet, oldest first, with
    their payload as text and ``fixed``, the payload ``--fix`` makes of it."""
    if choice.code is not None and not _CODE.fullmatch(choice.code):
        raise ReplayError(
            f"{choice.code!r} is not a failed event's code",
            hint="codes are lower-case words with underscores, as `headwater failed` lists",
        )
    payload = exp.cast(exp.column("payload"), _TEXT)
    row = exp.select(
        *(exp.column(c) for c in schema.FAILED_EVENTS.names if c != "payload"),
        payload.as_("payload"),
    ).from_("failed_events")
    fixed: exp.Expr = exp.column("payload")
    if choice.fix is not None:
        fixed = exp.cast(expression(choice.fix, dialect, "--fix"), _TEXT)
    conditions: list[exp.Expr] = [exp.column("replayed_at").is_(exp.null())]
    if choice.code is not None:
        conditions.append(exp.column("code").eq(exp.Literal.string(choice.code)))
    if choice.where is not None:
        conditions.append(exp.paren(expression(choice.where, dialect, "--where")))
    query = (
        exp.select(
            *(exp.column(c) for c in ("id", "source", "received_at", "code", "field", "message")),
            exp.column("payload"),
            fixed.as_("fixed"),
        )
        .from_(row.subquery("failed_events"))
        .where(exp.and_(*conditions))
        .order_by(exp.column("received_at"), exp.column("id"))
    )
    source = "\n".join(text for text in (choice.where, choice.fix) if text)
    parsed = sql.Query(query, frozenset({"failed_events"}), frozenset(), source, "--where/--fix",
                       dialect)  # fmt: skip
    return store.query(sql.render(parsed, store.dialect))


def replay(
    store: Engine,
    validator: Validator,
    commit: Commit | None,
    dialect: str,
    choice: Choice,
    suppression: Suppression | None = None,
) -> dict[str, Any]:
    """Replay the failed events of ``choice`` (``commit`` ``None``: a dry run, which writes
    nothing); what passed and was stored, and what still fails, grouped like
    :func:`groups`. The events of ids on ``suppression`` are not stored."""
    rows = chosen(store, dialect, choice).to_pylist()
    passing: dict[_Key, _Group] = {}
    failing: dict[_Key, _Group] = {}
    ready: list[tuple[dict[str, Any], list[EventRow]]] = []
    passed = suppressed = 0
    for row in rows:
        received = to_us(row["received_at"])
        outcome = revalidate(validator, row["id"], row["source"], received, row["fixed"])
        if isinstance(outcome, StillFailing):
            key = (outcome.code, outcome.field, row["source"])
            failing.setdefault(key, _Group(outcome.message)).add(row)
        else:
            passing.setdefault((row["code"], row["field"], row["source"]), _Group()).add(row)
            passed += 1
            events, dropped = _unsuppressed(suppression, outcome)
            suppressed += dropped
            if events:
                ready.append((row, events))
    stored = duplicates = 0
    if commit is not None:
        for part in _chunks(ready):
            new, again = commit(_events(part), [row["id"] for row, _ in part])
            stored += new
            duplicates += again
    return {
        "dry_run": commit is None,
        "selected": len(rows),
        "passed": passed,
        "events": sum(len(events) for _, events in ready),
        "suppressed": suppressed,
        "stored": stored,
        "duplicates": duplicates,
        "passing": [group.report(key, ids=False) for key, group in passing.items()],
        "still_failing": [group.report(key) for key, group in failing.items()],
    }


def _unsuppressed(
    suppression: Suppression | None, events: list[EventRow]
) -> tuple[list[EventRow], int]:
    """``events`` without those of erased ids, as the collector filters them, and how many
    were left out."""
    if suppression is None:
        return events, 0
    kept: pa.Table | list[EventRow]
    kept, _, dropped = suppression.filter(events, None)
    assert isinstance(kept, list)  # rows in, rows out
    return kept, dropped


#: A group of failed events: (code, field, source).
_Key = tuple[str, str | None, str | None]


def _chunks(
    ready: list[tuple[dict[str, Any], list[EventRow]]],
) -> Iterator[list[tuple[dict[str, Any], list[EventRow]]]]:
    """At most :data:`CHUNK` failed events per commit, of one source each (the collector's
    metrics count a commit's events by source)."""
    by_source: dict[str, list[tuple[dict[str, Any], list[EventRow]]]] = {}
    for item in ready:
        by_source.setdefault(item[0]["source"], []).append(item)
    for items in by_source.values():
        for start in range(0, len(items), CHUNK):
            yield items[start : start + CHUNK]


class _Group:
    """Failed events of one (code, field, source) in a replay's report."""

    def __init__(self, message: str | None = None) -> None:
        self.message = message
        self.count = 0
        self.ids: list[str] = []
        self.first: datetime | None = None
        self.last: datetime | None = None
        self.sample: str | None = None

    def add(self, row: dict[str, Any]) -> None:
        self.count += 1
        if len(self.ids) < _IDS:
            self.ids.append(row["id"])
        at = row["received_at"]
        self.first = at if self.first is None else min(self.first, at)
        self.last = at if self.last is None else max(self.last, at)
        if self.sample is None:
            self.sample = _truncated(row["fixed"])
        if self.message is None:
            self.message = row["message"]

    def report(
        self, key: tuple[str, str | None, str | None], *, ids: bool = True
    ) -> dict[str, Any]:
        code, field, source = key
        found: dict[str, Any] = {
            "code": code,
            "field": field,
            "source": source,
            "events": self.count,
            "first_received_at": self.first,
            "last_received_at": self.last,
            "message": self.message,
            "sample": self.sample,
        }
        if ids:
            found["ids"] = self.ids
        return found


def _events(part: list[tuple[dict[str, Any], list[EventRow]]]) -> pa.Table:
    """The events of some failed events, ``first_received_at`` when they first arrived
    (``received_at`` is stamped when they are committed)."""
    table = rows_table([event for _, events in part for event in events], schema.EVENTS)
    first = table.schema.get_field_index("first_received_at")
    return table.set_column(first, schema.EVENTS.field(first), table["received_at"])


def _stamped(events: pa.Table, received_us: int) -> pa.Table:
    index = events.schema.get_field_index("received_at")
    at = pa.array([received_us] * events.num_rows, pa.int64()).cast(schema.TIMESTAMP)
    return events.set_column(index, schema.EVENTS.field(index), at)


def _marks(ids: list[str], replayed_us: int) -> pa.Table:
    at = pa.array([replayed_us] * len(ids), pa.int64()).cast(schema.TIMESTAMP)
    return pa.Table.from_arrays([pa.array(ids, pa.string()), at], schema=schema.REPLAYED)


def through_writer(writer: Writer) -> Commit:
    """Commits in the collector's group commit, as its requests are (the server that owns
    the store: its writer is the one that writes it)."""

    def commit(events: pa.Table, ids: list[str]) -> tuple[int, int]:
        stamp = now_us()
        outcome = writer.commit(_stamped(events, stamp), stamp, replayed=_marks(ids, stamp))
        return outcome.stored, outcome.duplicates

    return commit


def to_store(store: Engine) -> Commit:
    """Commits straight into ``store`` (no server owns it). On a store that collectors of
    other processes share, this one publishes an arrival floor while it commits, as a
    collector does: a pipeline elsewhere waits for the events it stamps."""

    def commit(events: pa.Table, ids: list[str]) -> tuple[int, int]:
        floors = store.floors
        collector = f"replay:{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        if floors is not None:
            floors.publish(collector, now_us())
        try:
            stamp = now_us()
            batch = IngestBatch(_stamped(events, stamp), schema.FAILED_EVENTS.empty_table(),
                                replayed=_marks(ids, stamp))  # fmt: skip
            new = int(pc.sum(store.ingest(batch)).as_py() or 0)
        finally:
            if floors is not None:
                floors.retire(collector)
        return new, events.num_rows - new

    return commit


def _truncated(text: str | None) -> str | None:
    if text is None or len(text) <= SAMPLE_CHARS:
        return text
    return text[:SAMPLE_CHARS] + "…"


def _first(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__
