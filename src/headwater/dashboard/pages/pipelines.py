"""Pipelines: the dependency graph, each pipeline's intervals as a grid, running them.

Every number is an operation's answer, the one ``headwater status`` and
``headwater status NAME`` print; running an interval or backfilling a range calls
the operations of ``headwater run`` and ``headwater backfill``, as an admin action
(logged). Buttons ask for confirmation with htmx's ``hx-confirm`` (the browser's
own dialog: no inline script); without htmx the forms post and come back here.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from headwater.core.clock import parse_utc
from headwater.core.errors import HeadwaterError
from headwater.dashboard import dag
from headwater.dashboard.web import (
    Admin,
    Nav,
    action,
    data,
    operation,
    operation_action,
    page,
    problem,
)
from headwater.dashboard.web import render as render_page

NAV = Nav("Pipelines", "/pipelines", 40)

#: What each state means, for the legend and the cells' labels.
STATES = {
    "done": "done",
    "stale": "stale (an older version, or marked to run again)",
    "failed": "failed",
    "missing": "missing",
    "running": "running",
}


async def _index(request: Request, admin: Admin) -> Response:
    listed = await operation(request, "list")
    report = await operation(request, "status")
    states = {row["name"]: _node_state(row) for row in report}
    # A file that does not load is drawn too (red), without edges: what it reads is unknown.
    graph = dag.layout(listed, states)
    return render_page(request, admin, "pipelines.html", report=report, graph=graph, dag=dag)


def _node_state(row: dict[str, Any]) -> str:
    """One word for a pipeline, as its node shows it."""
    if row.get("problem"):
        return "broken"
    if row["last_status"] == "failed":
        return "failed"
    if row["last_status"] == "running":
        return "running"
    if row["intervals_missing"] or row["intervals_stale"]:
        return "behind"
    return "done" if row["last_status"] else "never run"


async def _pipeline(request: Request, admin: Admin) -> Response:
    name = request.path_params["name"]
    try:
        grid = await operation(request, "intervals", _span(request, name))
    except HeadwaterError as exc:
        return problem(request, 404, str(exc), exc.hint)
    spanned = any(request.query_params.get(key) for key in ("start", "end"))
    return render_page(request, admin, "pipeline.html", **_grid_context(grid), outcome=None,
                       spanned=spanned)  # fmt: skip


async def _interval(request: Request, admin: Admin) -> Response:
    """One interval's runs: what a cell shows when chosen."""
    name = request.path_params["name"]
    at = request.query_params.get("at", "")
    try:
        answer = await operation(request, "interval", {"name": name, "at": at})
    except HeadwaterError as exc:
        return render_page(request, admin, "partials/problem.html",
                           message=str(exc), hint=exc.hint)  # fmt: skip
    return render_page(request, admin, "partials/interval.html", name=name, states=STATES, **answer)


async def _run(request: Request, admin: Admin) -> Response:
    """Run intervals of a pipeline again (``headwater run NAME --start --end``)."""
    return await _ranged(request, admin, "run")


async def _backfill(request: Request, admin: Admin) -> Response:
    """Fill a range of a pipeline and what it reads (``headwater backfill``)."""
    return await _ranged(request, admin, "backfill")


async def _ranged(request: Request, admin: Admin, name: str) -> Response:
    """Operation ``name`` (``run`` or ``backfill``) over the form's range, as an admin
    action; what it did, in the words of the command line."""
    pipeline = request.path_params["name"]
    form = await request.form()
    args = {"name": pipeline, "start": _field(form, "start"), "end": _field(form, "end")}
    try:
        answer = await operation_action(request, admin, name, args)
    except HeadwaterError as exc:
        return await _after(request, admin, pipeline, _refused(exc))
    runs, failures = answer["runs"], answer["failures"]
    rows = _rows_text(sum(r["rows_written"] for r in runs))
    if name == "run":
        text = f"Ran {len(runs)} interval{'s' if len(runs) != 1 else ''}; {rows} written."
    else:
        text = f"Backfilled {len(runs)} intervals; {rows} written."
    previews = len([r for r in runs if not r.get("recorded", True)])
    if previews == 1:
        text += (
            " 1 interval had not ended: a preview, published but not recorded done or"
            " delivered; it runs again once it is whole."
        )
    elif previews:
        text += (
            f" {previews} intervals had not ended: previews, published but not recorded done"
            " or delivered; they run again once they are whole."
        )
    return await _after(request, admin, pipeline, _outcome(text, failures))


def _rows_text(count: int) -> str:
    return f"{count} row{'s' if count != 1 else ''}"


def _refused(exc: HeadwaterError) -> dict[str, Any]:
    return {"ok": False, "text": str(exc), "hint": exc.hint, "failures": []}


def _outcome(text: str, failures: list[dict[str, Any]]) -> dict[str, Any]:
    """What an action did; each failed interval with its error (and a hint where it has
    one), which the grid's fragment shows."""
    shown = [{**f, "hint": f.get("hint")} for f in failures]
    return {"ok": not failures, "text": text, "hint": None, "failures": shown}


async def _after(request: Request, admin: Admin, name: str, outcome: dict[str, Any]) -> Response:
    """After an action: htmx gets the grid as it is now with what happened; a plain form
    post goes back to the page."""
    if request.headers.get("hx-request") != "true":
        return RedirectResponse(f"/pipelines/{quote(name, safe='')}", status_code=303)
    try:
        grid = await operation(request, "intervals", {"name": name})
    except HeadwaterError as exc:
        return render_page(request, admin, "partials/problem.html", message=str(exc), hint=exc.hint)
    return render_page(request, admin, "partials/grid.html", **_grid_context(grid), outcome=outcome)


def _field(form: Any, key: str) -> str | None:
    value = form.get(key)
    return value.strip() or None if isinstance(value, str) else None


def _span(request: Request, name: str) -> dict[str, Any]:
    args: dict[str, Any] = {"name": name}
    for key in ("start", "end"):
        value = request.query_params.get(key)
        if value:
            args[key] = value
    limit = request.query_params.get("limit", "")
    if limit.isdigit():
        args["limit"] = int(limit)
    return args


def _grid_context(grid: dict[str, Any]) -> dict[str, Any]:
    cells = grid["cells"]
    earliest = cells[0]["interval"]["start"] if cells else None
    return {
        "grid": grid,
        "rows": list(_rows(cells)),
        "states": STATES,
        "earlier": earliest if grid["earlier"] else None,
        "backfill_start": (cells[0]["interval"]["start"][:16] if cells else ""),
        "backfill_end": (cells[-1]["interval"]["end"][:16] if cells else ""),
    }


def _rows(cells: list[dict[str, Any]]) -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """Cells in rows like a contribution graph: a day per row for intervals shorter than
    a day (an hour's cell in the hour's column), a month per row for longer ones (a
    day's in the day's). ``pad`` is the empty columns before a cell."""
    label, row, column = "", list[dict[str, Any]](), 0
    for cell in cells:
        start = parse_utc(cell["interval"]["start"])
        end = parse_utc(cell["interval"]["end"])
        length = end - start
        if length < timedelta(days=1):
            key, slot = f"{start:%Y-%m-%d}", int((start - start.replace(hour=0, minute=0)) / length)
        else:
            key, slot = f"{start:%Y-%m}", start.day - 1 if length == timedelta(days=1) else 0
        if key != label:
            if row:
                yield label, row
            label, row, column = key, [], 0
        pad = max(slot - column, 0)
        column += pad + 1
        row.append({**cell, "label": _label(cell, start, end), "pad": pad})
    if row:
        yield label, row


def _label(cell: dict[str, Any], start: datetime, end: datetime) -> str:
    """What a cell says to a screen reader and on hover."""
    span = f"{start:%Y-%m-%d %H:%M} to {end:%Y-%m-%d %H:%M} UTC"
    parts = [span, STATES[cell["state"]]]
    run = cell["run"]
    if run is not None:
        parts.append(f"run {run['id']}")
        if run["rows_written"] is not None:
            parts.append(_rows_text(run["rows_written"]))
        if run["duration_seconds"] is not None:
            parts.append(f"{run['duration_seconds']:.1f} s")
        if cell["state"] == "failed" and run["error"]:
            parts.append(str(run["error"]).split("\n", 1)[0][:200])
    if cell["reason"]:
        parts.append(str(cell["reason"]))
    return ", ".join(parts)


routes = [
    Route("/pipelines", page(_index), methods=["GET"]),
    Route("/pipelines/{name}", page(_pipeline), methods=["GET"]),
    Route("/pipelines/{name}/interval", data(_interval), methods=["GET"]),
    Route("/pipelines/{name}/run", action(_run), methods=["POST"]),
    Route("/pipelines/{name}/backfill", action(_backfill), methods=["POST"]),
]
