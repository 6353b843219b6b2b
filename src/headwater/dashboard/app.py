"""The dashboard's ASGI app: its pages, its static files, and the headers that guard them."""

from __future__ import annotations

import importlib
import pkgutil
from collections.abc import Callable, MutableMapping
from pathlib import Path
from typing import Any

import jinja2
from prometheus_client import CollectorRegistry
from starlette.applications import Starlette
from starlette.routing import BaseRoute, Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from headwater.core.errors import HeadwaterError
from headwater.dashboard import pages
from headwater.dashboard.sessions import Sessions
from headwater.dashboard.tail import Fanout
from headwater.dashboard.web import Dashboard, Nav, Operations, failed
from headwater.serve.auth import AdminRing, AdminTokens, Source
from headwater.state.admin_actions import AdminLog

HERE = Path(__file__).parent
#: How long a sign-in lasts.
SESSION_SECONDS = 12 * 3600

#: Every asset is served from here: no inline script or style, nothing from elsewhere.
CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
HEADERS = [
    (b"content-security-policy", CSP.encode()),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    (b"x-content-type-options", b"nosniff"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
]


def dashboard_app(
    operations: Operations,
    actions: AdminLog,
    admin_tokens: Source[AdminTokens],
    registry: CollectorRegistry,
    fanout: Fanout | None,
    roles: frozenset[str],
    secret: Callable[[], bytes],
) -> ASGIApp:
    """The dashboard: ``operations`` run what the CLI runs, ``actions`` logs what admins do,
    sessions are signed with what ``secret`` reads (the environment's)."""
    routes: list[BaseRoute] = []
    nav: list[Nav] = []
    for module in _page_modules():
        routes.extend(module.routes)
        if getattr(module, "NAV", None) is not None:
            nav.append(module.NAV)
    nav.sort(key=lambda n: (n.order, n.label))
    routes.append(Mount("/static", StaticFiles(directory=HERE / "static"), name="static"))
    app = Starlette(routes=routes, exception_handlers={HeadwaterError: failed, Exception: failed})
    app.state.dashboard = Dashboard(
        operations=operations,
        actions=actions,
        admins=AdminRing(admin_tokens),
        admin_tokens=admin_tokens,
        sessions=Sessions(secret, SESSION_SECONDS),
        templates=templates(),
        registry=registry,
        fanout=fanout,
        roles=roles,
        nav=nav,
    )
    return Guarded(app)


def templates() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(HERE / "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
    )


def _page_modules() -> list[Any]:
    """Every module of ``headwater.dashboard.pages``: a page is added by adding its file."""
    return [
        importlib.import_module(f"{pages.__name__}.{info.name}")
        for info in sorted(pkgutil.iter_modules(pages.__path__), key=lambda i: i.name)
    ]


class Guarded:
    """Adds the security headers to every answer; pages are never cached."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        static = str(scope.get("path", "")).startswith("/static/")

        async def guarded(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers: list[tuple[bytes, bytes]] = list(message.get("headers", []))
                headers.extend(HEADERS)
                if not static:
                    headers.append((b"cache-control", b"no-store"))
                message = _with(message, headers)
            await send(message)

        await self.app(scope, receive, guarded)


def _with(message: Message, headers: list[tuple[bytes, bytes]]) -> Message:
    changed: MutableMapping[str, Any] = dict(message)
    changed["headers"] = headers
    return changed
