"""Datasets: each one's columns, key, who may read it and a preview; models and versions."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from headwater.core.errors import HeadwaterError
from headwater.dashboard.web import Admin, Nav, data, operation, page, render

NAV = Nav("Datasets", "/datasets", 30)
PREVIEW_ROWS = 10


async def _page(request: Request, admin: Admin) -> Response:
    listed = await operation(request, "datasets")
    models: dict[str, Any] | None
    try:
        models = await operation(request, "models")
    except HeadwaterError:
        models = None  # no models declared, or their files do not load: the page says so
    return render(
        request,
        admin,
        "datasets.html",
        datasets=listed["datasets"],
        consumers=listed["consumers"],
        models=models,
    )


async def _preview(request: Request, admin: Admin) -> Response:
    name = request.path_params["name"]
    shown = await operation(request, "preview", {"name": name, "limit": PREVIEW_ROWS})
    return render(request, admin, "partials/preview.html", preview=shown)


routes = [
    Route("/datasets", page(_page)),
    Route("/datasets/{name}/preview", data(_preview)),
]
