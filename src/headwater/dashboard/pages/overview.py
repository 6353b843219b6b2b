"""Overview: is data coming in, what is refused, how fast it is acknowledged, how big the
store is, how far the offload lags."""

from __future__ import annotations

import math
from typing import Any

from prometheus_client import CollectorRegistry
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from headwater.dashboard.web import Admin, Nav, dashboard, data, operation, page, render

NAV = Nav("Overview", "/", 10)


def collector_counts(registry: CollectorRegistry) -> dict[str, Any]:
    """This process's collector since it started, from its Prometheus metrics: accepted,
    duplicate and refused events, and how long requests waited for their answer (their
    commit included)."""
    totals = {"accepted": 0.0, "duplicates": 0.0, "refused": 0.0}
    names = {
        "headwater_events_accepted_total": "accepted",
        "headwater_events_duplicate_total": "duplicates",
        "headwater_events_rejected_total": "refused",
    }
    buckets: list[tuple[float, float]] = []
    count = total = 0.0
    for metric in registry.collect():
        for sample in metric.samples:
            if sample.name in names:
                totals[names[sample.name]] += sample.value
            elif sample.name == "headwater_ack_seconds_bucket":
                buckets.append((float(sample.labels["le"]), sample.value))
            elif sample.name == "headwater_ack_seconds_count":
                count = sample.value
            elif sample.name == "headwater_ack_seconds_sum":
                total = sample.value
    return {
        **{k: int(v) for k, v in totals.items()},
        "acknowledged": int(count),
        "ack_seconds_mean": total / count if count else None,
        "ack_seconds_p50": _quantile(buckets, 0.5),
        "ack_seconds_p95": _quantile(buckets, 0.95),
    }


def _quantile(buckets: list[tuple[float, float]], q: float) -> float | None:
    """The upper bound of the bucket holding quantile ``q`` (as Prometheus's
    histogram_quantile would bound it); ``None`` before the first commit."""
    buckets = sorted(buckets)
    if not buckets or buckets[-1][1] == 0:
        return None
    wanted = q * buckets[-1][1]
    for bound, cumulative in buckets:
        if cumulative >= wanted:
            return None if math.isinf(bound) else bound
    return None


async def _summary(request: Request) -> dict[str, Any]:
    until = request.query_params.get("until")
    dash = dashboard(request)
    return {
        "pinned": until is not None,
        "traffic": await operation(request, "traffic", {"until": until}),
        "offload": await operation(request, "offload"),
        "collector": collector_counts(dash.registry) if "collect" in dash.roles else None,
    }


async def _page(request: Request, admin: Admin) -> Response:
    summary = await _summary(request)
    return render(request, admin, "overview.html", **summary)


async def _figures(request: Request, admin: Admin) -> Response:
    """The figures alone, which the page asks for again every 30 seconds (htmx)."""
    summary = await _summary(request)
    return render(request, admin, "partials/overview_figures.html", **summary)


async def _json(request: Request, admin: Admin) -> Response:
    return JSONResponse(await _summary(request))


routes = [
    Route("/", page(_page)),
    Route("/overview.json", data(_json)),
    Route("/overview/figures", data(_figures)),
]
