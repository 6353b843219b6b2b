"""Pipelines as files: ``pipelines/NAME.sql`` or ``pipelines/NAME.py``, loaded strictly."""

from __future__ import annotations

import ast
import dataclasses
import importlib.util
import inspect
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import cast

import msgspec
from sqlglot import exp

from headwater.core.clock import parse_duration, parse_utc, signed_duration
from headwater.core.errors import ConfigError
from headwater.core.types import Interval, Output
from headwater.process import ranges, sql
from headwater.process.errors import PipelineError
from headwater.process.header import split_header
from headwater.process.models import Model, ModelCatalog, ModelError
from headwater.process.python import PythonPipeline
from headwater.process.schedule import check_schedule
from headwater.process.settings import AUDIT_KEYS, PipelineHeader
from headwater.store.schema import BUILTIN_TABLES as BUILTIN_TABLES


@dataclass(frozen=True)
class Pipeline:
    """One pipeline: its name, header, and either a query or a Python function."""

    name: str
    path: Path
    header: PipelineHeader
    inputs: frozenset[str]
    version: str
    query: sql.Query | None = None
    function: PythonPipeline | None = None
    #: What range of each input the pipeline reads, relative to its interval.
    reads: Mapping[str, ranges.Reads] = field(default_factory=dict)
    #: Inputs read from another table: ``headwater apply`` builds a pipeline's next version
    #: beside the live one, reading its inputs' next versions (see :meth:`beside`).
    tables: Mapping[str, str] = field(default_factory=dict)
    #: The models it scores with, resolved to their artifacts when it loaded: their
    #: versions are part of :attr:`version`.
    models: Mapping[str, Model] = field(default_factory=dict)

    @property
    def kind(self) -> str:
        return "sql" if self.query is not None else "python"

    @property
    def incremental(self) -> bool:
        return self.header.kind == "incremental"

    @property
    def output(self) -> Output:
        """What later stages (delivery, the read API) need to know of this output."""
        time_column = self.header.time_column if self.incremental else None
        return Output(self.name, tuple(self.header.key), time_column)

    def window(self, name: str, column: str, interval: Interval) -> Interval:
        """The range of input ``name``'s ``column`` read when this pipeline runs
        ``interval``: declared in the header, derived from the SQL, or (a Python
        pipeline's undeclared input) the interval itself."""
        reads = self.reads.get(name)
        if reads is None:
            return interval
        return ranges.window(reads, column, interval)

    def beside(self, built: Mapping[str, str]) -> Pipeline:
        """This pipeline built beside its live table, as ``headwater apply`` builds a new
        version: named after its build table (its runs, intervals, lease and output are
        the build's), reading the inputs in ``built`` (live name -> build table) from their
        builds, and delivering nowhere until it is swapped in."""
        renamed = {name: built[name] for name in self.inputs if name in built}
        return dataclasses.replace(
            self,
            name=built[self.name],
            header=msgspec.structs.replace(self.header, sinks=[]),
            inputs=frozenset(renamed.get(name, name) for name in self.inputs),
            reads={renamed.get(name, name): value for name, value in self.reads.items()},
            tables=renamed,
        )

    def start(self) -> datetime | None:
        if self.header.start is None:
            return None
        return parse_utc(self.header.start)


def load_file(
    path: Path,
    dialect: str,
    engine_dialect: str | None = None,
    *,
    models: ModelCatalog | None = None,
) -> Pipeline:
    """Load one pipeline file; with ``engine_dialect``, a SQL pipeline is also compiled
    for that engine, so one the engine cannot answer as written is refused here.

    With ``models`` (``[models]`` of ``headwater.toml``), the models the pipeline scores
    with are resolved to their artifacts, whose versions become part of its version;
    without, their names only (``headwater validate``, which reads no artifact)."""
    name = path.stem
    if path.suffix == ".sql":
        text = path.read_text(encoding="utf-8")
        header, body = split_header(text, str(path))
        query = sql.parse(body, dialect, str(path))
        if engine_dialect is not None and engine_dialect != dialect:
            sql.render(query, engine_dialect)
        used = _models(path, [header.model] if header.model else [], models, text)
        pipeline = Pipeline(
            name=name,
            path=path,
            header=header,
            inputs=query.references,
            version=sql.version(
                header_fingerprint(header)
                + sql.render(query, dialect)
                + sql.corrections(query)
                + _fingerprint(used)
            ),
            query=query,
            models=used,
        )
    elif path.suffix == ".py":
        function = _load_python(path)
        if function.header.model is not None:
            raise PipelineError(
                "model = ... is a SQL pipeline's header key",
                path=str(path),
                hint="a Python pipeline names its models, "
                f'@pipeline(models=["{function.header.model}"]), and scores with '
                "ctx.score(query, name)",
            )
        used = _models(path, list(function.models), models, None)
        pipeline = Pipeline(
            name=name,
            path=path,
            header=function.header,
            inputs=frozenset(function.inputs),
            version=sql.version(
                header_fingerprint(function.header)
                + without_retain(path.read_text("utf-8"))
                + _fingerprint(used)
            ),
            function=function,
            models=used,
        )
    else:
        raise PipelineError("pipelines are .sql or .py files", path=str(path))
    _check(pipeline)
    return dataclasses.replace(pipeline, reads=_reads(pipeline))


def _models(
    path: Path, names: list[str], catalog: ModelCatalog | None, text: str | None
) -> dict[str, Model]:
    """The models ``names`` resolved in ``catalog``; an undeclared model, or one whose
    artifact does not load, is an error of the pipeline naming the model."""
    if catalog is None:
        return {}
    found = {}
    for name in names:
        try:
            found[name] = catalog.get(name)
        except ModelError as exc:
            raise exc.at(path=str(path), line=_line_of_model(text, name)) from None
    return found


def _line_of_model(text: str | None, name: str) -> int | None:
    """The header line of a SQL pipeline that names the model."""
    for number, line in enumerate((text or "").splitlines(), start=1):
        if line.strip().startswith("model") and name in line:
            return number
    return None


def _fingerprint(models: Mapping[str, Model]) -> str:
    # Nothing for a pipeline without models, so their versions stay what they were.
    return "".join(f"\nmodel {m.fingerprint}" for _, m in sorted(models.items()))


def _reads(pipeline: Pipeline) -> dict[str, ranges.Reads]:
    """Each input's reads: the header's declaration, else what the SQL shows."""
    query = pipeline.query
    found = dict(ranges.table_reads(cast(exp.Expression, query.expression))) if query else {}
    for name, offsets in pipeline.header.reads.items():
        if name not in pipeline.inputs:
            raise PipelineError(
                f"reads declares a range of {name!r}, which this pipeline does not read",
                path=str(pipeline.path),
                hint=f"it reads {', '.join(sorted(pipeline.inputs)) or 'nothing'}",
            )
        if len(offsets) != 2:
            raise PipelineError(
                f"reads.{name} is {offsets!r}; it is two offsets, from the interval's start "
                "and from its end",
                path=str(pipeline.path),
                hint=f'e.g. reads = {{ {name} = ["-6d", "0d"] }}',
            )
        try:
            pair = (signed_duration(offsets[0]), signed_duration(offsets[1]))
        except ConfigError as exc:
            raise PipelineError(
                f"reads.{name}: {exc.message}", path=str(pipeline.path), hint=exc.hint
            ) from None
        # The column does not matter: a declared range holds on whatever the input is by.
        found[name] = ranges.declared(pair, ranges.ANY_COLUMN)
    return found


def without_retain(source: str) -> str:
    r"""A Python pipeline's source without the ``retain=...`` argument of its decorator (and
    the comma that joined it): the text its version is made of, so that setting or changing
    how long its output is kept, metadata, leaves the version as it was.

    >>> without_retain('@pipeline(kind="incremental", retain="90d")\ndef f(ctx): ...')
    '@pipeline(kind="incremental")\ndef f(ctx): ...'
    >>> without_retain('@pipeline(retain="9d", kind="full")\ndef f(ctx): ...')
    '@pipeline(kind="full")\ndef f(ctx): ...'
    """
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return source
    lines = source.splitlines(keepends=True)
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line))

    def offset(line: int, column: int) -> int:
        # ast columns count UTF-8 bytes.
        return starts[line - 1] + len(lines[line - 1].encode()[:column].decode())

    for node in ast.walk(tree):
        if not isinstance(node, ast.Call):
            continue
        arguments: list[ast.expr | ast.keyword] = [*node.args, *node.keywords]
        arguments.sort(key=lambda a: (a.lineno, a.col_offset))
        for index, argument in enumerate(arguments):
            if not (isinstance(argument, ast.keyword) and argument.arg == "retain"):
                continue
            end_line, end_column = argument.end_lineno or 0, argument.end_col_offset or 0
            if index > 0:
                # From the end of the argument before it: ", retain=..." goes.
                before = arguments[index - 1]
                cut = offset(before.end_lineno or 0, before.end_col_offset or 0)
                until = offset(end_line, end_column)
            else:
                # The first: "retain=..., " goes, up to the next argument (or the ")").
                cut = offset(argument.lineno, argument.col_offset)
                if index + 1 < len(arguments):
                    following = arguments[index + 1]
                    until = offset(following.lineno, following.col_offset)
                else:
                    until = offset(end_line, end_column)
            return source[:cut] + source[until:]
    return source


def header_fingerprint(header: PipelineHeader) -> str:
    # Only what changes the output: a new description does not make intervals stale.
    return repr((header.kind, header.time, header.time_column, header.schedule, header.audits))


def _check(pipeline: Pipeline) -> None:
    header, path = pipeline.header, str(pipeline.path)
    check_schedule(header.schedule, path)
    for number, audit in enumerate(header.audits, start=1):
        given = [name for name in AUDIT_KEYS if getattr(audit, name) is not None]
        if len(given) != 1:
            raise PipelineError(
                f"audit {number} sets {', '.join(given) or 'nothing'}; an audit is one check",
                path=path,
                hint="write one { ... } per check, e.g. { not_null = [...] }, { unique = [...] }",
            )
    if header.batch_size is not None:
        if header.batch_size < 1:
            raise PipelineError(
                f"batch_size is {header.batch_size}; it is a number of intervals, 1 or more",
                path=path,
                hint="e.g. batch_size = 24 runs a day of hourly intervals as one query",
            )
        if not pipeline.incremental:
            raise PipelineError(
                "batch_size is for incremental pipelines: a full pipeline runs once per tick",
                path=path,
                hint='remove batch_size, or make the pipeline kind = "incremental"',
            )
    if header.start is not None:
        try:
            pipeline.start()
        except ValueError:
            raise PipelineError(
                f"start {header.start!r} is not an ISO date or time", path=path
            ) from None
    if pipeline.incremental:
        if not header.time_column:
            raise PipelineError(
                "an incremental pipeline needs time_column, the output column holding each "
                "row's time",
                path=path,
                hint='add e.g. time_column = "hour" to the header',
            )
        query = pipeline.query
        if query is not None and query.parameters != sql.PARAMETERS:
            raise PipelineError(
                "an incremental pipeline must read only its interval: filter on @start and @end",
                path=path,
                hint=f"e.g. WHERE {header.time} >= @start AND {header.time} < @end",
            )
    if header.retain is not None:
        _check_retain(pipeline)
    if pipeline.name in BUILTIN_TABLES:
        raise PipelineError(f"a pipeline cannot be named {pipeline.name}", path=path)


def _check_retain(pipeline: Pipeline) -> None:
    header, path = pipeline.header, str(pipeline.path)
    if not pipeline.incremental:
        raise PipelineError(
            "retain is for incremental pipelines: a full pipeline's output is replaced whole "
            "by every run, from what its inputs keep",
            path=path,
            hint="remove retain (its inputs' [retention] bounds it), or make it kind = "
            '"incremental"',
        )
    try:
        kept = parse_duration(header.retain or "")
    except ConfigError as exc:
        raise PipelineError(
            f"retain = {header.retain!r}: {exc.message}", path=path, hint=exc.hint
        ) from None
    if kept <= timedelta(0):
        raise PipelineError(f"retain = {header.retain!r} must be longer than nothing", path=path)


def _load_python(path: Path) -> PythonPipeline:
    module_name = f"headwater_pipelines.{path.stem}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    if spec is None or spec.loader is None:
        raise PipelineError("cannot import this file", path=str(path))
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except PipelineError as exc:
        # The decorator's own check: give it the file and the line of the decorator.
        raise PipelineError(
            exc.message.removeprefix("<decorator>: "),
            path=str(path),
            line=_traceback_line(exc, path),
            hint=exc.hint,
        ) from None
    except Exception as exc:
        line = _traceback_line(exc, path)
        raise PipelineError(
            f"importing failed: {type(exc).__name__}: {exc}", path=str(path), line=line
        ) from exc
    found = [value for value in vars(module).values() if isinstance(value, PythonPipeline)]
    if len(found) != 1:
        raise PipelineError(
            f"a Python pipeline file defines exactly one @pipeline function, found {len(found)}",
            path=str(path),
            hint="decorate one function with @pipeline(...) from headwater.process",
        )
    return found[0]


def _traceback_line(exc: BaseException, path: Path) -> int | None:
    if isinstance(exc, SyntaxError) and exc.filename and Path(exc.filename) == path:
        return exc.lineno
    frames = inspect.getinnerframes(exc.__traceback__) if exc.__traceback__ else []
    lines = [f.lineno for f in frames if Path(f.filename) == path]
    return lines[-1] if lines else None
