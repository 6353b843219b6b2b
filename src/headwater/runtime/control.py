"""The server's side of the control socket: queries and pipeline operations.

The server that owns the DuckDB file also answers on a Unix socket in the data
folder. File permissions are its authentication: only the owner of the project
can connect, and nothing of it is reachable over the network. The commands'
side is :mod:`headwater.runtime.client`.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pyarrow as pa
import pyarrow.ipc
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from headwater.core import jsonio
from headwater.core.errors import HeadwaterError, TransientError
from headwater.runtime import operations
from headwater.runtime.workspace import Workspace
from headwater.store.engine import Engine
from headwater.store.errors import QueryError

ARROW_STREAM = "application/vnd.apache.arrow.stream"


def control_app(
    engine: Engine, status: dict[str, object], workspace: Workspace | None = None
) -> Starlette:
    """The app served on the control socket: queries, the operations of
    :data:`~headwater.runtime.operations.OPERATIONS`, status."""

    async def query(request: Request) -> Response:
        body = jsonio.loads(await request.body())
        sql = body.get("sql") if isinstance(body, dict) else None
        params = body.get("params", []) if isinstance(body, dict) else None
        if not isinstance(sql, str) or not isinstance(params, list):
            return JSONResponse({"error": 'send {"sql": "...", "params": [...]}'}, status_code=400)
        try:
            table = await run_in_threadpool(engine.query, sql, params)
        except QueryError as exc:
            # The client raises its own QueryError: the engine's words, not this sentence.
            return JSONResponse({"error": exc.reason, "hint": exc.hint}, status_code=400)
        except HeadwaterError as exc:
            return JSONResponse({"error": exc.message, "hint": exc.hint}, status_code=400)
        sink = pa.BufferOutputStream()
        with pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)
        return Response(sink.getvalue().to_pybytes(), media_type=ARROW_STREAM)

    async def server_status(request: Request) -> Response:
        return JSONResponse(status)

    async def operation(request: Request) -> Response:
        body = jsonio.loads(await request.body())
        op = request.path_params["op"]
        args = body if isinstance(body, dict) else {}
        if workspace is None:
            return JSONResponse({"error": "this server runs no pipelines"}, status_code=400)
        return StreamingResponse(_stream(workspace, op, args), media_type="application/x-ndjson")

    return Starlette(
        routes=[
            Route("/query", query, methods=["POST"]),
            Route("/status", server_status),
            Route("/operations/{op}", operation, methods=["POST"]),
        ]
    )


async def _stream(workspace: Workspace, op: str, args: dict[str, Any]) -> AsyncIterator[bytes]:
    """Run the operation in a thread; yield its progress, then its result, as JSON lines."""
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    def send(line: dict[str, Any] | None) -> None:
        loop.call_soon_threadsafe(lines.put_nowait, line)

    def work() -> None:
        try:
            result = operations.call(workspace, op, args, lambda step: send({"progress": step}))
            send({"result": result})
        except HeadwaterError as exc:
            transient = isinstance(exc, TransientError)
            send({"error": exc.message, "hint": exc.hint, "transient": transient})
        except Exception as exc:  # reported to the CLI rather than lost in the server log
            send({"error": f"unexpected {type(exc).__name__}: {exc}", "hint": None})
        finally:
            send(None)

    task = loop.run_in_executor(None, work)
    while (line := await lines.get()) is not None:
        yield jsonio.dumps(line) + b"\n"
    await task
