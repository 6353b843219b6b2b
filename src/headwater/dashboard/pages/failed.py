"""Failed events: the refused events grouped by code and field, fixed and replayed.

The groups are the ``failed`` operation's (``headwater failed``); the preview is
``failed_replay`` with ``dry_run`` (what would pass, writing nothing) and the
replay the same operation for real (``headwater failed replay``), as an admin
action. ``where`` and ``fix`` are SQL expressions over the failed event's row,
checked by the operation as they are on the command line.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from headwater.core.errors import HeadwaterError
from headwater.dashboard.web import (
    Admin,
    Nav,
    action,
    operation,
    operation_action,
    page,
    problem,
)
from headwater.dashboard.web import render as render_page

NAV = Nav("Failed events", "/failed", 30)


async def _index(request: Request, admin: Admin) -> Response:
    groups = await operation(request, "failed")
    chosen = {key: request.query_params.get(key, "") for key in ("code", "where", "fix")}
    return render_page(request, admin, "failed.html", groups=groups, chosen=chosen,
                       codes=sorted({g["code"] for g in groups}))  # fmt: skip


async def _preview(request: Request, admin: Admin) -> Response:
    """What a replay with this choice and fix would pass, and what would still fail."""
    args = await _choice(request)
    try:
        report = await operation(request, "failed_replay", {**args, "dry_run": True})
    except HeadwaterError as exc:
        return render_page(request, admin, "partials/problem.html",
                           message=str(exc), hint=exc.hint)  # fmt: skip
    return render_page(request, admin, "partials/failed_report.html", report=report)


async def _replay(request: Request, admin: Admin) -> Response:
    """Replay the chosen failed events, each fixed: stored as events, marked replayed."""
    args = await _choice(request)
    try:
        report = await operation_action(request, admin, "failed_replay", args)
    except HeadwaterError as exc:
        if request.headers.get("hx-request") != "true":
            return problem(request, 400, str(exc), exc.hint)
        # Shown beside the form (a 200, so htmx swaps it in where the preview goes).
        return render_page(request, admin, "partials/problem.html",
                           message=str(exc), hint=exc.hint)  # fmt: skip
    if request.headers.get("hx-request") != "true":
        return RedirectResponse("/failed", status_code=303)
    groups = await operation(request, "failed")
    return render_page(request, admin, "partials/failed_done.html", report=report,
                       groups=groups)  # fmt: skip


async def _choice(request: Request) -> dict[str, Any]:
    form = await request.form()
    args: dict[str, Any] = {}
    for key in ("code", "where", "fix"):
        value = form.get(key)
        if isinstance(value, str) and value.strip():
            args[key] = value.strip()
    return args


routes = [
    Route("/failed", page(_index), methods=["GET"]),
    Route("/failed/preview", action(_preview), methods=["POST"]),
    Route("/failed/replay", action(_replay), methods=["POST"]),
]
