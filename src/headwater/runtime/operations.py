"""The operations commands ask for, as one table: the same whether run here or in the server.

Each operation has a name, a typed set of arguments (a msgspec struct, so the
control socket checks what it is sent) and a function of a
:class:`~headwater.runtime.workspace.Workspace`. The CLI calls :func:`call`
directly when no server owns the store, and through the control socket when
one does (:meth:`~headwater.runtime.client.ServerClient.call`); either way the
arguments and the result travel as JSON-able values, and progress arrives as
dicts.

>>> sorted(OPERATIONS)[:4]
['backfill', 'dead_letters', 'deliver', 'deliveries']
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Generic, TypeVar

import msgspec

from headwater.core.clock import parse_utc
from headwater.core.errors import ConfigError
from headwater.process.graph import Broken
from headwater.process.service import Progress
from headwater.runtime.workspace import Workspace
from headwater.store import transfer

A = TypeVar("A", bound=msgspec.Struct)
ProgressSink = Callable[[dict[str, Any]], None]


class NoArgs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An operation that takes nothing."""


class Span(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A pipeline and, optionally, the bounds of its intervals (ISO, UTC)."""

    name: str
    start: str | None = None
    end: str | None = None
    #: Also deliver what the runs owe, and wait for deliveries other processes make.
    deliver: bool = False
    #: Refresh a full pipeline even when its latest interval is done.
    now: bool = False
    #: First run what the pipeline reads, the same way.
    upstream: bool = False


class Due(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    deliver: bool = False


class Letters(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Dead letters chosen by pipeline, sink and ids (all of them when none is given)."""

    pipeline: str | None = None
    sink: str | None = None
    ids: list[int] = msgspec.field(default_factory=list)


class Export(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    folder: str
    start: str | None = None
    end: str | None = None


class Import(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    folder: str


@dataclass(frozen=True)
class Operation(Generic[A]):
    """One thing a command can ask of a workspace."""

    name: str
    args: type[A]
    run: Callable[[Workspace, A, ProgressSink | None], object]
    #: Whether it runs long enough to report progress.
    progress: bool = False

    def call(self, workspace: Workspace, raw: dict[str, Any], progress: ProgressSink | None) -> Any:
        try:
            args = msgspec.convert(raw, self.args)
        except msgspec.ValidationError as exc:
            raise ConfigError(f"operation {self.name}: {exc}") from None
        return _builtins(self.run(workspace, args, progress))


def _list(workspace: Workspace, _: NoArgs, __: ProgressSink | None) -> object:
    graph = workspace.graph()
    return [
        {
            "name": p.name,
            "language": p.kind,
            "kind": p.header.kind,
            "schedule": p.header.schedule,
            "time": p.header.time if p.incremental else None,
            "time_column": p.header.time_column,
            "inputs": sorted(p.inputs),
            "path": str(p.path),
            "description": p.header.description,
        }
        for p in graph
    ] + [
        {
            "name": b.name,
            "language": "sql" if b.path.suffix == ".sql" else "python",
            "kind": "broken",
            "schedule": "",
            "time": None,
            "time_column": None,
            "inputs": [],
            "path": str(b.path),
            "description": None,
            **_problem(b),
        }
        for b in graph.broken.values()
    ]


def _problem(broken: Broken) -> dict[str, object]:
    """Why a pipeline does not load, where, and the fix: as ``status`` shows it."""
    return {
        "problem": broken.error.problem,
        "where": broken.error.where(),
        "excerpt": broken.error.excerpt(),
        "hint": broken.error.hint,
        "blocked_by": broken.blocked_by,
    }


def _status(workspace: Workspace, _: NoArgs, __: ProgressSink | None) -> object:
    return workspace.status()


def _render(workspace: Workspace, args: Span, _: ProgressSink | None) -> object:
    start, end = _time(args.start), _time(args.end)
    text, params = workspace.render(args.name, start, end)
    return {"sql": text, "params": params, "cost": workspace.cost(args.name, start, end)}


def _run(workspace: Workspace, args: Span, progress: ProgressSink | None) -> object:
    start, end = _time(args.start), _time(args.end)
    runs = workspace.run(
        args.name, start, end, _reporter(progress), now=args.now, upstream=args.upstream
    )
    return _with_deliveries(workspace, runs, args.deliver)


def _due(workspace: Workspace, args: Due, progress: ProgressSink | None) -> object:
    answer = _with_deliveries(workspace, workspace.run_due(_reporter(progress)), args.deliver)
    if not isinstance(answer, dict):
        return answer
    # Every pipeline that loads ran; those that do not are reported, so a cron job fails.
    answer["broken"] = [{"name": b.name, **_problem(b)} for b in workspace.graph().broken.values()]
    return answer


def _backfill(workspace: Workspace, args: Span, progress: ProgressSink | None) -> object:
    start, end = _time(args.start), _time(args.end)
    if start is None or end is None:
        raise ConfigError("a backfill needs --start and --end", hint="e.g. --start 2026-10-01")
    runs = workspace.backfill(args.name, start, end, _reporter(progress))
    return _with_deliveries(workspace, runs, args.deliver)


def _deliver(workspace: Workspace, _: NoArgs, __: ProgressSink | None) -> object:
    return workspace.deliver()


def _deliveries(workspace: Workspace, _: NoArgs, __: ProgressSink | None) -> object:
    counts: list[object] = list(workspace.state.deliveries.counts())
    return counts + _skipped(workspace)


def _skipped(workspace: Workspace) -> list[dict[str, object]]:
    """Each sink a pipeline names that this environment lacks: its deliveries are skipped."""
    where = workspace.project.sinks_elsewhere()
    return [
        {"pipeline": pipeline, "sink": sink, "pending": 0, "failed": 0, "delivered": 0,
         "dead_letters": 0, "last_error": None, "elsewhere": where.get(sink, [])}
        for pipeline, sinks in workspace.skipped_sinks().items()
        for sink in sinks
    ]  # fmt: skip


def _dead_letters(workspace: Workspace, args: Letters, _: ProgressSink | None) -> object:
    letters = workspace.state.deliveries.dead_letters(
        pipeline=args.pipeline, sink=args.sink, ids=args.ids
    )
    return [
        {
            "id": d.id,
            "pipeline": d.pipeline,
            "sink": d.sink,
            "interval": d.interval,
            "batch": d.batch,
            "rows": d.rows,
            "reason": d.reason,
            "attempts": d.attempts,
            "created_at": d.created_at,
        }
        for d in letters
    ]


def _replay(workspace: Workspace, args: Letters, _: ProgressSink | None) -> object:
    return workspace.replay(args.pipeline, args.sink, args.ids or None)


def _export(workspace: Workspace, args: Export, progress: ProgressSink | None) -> object:
    folder, start, end = Path(args.folder), _time(args.start), _time(args.end)
    return transfer.export_events(workspace.engine, folder, start, end, progress)


def _import(workspace: Workspace, args: Import, progress: ProgressSink | None) -> object:
    environment = workspace.project.environment or "default"
    return transfer.import_events(workspace.engine, Path(args.folder), environment, progress)


OPERATIONS: dict[str, Operation[Any]] = {
    op.name: op
    for op in (
        Operation("list", NoArgs, _list),
        Operation("status", NoArgs, _status),
        Operation("render", Span, _render),
        Operation("run", Span, _run, progress=True),
        Operation("due", Due, _due, progress=True),
        Operation("backfill", Span, _backfill, progress=True),
        Operation("deliver", NoArgs, _deliver),
        Operation("deliveries", NoArgs, _deliveries),
        Operation("dead_letters", Letters, _dead_letters),
        Operation("replay", Letters, _replay),
        Operation("export", Export, _export, progress=True),
        Operation("import", Import, _import, progress=True),
    )
}


def call(
    workspace: Workspace, name: str, args: dict[str, Any], progress: ProgressSink | None = None
) -> Any:
    """Run operation ``name`` with JSON-able ``args``; return a JSON-able result."""
    operation = OPERATIONS.get(name)
    if operation is None:
        raise ConfigError(
            f"there is no operation {name!r}", hint=f"one of {', '.join(sorted(OPERATIONS))}"
        )
    return operation.call(workspace, args, progress)


def _with_deliveries(workspace: Workspace, runs: object, deliver: bool) -> object:
    if not deliver:
        return runs
    # The CLI waits for what its runs owe, so it can say where the rows went.
    return {
        "runs": runs,
        "deliveries": workspace.deliver(wait=True),
        "skipped": _skipped(workspace),
    }


def _reporter(progress: ProgressSink | None) -> Callable[[Progress], None] | None:
    if progress is None:
        return None
    sink = progress
    return lambda step: sink(_builtins(step))


def _time(value: str | None) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_utc(value)
    except ValueError:
        raise ConfigError(
            f"{value!r} is not a date or time", hint="write e.g. 2026-10-01 or 2026-10-01T06:00"
        ) from None


def _builtins(value: object) -> Any:
    return msgspec.to_builtins(value)
