"""``/api/v1/erasures``: an admin asks for an erasure and reads its receipt.

``POST /api/v1/erasures`` with ``{"user_ids": [...], "anonymous_ids": [...]}`` erases
them (in a worker thread: it deletes and recomputes) and answers the receipt, 200 when
every place is done and 202 while a sink still owes it; ``GET /api/v1/erasures/{id}``
answers the receipt as it stands. Both need an admin's token (``headwater admins add``);
a consumer's token is not one.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import msgspec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from headwater.core import jsonio
from headwater.core.errors import ConfigError
from headwater.serve.auth import AdminRing
from headwater.serve.errors import ApiError

PREFIX = "/api/v1/erasures"
_MAX_BODY = 1 << 20


class _Request(msgspec.Struct, forbid_unknown_fields=True):
    user_ids: list[str] = msgspec.field(default_factory=list)
    anonymous_ids: list[str] = msgspec.field(default_factory=list)


def erasure_app(
    admins: AdminRing,
    erase: Callable[[dict[str, list[str]], str], dict[str, Any]],
    receipt: Callable[[int], dict[str, Any]],
) -> Starlette:
    """``erase(ids, admin)`` and ``receipt(id)`` are the runtime's, run off the loop."""

    async def post(request: Request) -> Response:
        admin = admins.authorize(request.headers.get("authorization"))
        body = await request.body()
        if len(body) > _MAX_BODY:
            raise ApiError(413, "too_large", f"send at most {_MAX_BODY} bytes of ids per request")
        try:
            wanted = msgspec.json.decode(body or b"{}", type=_Request)
        except msgspec.DecodeError as exc:
            raise ApiError(
                400, "bad_request", f'{exc}; send {{"user_ids": [...], "anonymous_ids": [...]}}'
            ) from None
        if not any(wanted.user_ids) and not any(wanted.anonymous_ids):  # "" is no id
            raise ApiError(400, "no_ids", "name at least one id in user_ids or anonymous_ids")
        ids = {"user_id": wanted.user_ids, "anonymous_id": wanted.anonymous_ids}
        done = await asyncio.to_thread(erase, ids, admin)
        return _json(done, 202 if done["pending"] else 200)

    async def get(request: Request) -> Response:
        admins.authorize(request.headers.get("authorization"))
        try:
            erasure_id = int(request.path_params["id"])
        except ValueError:
            raise ApiError(404, "not_found", "an erasure id is a number") from None
        try:
            found = await asyncio.to_thread(receipt, erasure_id)
        except ConfigError:
            raise ApiError(404, "not_found", f"there is no erasure {erasure_id}") from None
        return _json(found, 200)

    async def refused(request: Request, error: Exception) -> Response:
        assert isinstance(error, ApiError)
        headers = {"www-authenticate": "Bearer"} if error.status == 401 else None
        return JSONResponse(
            {"error": {"code": error.code, "message": error.message}},
            status_code=error.status,
            headers=headers,
        )

    return Starlette(
        routes=[
            Route(PREFIX, post, methods=["POST"]),
            Route(PREFIX + "/{id}", get, methods=["GET"]),
        ],
        exception_handlers={ApiError: refused},
    )


def _json(body: object, status: int) -> Response:
    return Response(jsonio.dumps(body), status_code=status, media_type="application/json")
