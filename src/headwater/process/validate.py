"""Check a project's pipelines without running them, and say every problem with its place.

Each file is loaded as a run loads it (header, SQL, the header's rules) and
translated to the engine's dialect; then the pipelines are checked as a graph
(unknown inputs, cycles, sinks) and, in dependency order, each query's columns
against what it reads: ``events`` and ``failed_events`` from the store's
schema, an upstream SQL pipeline's output from its own query (sqlglot's
``qualify`` and ``annotate_types``), a Python pipeline's from its ``schema=``.
A Python pipeline that declares none has an unknown output, so its readers'
columns are not checked: a guess would report problems that are not there.
One broken file never stops the others from being checked.

>>> import tempfile
>>> folder = Path(tempfile.mkdtemp())
>>> _ = (folder / "plans.sql").write_text("SELECT user_id, plan FROM events")
>>> [(p.line, p.column, p.message) for p in validate(folder, "bigquery", "duckdb").problems]
[(1, 17, 'events has no column plan (nearest: type)')]
"""

from __future__ import annotations

import dataclasses
import difflib
import logging
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel, ParseError, UnsupportedError
from sqlglot.optimizer.annotate_types import annotate_types
from sqlglot.optimizer.qualify import qualify
from sqlglot.optimizer.resolver import Resolver
from sqlglot.optimizer.scope import Scope, traverse_scope
from sqlglot.schema import MappingSchema

from headwater.core.errors import HeadwaterError
from headwater.process import sql
from headwater.process.definition import BUILTIN_TABLES, Pipeline, load_file
from headwater.process.errors import PipelineError
from headwater.process.graph import pipeline_files
from headwater.process.header import split_header
from headwater.process.settings import HEADER_KEYS
from headwater.store import schema as tables

log = logging.getLogger(__name__)

#: The JSON columns of the event tables, where a track's properties and an identify's
#: traits live.
_JSON_HOMES = ("properties", "traits", "context")
_TEMPORAL = {
    exp.DataType.Type.DATE,
    exp.DataType.Type.DATETIME,
    *exp.DataType.TEMPORAL_TYPES,
}
_PLAIN_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


@dataclass(frozen=True)
class Problem:
    """One problem: where it is (1-based line and column; 1 when only the file is known),
    what it is, and the fix."""

    path: str
    line: int
    column: int
    message: str
    hint: str | None = None
    pipeline: str | None = None


@dataclass
class Report:
    """What :func:`validate` found: the pipeline files it read and every problem."""

    files: int = 0
    problems: list[Problem] = field(default_factory=list)

    @property
    def broken(self) -> int:
        """How many files have at least one problem."""
        return len({p.path for p in self.problems})


def validate(
    folder: Path,
    dialect: str,
    engine_dialect: str,
    sinks: Mapping[str, bool] | None = None,
) -> Report:
    """Check every pipeline file in ``folder``, written in ``dialect``, for an engine that
    runs ``engine_dialect``. ``sinks`` are the declared sinks, each with whether it
    upserts by the pipeline's key (a PostgreSQL table). Nothing is run or opened."""
    files = pipeline_files(folder)
    report = Report(files=len(files))
    add = report.problems.append
    present = {path.stem for path in files}
    loaded: dict[str, Pipeline] = {}
    for path in files:
        try:
            pipeline = load_file(path, dialect)
        except PipelineError as exc:
            add(_from_error(exc, path, dialect))
            continue
        except (HeadwaterError, OSError, UnicodeDecodeError) as exc:
            add(Problem(str(path), 1, 1, str(exc), getattr(exc, "hint", None), path.stem))
            continue
        if pipeline.name in loaded:
            other = loaded[pipeline.name].path.name
            add(
                _at(
                    pipeline,
                    f"two pipelines are named {pipeline.name}",
                    f"rename {other} or {path.name}",
                )
            )
            continue
        loaded[pipeline.name] = pipeline
        if pipeline.query is not None:
            try:
                sql.render(pipeline.query, engine_dialect)
            except PipelineError as exc:
                problem = _from_error(exc, path, dialect, header=False)
                place = _refused_at(pipeline.query, engine_dialect)
                if place is not None:
                    problem = dataclasses.replace(problem, line=place[0], column=place[1])
                add(problem)
    for pipeline in loaded.values():
        report.problems.extend(_unknown_inputs(pipeline, present))
        report.problems.extend(_sink_problems(pipeline, sinks or {}))
    order, cycles = _order(loaded)
    for cycle in cycles:
        first = loaded[cycle[0]]
        line, column = _reference(first, cycle[1])
        add(
            Problem(
                str(first.path),
                line,
                column,
                f"pipelines read each other in a cycle: {' -> '.join(cycle)}",
                "break the cycle: a pipeline cannot read its own output, even indirectly",
                first.name,
            )
        )
    schema = _event_tables()
    for name in order:
        pipeline = loaded[name]
        output = None
        if pipeline.query is not None:
            output = _check_columns(pipeline, schema, dialect, report.problems)
        elif pipeline.function is not None and pipeline.function.schema is not None:
            output = {f.name: _sql_type(f) for f in pipeline.function.schema}
        if output is not None:
            schema.add_table(exp.Table(this=exp.to_identifier(name)), output, dialect=dialect)
        report.problems.extend(_output_problems(pipeline, output, dialect))
    # sqlglot may list one reference twice (a GROUP BY that repeats a SELECT expression),
    # and say one thing on several lines; a problem is one line.
    found = {dataclasses.replace(p, message=_one_line(p.message)) for p in report.problems}
    report.problems = sorted(found, key=lambda p: (p.path, p.line, p.column, p.message))
    return report


def _one_line(message: str) -> str:
    kept: list[str] = []
    for line in message.splitlines():
        line = line.strip()
        if line and not any(line in earlier for earlier in kept):
            kept.append(line)
    return "; ".join(kept)


# -- one file -------------------------------------------------------------------------


def _from_error(exc: PipelineError, path: Path, dialect: str, *, header: bool = True) -> Problem:
    """A loading error as a problem; a SQL parse error also gets its column, the breach of
    a header rule (``header``) the place of the key it names."""
    message = exc.message
    prefix = f"{exc.path}:{exc.line}: " if exc.path and exc.line else f"{exc.path}: "
    message = message.removeprefix(prefix)
    line, column = exc.line or 1, 1
    if path.suffix == ".sql" and message.startswith("the SQL does not parse"):
        column = _parse_column(path, dialect) or 1
    elif exc.line is None and header:
        # A rule of the header: point at the first key it names (an incremental pipeline's
        # rule, at its kind).
        named = ((re.search(rf"\b{k}\b", message), k) for k in HEADER_KEYS)
        keys = [k for _, k in sorted((m.start(), k) for m, k in named if m)]
        for key in [*keys, *(["kind"] if "incremental" in message else [])]:
            place = _key_place(path, key)
            if place != (1, 1):
                line, column = place
                break
    return Problem(str(path), line, column, message, exc.hint, path.stem)


def _parse_column(path: Path, dialect: str) -> int | None:
    try:
        _, body = split_header(path.read_text("utf-8"), str(path))
        sqlglot.parse(body, read=dialect)
    except ParseError as exc:
        first = exc.errors[0] if exc.errors else {}
        col, highlight = first.get("col"), first.get("highlight") or ""
        if isinstance(col, int):
            return max(1, col - len(highlight) + 1)
    except Exception:  # noqa: S110 - the loading error is reported either way
        pass
    return None


def _refused_at(query: sql.Query, engine_dialect: str) -> tuple[int, int] | None:
    """Where the innermost construct the engine's dialect refuses was written."""
    refused: list[tuple[int, exp.Expr]] = []
    for node in query.expression.walk():
        try:
            node.sql(dialect=engine_dialect, unsupported_level=ErrorLevel.RAISE)
        except UnsupportedError:
            refused.append((sum(1 for _ in node.walk()), node))
        except Exception:  # noqa: S112 - a fragment may not render alone
            continue
    for _, node in sorted(refused, key=lambda pair: pair[0]):
        starts = [n.meta["start"] for n in node.walk() if isinstance(n.meta.get("start"), int)]
        if starts:
            start = min(starts)
            source = query.source
            return source.count("\n", 0, start) + 1, start - source.rfind("\n", 0, start)
    return None


def _at(pipeline: Pipeline, message: str, hint: str | None, key: str | None = None) -> Problem:
    """A problem of ``pipeline`` at its header's ``key`` (or the file's top)."""
    line, column = _key_place(pipeline.path, key) if key else (1, 1)
    return Problem(str(pipeline.path), line, column, message, hint, pipeline.name)


def _key_place(path: Path, key: str) -> tuple[int, int]:
    """Where a header key (``key = ...``, or ``key=...`` in a decorator) is written."""
    pattern = re.compile(rf"(?<![\w.]){re.escape(key)}\s*=")
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError):
        return 1, 1
    opening = text.find("/* headwater")
    if path.suffix == ".sql":  # the header only: `kind = ...` may also be SQL
        text = text[: text.find("*/", opening)] if opening >= 0 else ""
    for number, line in enumerate(text.splitlines(), start=1):
        found = pattern.search(line)
        if found:
            return number, found.start() + 1
    return 1, 1


def _place(node: exp.Expression, source: str) -> tuple[int, int]:
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


# -- the graph --------------------------------------------------------------------------


def _unknown_inputs(pipeline: Pipeline, present: set[str]) -> Iterable[Problem]:
    known = present | BUILTIN_TABLES
    for name in sorted(pipeline.inputs - known):
        line, column = _reference(pipeline, name)
        close = difflib.get_close_matches(name, sorted(known), n=1)
        hint = f"did you mean {close[0]}?" if close else f"known names: {', '.join(sorted(known))}"
        yield Problem(
            str(pipeline.path),
            line,
            column,
            f"reads {name}, which is neither a table nor a pipeline",
            hint,
            pipeline.name,
        )


def _reference(pipeline: Pipeline, name: str) -> tuple[int, int]:
    """Where ``pipeline`` names the table ``name`` (a Python pipeline: its ``inputs``)."""
    if pipeline.query is None:
        return _key_place(pipeline.path, "inputs")
    for table in pipeline.query.expression.find_all(exp.Table):
        if table.name == name:
            return _place(table.this, pipeline.query.source)
    return 1, 1


def _sink_problems(pipeline: Pipeline, sinks: Mapping[str, bool]) -> Iterable[Problem]:
    for name in pipeline.header.sinks:
        if name not in sinks:
            known = ", ".join(sorted(sinks)) or "none yet"
            yield _at(
                pipeline,
                f"sinks names {name}, which is not a [sinks.{name}] table in "
                f"headwater.toml (declared: {known})",
                f'add [sinks.{name}] with type = "files", "postgres" or "webhook"',
                "sinks",
            )
        elif sinks[name] and not pipeline.header.key:
            yield _at(
                pipeline,
                f"sink {name} is a PostgreSQL table, upserted by key, and this pipeline "
                "declares no key",
                'declare the output\'s key in the header: key = ["user_id"]',
                "sinks",
            )


def _order(pipelines: Mapping[str, Pipeline]) -> tuple[list[str], list[list[str]]]:
    """Pipelines in an order where inputs come first, leaving out those in a cycle (and what
    reads them); and each cycle once, as the path that closes it."""
    order: list[str] = []
    state: dict[str, str] = {}
    cycles: list[list[str]] = []
    cyclic: set[str] = set()

    def visit(name: str, path: list[str]) -> bool:
        """Whether ``name`` could be ordered (it is not in or after a cycle)."""
        if state.get(name) == "done":
            return name not in cyclic
        if state.get(name) == "visiting":
            loop = [*path[path.index(name) :], name]
            cycles.append(loop)
            cyclic.update(loop)
            return False
        state[name] = "visiting"
        fine = True
        for parent in sorted(pipelines[name].inputs & pipelines.keys()):
            fine = visit(parent, [*path, name]) and fine
        state[name] = "done"
        if fine:
            order.append(name)
        else:
            cyclic.add(name)
        return fine

    for name in sorted(pipelines):
        visit(name, [])
    return order, cycles


# -- columns ----------------------------------------------------------------------------


def _event_tables() -> MappingSchema:
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


def _sql_type(column: pa.Field) -> exp.DataType:
    kind = column.type
    if pa.types.is_timestamp(kind):
        return exp.DataType.build("TIMESTAMPTZ" if kind.tz else "TIMESTAMP")
    for test, name in _ARROW_TYPES:
        if test(kind):
            return exp.DataType.build(name)
    return exp.DataType.build("UNKNOWN")


def _check_columns(
    pipeline: Pipeline, schema: MappingSchema, dialect: str, problems: list[Problem]
) -> dict[str, exp.DataType] | None:
    """Report every unknown column of a SQL pipeline; return its output's columns and
    types, or ``None`` when they cannot be known."""
    assert pipeline.query is not None
    source = pipeline.query.source
    tree = pipeline.query.expression.copy()
    for table in tree.find_all(exp.Table):
        table.set("db", None)
        table.set("catalog", None)
    try:
        tree = qualify(
            tree,
            dialect=dialect,
            schema=schema,
            validate_qualify_columns=False,
            allow_partial_qualification=True,
            quote_identifiers=False,
            identify=False,
        )
        tree = annotate_types(tree, schema=schema, dialect=dialect)
        scopes = list(traverse_scope(tree))
    except Exception as exc:
        # sqlglot could not follow this query; the engine will say what it thinks of it.
        log.debug("%s: columns not checked (%s)", pipeline.path, exc)
        return None
    for scope in scopes:
        for column in scope.columns:
            problem = _column_problem(column, scope, schema, dialect)
            if problem is not None:
                message, hint = problem
                line, col = _place(column.this, source)
                problems.append(
                    Problem(str(pipeline.path), line, col, message, hint, pipeline.name)
                )
    for column in tree.find_all(exp.Column):
        if isinstance(column.parent, exp.Dot) and column.parent.this is column:
            problem = _json_field(column, dialect)
            if problem is not None:
                line, col = _place(column.this, source)
                problems.append(Problem(str(pipeline.path), line, col, *problem, pipeline.name))
    if any(_unexpanded_star(select) for select in tree.selects):
        return None
    return {
        select.alias_or_name: select.type or exp.DataType.build("UNKNOWN")
        for select in tree.selects
    }


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


# -- the output -------------------------------------------------------------------------


def _output_problems(
    pipeline: Pipeline, output: Mapping[str, exp.DataType] | None, dialect: str
) -> Iterable[Problem]:
    """The header's columns (time_column, key, audits) against the output's."""
    if output is None:
        return
    columns = {name.lower(): name for name in output}
    header = pipeline.header

    def missing(column: str, key: str, role: str) -> Problem:
        near = difflib.get_close_matches(column, list(output), n=1, cutoff=0.6)
        hint = f"did you mean {near[0]}?" if near else f"columns: {', '.join(output)}"
        return _at(
            pipeline,
            f"{key} names {column}, which is not a column of the output ({role})",
            hint,
            key,
        )

    if pipeline.incremental and header.time_column:
        found = columns.get(header.time_column.lower())
        if found is None:
            yield missing(header.time_column, "time_column", "each row's time")
        else:
            kind = output[found]
            if kind.this not in _TEMPORAL and not kind.is_type(exp.DataType.Type.UNKNOWN):
                yield _at(
                    pipeline,
                    f"time_column {found} is {kind.sql(dialect)}, not a date or timestamp",
                    f"select the interval's time in {found}, e.g. "
                    "TIMESTAMP_TRUNC(received_at, HOUR)",
                    "time_column",
                )
    for column in header.key:
        if column.lower() not in columns:
            yield missing(column, "key", "the output's key")
    for audit in header.audits:
        named = [*(audit.not_null or []), *(audit.unique or [])]
        if audit.accepted_values is not None:
            named.append(audit.accepted_values.column)
        for column in named:
            if column.lower() not in columns:
                yield missing(column, "audits", "an audit")
