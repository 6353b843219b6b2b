"""Pipeline operations as plain data, the same whether run here or in the server.

The CLI calls :func:`call` directly when no server runs, and through the
control socket when one does; either way arguments and results are JSON-able
dicts, and progress arrives as :class:`~headwater.process.service.Progress`
turned into dicts.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

import msgspec

from headwater.core.clock import parse_utc
from headwater.core.errors import HeadwaterError
from headwater.process.service import PipelineService, Progress

OPERATIONS = ("status", "list", "render", "run", "due", "backfill")

ProgressSink = Callable[[dict[str, Any]], None]


def call(
    service: PipelineService, op: str, args: dict[str, Any], progress: ProgressSink | None = None
) -> Any:
    """Run operation ``op`` with JSON-able ``args``; return a JSON-able result."""

    def report(step: Progress) -> None:
        if progress is not None:
            progress(_builtins(step))

    start, end = _time(args.get("start")), _time(args.get("end"))
    if op == "status":
        return _builtins(service.status())
    if op == "list":
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
            for p in service.graph()
        ]
    if op == "render":
        text, params = service.render(str(args["name"]), start, end)
        return {"sql": text, "params": _builtins(params)}
    if op == "run":
        return _builtins(service.run(str(args["name"]), start, end, report))
    if op == "due":
        return _builtins(service.run_due(report))
    if op == "backfill":
        if start is None or end is None:
            raise HeadwaterError("a backfill needs --start and --end")
        return _builtins(service.backfill(str(args["name"]), start, end, report))
    raise HeadwaterError(f"unknown operation {op!r}", hint=f"one of {', '.join(OPERATIONS)}")


def _time(value: object) -> datetime | None:
    if value is None:
        return None
    try:
        return parse_utc(str(value))
    except ValueError:
        raise HeadwaterError(
            f"{value!r} is not a date or time", hint="write e.g. 2026-10-01 or 2026-10-01T06:00"
        ) from None


def _builtins(value: object) -> Any:
    return msgspec.to_builtins(value)
