"""Talking to the running server from other commands.

``server.json`` in the data folder says where the server's control socket is.
A command that finds no live server there opens the files itself. The socket is
spoken to with the standard library's ``http.client``: a command that only asks
the server imports no HTTP client library, so it answers at once.
"""

from __future__ import annotations

import hashlib
import http.client
import os
import socket
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


class _UnixConnection(http.client.HTTPConnection):
    """HTTP/1.1 over the control socket; ``connect_timeout`` bounds making the connection,
    ``timeout`` (``None``: none) every read after it."""

    def __init__(self, path: str, *, connect_timeout: float, timeout: float | None) -> None:
        super().__init__("headwater", timeout=timeout)
        self._path = path
        self._connect_timeout = connect_timeout

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            sock.settimeout(self._connect_timeout)
            sock.connect(self._path)
            sock.settimeout(self.timeout)
        except BaseException:
            sock.close()
            raise
        self.sock = sock


#: What a connection to a server that is gone, or never answers, raises.
Unreachable = (OSError, http.client.HTTPException)


class _Answer:
    """A response's status and body."""

    def __init__(self, status: int, content: bytes) -> None:
        self.status_code = status
        self.content = content

    def json(self) -> Any:
        return jsonio.loads(self.content)


class ServerClient:
    """The running server's control socket, one connection per request (the server may
    close an idle connection between a command's requests)."""

    def __init__(self, info: ServerInfo) -> None:
        self.info = info
        self._open: list[_UnixConnection] = []

    def _request(
        self, method: str, path: str, body: bytes | None = None, *, timeout: float | None = None
    ) -> http.client.HTTPResponse:
        # Queries may run long (no timeout by default); a connection that cannot be made
        # fails at once.
        connection = _UnixConnection(self.info.socket, connect_timeout=5.0, timeout=timeout)
        self._open.append(connection)
        headers = {"content-type": "application/json"} if body is not None else {}
        connection.request(method, path, body=body, headers=headers)
        return connection.getresponse()

    def _fetch(
        self, method: str, path: str, body: bytes | None = None, *, timeout: float | None = None
    ) -> _Answer:
        response = self._request(method, path, body, timeout=timeout)
        answer = _Answer(response.status, response.read())
        self._close()
        return answer

    def query(self, sql: str, params: Sequence[object] = ()) -> pa.Table:
        """Run a read-only query in the server; ``params`` bind to its ``?``."""
        body = jsonio.dumps({"sql": sql, "params": list(params)})
        response = self._fetch("POST", "/query", body)
        if response.status_code != 200:
            error = response.json()
            raise QueryError(str(error.get("error")), hint=error.get("hint"))
        import pyarrow.ipc

        return pyarrow.ipc.open_stream(response.content).read_all()

    def call(self, op: str, args: dict[str, Any], progress: ProgressSink | None = None) -> Any:
        """Run an operation of :data:`~headwater.runtime.operations.OPERATIONS` in the
        server, relaying its progress."""
        try:
            for line in self._request("POST", f"/operations/{op}", jsonio.dumps(args)):
                if not line.strip():
                    continue
                message = jsonio.loads(line)
                if "progress" in message and progress is not None:
                    progress(message["progress"])
                elif "result" in message:
                    return message["result"]
                elif "error" in message:
                    raise remote_error(message)
        finally:
            self._close()
        raise ServerFailed("the server ended the operation without a result")

    def status(self) -> dict[str, object]:
        data = self._fetch("GET", "/status", timeout=5.0).json()
        if not isinstance(data, dict):
            raise ServerFailed("the server answered its status with something unexpected")
        return data

    def _close(self) -> None:
        while self._open:
            self._open.pop().close()

    def close(self) -> None:
        self._close()


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
    except Unreachable:
        # A server killed without cleaning up leaves its file; it is stale.
        client.close()
        return None
    return client
