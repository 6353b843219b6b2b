"""The operations commands ask for, as one table: the same whether run here or in the server.

Each operation has a name, a typed set of arguments (a msgspec struct, so the
control socket checks what it is sent) and a function of a
:class:`~headwater.runtime.workspace.Workspace`. The CLI calls :func:`call`
directly when no server owns the store, and through the control socket when
one does (:meth:`~headwater.runtime.client.ServerClient.call`); either way the
arguments and the result travel as JSON-able values, and progress arrives as
dicts.

>>> sorted(OPERATIONS)[:4]
['applies', 'apply', 'backfill', 'datasets']
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import msgspec

from headwater.core.clock import parse_utc
from headwater.core.errors import ConfigError, HeadwaterError

# The table is imported by every command that runs here; what only some operations use
# (plan and apply, export and import, delivery results) is imported by those operations.
if TYPE_CHECKING:
    from headwater.deliver.deliverer import DeliveryResult
    from headwater.process.graph import Broken
    from headwater.process.runner import RunResult
    from headwater.process.service import Progress
    from headwater.runtime.workspace import Workspace

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


class Cells(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A pipeline's intervals in ``[start, end)`` (ISO, UTC), the latest ``limit`` of them."""

    name: str
    start: str | None = None
    end: str | None = None
    limit: int = 168


class At(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A pipeline's interval that holds a moment (ISO, UTC)."""

    name: str
    at: str


class Due(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    deliver: bool = False


class Letters(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Dead letters chosen by pipeline, sink and ids (all of them when none is given)."""

    pipeline: str | None = None
    sink: str | None = None
    ids: list[int] = msgspec.field(default_factory=list)


class Moment(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """The minute a report ends at (ISO, UTC; ``None``: now), so two reports can agree."""

    until: str | None = None


class Preview(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    name: str
    limit: int = 20


class Export(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    folder: str
    start: str | None = None
    end: str | None = None


class Import(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    folder: str


class Replay(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Failed events to replay: by code and a predicate over their row, each payload
    rewritten by ``fix``; ``dry_run`` says what would pass and writes nothing."""

    code: str | None = None
    where: str | None = None
    fix: str | None = None
    dry_run: bool = False


class ApplyArgs(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Who applies, from which commit: what the command knows of the working tree."""

    applied_by: str
    commit: str | None = None
    dirty: bool = False


class People(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Whom an erasure (or the lifting of a suppression) is of, and who asks."""

    user_ids: list[str] = msgspec.field(default_factory=list)
    anonymous_ids: list[str] = msgspec.field(default_factory=list)
    #: The admin (API) or the OS user (CLI) who asks: kept in the receipt.
    by: str = ""
    #: Finish every unfinished erasure now, instead of (or before) a new one.
    resume: bool = False


class ErasureRef(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    id: int


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


def _intervals(workspace: Workspace, args: Cells, _: ProgressSink | None) -> object:
    """Each interval of a pipeline with its state and the run behind it; the totals are
    ``status``'s counts."""
    from headwater.process.grid import grid

    return grid(workspace.pipelines, args.name, _time(args.start), _time(args.end), args.limit)


def _interval(workspace: Workspace, args: At, _: ProgressSink | None) -> object:
    """One interval of a pipeline and every run that covered it, newest first."""
    from headwater.process.grid import interval_runs

    moment = _time(args.at)
    assert moment is not None
    cell, runs = interval_runs(workspace.pipelines, args.name, moment)
    return {"cell": cell, "runs": runs}


def _offload(workspace: Workspace, _: NoArgs, __: ProgressSink | None) -> object:
    """How the offload into the warehouse stands, and the last day's traffic it moved
    (``None``: pipelines run on the store itself)."""
    offloader = workspace.offloader
    if offloader is None:
        return None
    now = workspace.pipelines.clock()
    day = workspace.state.offloads.spans(now - timedelta(days=1))
    return {
        "store": workspace.store.name,
        "warehouse": workspace.engine.name,
        "every_seconds": offloader.every.total_seconds(),
        "progress": offloader.progress(),
        "lag_seconds": offloader.lag_seconds(),
        "last_day": {
            "events": sum(s.events for s in day),
            "failed_events": sum(s.failed_events for s in day),
            "load_jobs": sum((s.events > 0) + (s.failed_events > 0) for s in day),
            "bytes": sum(s.bytes for s in day),
        },
    }


def _retention(workspace: Workspace, _: NoArgs, __: ProgressSink | None) -> object:
    """Per table retention applies to: how long it keeps, its horizon now, and its last
    pass (from the metadata: no table is scanned)."""
    now = workspace.pipelines.clock()
    passes = workspace.state.retention.passes()
    retention = workspace.retention()
    kept = {table: retention.written[table] for table in retention.written}
    kept |= {p.name: p.header.retain for p in workspace.graph() if p.header.retain}
    rows = []
    for table, column, horizon in workspace.retainer.targets(now):
        last = passes.get(table)
        rows.append(
            {
                "table": table,
                "column": column,
                "keep": kept.get(table),
                "horizon": horizon,
                "last_pass_at": last.last_pass_at if last else None,
                "last_dropped": last.last_dropped if last else None,
                "dropped_total": last.dropped_total if last else 0,
                "caught_up": last.caught_up if last else None,
            }
        )
    return rows


def _traffic(workspace: Workspace, args: Moment, _: ProgressSink | None) -> object:
    from headwater.runtime.traffic import traffic

    return traffic(workspace, _time(args.until))


def _datasets(workspace: Workspace, _: NoArgs, __: ProgressSink | None) -> object:
    from headwater.runtime.datasets import catalog

    return catalog(workspace)


def _preview(workspace: Workspace, args: Preview, _: ProgressSink | None) -> object:
    from headwater.runtime.datasets import preview

    return preview(workspace, args.name, args.limit)


def _end_sessions(workspace: Workspace, _: NoArgs, __: ProgressSink | None) -> object:
    """A new signing secret for the dashboard: every admin signs in again."""
    workspace.state.session_secret.replace()
    return None


def _render(workspace: Workspace, args: Span, _: ProgressSink | None) -> object:
    start, end = _time(args.start), _time(args.end)
    text, params = workspace.render(args.name, start, end)
    return {"sql": text, "params": params, "cost": workspace.cost(args.name, start, end)}


def _run(workspace: Workspace, args: Span, progress: ProgressSink | None) -> object:
    start, end = _time(args.start), _time(args.end)
    steps = _Steps(progress)
    steps.call(
        lambda report: workspace.run(
            args.name, start, end, report, now=args.now, upstream=args.upstream
        )
    )
    return _outcome(workspace, steps, args.deliver)


def _due(workspace: Workspace, args: Due, progress: ProgressSink | None) -> object:
    # Whole intervals of arrival into the warehouse first: pipelines by arrival wait for them.
    offloaded = workspace.offload()
    # Then what retention no longer keeps, before the planner looks at what is due.
    retained = workspace.retain()
    steps = _Steps(progress)
    steps.call(workspace.run_due)
    answer = _outcome(workspace, steps, args.deliver)
    answer["offload"] = offloaded
    answer["retention"] = retained if retained.rows or retained.errors else None
    # Every pipeline that loads ran; those that do not are reported, so a cron job fails.
    answer["broken"] = [{"name": b.name, **_problem(b)} for b in workspace.graph().broken.values()]
    return answer


def _backfill(workspace: Workspace, args: Span, progress: ProgressSink | None) -> object:
    start, end = _time(args.start), _time(args.end)
    if start is None or end is None:
        raise ConfigError("a backfill needs --start and --end", hint="e.g. --start 2026-10-01")
    steps = _Steps(progress)
    steps.call(lambda report: workspace.backfill(args.name, start, end, report))
    return _outcome(workspace, steps, args.deliver)


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


def _failed(workspace: Workspace, _: NoArgs, __: ProgressSink | None) -> object:
    """Failed events grouped by code, field and source (see ``runtime/failed.py``)."""
    from headwater.runtime import failed

    return failed.groups(workspace.store)


def _failed_replay(workspace: Workspace, args: Replay, _: ProgressSink | None) -> object:
    """Failed events validated again (after ``fix``) and what passes ingested, or, with
    ``dry_run``, what would pass and what would still fail."""
    from headwater.runtime import failed

    return workspace.replay_failed(
        failed.Choice(code=args.code, where=args.where, fix=args.fix), dry_run=args.dry_run
    )


def _export(workspace: Workspace, args: Export, progress: ProgressSink | None) -> object:
    from headwater.store import transfer

    folder, start, end = Path(args.folder), _time(args.start), _time(args.end)
    return transfer.export_events(workspace.engine, folder, start, end, progress)


def _import(workspace: Workspace, args: Import, progress: ProgressSink | None) -> object:
    from headwater.store import transfer

    environment = workspace.project.environment or "default"
    # The same folder may be imported into several projects' stores, or environments'.
    where = f"{workspace.project.root.resolve()}#{environment}"
    target = hashlib.sha256(where.encode()).hexdigest()[:16]
    return transfer.import_events(
        workspace.engine,
        Path(args.folder),
        environment,
        progress,
        target=target,
        keep=workspace.not_erased,
    )


def _applies(workspace: Workspace, _: NoArgs, __: ProgressSink | None) -> object:
    """The last apply here, and the pipelines not run because their files are not the
    version applied."""
    history = workspace.state.applies.history(limit=1)
    last = history[0] if history else None
    return {
        "last": None
        if last is None
        else {
            "id": last.id,
            "status": last.status,
            "started_at": last.started_at,
            "applied_by": last.applied_by,
            "commit": last.commit,
            "dirty": last.dirty,
        },
        "held": workspace.pipelines.held(workspace.graph()),
    }


def _models(workspace: Workspace, _: NoArgs, __: ProgressSink | None) -> object:
    """Each declared model's versions on disk now (or why it does not load), and every
    version the registry has seen, with the intervals it scored."""
    catalog = workspace.models()
    declared: dict[str, dict[str, object]] = {}
    for name in catalog.names():
        try:
            model = catalog.get(name)
            model.load()
        except HeadwaterError as exc:
            declared[name] = {"live": None, "shadow": None, "error": str(exc), "hint": exc.hint}
            continue
        shadow = model.shadow.version if model.shadow is not None else None
        declared[name] = {"live": model.version, "shadow": shadow, "error": None, "hint": None}
    return {"declared": declared, "versions": workspace.state.models.versions()}


def _plan(workspace: Workspace, _: NoArgs, __: ProgressSink | None) -> object:
    from headwater.runtime.plan import make_plan
    from headwater.state.database import MetadataDatabase

    pending = MetadataDatabase(workspace.state.engine).pending()
    return make_plan(workspace, pending).to_json()


def _apply(workspace: Workspace, args: ApplyArgs, progress: ProgressSink | None) -> object:
    from headwater.runtime.apply import apply as apply_plan
    from headwater.runtime.plan import make_plan

    plan = make_plan(workspace, [])
    steps = _Steps(progress)
    done = apply_plan(
        workspace,
        plan,
        commit=args.commit,
        dirty=args.dirty,
        applied_by=args.applied_by,
        progress=steps.report,
    )
    return {"plan": plan.to_json(), "result": done}


def _erase(workspace: Workspace, args: People, progress: ProgressSink | None) -> object:
    from headwater.runtime import erasure

    done = erasure.resume(workspace, due_only=False) if args.resume else []
    if not (args.user_ids or args.anonymous_ids):
        if not args.resume:
            raise ConfigError("an erasure needs at least one id", hint="give --user-id U")
        return done
    ids = {"user_id": args.user_ids, "anonymous_id": args.anonymous_ids}
    return [*done, erasure.erase(workspace, ids, args.by or "unknown", progress)]


def _erasure(workspace: Workspace, args: ErasureRef, _: ProgressSink | None) -> object:
    from headwater.runtime import erasure

    return erasure.receipt(workspace, args.id)


def _erasures(workspace: Workspace, _: NoArgs, __: ProgressSink | None) -> object:
    """Erasures still owing a place, and the suppression list's counts."""
    from headwater.runtime import erasure

    counts = workspace.state.erasures.counts()
    try:
        undeclared = erasure.undeclared(workspace)
    except HeadwaterError:
        undeclared = []  # pipelines that do not load are reported by status itself
    return {
        "undeclared": undeclared,
        "pending": workspace.state.erasures.pending(),
        "suppressed_ids": counts.active,
        "suppressed_events": counts.dropped,
        "last_suppressed_at": counts.last_dropped_at,
    }


def _lift(workspace: Workspace, args: People, _: ProgressSink | None) -> object:
    from headwater.runtime import erasure

    ids = {"user_id": args.user_ids, "anonymous_id": args.anonymous_ids}
    hashes = [h for values in erasure.hashes_of(ids).values() for h in values]
    return {"lifted": workspace.state.erasures.lift(hashes, args.by or "unknown")}


OPERATIONS: dict[str, Operation[Any]] = {
    op.name: op
    for op in (
        Operation("list", NoArgs, _list),
        Operation("status", NoArgs, _status),
        Operation("offload", NoArgs, _offload),
        Operation("retention", NoArgs, _retention),
        Operation("intervals", Cells, _intervals),
        Operation("interval", At, _interval),
        Operation("traffic", Moment, _traffic),
        Operation("datasets", NoArgs, _datasets),
        Operation("preview", Preview, _preview),
        Operation("end_sessions", NoArgs, _end_sessions),
        Operation("render", Span, _render),
        Operation("run", Span, _run, progress=True),
        Operation("due", Due, _due, progress=True),
        Operation("backfill", Span, _backfill, progress=True),
        Operation("deliver", NoArgs, _deliver),
        Operation("deliveries", NoArgs, _deliveries),
        Operation("dead_letters", Letters, _dead_letters),
        Operation("replay", Letters, _replay),
        Operation("failed", NoArgs, _failed),
        Operation("failed_replay", Replay, _failed_replay),
        Operation("export", Export, _export, progress=True),
        Operation("import", Import, _import, progress=True),
        Operation("plan", NoArgs, _plan),
        Operation("applies", NoArgs, _applies),
        Operation("models", NoArgs, _models),
        Operation("apply", ApplyArgs, _apply, progress=True),
        Operation("erase", People, _erase, progress=True),
        Operation("erasure", ErasureRef, _erasure),
        Operation("erasures", NoArgs, _erasures),
        Operation("lift", People, _lift),
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


class _Steps:
    """The steps of a run, due pass or backfill as they are reported: the runs that
    succeeded, and the intervals that failed (a due pass logs them and goes on to the
    next pipeline; a run or backfill stops at the first)."""

    def __init__(self, progress: ProgressSink | None) -> None:
        self.progress = progress
        self.runs: list[RunResult] = []
        self.failures: list[dict[str, Any]] = []

    def report(self, step: Progress) -> None:
        if step.result is not None:
            self.runs.append(step.result)
        if step.error is not None:
            self.failures.append(
                {"pipeline": step.pipeline, "interval": step.interval, "error": step.error}
            )
        if self.progress is not None:
            self.progress(_builtins(step))

    def call(self, work: Callable[[Callable[[Progress], None]], list[RunResult]]) -> None:
        """Run ``work``; an interval that failed is kept with the fix, and what ran before
        it still counts (and is delivered). Errors before any step (an unknown pipeline, a
        file that does not load) are raised as they are."""
        try:
            work(self.report)
        except HeadwaterError as exc:
            if not self.failures:
                raise
            if exc.hint:
                self.failures[-1]["hint"] = exc.hint


def _outcome(workspace: Workspace, steps: _Steps, deliver: bool) -> dict[str, object]:
    """The runs, the intervals that failed and, with ``deliver``, every delivery the runs
    owe as it stands after one attempt here."""
    deliveries: list[DeliveryResult] = []
    if deliver:
        # The CLI waits for what its runs owe, so it can say where the rows went.
        deliveries = owed(workspace, steps.runs, workspace.deliver(wait=True))
    return {
        "runs": steps.runs,
        "failures": steps.failures,
        "deliveries": deliveries,
        "skipped": _skipped(workspace) if deliver else [],
    }


def owed(
    workspace: Workspace, runs: list[RunResult], attempted: list[DeliveryResult]
) -> list[DeliveryResult]:
    """``attempted``, and the deliveries of ``runs``' intervals that another deliverer (the
    server's own loop, say) made or tried before this command asked: each as it stands."""
    from headwater.deliver.deliverer import as_result

    seen = {(d.pipeline, d.sink, d.interval.start) for d in attempted}
    found = list(attempted)
    wanted = {(r.pipeline, r.interval.start) for r in runs if r.recorded}
    for pipeline in sorted({p for p, _ in wanted}):
        for delivery in workspace.state.deliveries.all(pipeline):
            key = (delivery.pipeline, delivery.sink, delivery.interval.start)
            if (delivery.pipeline, delivery.interval.start) in wanted and key not in seen:
                seen.add(key)
                found.append(as_result(delivery))
    return found


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
