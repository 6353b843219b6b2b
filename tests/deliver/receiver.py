"""A real webhook receiver for the delivery tests: HTTP on 127.0.0.1, in a thread.

It behaves as a careful receiver would: it checks every request's
``Headwater-Signature`` (HMAC-SHA256 of ``<t>.<body>`` with the shared secret)
and the freshness of ``t``, and stores the rows of each idempotency key once,
dropping repeats. Tests script what it answers:

- :meth:`Receiver.fail_next` answers the next requests with 500, 503 or 429
  (with ``Retry-After``), then normally again;
- :meth:`Receiver.slow_next` answers the next requests only after a delay
  (longer than the sink's timeout: the sender gives up, the receiver still
  stores the rows, as a real slow receiver would);
- :meth:`Receiver.redirect_next` answers with a redirect;
- :attr:`Receiver.rule` decides per request (by path, batch, ...) until unset;
- :meth:`Receiver.stop` stops listening (connections are refused) and
  :meth:`Receiver.start` listens again on the same port.

Every request is recorded (:attr:`Receiver.requests`) with its headers, body,
idempotency key, signature verdict and the answer given.
"""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import threading
import time
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

SIGNATURE = "headwater-signature"
IDEMPOTENCY = "idempotency-key"


@dataclass(frozen=True)
class Reply:
    """What to answer one request with."""

    status: int = 200
    headers: dict[str, str] = field(default_factory=dict)
    delay: float = 0.0
    """Seconds to wait before answering (the rows are stored after the wait)."""
    body: str = "ok"


@dataclass
class Request:
    """One request as the receiver saw it."""

    at: float
    """``time.time()`` when the body had been read."""
    method: str
    path: str
    headers: dict[str, str]
    """Lower-cased names."""
    body: bytes
    signature_ok: bool
    signature_error: str | None
    status: int | None = None
    """The status answered (set once chosen, before any delay)."""

    @property
    def key(self) -> str | None:
        return self.headers.get(IDEMPOTENCY)

    @property
    def payload(self) -> dict[str, Any] | None:
        try:
            value = json.loads(self.body)
        except ValueError:
            return None
        return value if isinstance(value, dict) else None

    @property
    def batch_id(self) -> tuple[Any, ...] | None:
        """(pipeline, sink, interval start, run, batch): what the key stands for."""
        p = self.payload
        if p is None:
            return None
        return (p["pipeline"], p["sink"], p["interval"]["start"], p["run"], p["batch"])


Rule = Callable[[Request], Reply | None]


def verify(secret: str, header: str | None, body: bytes, now: float, max_age: float) -> str | None:
    """Why ``header`` is not a valid, fresh signature of ``body``; ``None`` when it is."""
    if not header:
        return "no signature"
    parts = dict(item.split("=", 1) for item in header.split(",") if "=" in item)
    if set(parts) != {"t", "v1"} or not parts["t"].isdigit():
        return f"malformed signature {header!r}"
    stamp = int(parts["t"])
    expected = hmac.new(secret.encode(), f"{stamp}.".encode() + body, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, parts["v1"]):
        return "signature does not match"
    if abs(now - stamp) > max_age:
        return f"timestamp {stamp} is {now - stamp:.0f}s old"
    return None


class Receiver:
    """A scriptable webhook endpoint on ``127.0.0.1``; use as a context manager."""

    def __init__(self, secret: str, *, max_age: float = 300.0) -> None:
        self.secret = secret
        self.max_age = max_age
        self.port = 0
        self.requests: list[Request] = []
        self.bad_signatures = 0
        #: Rows stored per idempotency key: the first 2xx answer's only.
        self.stored: dict[str, list[dict[str, Any]]] = {}
        #: Per key, how many requests were answered 2xx (a real receiver drops repeats).
        self.accepted: Counter[str] = Counter()
        #: Decides the answer per request while set (before the scripted queue).
        self.rule: Rule | None = None
        self._script: deque[Reply] = deque()
        self._lock = threading.Lock()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # -- lifecycle ----------------------------------------------------------------

    def start(self) -> Receiver:
        """Listen (again, on the same port once one was chosen)."""
        assert self._server is None, "already listening"
        server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        server.daemon_threads = True
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop listening: new connections are refused until :meth:`start`."""
        server, self._server = self._server, None
        if server is None:
            return
        server.shutdown()
        server.server_close()
        assert self._thread is not None
        self._thread.join(5)

    @property
    def listening(self) -> bool:
        return self._server is not None

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def url(self, path: str = "/hook", host: str = "localhost") -> str:
        return f"http://{host}:{self.port}{path}"

    # -- script -------------------------------------------------------------------

    def fail_next(self, count: int, status: int, retry_after: float | None = None) -> None:
        headers = {} if retry_after is None else {"Retry-After": f"{retry_after:g}"}
        self.answer_next(*[Reply(status, headers, body=f"failing ({status})")] * count)

    def slow_next(self, count: int, seconds: float) -> None:
        self.answer_next(*[Reply(200, delay=seconds)] * count)

    def redirect_next(self, location: str, status: int = 302) -> None:
        self.answer_next(Reply(status, {"Location": location}, body="moved"))

    def answer_next(self, *replies: Reply) -> None:
        with self._lock:
            self._script.extend(replies)

    def clear_script(self) -> None:
        with self._lock:
            self._script.clear()
            self.rule = None

    # -- what arrived ---------------------------------------------------------------

    def snapshot(self) -> list[Request]:
        with self._lock:
            return list(self.requests)

    def rows(self) -> list[dict[str, Any]]:
        """Every row stored, each idempotency key's once."""
        with self._lock:
            return [row for rows in self.stored.values() for row in rows]

    def repeated_keys(self) -> dict[str, int]:
        """Keys accepted (2xx) more than once, and how often."""
        with self._lock:
            return {key: n for key, n in self.accepted.items() if n > 1}

    def keys_by_batch(self) -> dict[tuple[Any, ...], set[str]]:
        """For each batch (pipeline, sink, interval, run, batch): the keys it came with."""
        found: dict[tuple[Any, ...], set[str]] = {}
        for request in self.snapshot():
            if request.batch_id is not None:
                found.setdefault(request.batch_id, set()).add(request.key or "")
        return found

    # -- serving ------------------------------------------------------------------------

    def _choose(self, request: Request) -> Reply:
        if not request.signature_ok:
            return Reply(401, body=f"bad signature: {request.signature_error}")
        if self.rule is not None:
            reply = self.rule(request)
            if reply is not None:
                return reply
        with self._lock:
            return self._script.popleft() if self._script else Reply()

    def _handle(self, handler: BaseHTTPRequestHandler) -> None:
        length = int(handler.headers.get("content-length") or 0)
        body = handler.rfile.read(length) if length else b""
        headers = {k.lower(): v for k, v in handler.headers.items()}
        now = time.time()
        error = verify(self.secret, headers.get(SIGNATURE), body, now, self.max_age)
        request = Request(now, handler.command, handler.path, headers, body, error is None, error)
        with self._lock:
            self.requests.append(request)
            if error is not None:
                self.bad_signatures += 1
        reply = self._choose(request)
        request.status = reply.status
        if reply.delay:
            time.sleep(reply.delay)
        payload = request.payload
        if 200 <= reply.status < 300 and request.key and payload is not None:
            with self._lock:
                self.accepted[request.key] += 1
                self.stored.setdefault(request.key, list(payload.get("rows") or []))
        data = reply.body.encode()
        handler.send_response(reply.status)
        for name, value in reply.headers.items():
            handler.send_header(name, value)
        handler.send_header("Content-Type", "text/plain")
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        handler.wfile.write(data)

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                # The sender may be gone (killed, or timed out) by the time we answer.
                with contextlib.suppress(OSError):
                    receiver._handle(self)

            do_GET = do_POST
            do_PUT = do_POST

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
