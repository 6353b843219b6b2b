"""Signing in with an admin token, and out."""

from __future__ import annotations

import asyncio
from urllib.parse import urlsplit

from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from headwater.dashboard.sessions import COOKIE
from headwater.dashboard.web import Admin, action, dashboard, refused, render, signed_in

NAV = None


def _next(value: object) -> str:
    """Where to go after signing in: a path of this site only, never another origin."""
    target = value if isinstance(value, str) else "/"
    parts = urlsplit(target)
    # "//host" and "/\host" are other sites to a browser.
    if parts.scheme or parts.netloc or not target.startswith("/") or target[1:2] in ("/", "\\"):
        return "/"
    return target


async def signin_form(request: Request) -> Response:
    if signed_in(request) is not None:
        return RedirectResponse(_next(request.query_params.get("next")), status_code=303)
    return render(request, None, "signin.html", next=_next(request.query_params.get("next")),
                  error=None)  # fmt: skip


async def signin(request: Request) -> Response:
    origin = request.headers.get("origin")
    if origin not in (None, "null", f"{request.url.scheme}://{request.url.netloc}"):
        return refused(403, "sign in from the dashboard's own page")
    form = await request.form()
    token = form.get("token")
    target = _next(form.get("next"))
    dash = dashboard(request)
    admin = dash.admins.admin(token.strip()) if isinstance(token, str) and token.strip() else None
    if admin is None:
        error = "That is not an admin token. Create one with `headwater admins add NAME`."
        return render(request, None, "signin.html", status_code=401, next=target, error=error)
    stored = dash.admin_tokens()[admin]
    await asyncio.to_thread(dash.actions.record, admin, "sign_in", {}, "ok")
    response = RedirectResponse(target, status_code=303)
    response.set_cookie(
        COOKIE,
        dash.sessions.issue(admin, stored.digest),
        max_age=int(dash.sessions.lifetime),
        httponly=True,
        samesite="strict",
        secure=request.url.scheme == "https",
        path="/",
    )
    return response


async def _signout(request: Request, admin: Admin) -> Response:
    # The cookie stays valid until it expires if someone kept a copy; the secret's rotation
    # (docs/dashboard.md) ends every session at once.
    await asyncio.to_thread(dashboard(request).actions.record, admin.name, "sign_out", {}, "ok")
    response = RedirectResponse("/signin", status_code=303)
    response.delete_cookie(COOKIE, path="/", httponly=True, samesite="strict")
    return response


routes = [
    Route("/signin", signin_form, methods=["GET"]),
    Route("/signin", signin, methods=["POST"]),
    Route("/signout", action(_signout), methods=["POST"]),
]
