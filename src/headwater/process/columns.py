"""The columns a SQL pipeline reads, checked against its inputs' schemas, and the columns
it outputs, for ``headwater validate``.

sqlglot's ``qualify`` resolves each column to its source (without its own
validation, which stops at the first problem), ``annotate_types`` gives the
output's types. A column is reported only when every source it could come from
has known columns: an unknown schema means no check rather than a guess.

>>> q = sql.parse("SELECT user_idd, COUNT(*) AS n FROM events GROUP BY 1", "bigquery", "x")
>>> findings, output = check(q, event_tables(), "bigquery")
>>> [(f.line, f.column, f.message, f.hint) for f in findings]
[(1, 8, 'events has no column user_idd (nearest: user_id)', 'did you mean user_id?')]
>>> {name: kind.sql() for name, kind in output.items()}
{'user_idd': 'UNKNOWN', 'n': 'BIGINT'}
"""

from __future__ import annotations

import difflib
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass

import pyarrow as pa
from sqlglot import exp
from sqlglot.optimizer.annotate_types import annotate_types
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.resolver import Resolver
from sqlglot.optimizer.scope import Scope, traverse_scope
from sqlglot.schema import MappingSchema

from headwater.process import sql
from headwater.store import schema as tables

log = logging.getLogger(__name__)

_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Finding:
    """A column problem: where (1-based), what, and the fix."""

    line: int
    column: int
    message: str
    hint: str


def place(node: exp.Expression, source: str) -> tuple[int, int]:
    """The line and column a parsed name was written at."""
    meta = (
        node.meta
        if node.meta
        else (node.this.meta if isinstance(node.this, exp.Expression) else {})
    )
    start, line = meta.get("start"), meta.get("line")
    if isinstance(start, int):
        return source.count("\n", 0, start) + 1, start - source.rfind("\n", 0, start)
    return (line if isinstance(line, int) else 1), 1


def event_tables() -> MappingSchema:
    """``events`` and ``failed_events`` with their columns' types (store/schema.py)."""
    schema = MappingSchema()
    for name, arrow in (("events", tables.EVENTS), ("failed_events", tables.FAILED_EVENTS)):
        schema.add_table(name, {f.name: _event_type(f) for f in arrow})
    return schema


def _event_type(column: pa.Field) -> exp.DataType:
    if column.name in tables.JSON_COLUMNS:
        return exp.DataType.build("JSON")
    return _sql_type(column)


#: Arrow's types as SQL's, for the columns a Python pipeline declares.
_ARROW_TYPES = (
    (pa.types.is_boolean, "BOOLEAN"),
    (pa.types.is_uint64, "UBIGINT"),
    (pa.types.is_integer, "BIGINT"),
    (pa.types.is_floating, "DOUBLE"),
    (pa.types.is_decimal, "DECIMAL"),
    (pa.types.is_string, "TEXT"),
    (pa.types.is_large_string, "TEXT"),
    (pa.types.is_binary, "BINARY"),
    (pa.types.is_date, "DATE"),
)


def sql_types(schema: pa.Schema) -> dict[str, exp.DataType]:
    """An Arrow schema's columns with their SQL types (``UNKNOWN`` where there is none)."""
    return {column.name: _sql_type(column) for column in schema}


def _sql_type(column: pa.Field) -> exp.DataType:
    kind = column.type
    if pa.types.is_timestamp(kind):
        return exp.DataType.build("TIMESTAMPTZ" if kind.tz else "TIMESTAMP")
    for test, name in _ARROW_TYPES:
        if test(kind):
            return exp.DataType.build(name)
    return exp.DataType.build("UNKNOWN")


def check(
    query: sql.Query, schema: MappingSchema, dialect: str
) -> tuple[list[Finding], dict[str, exp.DataType] | None]:
    """Every unknown column ``query`` reads, and its output's columns and types (``None``
    when they cannot be known: a ``*`` over an unknown source, or SQL sqlglot cannot
    follow, which the engine will judge)."""
    source = query.source
    tree = query.expression.copy()
    for table in tree.find_all(exp.Table):
        table.set("db", None)
        table.set("catalog", None)
    try:
        tree = qualify(
            tree,
            dialect=dialect,
            schema=schema,
            validate_qualify_columns=False,  # it raises on the first problem; all are wanted
            allow_partial_qualification=True,
            quote_identifiers=False,
            identify=False,
        )
        tree = annotate_types(tree, schema=schema, dialect=dialect)
        scopes = list(traverse_scope(tree))
    except Exception as exc:
        log.debug("%s: columns not checked (%s)", query.path, exc)
        return [], None
    findings = []
    for scope in scopes:
        for column in scope.columns:
            problem = _column_problem(column, scope, schema, dialect)
            if problem is not None:
                findings.append(Finding(*place(column.this, source), *problem))
    for column in tree.find_all(exp.Column):
        if isinstance(column.parent, exp.Dot) and column.parent.this is column:
            problem = _json_field(column, dialect)
            if problem is not None:
                findings.append(Finding(*place(column.this, source), *problem))
    # One reference may be listed twice (GROUP BY 1 repeats the SELECT's expression).
    findings = list(dict.fromkeys(findings))
    if any(_unexpanded_star(select) for select in tree.selects):
        return findings, None
    output = {
        select.alias_or_name: select.type or exp.DataType.build("UNKNOWN")
        for select in tree.selects
    }
    return findings, output


def _unexpanded_star(select: exp.Expr) -> bool:
    """``*`` or ``t.*`` that qualify left as it was: a source whose columns are unknown."""
    return isinstance(select, exp.Star) or (
        isinstance(select, exp.Column) and isinstance(select.this, exp.Star)
    )


def _column_problem(
    column: exp.Column, scope: Scope, schema: MappingSchema, dialect: str
) -> tuple[str, str] | None:
    """What is wrong with one column reference, if anything can be told."""
    name = column.name
    if column.table:
        owner = _owner(scope, column.table)
        if owner is None:
            if _has_unknown_sources(scope, schema):
                return None
            return (
                f"{column.table}.{name}: no table or alias {column.table} in this query",
                f"tables here: {', '.join(sorted(scope.sources)) or 'none'}",
            )
        known = _columns(owner, column.table, schema)
        if known is None or name in known:
            return None
        label = _label(owner, column.table)
        return _unknown(name, {label: known}, _reads_events(owner), dialect)
    scopes = [scope, *_parents(scope)]
    if any(_has_unknown_sources(s, schema) for s in scopes):
        return None
    here = [a for a in scope.sources if name in (_columns(scope, a, schema) or ())]
    if len(here) > 1:
        return (
            f"column {name} is ambiguous: {' and '.join(here)} both have it",
            f"name its table, e.g. {here[0]}.{name}",
        )
    candidates: dict[str, list[str]] = {}
    for each in scopes:
        for alias in each.sources:
            found = _columns(each, alias, schema) or []
            if name in found:
                return None  # a column of the query around this one
            candidates.setdefault(_label(each, alias), found)
    return _unknown(name, candidates, any(_reads_events(s) for s in scopes), dialect)


def _unknown(
    name: str, candidates: Mapping[str, list[str]], events: bool, dialect: str
) -> tuple[str, str]:
    everything = sorted({c for found in candidates.values() for c in found})
    if len(candidates) == 1:
        message = f"{next(iter(candidates))} has no column {name}"
    else:
        message = f"none of {', '.join(sorted(candidates))} has a column {name}"
    near = difflib.get_close_matches(name, everything, n=1, cutoff=0.0)
    message += f" (nearest: {near[0]})" if near else ""
    close = difflib.get_close_matches(name, everything, n=1, cutoff=0.8)
    if close:
        return message, f"did you mean {close[0]}?"
    if events:
        return message, _json_hint([name], dialect)
    return message, f"columns: {', '.join(everything)}"


def _json_field(column: exp.Column, dialect: str) -> tuple[str, str] | None:
    """``properties.plan``: a field read from a JSON column as if it were a struct."""
    if column.type is None or not column.type.is_type(exp.DataType.Type.JSON):
        return None
    path: list[str] = []
    node: exp.Expression = column
    while isinstance(node.parent, exp.Dot) and node.parent.this is node:
        path.append(node.parent.expression.name)
        node = node.parent
    written = ".".join([column.name, *path])
    return (
        f"{written} reads a field of {column.name}, which holds JSON text, not a struct",
        _json_hint(path, dialect, column.name),
    )


def _json_hint(path: list[str], dialect: str, home: str | None = None) -> str:
    json_path = "$" + "".join(
        f".{p}" if _PLAIN_NAME.fullmatch(p) else '."' + p.replace('"', '\\"') + '"' for p in path
    )

    def read(column: str) -> str:
        if dialect == "duckdb":
            return f"{column}->>'{json_path}'"
        return f"JSON_VALUE({column}, '{json_path}')"

    if home is not None:
        return f"read it with {read(home)}"
    return (
        "if it is an event property, it lives in the JSON column properties (traits in "
        f"traits, the rest in context): write {read('properties')}, or {read('traits')} "
        "for a trait"
    )


def _owner(scope: Scope, alias: str) -> Scope | None:
    """The scope, this one or one around it, where ``alias`` names a source."""
    for each in (scope, *_parents(scope)):
        if alias in each.sources:
            return each
    return None


def _label(scope: Scope, alias: str) -> str:
    """How a source is named to a person: a table by its name, a CTE by its own, a
    subquery as one."""
    source = scope.sources.get(alias)
    if isinstance(source, exp.Table):
        return source.name
    if isinstance(source, Scope) and isinstance(source.expression.parent, exp.CTE):
        return alias
    return "the subquery"


def _parents(scope: Scope) -> list[Scope]:
    found = []
    parent = scope.parent
    while parent is not None:
        found.append(parent)
        parent = parent.parent
    return found


def _columns(scope: Scope, alias: str, schema: MappingSchema) -> list[str] | None:
    """The columns of source ``alias`` of ``scope``, or ``None`` when they are unknown."""
    try:
        found = Resolver(scope, schema).get_source_columns(alias)
    except Exception:
        return None
    if not found or "*" in found:
        return None
    return list(found)


def _has_unknown_sources(scope: Scope, schema: MappingSchema) -> bool:
    return any(_columns(scope, alias, schema) is None for alias in scope.sources)


def _reads_events(scope: Scope) -> bool:
    return any(
        isinstance(source, exp.Table) and source.name == "events"
        for source in scope.sources.values()
    )
