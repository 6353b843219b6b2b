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
import re
from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from sqlglot import exp

from headwater.core.errors import HeadwaterError
from headwater.process import columns, sql
from headwater.process.definition import BUILTIN_TABLES, Pipeline, load_file
from headwater.process.errors import PipelineError
from headwater.process.graph import cycles, ordered, pipeline_files
from headwater.process.header import body_of, split_header
from headwater.process.settings import HEADER_KEYS

_TEMPORAL = {
    exp.DataType.Type.DATE,
    exp.DataType.Type.DATETIME,
    *exp.DataType.TEMPORAL_TYPES,
}


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
    models: Collection[str] | None = None,
    keyed_by_sink: Mapping[str, Collection[str]] | None = None,
) -> Report:
    """Check every pipeline file in ``folder``, written in ``dialect``, for an engine that
    runs ``engine_dialect``. ``sinks`` are the declared sinks, each with whether it
    upserts by the pipeline's key (a PostgreSQL table); ``keyed_by_sink`` the pipelines
    such a sink keys by its own columns instead (its ``latest``), by sink; ``models`` the
    declared models (``None``: not checked). Nothing is run or opened, no model file
    read."""
    files = pipeline_files(folder)
    report = Report(files=len(files))
    add = report.problems.append
    present = {path.stem for path in files}
    loaded: dict[str, Pipeline] = {}
    # SQL files whose header is broken: their query is still checked.
    headless: dict[Path, sql.Query] = {}
    for path in files:
        try:
            pipeline = load_file(path, dialect)
        except PipelineError as exc:
            add(_from_error(exc, path))
            query = _despite_header(path, dialect, engine_dialect, add)
            if query is not None:
                headless[path] = query
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
                add(_from_error(exc, path, header=False))
    for pipeline in loaded.values():
        report.problems.extend(_unknown_inputs(pipeline, present))
        report.problems.extend(_sink_problems(pipeline, sinks or {}, keyed_by_sink or {}))
        if models is not None:
            report.problems.extend(_model_problems(pipeline, models))
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
    schema = columns.event_tables()
    for name in order:
        pipeline = loaded[name]
        output = None
        if pipeline.query is not None:
            findings, output = columns.check(pipeline.query, schema, dialect)
            for f in findings:
                add(Problem(str(pipeline.path), f.line, f.column, f.message, f.hint, name))
            if pipeline.header.model is not None:
                # A model appends its outputs, named in headwater.toml, which this does not
                # read: the output's columns are unknown, like an undeclared Python one's.
                output = None
        elif pipeline.function is not None and pipeline.function.schema is not None:
            output = columns.sql_types(pipeline.function.schema)
        if output is not None:
            schema.add_table(exp.Table(this=exp.to_identifier(name)), output, dialect=dialect)
        report.problems.extend(_output_problems(pipeline, output, dialect))
    for path, query in headless.items():
        findings, _ = columns.check(query, schema, dialect)
        for f in findings:
            add(Problem(str(path), f.line, f.column, f.message, f.hint, path.stem))
    # sqlglot says some things on several lines; a problem is one line.
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


def _from_error(exc: PipelineError, path: Path, *, header: bool = True) -> Problem:
    """A loading error as a problem; a SQL parse error also gets its column, the breach of
    a header rule (``header``) the place of the key it names."""
    message = exc.problem
    line, column = exc.line or 1, exc.column or 1
    if exc.line is None and header:
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


def _despite_header(
    path: Path, dialect: str, engine_dialect: str, add: Callable[[Problem], None]
) -> sql.Query | None:
    """A SQL file's query when its header is what failed to load (the header's problem is
    reported already): its SQL's own problems are reported too, not after the header is
    fixed. ``None`` when the header is not what failed, or the SQL does not parse."""
    if path.suffix != ".sql":
        return None
    try:
        text = path.read_text("utf-8")
    except (OSError, UnicodeDecodeError):
        return None
    try:
        split_header(text, str(path))
    except PipelineError:
        pass
    else:
        return None  # the header loads: the problem reported was the SQL's or a rule's
    try:
        query = sql.parse(body_of(text), dialect, str(path))
        sql.render(query, engine_dialect)
    except PipelineError as exc:
        add(_from_error(exc, path, header=False))
        return None
    return query


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
            return columns.place(table.this, pipeline.query.source)
    return 1, 1


def _model_problems(pipeline: Pipeline, models: Collection[str]) -> Iterable[Problem]:
    """The models a pipeline scores with are declared in headwater.toml."""
    used = [pipeline.header.model] if pipeline.header.model else []
    if pipeline.function is not None:
        used = list(pipeline.function.models)
    for name in used:
        if name not in models:
            known = ", ".join(sorted(models)) or "none yet"
            yield _at(
                pipeline,
                f"scores with model {name}, which is not a [models.{name}] table in "
                f"headwater.toml (declared: {known})",
                f'add [models.{name}] with path = "models/{name}.onnx", inputs and outputs',
                "model",
            )


def _sink_problems(
    pipeline: Pipeline, sinks: Mapping[str, bool], keyed: Mapping[str, Collection[str]]
) -> Iterable[Problem]:
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
        elif sinks[name] and not pipeline.header.key and pipeline.name not in keyed.get(name, ()):
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
    found = cycles(pipelines)
    left_out = {name for cycle in found for name in cycle}
    for name in ordered({n: p for n, p in pipelines.items() if n not in left_out}):
        if pipelines[name].inputs & left_out:
            left_out.add(name)
    return ordered({n: p for n, p in pipelines.items() if n not in left_out}), found


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
