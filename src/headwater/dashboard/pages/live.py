"""Live events: what the collector commits, as it commits it, over server-sent events.

The stream reads the writer's fan-out (``tail.Fanout``), not the store: an event
shows within moments of its commit, and a page that falls behind loses events
(it is told how many) rather than slowing the collector.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc
from sse_starlette.sse import EventSourceResponse
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from headwater.dashboard.tail import Fanout, TooManyViewers
from headwater.dashboard.web import (
    Admin,
    Nav,
    dashboard,
    data,
    page,
    refused,
    render,
    signed_in,
)
from headwater.store import schema

NAV = Nav("Live events", "/live", 20)
#: Rows of one commit sent to a page at most: a tail shows the newest, not a bulk load.
ROWS_PER_COMMIT = 100
#: How often an open stream looks again whether its session still holds (signed out,
#: the admin's token changed or removed, the secret rotated, the session expired).
RECHECK_SECONDS = 5.0
TYPES = ("track", "identify", "page", "screen", "group", "alias")
FILTERS = {"source": "source", "type": "type", "event": "event"}


async def _page(request: Request, admin: Admin) -> Response:
    dash = dashboard(request)
    return render(
        request,
        admin,
        "live.html",
        collecting=dash.fanout is not None,
        types=TYPES,
        chosen={k: request.query_params.get(k, "") for k in FILTERS},
    )


def _chosen(table: pa.Table, filters: dict[str, str]) -> pa.Table:
    """The rows matching every filter given: source and type exactly; the event name as the
    event (track) or the name (page, screen)."""
    for key, value in filters.items():
        if key == "event":
            named = pc.if_else(pc.is_null(table["event"]), table["name"], table["event"])
            table = table.filter(pc.equal(named, value))
        else:
            table = table.filter(pc.equal(table[FILTERS[key]], value))
    return table


def rows(table: pa.Table) -> list[dict[str, Any]]:
    """The stored rows as JSON-able values, JSON columns parsed, times in ISO."""
    out = []
    for row in table.to_pylist():
        for column, value in row.items():
            if column in schema.JSON_COLUMNS and isinstance(value, str):
                with contextlib.suppress(ValueError):  # shown as stored
                    row[column] = json.loads(value)
            elif hasattr(value, "isoformat"):
                row[column] = value.isoformat()
        out.append(row)
    return out


#: What an open stream's wait gives when nothing was committed for RECHECK_SECONDS.
_QUIET = pa.table({})


async def _stream(request: Request, admin: Admin) -> Response:
    fanout: Fanout | None = dashboard(request).fanout
    if fanout is None:
        return refused(409, "this process runs no collector: open the dashboard of one that does")
    filters = {k: v for k in FILTERS if (v := request.query_params.get(k, "").strip())}

    async def events() -> AsyncIterator[dict[str, str]]:
        # Subscribed here, where the stream's end always unsubscribes: a page that went
        # before its stream began holds no place.
        try:
            viewer = fanout.subscribe()
        except TooManyViewers:
            yield {"event": "full", "data": "too many live pages are open, or the server stops"}
            return
        try:
            # Sent once subscribed: what is committed from now on is shown.
            yield {"event": "ready", "data": "{}"}
            dropped = 0
            checked = time.monotonic()
            while True:
                try:
                    committed = await asyncio.wait_for(viewer.queue.get(), RECHECK_SECONDS)
                except TimeoutError:
                    committed = _QUIET
                if time.monotonic() - checked >= RECHECK_SECONDS:
                    checked = time.monotonic()
                    if await asyncio.to_thread(signed_in, request) is None:
                        yield {"event": "signed_out", "data": "the session ended: sign in again"}
                        return
                if committed is None:
                    break
                if committed is _QUIET:
                    continue
                table = _chosen(committed, filters)
                if viewer.dropped != dropped:
                    dropped = viewer.dropped
                    yield {"event": "dropped", "data": str(dropped)}
                if table.num_rows:
                    newest = table.slice(max(0, table.num_rows - ROWS_PER_COMMIT))
                    yield {"event": "events", "data": json.dumps(rows(newest), default=str)}
        finally:
            fanout.unsubscribe(viewer)

    return EventSourceResponse(events(), ping=15)


routes = [
    Route("/live", page(_page)),
    Route("/live/stream", data(_stream)),
]
