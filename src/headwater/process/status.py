"""What each pipeline is doing: schedule, last run, intervals done, missing and stale."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from headwater.process.definition import Pipeline
from headwater.process.render import cost
from headwater.process.schedule import following
from headwater.process.service import PipelineService, span
from headwater.state.runs import RunStatus


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
        expected = (
            span(pipeline.header.schedule, start, min(now, floor), True)
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
                bytes_per_run=_billed(service, pipeline),
            )
        )
    return report


def _billed(service: PipelineService, pipeline: Pipeline) -> int | None:
    if service.engine.name != "bigquery" or pipeline.query is None:
        return None
    estimate = cost(service, pipeline.name, None, None)
    return estimate.bytes_scanned if estimate is not None else None
