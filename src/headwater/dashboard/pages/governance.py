"""Governance: erasures still owed, the suppression list, pipelines an erasure would miss,
and what retention keeps: what ``headwater status`` says of them, from the same operations."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from headwater.dashboard.web import Admin, Nav, operation, page, render

NAV = Nav("Governance", "/governance", 60)


async def _page(request: Request, admin: Admin) -> Response:
    erasures = await operation(request, "erasures")
    retention = await operation(request, "retention")
    return render(request, admin, "governance.html", erasures=erasures, retention=retention)


routes = [Route("/governance", page(_page))]
