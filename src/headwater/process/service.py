"""The pipeline operations behind the CLI, the scheduler and the control API.

One object per project and engine. The graph is loaded again for every
operation, so an edited pipeline file takes effect without a restart, and a
broken one stops only the operations that need it.
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

from headwater.config.project import Project, load_project
from headwater.core.clock import from_us, utc_now
from headwater.core.errors import HeadwaterError
from headwater.core.types import Interval
from headwater.deliver.service import Deliverer, DeliveryResult, ReplayResult, Sinks
from headwater.deliver.settings import PostgresSink
from headwater.process import sql
from headwater.process.definition import Pipeline
from headwater.process.errors import PipelineError
from headwater.process.graph import Graph, load_graph
from headwater.process.metadata import MetadataStore
from headwater.process.planner import Planner
from headwater.process.runner import Runner, RunResult
from headwater.process.schedule import following, intervals, latest_tick
from headwater.store.engine import FLOOR_STALE_SECONDS, Cost, Engine

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


@dataclass(frozen=True)
class PipelineStatus:
    name: str
    kind: str
    language: str
    schedule: str
    time: str | None
    inputs: list[str]
    last_run: datetime | None
    last_status: str | None
    last_error: str | None
    intervals_done: int
    intervals_missing: int
    intervals_stale: int
    intervals_changed: int
    next_run: datetime | None
    stale_reasons: list[str] = field(default_factory=list)
    #: BigQuery: bytes one interval bills, by a dry run of the next one (free).
    bytes_per_run: int | None = None


class PipelineService:
    """Runs, backfills and reports on the pipelines of a project."""

    def __init__(
        self,
        project: Project,
        engine: Engine,
        metadata: MetadataStore,
        *,
        floor: Callable[[], datetime] | None = None,
        clock: Callable[[], datetime] = utc_now,
        sleep: Callable[[float], None] | None = None,
    ) -> None:
        self.project = project
        self.engine = engine
        self.metadata = metadata
        self.settings = project.settings.pipelines
        self.dialect = project.settings.project.dialect
        self.clock = clock
        # Without a collector in this process, nothing is in flight here: now is the floor,
        # or on a shared store, the lowest floor its live collectors published.
        self.floor = floor or self._store_floor
        self._sleep = sleep
        self._graph: tuple[tuple[tuple[str, int, int], ...], Graph] | None = None
        self._project_stamp = _stamp(project.file)
        #: Called after a run recorded an interval with deliveries owed (wakes the deliverer).
        self.on_published: Callable[[], None] = lambda: None
        self.deliverer = Deliverer(
            self._sinks, engine, metadata, lambda: self.graph().pipelines, clock=clock
        )

    def _sinks(self) -> Sinks:
        project = self.current_project()
        return Sinks(
            project.root,
            project.settings.sinks,
            project.settings.delivery,
            scope=project.environment or "",
        )

    def deliver(
        self, should_stop: Callable[[], bool] = bool, *, wait: bool = False
    ) -> list[DeliveryResult]:
        """One attempt at every delivery that is due (``wait``: also for those another
        process is making, reported as it leaves them)."""
        return self.deliverer.deliver_due(should_stop, wait=wait)

    def replay(
        self, pipeline: str | None = None, sink: str | None = None, ids: list[int] | None = None
    ) -> list[ReplayResult]:
        """Send dead letters again; whole intervals are owed again and delivered now."""
        results = self.deliverer.replay(pipeline=pipeline, sink=sink, ids=ids)
        if not any(r.status == "requeued" for r in results):
            return results
        # Requeued intervals are delivered now; say how that went, not just that they went.
        outcome = {(d.pipeline, d.sink, d.interval.start): d for d in self.deliver()}
        final = []
        for r in results:
            done = outcome.get((r.pipeline, r.sink, r.interval.start))
            if r.status == "requeued" and done is not None:
                r = dataclasses.replace(r, status=done.status, error=done.error)
            final.append(r)
        return final

    def _store_floor(self) -> datetime:
        now = self.clock()
        if not self.engine.shared:
            return now
        shared = self.engine.shared_floor(FLOOR_STALE_SECONDS)
        return min(now, from_us(shared)) if shared is not None else now

    def current_project(self) -> Project:
        """The project as ``headwater.toml`` says now (sinks may change without a restart)."""
        stamp = _stamp(self.project.file)
        if stamp != self._project_stamp:
            try:
                self.project = load_project(self.project.root, self.project.environment)
            except HeadwaterError as exc:
                log.error("headwater.toml does not load; keeping the settings before: %s", exc)
            else:
                self._graph = None  # sinks named by pipelines are checked again
            self._project_stamp = stamp
        return self.project

    def graph(self) -> Graph:
        """The pipelines as the files are now; parsed again only when a file changed."""
        project = self.current_project()
        folder = project.pipelines_dir
        files = sorted([*folder.glob("*.sql"), *folder.glob("*.py")]) if folder.is_dir() else []
        stamp = tuple((f.name, f.stat().st_mtime_ns, f.stat().st_size) for f in files)
        if self._graph is None or self._graph[0] != stamp:
            graph = load_graph(folder, self.dialect)
            _check_sinks(graph, project)
            self._graph = (stamp, graph)
        return self._graph[1]

    def _tools(self, graph: Graph) -> tuple[Planner, Runner]:
        runner_args = {} if self._sleep is None else {"sleep": self._sleep}
        runner = Runner(
            graph,
            self.engine,
            self.metadata,
            self.dialect,
            backoff_seconds=self.settings.retry_backoff_seconds,
            **runner_args,
        )
        return Planner(graph, self.engine, self.metadata), runner

    # -- running ---------------------------------------------------------------

    def run_due(
        self, progress: ProgressFn | None = None, should_stop: Callable[[], bool] = bool
    ) -> list[RunResult]:
        """One scheduler pass: late events, staleness, then due intervals in graph order.

        ``should_stop`` is checked between intervals, so a shutdown waits for
        at most the interval being run.
        """
        graph = self.graph()
        planner, runner = self._tools(graph)
        now, floor = self.clock(), min(self.floor(), self.clock())
        planner.detect_late(floor)
        results: list[RunResult] = []
        for pipeline in graph:
            planner.propagate(pipeline)
            due = planner.due(pipeline, now, floor, self.settings.max_catchup)
            for index, interval in enumerate(due):
                if should_stop():
                    return results
                try:
                    self._watch_late_events(pipeline)
                    result = runner.run(pipeline, interval, "schedule")
                except HeadwaterError as exc:
                    log.error("%s %s failed: %s", pipeline.name, interval, exc)
                    _report(progress, pipeline.name, interval, index + 1, len(due), error=str(exc))
                    break  # later intervals wait: order matters for readers
                results.append(result)
                _report(progress, pipeline.name, interval, index + 1, len(due), result=result)
                if pipeline.header.sinks:
                    self.on_published()
        return results

    def run(
        self,
        name: str,
        start: datetime | None = None,
        end: datetime | None = None,
        progress: ProgressFn | None = None,
    ) -> list[RunResult]:
        """Run one pipeline: the given intervals again, or what is due."""
        graph = self.graph()
        planner, runner = self._tools(graph)
        pipeline = graph[name]
        if start is None and end is None:
            now = self.clock()
            planner.propagate(pipeline)
            todo = planner.due(pipeline, now, min(self.floor(), now), self.settings.max_catchup)
        else:
            lower = start or planner.start(pipeline) or self.clock()
            todo = _span(pipeline.header.schedule, lower, end or self.clock(), pipeline.incremental)
        # Intervals that have not ended yet run (a preview of their rows) but are not
        # recorded done, so the scheduler computes them again once they are whole.
        return self._execute(runner, [(pipeline.name, i) for i in todo], "manual", progress, graph)

    def backfill(
        self, name: str, start: datetime, end: datetime, progress: ProgressFn | None = None
    ) -> list[RunResult]:
        """Fill ``[start, end)`` for a pipeline and what it reads, inputs first; done
        intervals are skipped, so a backfill interrupted and started again resumes."""
        graph = self.graph()
        planner, runner = self._tools(graph)
        graph[name]  # a clear error for an unknown name
        tasks: list[tuple[str, Interval]] = []
        until = min(end, self._until())
        for pipeline_name in [*graph.upstream(name), name]:
            pipeline = graph[pipeline_name]
            planner.propagate(pipeline)
            tasks.extend((pipeline_name, i) for i in planner.missing(pipeline, start, until))
        return self._execute(runner, tasks, "backfill", progress, graph)

    def _until(self) -> datetime:
        """Intervals ending by this time are whole: every event in them has arrived."""
        now = self.clock()
        return min(now, self.floor())

    def _watch_late_events(self, pipeline: Pipeline) -> None:
        """Before the first run of an event-time pipeline, start its watermark.

        Events that arrive before the mark are committed and seen by the run;
        those after are checked by the next pass, so none is missed.
        """
        event_time = pipeline.incremental and pipeline.header.time == "timestamp"
        if event_time and self.metadata.watermark(pipeline.name) is None:
            self.metadata.set_watermark(pipeline.name, self._until())

    def _execute(
        self,
        runner: Runner,
        tasks: list[tuple[str, Interval]],
        trigger: str,
        progress: ProgressFn | None,
        graph: Graph,
    ) -> list[RunResult]:
        results = []
        until = self._until()
        for index, (name, interval) in enumerate(tasks):
            try:
                self._watch_late_events(graph[name])
                result = runner.run(graph[name], interval, trigger, record=interval.end <= until)
            except HeadwaterError as exc:
                _report(progress, name, interval, index + 1, len(tasks), error=str(exc))
                raise
            results.append(result)
            _report(progress, name, interval, index + 1, len(tasks), result=result)
            if graph[name].header.sinks:
                self.on_published()
        return results

    # -- reporting ---------------------------------------------------------------

    def status(self) -> list[PipelineStatus]:
        graph = self.graph()
        planner, _ = self._tools(graph)
        now = self.clock()
        floor = min(self.floor(), now)
        report = []
        for pipeline in graph:
            states = self.metadata.intervals(pipeline.name)
            runs = self.metadata.runs(pipeline.name, limit=1)
            last = runs[0] if runs else None
            start = planner.start(pipeline)
            expected = (
                _span(pipeline.header.schedule, start, min(now, floor), True)
                if pipeline.incremental and start is not None
                else []
            )
            done = [s for s in states.values() if s.status == "done"]
            stale = [s for s in states.values() if s.status == "stale"]
            report.append(
                PipelineStatus(
                    name=pipeline.name,
                    kind=pipeline.header.kind,
                    language=pipeline.kind,
                    schedule=pipeline.header.schedule,
                    time=pipeline.header.time if pipeline.incremental else None,
                    inputs=sorted(pipeline.inputs),
                    last_run=last.started_at if last else None,
                    last_status=last.status if last else None,
                    last_error=last.error if last and last.status == "failed" else None,
                    intervals_done=len(done),
                    intervals_missing=sum(1 for i in expected if i.start not in states),
                    intervals_stale=len(stale),
                    intervals_changed=sum(1 for s in done if s.version != pipeline.version),
                    next_run=following(pipeline.header.schedule, now),
                    stale_reasons=sorted({s.reason for s in stale if s.reason}),
                    bytes_per_run=self._billed(pipeline),
                )
            )
        return report

    def cost(self, name: str, start: datetime | None, end: datetime | None) -> Cost | None:
        """What one interval of a SQL pipeline would read, from the engine's plan (BigQuery:
        the bytes a dry run says it would bill); ``None`` when the engine cannot tell."""
        pipeline = self.graph()[name]
        if pipeline.query is None:
            return None
        _, params = self.render(name, start, end)
        try:
            return self.engine.estimate_cost(
                sql.render(pipeline.query, self.engine.dialect), params
            )
        except HeadwaterError as exc:
            log.info("%s: no estimate (%s)", name, exc)
            return None

    def _billed(self, pipeline: Pipeline) -> int | None:
        if self.engine.name != "bigquery" or pipeline.query is None:
            return None
        estimate = self.cost(pipeline.name, None, None)
        return estimate.bytes_scanned if estimate is not None else None

    def render(
        self, name: str, start: datetime | None, end: datetime | None
    ) -> tuple[str, dict[str, object]]:
        """The exact SQL the engine runs for an interval, and its bound parameters."""
        graph = self.graph()
        pipeline = graph[name]
        if pipeline.query is None:
            raise HeadwaterError(
                f"{name} is a Python pipeline; it has no SQL of its own",
                hint=f"read {pipeline.path}",
            )
        text = sql.render(pipeline.query, self.engine.dialect, pretty=True)
        params: dict[str, object] = {}
        if pipeline.query.parameters:
            now = self.clock()
            planner, _ = self._tools(graph)
            lower = start or planner.start(pipeline) or now
            first = _span(pipeline.header.schedule, lower, end or now, True)
            interval = first[0] if first else None
            if interval is not None:
                params = {
                    "start": interval.start if start is None else start,
                    "end": interval.end if end is None else end,
                }
        return text, {k: v for k, v in params.items() if k in pipeline.query.parameters}


def _stamp(path: Path) -> int:
    try:
        return path.stat().st_mtime_ns
    except OSError:
        return 0


def _check_sinks(graph: Graph, project: Project) -> None:
    """Every sink a pipeline names is declared, and can take the pipeline's output."""
    declared = project.settings.sinks
    for pipeline in graph:
        for name in pipeline.header.sinks:
            sink = declared.get(name)
            if sink is None:
                known = ", ".join(sorted(declared)) or "none yet"
                raise PipelineError(
                    f"sinks names {name!r}, which is not a [sinks.{name}] table in "
                    f"headwater.toml (declared: {known})",
                    pipeline=pipeline.name,
                    path=str(pipeline.path),
                    hint=f'add [sinks.{name}] with type = "files", "postgres" or "webhook"',
                )
            if isinstance(sink, PostgresSink) and not pipeline.header.key:
                raise PipelineError(
                    f"sink {name!r} is a PostgreSQL table, upserted by key, and this pipeline "
                    "declares no key",
                    pipeline=pipeline.name,
                    path=str(pipeline.path),
                    hint='declare the output\'s key in the header: key = ["user_id"]',
                )


def _span(schedule: str, start: datetime, end: datetime, incremental: bool) -> list[Interval]:
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
