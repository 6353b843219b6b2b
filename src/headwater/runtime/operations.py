"""Pipeline operations as plain data, the same whether run here or in the server.

The CLI calls :func:`call` directly when no server runs, and through the
control socket when one does; either way arguments and results are JSON-able
dicts, and progress arrives as :class:`~headwater.process.service.Progress`
turned into dicts.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Any

import msgspec

from headwater.core.clock import parse_utc
from headwater.core.errors import HeadwaterError
from headwater.process.service import PipelineService, Progress
from headwater.runtime import transfer

OPERATIONS = (
    "status", "list", "render", "run", "due", "backfill", "deliver", "deliveries", "replay",
    "dead_letters", "export", "import",
)  # fmt: skip

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
        cost = service.cost(str(args["name"]), start, end)
        return {"sql": text, "params": _builtins(params), "cost": _builtins(cost)}
    if op in ("run", "due", "backfill"):
        if op == "run":
            results = service.run(str(args["name"]), start, end, report)
        elif op == "due":
            results = service.run_due(report)
        else:
            if start is None or end is None:
                raise HeadwaterError("a backfill needs --start and --end")
            results = service.backfill(str(args["name"]), start, end, report)
        if not args.get("deliver"):
            return _builtins(results)
        # The CLI waits for what its runs owe, so it can say where the rows went.
        deliveries = service.deliver(wait=True)
        return {"runs": _builtins(results), "deliveries": _builtins(deliveries)}
    if op == "deliver":
        return _builtins(service.deliver())
    if op == "deliveries":
        return _builtins(service.metadata.deliveries.counts())
    if op == "dead_letters":
        letters = service.metadata.deliveries.dead_letters(
            pipeline=args.get("pipeline"),
            sink=args.get("sink"),
            ids=[int(i) for i in args.get("ids") or []],
        )
        return [
            {
                "id": d.id,
                "pipeline": d.pipeline,
                "sink": d.sink,
                "interval": _builtins(d.interval),
                "batch": d.batch,
                "rows": d.rows,
                "reason": d.reason,
                "attempts": d.attempts,
                "created_at": _builtins(d.created_at),
            }
            for d in letters
        ]
    if op == "replay":
        ids = [int(i) for i in args.get("ids") or []]
        return _builtins(service.replay(args.get("pipeline"), args.get("sink"), ids or None))
    if op == "export":
        return _builtins(
            transfer.export_events(service.engine, Path(str(args["folder"])), start, end, progress)
        )
    if op == "import":
        folder, environment = Path(str(args["folder"])), service.project.environment or "default"
        return _builtins(transfer.import_events(service.engine, folder, environment, progress))
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
