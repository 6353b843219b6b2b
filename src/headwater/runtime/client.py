"""Talking to the running server from other commands.

``server.json`` in the data folder says where the server's control socket is.
A command that finds no live server there opens the files itself. httpx is
imported only when there is a server to talk to, which keeps commands that run
alone quick to start.
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from headwater.core import jsonio
from headwater.core.errors import HeadwaterError, TerminalError, TransientError
from headwater.store.errors import QueryError

if TYPE_CHECKING:
    import pyarrow as pa

RUNTIME_FILE = "server.json"
# AF_UNIX paths are limited to about 100 bytes.
_MAX_SOCKET_PATH = 100

ProgressSink = Callable[[dict[str, Any]], None]


def socket_path(data_dir: Path) -> Path:
    """Where the control socket of the project with ``data_dir`` lives."""
    path = data_dir / "control.sock"
    if len(str(path)) <= _MAX_SOCKET_PATH:
        return path
    tag = hashlib.sha256(str(data_dir).encode()).hexdigest()[:16]
    return Path(tempfile.gettempdir()) / f"headwater-{tag}.sock"


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


class ServerFailed(TerminalError):
    """An operation failed in the server for good; the message is the server's."""


class ServerBusy(TransientError):
    """An operation failed in the server and may succeed if asked again."""


def remote_error(message: dict[str, Any]) -> HeadwaterError:
    """The error an operation's answer describes, as transient or terminal as it was."""
    kind = ServerBusy if message.get("transient") else ServerFailed
    return kind(str(message["error"]), hint=message.get("hint"))


class ServerClient:
    """A connection to the running server's control socket."""

    def __init__(self, info: ServerInfo) -> None:
        import httpx

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
        import pyarrow.ipc

        return pyarrow.ipc.open_stream(response.content).read_all()

    def call(self, op: str, args: dict[str, Any], progress: ProgressSink | None = None) -> Any:
        """Run an operation of :data:`~headwater.runtime.operations.OPERATIONS` in the
        server, relaying its progress."""
        with self._http.stream("POST", f"/operations/{op}", content=jsonio.dumps(args)) as answer:
            for line in answer.iter_lines():
                message = jsonio.loads(line)
                if "progress" in message and progress is not None:
                    progress(message["progress"])
                elif "result" in message:
                    return message["result"]
                elif "error" in message:
                    raise remote_error(message)
        raise ServerFailed("the server ended the operation without a result")

    def status(self) -> dict[str, object]:
        data = self._http.get("/status", timeout=5).json()
        if not isinstance(data, dict):
            raise ServerFailed("the server answered its status with something unexpected")
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
    import httpx

    try:
        client.status()
    except httpx.TransportError:
        # A server killed without cleaning up leaves its file; it is stale.
        client.close()
        return None
    return client
