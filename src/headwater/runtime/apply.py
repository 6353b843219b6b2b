"""``headwater apply``: carry out a plan and record it.

Every table the plan computes again is built beside the live one (its build table, see
:func:`headwater.store.schema.build_table`), reading the next versions of its inputs that
are built too, while consumers, sinks and the scheduler keep using the live tables. Once
every build is whole, holding the live pipelines' leases (no run of the old version
publishes meanwhile), the apply:

1. runs what the live pipelines published since their build started (catching up);
2. records what the environment has applied (from here, a scheduler still running the old
   files leaves these pipelines alone);
3. swaps every build into its live table, and drops removed pipelines' tables, in one
   engine transaction (DuckDB, PostgreSQL; table by table on Spark and BigQuery);
4. moves the builds' intervals to the live names and owes them to the sinks, in one
   metadata transaction; then marks the apply done.

A crash anywhere leaves the builds and their recorded intervals: the next apply of the
same files finds them (the intervals recorded under a build name with the version it
would build) and goes on from there, whichever step it stopped at.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field, replace
from datetime import timedelta

from headwater.config.project import Project, load_project
from headwater.core.errors import ConfigError, HeadwaterError
from headwater.process.errors import PipelineError
from headwater.process.graph import Graph, build
from headwater.process.schedule import latest_tick
from headwater.process.service import PipelineService, Progress, ProgressFn
from headwater.runtime.plan import APPLIES_REVISION, Plan, rebuilt
from headwater.runtime.workspace import Workspace, metadata_for
from headwater.state.applies import Kind
from headwater.state.errors import LeaseHeld
from headwater.state.leases import Lease, Waiting
from headwater.store.schema import BUILD_PREFIX, build_table

log = logging.getLogger(__name__)

#: How long the swap waits for a live pipeline's run (holding its lease) to end.
LEASE_WAIT_SECONDS = 120.0
#: The lease an apply holds on its environment (no pipeline is named with a leading ``_``).
APPLY_LEASE = "_hw_apply"


@dataclass
class ApplyResult:
    apply_id: int
    #: Intervals run per pipeline built (live name).
    built: dict[str, int] = field(default_factory=dict)
    swapped: list[str] = field(default_factory=list)
    dropped: list[str] = field(default_factory=list)
    #: Builds another apply had left and this one finished.
    resumed: list[str] = field(default_factory=list)


def apply(
    ws: Workspace,
    plan: Plan,
    *,
    commit: str | None,
    dirty: bool,
    applied_by: str,
    progress: ProgressFn | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> ApplyResult:
    """Carry out ``plan`` on ``ws``'s environment and record it as applied."""
    state = ws.state
    ttl = timedelta(seconds=ws.project.settings.pipelines.lease_seconds)
    with _one_apply(ws, ttl):
        apply_id = state.applies.start(commit, dirty, applied_by, plan.to_json())
        return _apply(ws, plan, apply_id, ttl, progress, sleep)


def _apply(
    ws: Workspace,
    plan: Plan,
    apply_id: int,
    ttl: timedelta,
    progress: ProgressFn | None,
    sleep: Callable[[float], None],
) -> ApplyResult:
    state = ws.state
    result = ApplyResult(apply_id)
    try:
        graph = ws.graph()
        wanted = list(rebuilt(graph, plan.changes))
        leftover = _leftover_builds(ws, graph)
        # A build an apply recorded as applied, and then stopped before it ended, was left
        # at the swap, and the engine may have swapped it already: swapped in as it is,
        # never built on (a run now would start its build table anew, with only the
        # intervals it runs).
        applied = state.applies.applied()
        finish = [
            name
            for name in leftover
            if (found := applied.get(("pipeline", name))) is not None
            and found.version == graph[name].version
            and found.apply_id is not None
            and not state.applies.finished(found.apply_id)
        ]
        if finish:
            _swap(ws, graph, finish, [], ttl, sleep)
        result.resumed = finish
        # A build neither wanted now nor applied was made for files since undone (a reader
        # built from an input whose change was reverted): it goes.
        _drop_builds(ws, [n for n in leftover if n not in wanted and n not in finish])
        names = [n for n in graph.order if n in wanted]
        builds = {name: build_table(name) for name in names}
        service = _build_service(ws, graph, builds)
        for name in names:
            result.built[name] = _as_pipeline(service, name, builds[name], progress)

        def catch_up_then_record() -> None:
            for name in names:  # what the live pipelines published meanwhile
                result.built[name] += _as_pipeline(service, name, builds[name], progress)
            gone: list[tuple[Kind, str]] = [("pipeline", name) for name in plan.removed]
            gone += [(o.kind, o.name) for o in plan.objects if o.change == "removed"]
            state.applies.record(apply_id, plan.applied, gone)

        _swap(ws, graph, names, plan.removed, ttl, sleep, before=catch_up_then_record)
        result.swapped = names
        result.dropped = list(plan.removed)
        state.applies.finish(apply_id)
    except BaseException as exc:
        state.applies.fail(apply_id, str(exc) if isinstance(exc, HeadwaterError) else repr(exc))
        raise
    if any(graph[name].header.sinks for name in [*result.swapped, *finish]):
        ws.pipelines.on_published()
    return result


def _unread(graph: Graph, names: list[str]) -> list[str]:
    """The pipelines of ``names`` with a reader not rebuilt with them (a change that only
    added columns): that reader read the same columns, so the swap leaves it done."""
    return [name for name in names if set(graph.downstream(name)) - set(names)]


def _swap(
    ws: Workspace,
    graph: Graph,
    names: list[str],
    removed: list[str],
    ttl: timedelta,
    sleep: Callable[[float], None],
    *,
    before: Callable[[], None] = lambda: None,
) -> None:
    """Swap the builds of ``names`` in, in the engine then in the metadata, holding the
    live pipelines' leases (and ``removed``'s, whose tables are dropped); ``before`` runs
    first, the leases held."""
    builds = {name: build_table(name) for name in names}
    with ExitStack() as held:
        leases = [
            held.enter_context(Waiting(Lease(ws.state.leases, n, ttl), LEASE_WAIT_SECONDS, sleep))
            for n in [*names, *removed]
        ]
        before()
        ws.engine.swap_tables(builds, drop=removed, fences=[lease.fence for lease in leases])
        sinks = {name: list(graph[name].header.sinks) for name in names}
        ws.state.applies.swap(builds, sinks, removed, _unread(graph, names))


@contextmanager
def _one_apply(ws: Workspace, ttl: timedelta) -> Iterator[None]:
    """Hold the environment's apply lease: two applies at once would build the same build
    tables, each dropping what the other made at another version."""
    lease = Lease(ws.state.leases, APPLY_LEASE, ttl)
    try:
        lease.__enter__()
    except LeaseHeld:
        running = [a for a in ws.state.applies.history(5) if a.status == "running"]
        who = (
            f" (apply {running[0].id}, by {running[0].applied_by}, since "
            f"{running[0].started_at:%Y-%m-%d %H:%M:%S} UTC)"
            if running
            else ""
        )
        where = ws.project.environment
        raise ConfigError(
            f"another apply is running on "
            f"{f'environment {where!r}' if where else 'this environment'}{who}",
            hint="wait for it to end, then run `headwater plan` and apply again",
        ) from None
    try:
        yield
    finally:
        lease.__exit__(None, None, None)


def check_promotion(project: Project, commit: str | None, changes: list[str]) -> None:
    """Refuse ``commit`` in an environment with ``promote_from`` unless an apply of it,
    without changes not committed, finished in that environment; and refuse a tree with
    ``changes`` (they were not applied there)."""
    source = project.promote_from
    if source is None:
        return
    here = project.environment
    if commit is None:
        raise ConfigError(
            f"environment {here!r} takes only commits applied to {source!r} first "
            "(promote_from), and this project is not in a git repository",
            hint="commit the project to git, apply it to "
            f"{source!r}, then here from the same commit",
        )
    if changes:
        listed = ", ".join(changes[:8]) + (" …" if len(changes) > 8 else "")
        raise ConfigError(
            f"environment {here!r} takes only commits applied to {source!r} first "
            f"(promote_from), and the git tree has changes not committed: {listed}",
            hint=f"commit them and apply the commit to {source!r} first, or stash them",
        )
    try:
        metadata = metadata_for(load_project(project.root, source))
    except ConfigError as exc:
        raise ConfigError(
            f"environment {here!r} takes only commits applied to {source!r} first "
            f"(promote_from), which the metadata of {source!r} records: {exc.message}",
            hint=exc.hint,
        ) from None
    try:
        revision = metadata.revision()
        state = metadata.open(migrate=False, as_is=True)
        applied = (revision or "") >= APPLIES_REVISION and state.applies.applied_commit(commit)
    finally:
        metadata.close()
    if not applied:
        raise ConfigError(
            f"commit {commit[:12]} has not been applied to {source!r}, and environment "
            f"{here!r} takes only what {source!r} applied first (promote_from)",
            hint=f"run `headwater --env {source} apply` from this commit first, or check out "
            f"the commit {source!r} applied last",
        )


def _leftover_builds(ws: Workspace, graph: Graph) -> list[str]:
    """Live pipelines with a build another apply left, at the version the files have now;
    builds of another version are dropped (their files changed since)."""
    found = []
    for recorded, version in ws.state.runs.published().items():
        if not recorded.startswith(BUILD_PREFIX):
            continue
        live = next((p for p in graph if build_table(p.name) == recorded), None)
        if live is not None and live.version == version:
            found.append(live.name)
            continue
        log.info("dropping %s, a build of another version", recorded)
        _drop_build(ws, recorded)
    return found


def _drop_builds(ws: Workspace, names: list[str]) -> None:
    for name in names:
        log.info("dropping the build of %s: this apply does not build it", name)
        _drop_build(ws, build_table(name))


def _drop_build(ws: Workspace, build: str) -> None:
    ws.engine.swap_tables({}, drop=[build])
    ws.state.applies.discard(build)


def _build_service(ws: Workspace, graph: Graph, builds: dict[str, str]) -> PipelineService:
    """A pipeline service over the graph with each pipeline in ``builds`` built beside its
    live table (its readers in ``builds`` reading the build), the others as they are."""
    beside = [graph[name].beside(builds) for name in graph.order if name in builds]
    built = build([*graph, *beside])
    settings = ws.project.settings
    return PipelineService(
        lambda: built,
        ws.engine,
        ws.state,
        settings.pipelines,
        settings.project.dialect,
        floor=ws.pipelines.floor,
        clock=ws.pipelines.clock,
        retention=ws.pipelines.retention,
    )


def _as_pipeline(
    service: PipelineService, name: str, build: str, progress: ProgressFn | None
) -> int:
    """:func:`_build` of ``name``'s build, reported and failing under the pipeline's name:
    its build table is no name a command takes, and the fix is the file, then an apply."""

    def report(step: Progress) -> None:
        if progress is not None:
            error = step.error.replace(build, name) if step.error else None
            progress(replace(step, pipeline=name, error=error))

    try:
        return _build(service, build, report)
    except PipelineError as exc:
        raise PipelineError(
            exc.problem.replace(build, name),
            pipeline=name,
            path=exc.path,
            line=exc.line,
            column=exc.column,
            hint=f"fix {exc.path or name}, then `headwater apply` again: what was built so far is "
            "kept, and nothing was swapped in",
        ) from exc


def _build(service: PipelineService, name: str, progress: ProgressFn | None) -> int:
    """Run every interval the build ``name`` lacks (or has stale), from its first to the last
    whole one; a full pipeline once per tick."""
    graph = service.graph()
    pipeline = graph[name]
    planner, _ = service.tools(graph)
    until = service.until()
    start = planner.start(pipeline)
    if start is None and (pipeline.incremental or pipeline.inputs):
        return 0  # nothing it reads has data yet
    if not pipeline.incremental:
        # Its tick (a pipeline that reads no table, rows of its own, has no start).
        latest = latest_tick(pipeline.header.schedule, until)
        done = service.state.runs.intervals(name).get(latest.start)
        if done is not None and done.status == "done":
            return 0
        return len(service.backfill(name, latest.start, until, progress, upstream=False))
    assert start is not None
    retired = planner.retired(pipeline)
    if retired is not None:
        # What retention dropped is not built again: the build starts where it keeps.
        start = max(start, retired.before)
    # No scheduler pass looks at a build: the late events that re-opened intervals of the
    # live pipeline since the build ran them re-open the build's here, or the swap would put
    # back numbers older than those the live table serves.
    planner.detect_late(until, only=name)
    # Its inputs are built before it (run order), or live and left to their own schedule:
    # an interval whose live input has not run yet is left to the scheduler after the swap.
    return len(service.backfill(name, start, until, progress, upstream=False, waiting_fails=False))
