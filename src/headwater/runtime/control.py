"""Talking to the running server from other commands.

The server that owns the DuckDB file also answers on a Unix socket in the data
folder. File permissions are its authentication: only the owner of the project
can connect, and nothing of it is reachable over the network. A command that
finds no live server there opens the files itself.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pyarrow as pa
import pyarrow.ipc
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from headwater.core import jsonio
from headwater.core.errors import HeadwaterError, TerminalError
from headwater.process.service import PipelineService
from headwater.runtime import operations
from headwater.store.engine import Engine
from headwater.store.errors import QueryError

ARROW_STREAM = "application/vnd.apache.arrow.stream"
RUNTIME_FILE = "server.json"
# AF_UNIX paths are limited to about 100 bytes.
_MAX_SOCKET_PATH = 100


def socket_path(data_dir: Path) -> Path:
    """Where the control socket of the project with ``data_dir`` lives."""
    path = data_dir / "control.sock"
    if len(str(path)) <= _MAX_SOCKET_PATH:
        return path
    tag = hashlib.sha256(str(data_dir).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"headwater-{tag}.sock"


def control_app(
    engine: Engine, status: dict[str, object], pipelines: PipelineService | None = None
) -> Starlette:
    """The app served on the control socket: queries, pipeline operations, status."""

    async def query(request: Request) -> Response:
        body = jsonio.loads(await request.body())
        sql = body.get("sql") if isinstance(body, dict) else None
        params = body.get("params", []) if isinstance(body, dict) else None
        if not isinstance(sql, str) or not isinstance(params, list):
            return JSONResponse({"error": 'send {"sql": "...", "params": [...]}'}, status_code=400)
        try:
            table = await run_in_threadpool(engine.query, sql, params)
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
        if pipelines is None:
            return JSONResponse({"error": "this server runs no pipelines"}, status_code=400)
        return StreamingResponse(_stream(pipelines, op, args), media_type="application/x-ndjson")

    return Starlette(
        routes=[
            Route("/query", query, methods=["POST"]),
            Route("/status", server_status),
            Route("/pipelines/{op}", operation, methods=["POST"]),
        ]
    )


async def _stream(service: PipelineService, op: str, args: dict[str, Any]) -> AsyncIterator[bytes]:
    """Run the operation in a thread; yield its progress, then its result, as JSON lines."""
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[dict[str, Any] | None] = asyncio.Queue()

    def send(line: dict[str, Any] | None) -> None:
        loop.call_soon_threadsafe(lines.put_nowait, line)

    def work() -> None:
        try:
            result = operations.call(service, op, args, lambda step: send({"progress": step}))
            send({"result": result})
        except HeadwaterError as exc:
            send({"error": exc.message, "hint": exc.hint})
        except Exception as exc:  # reported to the CLI rather than lost in the server log
            send({"error": f"unexpected {type(exc).__name__}: {exc}", "hint": None})
        finally:
            send(None)

    task = loop.run_in_executor(None, work)
    while (line := await lines.get()) is not None:
        yield jsonio.dumps(line) + b"\n"
    await task


@dataclass(frozen=True)
class ServerInfo:
    """What ``server.json`` says about the running server."""

    pid: int
    url: str
    socket: str


def write_runtime_file(data_dir: Path, info: ServerInfo) -> None:
    path = data_dir / RUNTIME_FILE
    tmp = path.with_suffix(".tmp")
    tmp.write_bytes(jsonio.dumps({"pid": info.pid, "url": info.url, "socket": info.socket}))
    os.replace(tmp, path)


def remove_runtime_file(data_dir: Path) -> None:
    (data_dir / RUNTIME_FILE).unlink(missing_ok=True)


class ServerClient:
    """A connection to the running server's control socket."""

    def __init__(self, info: ServerInfo) -> None:
        self.info = info
        # Queries may run long; a connection that cannot be made fails at once.
        self._http = httpx.Client(
            transport=httpx.HTTPTransport(uds=info.socket),
            base_url="http://headwater",
            timeout=httpx.Timeout(None, connect=5.0),
        )

    def query(self, sql: str, params: Sequence[object] = ()) -> pa.Table:
        """Run a read-only query in the server; ``params`` bind to its ``?``."""
        body = jsonio.dumps({"sql": sql, "params": list(params)})
        response = self._http.post("/query", content=body)
        if response.status_code != 200:
            error = response.json()
            raise QueryError(str(error.get("error")), hint=error.get("hint"))
        return pa.ipc.open_stream(response.content).read_all()

    def pipelines(
        self, op: str, args: dict[str, Any], progress: operations.ProgressSink | None = None
    ) -> Any:
        """Run a pipeline operation in the server, relaying its progress."""
        with self._http.stream("POST", f"/pipelines/{op}", content=jsonio.dumps(args)) as answer:
            for line in answer.iter_lines():
                message = jsonio.loads(line)
                if "progress" in message and progress is not None:
                    progress(message["progress"])
                elif "result" in message:
                    return message["result"]
                elif "error" in message:
                    raise HeadwaterError(str(message["error"]), hint=message.get("hint"))
        raise TerminalError("the server ended the operation without a result")

    def status(self) -> dict[str, object]:
        data = self._http.get("/status", timeout=5).json()
        if not isinstance(data, dict):
            raise TerminalError("the server answered its status with something unexpected")
        return data

    def close(self) -> None:
        self._http.close()


def find_server(data_dir: Path) -> ServerClient | None:
    """A client for the live server of this project, or ``None`` when none runs."""
    try:
        raw = jsonio.loads((data_dir / RUNTIME_FILE).read_bytes())
        info = ServerInfo(pid=int(raw["pid"]), url=str(raw["url"]), socket=str(raw["socket"]))
    except (OSError, ValueError, KeyError, TypeError, jsonio.JSONDecodeError):
        return None
    client = ServerClient(info)
    try:
        client.status()
    except httpx.TransportError:
        # A server killed without cleaning up leaves its file; it is stale.
        client.close()
        return None
    return client
