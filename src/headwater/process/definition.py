"""Pipelines as files: ``pipelines/NAME.sql`` or ``pipelines/NAME.py``, loaded strictly."""

from __future__ import annotations

import importlib.util
import inspect
import sys
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from headwater.core.clock import parse_utc
from headwater.core.types import Output
from headwater.process import sql
from headwater.process.errors import PipelineError
from headwater.process.header import split_header
from headwater.process.python import PythonPipeline
from headwater.process.schedule import check_schedule
from headwater.process.settings import AUDIT_KEYS, PipelineHeader

#: Tables every project has; pipelines read them by name.
BUILTIN_TABLES = frozenset({"events", "failed_events"})


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

    def start(self) -> datetime | None:
        if self.header.start is None:
            return None
        return parse_utc(self.header.start)


def load_file(path: Path, dialect: str) -> Pipeline:
    """Load one pipeline file."""
    name = path.stem
    if path.suffix == ".sql":
        text = path.read_text(encoding="utf-8")
        header, body = split_header(text, str(path))
        query = sql.parse(body, dialect, str(path))
        pipeline = Pipeline(
            name=name,
            path=path,
            header=header,
            inputs=query.references,
            version=sql.version(header_fingerprint(header) + sql.render(query, dialect)),
            query=query,
        )
    elif path.suffix == ".py":
        function = _load_python(path)
        pipeline = Pipeline(
            name=name,
            path=path,
            header=function.header,
            inputs=frozenset(function.inputs),
            version=sql.version(header_fingerprint(function.header) + path.read_text("utf-8")),
            function=function,
        )
    else:
        raise PipelineError("pipelines are .sql or .py files", path=str(path))
    _check(pipeline)
    return pipeline


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
    if pipeline.name in BUILTIN_TABLES:
        raise PipelineError(f"a pipeline cannot be named {pipeline.name}", path=path)


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
