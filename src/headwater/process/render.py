"""A pipeline's SQL as the engine runs it, and what one interval would cost."""

from __future__ import annotations

import logging
from datetime import datetime

from headwater.core.errors import HeadwaterError
from headwater.process import sql
from headwater.process.errors import PipelineError
from headwater.process.schedule import ceiling, floor
from headwater.process.service import PipelineService, span
from headwater.store.engine import Cost

log = logging.getLogger(__name__)


def cost(
    service: PipelineService, name: str, start: datetime | None, end: datetime | None
) -> Cost | None:
    """What one interval of a SQL pipeline would read, from the engine's plan (BigQuery:
    the bytes a dry run says it would bill); ``None`` when the engine cannot tell."""
    pipeline = service.graph()[name]
    if pipeline.query is None:
        return None
    _, params = render(service, name, start, end)
    try:
        return service.engine.estimate_cost(
            sql.render(pipeline.query, service.engine.dialect), params
        )
    except HeadwaterError as exc:
        log.info("%s: no estimate (%s)", name, exc)
        return None


def render(
    service: PipelineService, name: str, start: datetime | None, end: datetime | None
) -> tuple[str, dict[str, object]]:
    """The exact SQL the engine runs for an interval, and its bound parameters."""
    graph = service.graph()
    pipeline = graph[name]
    if pipeline.query is None:
        raise PipelineError(
            f"{name} is a Python pipeline; it has no SQL of its own",
            hint=f"read {pipeline.path}",
        )
    text = sql.render(pipeline.query, service.engine.dialect, pretty=True)
    params: dict[str, object] = {}
    if pipeline.query.parameters:
        now = service.clock()
        planner, _ = service.tools(graph)
        lower = start or planner.start(pipeline) or now
        first = span(pipeline.header.schedule, lower, end or now, True)
        interval = first[0] if first else None
        if interval is not None:
            # A range given is widened to whole intervals, as a run widens it.
            schedule = pipeline.header.schedule
            params = {
                "start": interval.start if start is None else floor(schedule, start),
                "end": interval.end if end is None else ceiling(schedule, end),
            }
    return text, {k: v for k, v in params.items() if k in pipeline.query.parameters}
