"""What every dashboard page uses: who is signed in, rendering, CSRF, operations, the log.

A page handler is ``async def handler(request, admin) -> Response`` wrapped in
one of three guards:

- :func:`page`: an HTML page; without a session, a redirect to the sign-in form.
- :func:`data`: JSON or a stream read by a page; without a session, 401.
- :func:`action`: a POST that changes something; without a session 401, without
  the session's CSRF token (form field ``csrf`` or header ``X-CSRF-Token``) 403.

Actions call :func:`admin_action`, which runs the work in a thread and records
who did what, with which arguments and how it went, in the metadata.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar
from urllib.parse import quote

import jinja2
from prometheus_client import CollectorRegistry
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, RedirectResponse, Response

from headwater.core.errors import ConfigError, HeadwaterError
from headwater.dashboard.sessions import COOKIE, Sessions, fingerprint
from headwater.dashboard.tail import Fanout
from headwater.serve.auth import AdminRing, AdminTokens, Source
from headwater.state.admin_actions import AdminLog, Outcome

log = logging.getLogger(__name__)
T = TypeVar("T")

CSRF_FIELD = "csrf"
CSRF_HEADER = "x-csrf-token"


@dataclass(frozen=True)
class Nav:
    """A page's entry in the navigation: its label, path and place (lower first)."""

    label: str
    path: str
    order: int


#: Runs an operation of ``runtime/operations.py`` by name with JSON-able arguments (in the
#: calling thread) and returns its JSON-able result: what the CLI calls.
Operations = Callable[[str, dict[str, Any]], Any]


@dataclass
class Dashboard:
    """What the pages reach: the operations, the admins, sessions, templates, metrics."""

    operations: Operations
    #: Where admin actions are logged (the metadata database).
    actions: AdminLog
    admins: AdminRing
    admin_tokens: Source[AdminTokens]
    sessions: Sessions
    templates: jinja2.Environment
    #: The process's Prometheus registry (the collector's counters and latencies).
    registry: CollectorRegistry
    #: Committed events for the live tail; ``None`` when this process runs no collector.
    fanout: Fanout | None
    roles: frozenset[str]
    nav: list[Nav] = field(default_factory=list)


@dataclass(frozen=True)
class Admin:
    """The admin a request is signed in as, and the CSRF token of its forms."""

    name: str
    csrf: str


Handler = Callable[[Request, Admin], Awaitable[Response]]
Endpoint = Callable[[Request], Awaitable[Response]]


def dashboard(request: Request) -> Dashboard:
    found: Dashboard = request.app.state.dashboard
    return found


def signed_in(request: Request) -> Admin | None:
    """The admin of the request's session cookie, if it is valid and the admin's token is
    still the one it was signed in with."""
    dash = dashboard(request)
    session = dash.sessions.read(request.cookies.get(COOKIE))
    if session is None:
        return None
    stored = dash.admin_tokens().get(session.admin)
    if stored is None or fingerprint(stored.digest) != session.fingerprint:
        return None
    return Admin(session.admin, dash.sessions.csrf(session))


def page(handler: Handler) -> Endpoint:
    """An HTML page for signed-in admins; others are sent to the sign-in form."""

    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        admin = signed_in(request)
        if admin is None:
            target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/signin?next={quote(target, safe='')}", status_code=303)
        return await handler(request, admin)

    return endpoint


def data(handler: Handler) -> Endpoint:
    """JSON (or a stream) for signed-in admins; 401 for others."""

    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        admin = signed_in(request)
        if admin is None:
            return refused(401, "sign in to the dashboard first")
        return await handler(request, admin)

    return endpoint


def action(handler: Handler) -> Endpoint:
    """A POST for signed-in admins carrying their CSRF token: 401 without a session, 403
    without the token or from another origin."""

    @functools.wraps(handler)
    async def endpoint(request: Request) -> Response:
        admin = signed_in(request)
        if admin is None:
            return refused(401, "sign in to the dashboard first")
        if not await csrf_ok(request, admin):
            return refused(403, "the form's CSRF token is missing or wrong; reload the page")
        return await handler(request, admin)

    return endpoint


async def csrf_ok(request: Request, admin: Admin) -> bool:
    """Whether a POST carries ``admin``'s CSRF token and comes from this origin."""
    origin = request.headers.get("origin")
    # With no referrer sent, a browser says "null" for its own forms: the token decides.
    if origin not in (None, "null", f"{request.url.scheme}://{request.url.netloc}"):
        return False
    token = request.headers.get(CSRF_HEADER)
    if token is None and request.method == "POST":
        form = await request.form()
        value = form.get(CSRF_FIELD)
        token = value if isinstance(value, str) else None
    dash = dashboard(request)
    session = dash.sessions.read(request.cookies.get(COOKIE))
    return session is not None and dash.sessions.csrf_matches(session, token)


def refused(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def render(
    request: Request,
    admin: Admin | None,
    template: str,
    status_code: int = 200,
    **context: Any,
) -> HTMLResponse:
    """``template`` with ``context``, and what the layout needs (the admin, the CSRF token,
    the navigation and the current path)."""
    dash = dashboard(request)
    html = dash.templates.get_template(template).render(
        admin=admin,
        csrf=admin.csrf if admin else "",
        nav=dash.nav,
        path=request.url.path,
        **context,
    )
    return HTMLResponse(html, status_code=status_code)


def problem(request: Request, status: int, message: str, hint: str | None = None) -> Response:
    """An error as the asker can show it: a fragment for htmx (swapped into its target), JSON
    for a script, otherwise a page in the layout."""
    if request.headers.get("hx-request") == "true":
        return render(request, None, "partials/problem.html", status, message=message, hint=hint)
    if request.url.path.endswith(".json") or "json" in request.headers.get("accept", ""):
        return JSONResponse({"error": message, "hint": hint}, status_code=status)
    admin = signed_in(request)
    return render(request, admin, "problem.html", status, message=message, hint=hint)


async def failed(request: Request, exc: Exception) -> Response:
    """What an operation raised: a bad request (``ConfigError``, 400) says the fix; the store
    or another part failing (503) says to try again; anything else is logged (500)."""
    if isinstance(exc, ConfigError):
        return problem(request, 400, str(exc), exc.hint)
    if isinstance(exc, HeadwaterError):
        log.error("dashboard: %s: %s", request.url.path, exc)
        return problem(request, 503, str(exc), exc.hint or "try again shortly")
    log.error("dashboard: %s failed", request.url.path, exc_info=exc)
    return problem(request, 500, "something went wrong; the server's log says what")


async def operation(request: Request, name: str, args: dict[str, Any] | None = None) -> Any:
    """Operation ``name`` of ``runtime/operations.py`` (what the CLI calls), in a thread."""
    return await asyncio.to_thread(dashboard(request).operations, name, args or {})


async def admin_action(
    request: Request,
    admin: Admin,
    name: str,
    arguments: dict[str, Any],
    work: Callable[[], T],
) -> T:
    """Run ``work`` in a thread as ``admin``'s action ``name`` and log it in the metadata
    (outcome ``ok``, ``refused`` for a bad request (a ``ConfigError``), ``failed``
    otherwise); what it raised
    is raised again after it is logged."""
    log_ = dashboard(request).actions
    try:
        result = await asyncio.to_thread(work)
    except HeadwaterError as exc:
        outcome: Outcome = "refused" if isinstance(exc, ConfigError) else "failed"
        await asyncio.to_thread(log_.record, admin.name, name, arguments, outcome, str(exc))
        raise
    except Exception as exc:
        await asyncio.to_thread(log_.record, admin.name, name, arguments, "failed", repr(exc))
        raise
    failed = _failures(result)
    await asyncio.to_thread(
        log_.record, admin.name, name, arguments, "failed" if failed else "ok", failed
    )
    log.info("dashboard: %s did %s %s", admin.name, name, arguments)
    return result


def _failures(result: object) -> str | None:
    """What a result says failed though nothing was raised (a run's failed intervals, a
    replay's letters that failed again), for the action's log; None when nothing did."""
    if isinstance(result, dict):
        failures = result.get("failures") or []
        if failures:
            first = str(failures[0].get("error") or "").split("\n", 1)[0]
            return f"{len(failures)} failed: {first}"
    elif isinstance(result, list):
        again = [r for r in result if isinstance(r, dict) and r.get("status") in _NOT_DONE]
        if again:
            return f"{len(again)} failed again: {again[0].get('error') or ''}"
    return None


#: A replayed letter's statuses that mean it is not delivered.
_NOT_DONE = frozenset({"failed", "dead"})


async def operation_action(
    request: Request, admin: Admin, name: str, arguments: dict[str, Any]
) -> Any:
    """Operation ``name`` as an admin action: run, logged, its JSON-able result returned."""
    call = dashboard(request).operations
    return await admin_action(request, admin, name, arguments, lambda: call(name, arguments))
