"""Running pipelines: one scheduler pass, a pipeline's intervals, a backfill.

One object per project and engine. The graph comes from a callable that
loads it again when a file changed, so an edited pipeline file takes effect
without a restart, and a broken one stops only the operations that need it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from headwater.core.clock import from_us, utc_now
from headwater.core.errors import HeadwaterError
from headwater.core.types import Interval
from headwater.process.definition import Pipeline
from headwater.process.graph import Graph
from headwater.process.planner import Planner
from headwater.process.runner import Runner, RunResult
from headwater.process.schedule import intervals, latest_tick
from headwater.process.settings import PipelinesSettings
from headwater.state import StateStore
from headwater.state.runs import Trigger
from headwater.store.engine import FLOOR_STALE_SECONDS, Engine

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
    ) -> None:
        self.graph = graph
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

    def _store_floor(self) -> datetime:
        now = self.clock()
        if self.engine.floors is None:
            return now
        lowest = self.engine.floors.lowest(FLOOR_STALE_SECONDS)
        return min(now, from_us(lowest)) if lowest is not None else now

    def tools(self, graph: Graph) -> tuple[Planner, Runner]:
        """A planner and a runner over ``graph``."""
        ttl = timedelta(seconds=self.settings.lease_seconds)
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
        return Planner(graph, self.engine, self.state, lease_ttl=ttl), runner

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
        planner, runner = self.tools(graph)
        pipeline = graph[name]
        if start is None and end is None:
            now = self.clock()
            planner.propagate(pipeline)
            todo = planner.due(pipeline, now, min(self.floor(), now), self.settings.max_catchup)
        else:
            lower = start or planner.start(pipeline) or self.clock()
            todo = span(pipeline.header.schedule, lower, end or self.clock(), pipeline.incremental)
        # Intervals that have not ended yet run (a preview of their rows) but are not
        # recorded done, so the scheduler computes them again once they are whole.
        return self._execute(runner, [(pipeline.name, i) for i in todo], "manual", progress, graph)

    def backfill(
        self, name: str, start: datetime, end: datetime, progress: ProgressFn | None = None
    ) -> list[RunResult]:
        """Fill ``[start, end)`` for a pipeline and what it reads, inputs first; done
        intervals are skipped, so a backfill interrupted and started again resumes."""
        graph = self.graph()
        planner, runner = self.tools(graph)
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
        if event_time and self.state.runs.watermark(pipeline.name) is None:
            self.state.runs.set_watermark(pipeline.name, self._until())

    def _execute(
        self,
        runner: Runner,
        tasks: list[tuple[str, Interval]],
        trigger: Trigger,
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
