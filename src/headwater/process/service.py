"""Running pipelines: one scheduler pass, a pipeline's intervals, a backfill.

One object per project and engine. The graph comes from a callable that
loads it again when a file changed, so an edited pipeline file takes effect
without a restart, and a broken one stops only the operations that need it.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from headwater.core.clock import utc_now
from headwater.core.errors import HeadwaterError
from headwater.core.logs import fields
from headwater.core.types import Interval
from headwater.process.definition import BUILTIN_TABLES, Pipeline
from headwater.process.errors import PipelineError
from headwater.process.graph import Graph
from headwater.process.planner import Planner
from headwater.process.retention import Floors, Retention
from headwater.process.runner import Runner, RunResult
from headwater.process.schedule import ceiling, intervals, latest_tick
from headwater.process.schedule import floor as schedule_floor
from headwater.process.settings import PipelinesSettings
from headwater.state import StateStore
from headwater.state.errors import LeaseHeld
from headwater.state.runs import GapHints, Trigger
from headwater.store.engine import Engine, collectors_floor

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Progress:
    """One step of a run or backfill, for progress bars and logs."""

    pipeline: str
    interval: Interval
    done: int
    total: int
    result: RunResult | None = None
    error: str | None = None


ProgressFn = Callable[[Progress], None]


class PipelineService:
    """Runs and backfills the pipelines of a project on one engine."""

    def __init__(
        self,
        graph: Callable[[], Graph],
        engine: Engine,
        state: StateStore,
        settings: PipelinesSettings,
        dialect: str,
        *,
        floor: Callable[[], datetime] | None = None,
        clock: Callable[[], datetime] = utc_now,
        sleep: Callable[[float], None] | None = None,
        applied: Callable[[], Mapping[str, str] | None] = lambda: None,
        retention: Callable[[], Retention] = Retention,
    ) -> None:
        """``applied`` gives the version of each pipeline the environment applied (``None``
        where nothing was ever applied): a pipeline at another version is not run.
        ``retention`` gives ``[retention]`` as it is now: intervals it retired are not run."""
        self.retention = retention
        self.graph = graph
        self.applied = applied
        self.engine = engine
        self.state = state
        self.settings = settings
        self.dialect = dialect
        self.clock = clock
        # Without a collector in this process, nothing is in flight here: now is the floor,
        # or on a shared store, the lowest floor its live collectors published.
        self.floor = floor or self._store_floor
        self._sleep = sleep
        #: Called after a run recorded an interval with deliveries owed (wakes the deliverer).
        self.on_published: Callable[[], None] = lambda: None
        self._held_logged: set[tuple[str, str]] = set()
        #: The earliest event time per column, for the next pass's planner to start from.
        self._earliest: dict[str, datetime] = {}
        #: The first gap of each pipeline's intervals, for the next pass to look on from.
        self._gaps: dict[str, GapHints] = {}

    def _store_floor(self) -> datetime:
        return collectors_floor(self.engine, self.clock())

    def tools(self, graph: Graph) -> tuple[Planner, Runner]:
        """A planner and a runner over ``graph``."""
        ttl = timedelta(seconds=self.settings.lease_seconds)
        if len(self._gaps) > 256:  # versions edited away over a long life
            self._gaps.clear()
        runner_args = {} if self._sleep is None else {"sleep": self._sleep}
        runner = Runner(
            graph,
            self.engine,
            self.state,
            self.dialect,
            backoff_seconds=self.settings.retry_backoff_seconds,
            lease_ttl=ttl,
            **runner_args,
        )
        planner = Planner(
            graph,
            self.engine,
            self.state,
            lease_ttl=ttl,
            floors=Floors(graph, self.retention(), self.clock()),
            earliest=self._earliest,
            gaps=self._gaps,
        )
        return planner, runner

    # -- running ---------------------------------------------------------------

    def run_due(
        self, progress: ProgressFn | None = None, should_stop: Callable[[], bool] = bool
    ) -> list[RunResult]:
        """One scheduler pass: late events, staleness, then due intervals in graph order.

        ``should_stop`` is checked between intervals, so a shutdown waits for
        at most the interval being run.
        """
        graph = self.graph()
        planner, runner = self.tools(graph)
        now, floor = self.clock(), min(self.floor(), self.clock())
        planner.detect_late(floor)
        results: list[RunResult] = []
        held = self._not_applied(graph)
        for pipeline in graph:
            if pipeline.name in held:
                continue
            planner.propagate(pipeline)
            due = planner.due(pipeline, now, floor, self.settings.max_catchup)
            count = 0
            for span, each in batches(pipeline, due):
                if should_stop():
                    return results
                try:
                    self._watch_late_events(pipeline)
                    result = runner.run(pipeline, span, "schedule", each=each)
                except LeaseHeld:
                    # Another process runs it now (an overlapping `run --due`, the
                    # server's scheduler): what is due is left to that run, not failed.
                    log.info("%s: another run holds it; this pass leaves it", pipeline.name)
                    break
                except HeadwaterError as exc:
                    # (The runner logged the failed attempt, with its fields.)
                    for interval in each or (span,):
                        count += 1
                        _report(progress, pipeline.name, interval, count, len(due), error=str(exc))
                    # Its later intervals do not read it: they go on. Its readers wait
                    # for it (the planner holds back what reads a missing interval).
                    continue
                for one in result.split():
                    count += 1
                    results.append(one)
                    _report(progress, pipeline.name, one.interval, count, len(due), result=one)
                if pipeline.header.sinks:
                    self.on_published()
        return results

    def run(
        self,
        name: str,
        start: datetime | None = None,
        end: datetime | None = None,
        progress: ProgressFn | None = None,
        *,
        now: bool = False,
        upstream: bool = False,
    ) -> list[RunResult]:
        """Run one pipeline: the given intervals again, or what it lacks (failed
        intervals included: running by hand is how a fix is tried). ``now`` refreshes a
        full pipeline even when its latest interval is done; ``upstream`` first runs what
        it reads, the same way."""
        graph = self.graph()
        graph[name]  # a clear error for an unknown name
        _refuse_empty(start, end)
        names = [*graph.upstream(name), name] if upstream else [name]
        self._refuse_unapplied(graph, names)
        if start is not None or end is not None:
            planner, runner = self.tools(graph)
            tasks: list[tuple[str, Interval]] = []
            # Up to the end of the interval holding `end`, the longest of the pipelines
            # run (a preview if not over): a reader's day then has all its input hours.
            upto = self.clock() if end is None else end
            widened = upto if end is None else _widened(graph, names, end)
            # From the start of the interval holding `start`, the longest likewise: the
            # reader's first day, too, has all its input hours.
            floored = None if start is None else _floored(graph, names, start)
            for each in (graph[n] for n in names):
                if start is not None and floored is not None:
                    if planner.floors is not None:
                        planner.floors.refuse_below(each, start)
                    lower = _kept(planner, each, start, floored)
                else:
                    # Its first interval (a look at the store: only when no start is given).
                    lower = planner.start(each) or self.clock()
                    if (retired := planner.retired(each)) is not None:
                        lower = max(lower, retired.before)  # from where retention keeps
                # A full pipeline runs the tick that ended by `end`, as it is given.
                upper = widened if each.incremental else upto
                spanned = span(each.header.schedule, lower, upper, each.incremental)
                tasks.extend((each.name, i) for i in spanned)
            # Intervals that have not ended yet run (a preview of their rows) but are not
            # recorded done, so the scheduler computes them again once they are whole.
            return self._execute_all(runner, tasks, "manual", progress, graph)
        # What each lacks is asked after what it reads has run: a fresh planner each time.
        results: list[RunResult] = []
        failed: list[Failure] = []  # shared: a reader of a failed input does not run
        for each in (graph[n] for n in names):
            planner, runner = self.tools(graph)
            todo = [(each.name, i) for i in self._lacking(planner, each, now)]
            results += self._execute(runner, todo, "manual", progress, graph, failed)
        if failed:
            raise failed[0][2]
        return results

    def _lacking(self, planner: Planner, pipeline: Pipeline, now: bool) -> list[Interval]:
        """What a run by hand runs: the latest interval of a full pipeline with ``now``
        (done or not), else all that is missing or stale, failed intervals included (not
        capped by ``max_catchup``, which paces the scheduler's passes: a run by hand that
        stopped at it said nothing of the rest)."""
        moment = self.clock()
        if now and not pipeline.incremental:
            return [latest_tick(pipeline.header.schedule, moment)]
        planner.propagate(pipeline)
        floor = min(self.floor(), moment)
        return planner.due(pipeline, moment, floor, sys.maxsize, retry_failed=True)

    def backfill(
        self,
        name: str,
        start: datetime,
        end: datetime,
        progress: ProgressFn | None = None,
        *,
        upstream: bool = True,
        waiting_fails: bool = True,
    ) -> list[RunResult]:
        """Fill ``[start, end)`` for a pipeline and what it reads, inputs first (``upstream``:
        the pipeline alone); done intervals are skipped, so a backfill interrupted and started
        again resumes. A reader's interval whose inputs are not done fails the backfill (not
        ``waiting_fails``: it is left for the scheduler)."""
        graph = self.graph()
        planner, runner = self.tools(graph)
        graph[name]  # a clear error for an unknown name
        _refuse_empty(start, end)
        names = [*graph.upstream(name), name] if upstream else [name]
        self._refuse_unapplied(graph, names)
        tasks: list[tuple[str, Interval]] = []
        # The interval holding `end` is filled too, once it is whole: the longest of those
        # of the pipelines filled, so that a reader's day has all its input hours.
        widened = _widened(graph, names, end)
        # And from the start of the interval holding `start`, the longest likewise.
        floored = _floored(graph, names, start)
        for pipeline_name in names:
            pipeline = graph[pipeline_name]
            planner.propagate(pipeline)
            until = min(widened if pipeline.incremental else end, self.until())
            lower = _kept(planner, pipeline, start, floored)
            tasks.extend((pipeline_name, i) for i in planner.missing(pipeline, lower, until))
        return self._execute_all(
            runner, tasks, "backfill", progress, graph, waiting_fails=waiting_fails
        )

    def held(self, graph: Graph) -> dict[str, str]:
        """Pipelines whose files are not what the environment applied, each with why; none
        where nothing was ever applied (the files are what runs)."""
        versions = self.applied()
        if versions is None:
            return {}
        held: dict[str, str] = {}
        for pipeline in graph:
            applied = versions.get(pipeline.name)
            if applied == pipeline.version:
                continue
            held[pipeline.name] = (
                "it is not applied here yet"
                if applied is None
                else f"its file (version {pipeline.version}) is not the version applied here "
                f"({applied})"
            )
        return held

    def _not_applied(self, graph: Graph) -> dict[str, str]:
        """:meth:`held`, each logged once per version."""
        held = self.held(graph)
        for pipeline in graph:
            if pipeline.name not in held:
                continue
            if (pipeline.name, pipeline.version) not in self._held_logged:
                self._held_logged.add((pipeline.name, pipeline.version))
                log.warning(
                    "%s is not run: %s; `headwater plan` shows the change, `headwater apply` "
                    "makes it", pipeline.name, held[pipeline.name],
                    extra=fields(pipeline=pipeline.name, version=pipeline.version),
                )  # fmt: skip
        return held

    def _refuse_unapplied(self, graph: Graph, names: list[str]) -> None:
        held = self._not_applied(graph)
        for name in names:
            if name in held:
                raise PipelineError(
                    f"{name} is not run in this environment: {held[name]}",
                    pipeline=name,
                    hint="run `headwater plan` to see the change, `headwater apply` to make it "
                    "(an environment that has applied runs only what was applied)",
                )

    def until(self) -> datetime:
        """Intervals ending by this time are whole: every event in them has arrived."""
        now = self.clock()
        return min(now, self.floor())

    def _watch_late_events(self, pipeline: Pipeline) -> None:
        """Before the first run of an event-time pipeline, start its watermark.

        Events that arrive before the mark are committed and seen by the run;
        those after are checked by the next pass, so none is missed.
        """
        event_time = pipeline.incremental and pipeline.header.time == "timestamp"
        if event_time and self.state.runs.watermark(pipeline.name) is None:
            self.state.runs.set_watermark(pipeline.name, self.until())

    def _execute_all(
        self,
        runner: Runner,
        tasks: list[tuple[str, Interval]],
        trigger: Trigger,
        progress: ProgressFn | None,
        graph: Graph,
        *,
        waiting_fails: bool = True,
    ) -> list[RunResult]:
        """:meth:`_execute`, then the first error raised, once everything that could run
        has."""
        failed: list[Failure] = []
        results = self._execute(
            runner, tasks, trigger, progress, graph, failed, waiting_fails=waiting_fails
        )
        if failed:
            raise failed[0][2]
        return results

    def _execute(
        self,
        runner: Runner,
        tasks: list[tuple[str, Interval]],
        trigger: Trigger,
        progress: ProgressFn | None,
        graph: Graph,
        failed: list[Failure],
        *,
        waiting_fails: bool = True,
    ) -> list[RunResult]:
        """Run ``tasks`` in order; what fails is added to ``failed``. A failed interval
        does not stop the others: only the intervals of its readers whose read range holds
        it (or one in ``failed`` already) are skipped, and added to ``failed``. A reader's
        interval whose inputs are not all done is not run: a failure, or (not
        ``waiting_fails``) left for the scheduler to run once they are."""
        results: list[RunResult] = []
        until = self.until()
        count = 0
        readiness = _Readiness(self, graph, until)
        for name, span, each in _grouped(graph, tasks, until):
            covered = each or (span,)
            blocker = _reads_failed(graph, name, span, failed)
            if blocker is not None:
                error = PipelineError(
                    f"not run: it reads {blocker[0]} {blocker[1]}, which failed",
                    pipeline=name,
                    hint=f"fix {blocker[0]}, then run {name} again",
                )
                for interval in covered:
                    count += 1
                    failed.append((name, interval, error))
                    _report(progress, name, interval, count, len(tasks), error=str(error))
                continue
            runs = [(span, each)]
            waiting = readiness.waiting(graph[name], covered)
            if waiting:
                # Its inputs over them are not all done (a range that began after what its
                # window reads): run, they would publish a partial number and record it done.
                runs = batches(graph[name], [i for i in covered if i not in waiting])
            if waiting and waiting_fails:
                inputs = ", ".join(sorted(graph[name].inputs - BUILTIN_TABLES))
                error = PipelineError(
                    f"not run: what it reads of {inputs} over this interval is not all done",
                    pipeline=name,
                    hint=f"fill {inputs} over the range {name} reads first (a backfill from "
                    "the start of that range), then run it again",
                )
                for interval in waiting:
                    count += 1
                    failed.append((name, interval, error))
                    _report(progress, name, interval, count, len(tasks), error=str(error))
            for one_span, one_each in runs:
                try:
                    self._watch_late_events(graph[name])
                    result = self._run_when_free(
                        runner, graph[name], one_span, trigger, until, one_each
                    )
                except HeadwaterError as exc:
                    for interval in one_each or (one_span,):
                        count += 1
                        failed.append((name, interval, exc))
                        _report(progress, name, interval, count, len(tasks), error=str(exc))
                    continue
                readiness.published(name)
                for one in result.split():
                    count += 1
                    results.append(one)
                    _report(progress, name, one.interval, count, len(tasks), result=one)
                if graph[name].header.sinks:
                    self.on_published()
        return results

    def _run_when_free(
        self,
        runner: Runner,
        pipeline: Pipeline,
        span: Interval,
        trigger: Trigger,
        until: datetime,
        each: tuple[Interval, ...],
    ) -> RunResult:
        """``runner.run``, waiting (up to a lease's time) while another process runs the
        pipeline: a run by hand beside the server's scheduler, or beside another backfill,
        takes its turn between their runs instead of failing."""
        waited, delay = 0.0, 0.05
        while True:
            try:
                return runner.run(pipeline, span, trigger, record=span.end <= until, each=each)
            except LeaseHeld:
                if waited >= self.settings.lease_seconds:
                    raise
                (self._sleep or time.sleep)(delay)
                waited += delay
                delay = min(delay * 2, 1.0)


#: An interval that failed or was not run: pipeline, interval, why.
Failure = tuple[str, Interval, HeadwaterError]


class _Readiness:
    """Whether a reader's intervals have their inputs done, as a run by hand goes: one
    planner for the whole run (its first look at the events, a query of the store, made
    once), whose record of an input is looked at again after the run publishes it."""

    def __init__(self, service: PipelineService, graph: Graph, until: datetime) -> None:
        self._service = service
        self._graph = graph
        self._until = until
        self._planner: Planner | None = None
        self._changed: set[str] = set()

    def published(self, name: str) -> None:
        self._changed.add(name)

    def waiting(self, pipeline: Pipeline, covered: Sequence[Interval]) -> list[Interval]:
        """The intervals of ``covered`` to be recorded done whose input intervals are not
        all done."""
        inputs = pipeline.inputs - BUILTIN_TABLES
        if not pipeline.incremental or not inputs:
            return []
        if self._planner is None:
            self._planner, _ = self._service.tools(self._graph)
        self._planner.forget(self._changed & inputs)
        self._changed -= inputs
        planner = self._planner
        return [i for i in covered if i.end <= self._until and not planner.ready(pipeline, i)]


def _reads_failed(
    graph: Graph, name: str, interval: Interval, failed: list[Failure]
) -> tuple[str, Interval] | None:
    """The failed interval of an input that ``name`` reads when it runs ``interval``."""
    pipeline = graph[name]
    for other, when, _ in failed:
        if other == name or other not in pipeline.inputs:
            continue
        source = graph[other]
        if not (pipeline.incremental and source.incremental and source.header.time_column):
            return other, when
        read = pipeline.window(other, source.header.time_column, interval)
        if read.start < when.end and when.start < read.end:
            return other, when
    return None


def batches(
    pipeline: Pipeline, intervals: Sequence[Interval]
) -> list[tuple[Interval, tuple[Interval, ...]]]:
    """``intervals`` (in order) as the runs that compute them: each alone, or with the
    pipeline's ``batch_size``, runs of up to that many consecutive intervals, each as its
    span and its intervals (empty for one interval alone)."""
    size = pipeline.header.batch_size or 1
    runs: list[list[Interval]] = []
    for interval in intervals:
        last = runs[-1] if runs else None
        if last is not None and len(last) < size and last[-1].end == interval.start:
            last.append(interval)
        else:
            runs.append([interval])
    return [
        (Interval(run[0].start, run[-1].end), tuple(run) if len(run) > 1 else ()) for run in runs
    ]


def _grouped(
    graph: Graph, tasks: list[tuple[str, Interval]], until: datetime
) -> list[tuple[str, Interval, tuple[Interval, ...]]]:
    """``tasks`` batched per pipeline (see :func:`batches`); an interval that has not ended
    by ``until`` (published, not recorded) runs alone."""
    grouped: list[tuple[str, Interval, tuple[Interval, ...]]] = []
    index = 0
    while index < len(tasks):
        name = tasks[index][0]
        stop = index
        while stop < len(tasks) and tasks[stop][0] == name and tasks[stop][1].end <= until:
            stop += 1
        if stop == index:  # not ended: alone
            grouped.append((name, tasks[index][1], ()))
            index += 1
            continue
        pipeline = graph[name]
        chosen = [i for _, i in tasks[index:stop]]
        grouped.extend((name, span, each) for span, each in batches(pipeline, chosen))
        index = stop
    return grouped


def _widened(graph: Graph, names: Sequence[str], end: datetime) -> datetime:
    """``end`` moved to the end of the interval holding it, for the longest interval of
    the incremental pipelines ``names`` (a range by hand is widened to whole intervals)."""
    ends = [ceiling(graph[n].header.schedule, end) for n in names if graph[n].incremental]
    return max(ends, default=end)


def _kept(planner: Planner, pipeline: Pipeline, start: datetime, floored: datetime) -> datetime:
    """Where a range by hand from ``start`` begins for ``pipeline``: ``floored`` (the start
    of the longest interval holding ``start``), but not before the first interval its
    header declares (``start``: the intervals before it are none of its own, and nothing
    else, a plan or apply included, would keep them), nor before what retention retired of
    it, when ``start`` itself is not (a ``start`` among retired intervals is refused as
    given)."""
    declared = pipeline.start()
    lower = floored if declared is None else max(floored, declared)
    retired = planner.retired(pipeline)
    if retired is None or start < retired.before:
        return lower
    return max(lower, retired.before)


def _refuse_empty(start: datetime | None, end: datetime | None) -> None:
    """A range by hand that holds no time (dates swapped, say) is an error, not "0 run"."""
    if start is not None and end is not None and start >= end:
        raise PipelineError(
            f"--start {start.isoformat()} is not before --end {end.isoformat()}: "
            "the range holds no interval",
            hint="give the earlier time as --start (are they swapped?)",
        )


def _floored(graph: Graph, names: Sequence[str], start: datetime) -> datetime:
    """``start`` moved to the start of the interval holding it, for the longest interval
    of the incremental pipelines ``names``."""
    starts = [
        schedule_floor(graph[n].header.schedule, start) for n in names if graph[n].incremental
    ]
    return min(starts, default=start)


def span(schedule: str, start: datetime, end: datetime, incremental: bool) -> list[Interval]:
    if not incremental:
        return [latest_tick(schedule, end)]
    return intervals(schedule, start, end)


def _report(
    progress: ProgressFn | None,
    pipeline: str,
    interval: Interval,
    done: int,
    total: int,
    *,
    result: RunResult | None = None,
    error: str | None = None,
) -> None:
    if progress is not None:
        progress(Progress(pipeline, interval, done, total, result, error))
