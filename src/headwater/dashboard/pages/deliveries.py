"""Deliveries: per pipeline and sink, delivered, pending and failed; dead letters; replay.

The counts are the ``deliveries`` operation's (the table ``headwater status``
prints), the dead letters ``dead_letters``' (``headwater replay --list``), and
replaying calls ``replay`` (``headwater replay``) as an admin action.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from headwater.core.errors import HeadwaterError
from headwater.dashboard.web import Admin, Nav, action, operation, operation_action, page
from headwater.dashboard.web import render as render_page

NAV = Nav("Deliveries", "/deliveries", 50)


async def _index(request: Request, admin: Admin) -> Response:
    return render_page(request, admin, "deliveries.html", **await _state(request), outcome=None)


async def _state(request: Request) -> dict[str, Any]:
    counts = await operation(request, "deliveries")
    letters = await operation(request, "dead_letters", {})
    return {"counts": counts, "letters": letters}


async def _replay(request: Request, admin: Admin) -> Response:
    """Send dead letters again: one (``id``), a pipeline and sink's, or all."""
    form = await request.form()
    args: dict[str, Any] = {"pipeline": _field(form, "pipeline"), "sink": _field(form, "sink"),
                            "ids": []}  # fmt: skip
    ident = _field(form, "id")
    if ident is not None:
        if not ident.isdigit():
            message = f"{ident!r} is not a dead letter's id"
            return render_page(request, admin, "partials/problem.html", message=message, hint=None)
        args["ids"] = [int(ident)]
    try:
        results = await operation_action(request, admin, "replay", args)
        outcome = _outcome(results)
    except HeadwaterError as exc:
        outcome = {"ok": False, "text": str(exc), "hint": exc.hint, "results": []}
    if request.headers.get("hx-request") != "true":
        return RedirectResponse("/deliveries", status_code=303)
    return render_page(request, admin, "partials/deliveries.html", **await _state(request),
                       outcome=outcome)  # fmt: skip


def _outcome(results: list[dict[str, Any]]) -> dict[str, Any]:
    """What ``headwater replay`` prints: how many went how, and each that failed again."""
    if not results:
        return {"ok": True, "text": "No dead letters to replay.", "hint": None, "results": []}
    counts: dict[str, int] = {}
    for r in results:
        counts[r["status"]] = counts.get(r["status"], 0) + 1
    text = "Replayed: " + ", ".join(f"{n} {status}" for status, n in sorted(counts.items()))
    failed = [r for r in results if r["status"] in ("failed", "dead")]
    return {"ok": not failed, "text": text, "hint": None, "results": failed}


def _field(form: Any, key: str) -> str | None:
    value = form.get(key)
    return value.strip() or None if isinstance(value, str) else None


routes = [
    Route("/deliveries", page(_index), methods=["GET"]),
    Route("/deliveries/replay", action(_replay), methods=["POST"]),
]
