"""What each pipeline is doing: schedule, last run, intervals done, missing and stale."""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from headwater.process.definition import Pipeline
from headwater.process.graph import Broken
from headwater.process.render import cost
from headwater.process.retention import Retired
from headwater.process.schedule import following, intervals
from headwater.process.service import PipelineService, span
from headwater.state.runs import IntervalState, RunRecord, RunStatus

_DAY = timedelta(days=1)


@dataclass(frozen=True)
class ModelChange:
    """Intervals of a scoring pipeline scored by an older version of one of its models."""

    model: str
    shadow: bool
    old_version: str
    new_version: str
    intervals: int


@dataclass(frozen=True)
class PipelineStatus:
    name: str
    kind: str
    language: str
    schedule: str
    time: str | None
    inputs: list[str]
    last_run: datetime | None
    last_status: RunStatus | None
    last_error: str | None
    intervals_done: int
    intervals_missing: int
    intervals_stale: int
    intervals_changed: int
    next_run: datetime | None
    stale_reasons: list[str] = field(default_factory=list)
    #: BigQuery: bytes one interval bills, by a dry run of the next one (free).
    bytes_per_run: int | None = None
    #: How many times its schedule runs it in a day (the last one).
    runs_per_day: int = 0
    #: Set when the file does not load (or reads one that does not): the error, the
    #: file's line with a caret where the parser stopped, and the fix.
    problem: str | None = None
    where: str | None = None
    excerpt: str | None = None
    hint: str | None = None
    blocked_by: str | None = None
    #: Intervals before this are retired by retention (not run again), and why.
    retired_before: datetime | None = None
    retired_why: str | None = None
    #: A scoring pipeline's changed intervals that an older model version scored.
    model_changes: list[ModelChange] = field(default_factory=list)


def _from(pipeline: Pipeline, now: datetime) -> datetime:
    """When runs of ``pipeline`` begin: now, or its declared start if that is later (its
    first interval runs once it ends)."""
    declared = pipeline.start() if pipeline.incremental else None
    return max(now, declared) if declared is not None else now


def status(service: PipelineService) -> list[PipelineStatus]:
    """Every pipeline: schedule, last run, intervals done, missing and stale, next run."""
    graph = service.graph()
    planner, _ = service.tools(graph)
    now = service.clock()
    floor = min(service.floor(), now)
    report = []
    for pipeline in graph:
        states = service.state.runs.intervals(pipeline.name)
        runs = service.state.runs.runs(pipeline.name, limit=1)
        last = runs[0] if runs else None
        start = planner.start(pipeline)
        retired = planner.retired(pipeline)
        failed = last if last and last.status == "failed" else None
        if failed is None and last is not None and pipeline.incremental:
            failed = _unmended(service, pipeline, states, retired)
        if retired is not None and start is not None:
            start = max(start, retired.before)
        expected = (
            span(pipeline.header.schedule, start, min(now, floor), True)
            if pipeline.incremental and start is not None
            else []
        )
        done = [s for s in states.values() if s.status == "done"]
        # A retired interval marked stale (late events, an input re-published) never runs.
        stale = [
            s
            for s in states.values()
            if s.status == "stale" and (retired is None or s.interval.start >= retired.before)
        ]
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
                last_error=failed.error if failed else None,
                intervals_done=len(done),
                intervals_missing=sum(1 for i in expected if i.start not in states),
                intervals_stale=len(stale),
                intervals_changed=sum(1 for s in done if s.version != pipeline.version),
                next_run=following(pipeline.header.schedule, _from(pipeline, now)),
                stale_reasons=sorted({s.reason for s in stale if s.reason}),
                bytes_per_run=_billed(service, pipeline),
                runs_per_day=len(intervals(pipeline.header.schedule, now - _DAY, now)),
                retired_before=retired.before if retired else None,
                retired_why=retired.why if retired else None,
                model_changes=_model_changes(service, pipeline, done),
            )
        )
    for broken in graph.broken.values():
        report.append(_broken(service, broken, now))
    return report


def _unmended(
    service: PipelineService,
    pipeline: Pipeline,
    states: Mapping[datetime, IntervalState],
    retired: Retired | None,
) -> RunRecord | None:
    """The latest failure of the pipeline's version that later runs did not mend (a stale
    interval whose run again failed, its older output still served): some interval of its
    span is not done by a run after it, nor retired. Later runs of other intervals leave
    it the pipeline's last error; runs of its intervals, together, mend it."""
    for run in service.state.runs.failures(pipeline.name, pipeline.version):
        span = intervals(pipeline.header.schedule, run.interval.start, run.interval.end)
        for interval in span:
            if retired is not None and interval.start < retired.before:
                continue
            state = states.get(interval.start)
            if state is None or state.run_id < run.id:
                return run
    return None


def _model_changes(
    service: PipelineService, pipeline: Pipeline, done: list[IntervalState]
) -> list[ModelChange]:
    """Which of ``done`` an older version of a model scored (by the registry's uses of the
    pipeline versions that made them), by model and version."""
    changed = [s for s in done if s.version != pipeline.version]
    if not pipeline.models or not changed:
        return []
    now = {
        (model.name, shadow): artifact.version
        for model in pipeline.models.values()
        for artifact, shadow in model.artifacts()
    }
    uses = service.state.models.uses(pipeline.name)
    counted: Counter[tuple[str, bool, str, str]] = Counter()
    for state in changed:
        for model, version, shadow in uses.get(state.version, []):
            new = now.get((model, shadow))
            if new is not None and new != version:
                counted[(model, shadow, version, new)] += 1
    return [ModelChange(*key, count) for key, count in sorted(counted.items())]


def _broken(service: PipelineService, broken: Broken, now: datetime) -> PipelineStatus:
    """A pipeline that does not load: its error where the file says it, and what it did
    before (its run history stays)."""
    known = broken.last_good
    states = service.state.runs.intervals(broken.name)
    runs = service.state.runs.runs(broken.name, limit=1)
    last = runs[0] if runs else None
    return PipelineStatus(
        name=broken.name,
        kind=known.header.kind if known else "broken",
        language="sql" if broken.path.suffix == ".sql" else "python",
        schedule=known.header.schedule if known else "",
        time=known.header.time if known and known.incremental else None,
        inputs=sorted(known.inputs) if known else [],
        last_run=last.started_at if last else None,
        last_status=last.status if last else None,
        last_error=last.error if last and last.status == "failed" else None,
        intervals_done=sum(1 for s in states.values() if s.status == "done"),
        intervals_missing=0,
        intervals_stale=sum(1 for s in states.values() if s.status == "stale"),
        intervals_changed=0,
        next_run=None,
        problem=broken.error.problem,
        where=broken.error.where(),
        excerpt=broken.error.excerpt(),
        hint=broken.error.hint,
        blocked_by=broken.blocked_by,
    )


def _billed(service: PipelineService, pipeline: Pipeline) -> int | None:
    if service.engine.name != "bigquery" or pipeline.query is None:
        return None
    estimate = cost(service, pipeline.name, None, None)
    return estimate.bytes_scanned if estimate is not None else None
