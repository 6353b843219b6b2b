"""The collector's HTTP protocol: uvicorn's httptools protocol with read limits.

uvicorn with ``http="httptools"`` puts no bound on a request head and no deadline on
reading one. On loopback that let one client have a 50 MB header value answered 200
(httptools concatenates a value until it ends, so memory and time grow with it), ten
unfinished 20 MB headers hold 200-300 MB, and a few hundred connections trickling a
head or a body, with no write key at all, stay open for ever: slowloris. uvicorn's own
``limit_concurrency`` answers 503 to everyone once slow connections have filled it, and
``timeout_keep_alive`` only covers the wait between requests. This protocol adds, per
connection, what a server facing the internet needs (see :class:`Limits`):

* a head deadline: a request head must be complete ``header_timeout`` seconds after its
  first byte, and a new connection's first head ``header_timeout`` seconds after it is
  accepted; late, it is answered 408 and closed;
* a body deadline: once the head is in, the whole body must be in ``body_timeout``
  seconds later; late, it is answered 408 (unless the app has started its answer) and
  closed, and the app's next ``receive()`` gives ``http.disconnect``, so a partial body
  is never taken for a whole one;
* a head size: more than ``max_header_bytes`` of request line and headers, or more than
  ``max_headers`` header lines, is answered 431 and closed; bytes are counted as they
  are fed to the parser, so httptools never holds a head much over the limit (at most
  twice it, for a head that starts in the same read as the end of the request before);
* a connection cap: above ``max_connections``, a new connection closes the connection
  that has waited longest for a request head (idle or trickling, which costs a
  legitimate client nothing it cannot retry at once), or, when every connection is busy
  with a request past its head, is itself answered 503.

An offer to switch protocols (``Upgrade: h2c`` from ``curl --http2``, a websocket) is
declined and the request served as HTTP/1.1, its body read whole: httptools ends such a
request at its head, and uvicorn then answered it without its body.

The timers are the event loop's ``call_at`` handles, one per connection at most, armed
only while a head or body is being waited for: a new connection arms one until its
first request is in, and a request that arrives whole in one read arms none. A request
within the limits is served exactly as uvicorn serves it.
"""

from __future__ import annotations

import asyncio
import http
import json
import logging
import weakref
from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Final, Literal

import httptools
from uvicorn.protocols.http.flow_control import FlowControl
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from headwater.collect.errors import refusal

if TYPE_CHECKING:
    from uvicorn._types import ASGIReceiveCallable, ASGISendCallable, Scope
    from uvicorn.config import Config
    from uvicorn.server import ServerState

    from headwater.config.server import ServerSettings

__all__ = ["DEFAULT_LIMITS", "LimitedHttpToolsProtocol", "Limits", "protocol"]

log = logging.getLogger(__name__)

#: After an error answer the server stops sending and keeps reading (and dropping) for up
#: to this long before it closes: closing a socket with unread input resets it, and a
#: reset can destroy the answer before the client has read it.
LINGER_SECONDS: Final = 2.0


@dataclass(frozen=True, slots=True)
class Limits:
    """What one connection may take of the server; see the module docstring."""

    header_timeout: float = 10.0
    """Seconds from a request's first byte (a new connection's accept) to its full head.
    A head is one packet for any real client; ten seconds leave room for a lost packet
    on a bad mobile link and retransmits, and a slowloris gets no more than that."""

    body_timeout: float = 30.0
    """Seconds from the end of the head to the end of the body. A collector request is at
    most 500 KiB, so this asks at least ~17 KB/s of a client while it uploads."""

    max_header_bytes: int = 16 * 1024
    """Request line plus headers, in bytes: Node's and h11's default, twice what most
    proxies allow per header line, room for long cookies or referrers on browser beacons."""

    max_headers: int = 100
    """Header lines per request: Apache's default; real requests send ~10-30."""

    max_connections: int = 1000
    """Open connections per server. Keep it below the process's open-file limit, which
    the store also uses: past that limit the kernel refuses what the server would accept."""

    @classmethod
    def of(cls, server: ServerSettings) -> Limits:
        """The limits ``[server]`` sets."""
        return cls(
            header_timeout=server.header_timeout_seconds,
            body_timeout=server.body_timeout_seconds,
            max_header_bytes=server.max_header_bytes,
            max_headers=server.max_headers,
            max_connections=server.max_connections,
        )

    def __post_init__(self) -> None:
        for name in ("header_timeout", "body_timeout"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be a positive number of seconds")
        for name in ("max_header_bytes", "max_headers", "max_connections"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")


DEFAULT_LIMITS: Final = Limits()


def protocol(limits: Limits = DEFAULT_LIMITS) -> type[LimitedHttpToolsProtocol]:
    """The protocol class to pass as ``uvicorn.Config(app, http=protocol(limits))``."""

    class Protocol(LimitedHttpToolsProtocol):
        pass

    Protocol.limits = limits
    Protocol.__qualname__ = Protocol.__name__ = LimitedHttpToolsProtocol.__name__
    return Protocol


class _DeclinedUpgrade:
    """The body of a request whose upgrade offer was declined, read by a parser of its
    own: fed a head that says only the request's framing, its body and end go to the
    protocol's callbacks (httptools calls only the callbacks an object has)."""

    def __init__(self, protocol: LimitedHttpToolsProtocol) -> None:
        self._protocol = protocol
        self.complete = False
        self.parser = httptools.HttpRequestParser(self)

    def on_body(self, body: bytes) -> None:
        if not self.complete:
            self._protocol.on_body(body)

    def on_message_complete(self) -> None:
        if not self.complete:
            self.complete = True
            self._protocol.on_message_complete()


def _body_framing(headers: Iterable[tuple[bytes, bytes]] | None) -> bytes | None:
    """The header that frames a request's body (``Content-Length: N`` or
    ``Transfer-Encoding: chunked``), or None for a request without one."""
    for name, value in headers or ():
        if name == b"transfer-encoding" and b"chunked" in value.lower():
            return b"Transfer-Encoding: chunked"
        if name == b"content-length" and value.strip().isdigit() and int(value) > 0:
            return b"Content-Length: " + value.strip()
    return None


# Where the parser is in the request stream. "idle" is between requests (or before the
# first); "head" from a request's first byte to the end of its headers; "body" until the
# request is complete.
_Phase = Literal["idle", "head", "body"]


class _Connections:
    """One server's connections, in the order the cap evicts them."""

    __slots__ = ("leaving", "lingering", "waiting")

    def __init__(self) -> None:
        # Connections waiting for a request head (idle or reading one) and with no answer
        # owed, oldest first: the ones the cap may close.
        self.waiting: OrderedDict[LimitedHttpToolsProtocol, None] = OrderedDict()
        # Connections answered with an error and reading out what the client still sends.
        self.lingering: OrderedDict[LimitedHttpToolsProtocol, None] = OrderedDict()
        # Connections closed or closing on our account that uvicorn still counts: a close
        # reaches connection_lost one loop turn later, after the next accept may have run.
        self.leaving: set[LimitedHttpToolsProtocol] = set()


_servers: weakref.WeakKeyDictionary[ServerState, _Connections] = weakref.WeakKeyDictionary()


def _connections_of(server_state: ServerState) -> _Connections:
    connections = _servers.get(server_state)
    if connections is None:
        connections = _servers[server_state] = _Connections()
    return connections


class _Flow(FlowControl):
    """uvicorn's flow control, telling the protocol when reading pauses and resumes: a
    client cannot be late while the server is not reading what it sends."""

    def __init__(self, transport: asyncio.Transport, on_pause: Callable[[bool], None]) -> None:
        super().__init__(transport)
        self._on_pause = on_pause

    def pause_reading(self) -> None:
        if not self.read_paused:
            super().pause_reading()
            self._on_pause(True)

    def resume_reading(self) -> None:
        if self.read_paused:
            super().resume_reading()
            self._on_pause(False)


_LATE_HEAD = "the request head did not arrive in time"
_LATE_BODY = "the request body did not arrive in time"


def _answer(
    status: int,
    code: str,
    message: str,
    default_headers: Iterable[tuple[bytes, bytes]],
    extra: Iterable[tuple[bytes, bytes]] = (),
) -> bytes:
    body = json.dumps(refusal(code, message)).encode()
    phrase = http.HTTPStatus(status).phrase
    lines = [f"HTTP/1.1 {status} {phrase}\r\n".encode("ascii")]
    headers = [
        *default_headers,
        (b"content-type", b"application/json"),
        (b"content-length", str(len(body)).encode("ascii")),
        (b"connection", b"close"),
        *extra,
    ]
    lines.extend(name + b": " + value + b"\r\n" for name, value in headers)
    lines.append(b"\r\n")
    lines.append(body)
    return b"".join(lines)


async def _late_body_app(
    scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
) -> None:
    """Answers a pipelined request whose body came too late, in its turn among the answers."""
    body = json.dumps(refusal("request_timeout", _LATE_BODY)).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 408,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode("ascii")),
                (b"connection", b"close"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body, "more_body": False})


class LimitedHttpToolsProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with the deadlines, head limits and connection cap of
    :class:`Limits`. Build a subclass bound to limits with :func:`protocol`."""

    limits: ClassVar[Limits] = DEFAULT_LIMITS

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        app_state: dict[str, Any],
        _loop: asyncio.AbstractEventLoop | None = None,
    ) -> None:
        super().__init__(config, server_state, app_state, _loop)
        self._registry = _connections_of(server_state)
        self._phase: _Phase = "idle"
        # Bytes fed to the parser for the head being read, and its header lines so far.
        self._head_bytes = 0
        self._head_lines = 0
        # Loop time by which the current head or body must be in; None when nothing is
        # awaited from the client (an idle keep-alive connection is uvicorn's business).
        self._deadline: float | None = None
        self._paused_at = 0.0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_at = 0.0
        self._linger: asyncio.TimerHandle | None = None
        # Set once the connection takes no more requests: input is then dropped.
        self._done = False
        # A request that offered an upgrade, which is declined: httptools stops at the end
        # of its head (it takes what follows for the new protocol), so its body is framed
        # by a parser of its own (see _decline_upgrade).
        self._declined: _DeclinedUpgrade | None = None

    # Connection life

    # uvicorn's own override narrows asyncio's BaseTransport to the Transport it gets.
    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        registry = self._registry
        crowded = len(self.connections) - len(registry.leaving) >= self.limits.max_connections
        super().connection_made(transport)
        # Replaced before any request exists: each request cycle takes the protocol's flow.
        self.flow = _Flow(transport, self._reading_paused)
        if crowded and not self._make_room():
            log.debug("connection refused: %d connections, none idle", len(self.connections))
            self._reject(503, "overloaded", "too many open connections", [(b"retry-after", b"1")])
            return
        self._deadline = self.loop.time() + self.limits.header_timeout
        self._update_waiting()
        self._sync_timer()

    def connection_lost(self, exc: Exception | None) -> None:
        self._done = True
        self._forget()
        self._registry.leaving.discard(self)
        super().connection_lost(exc)

    def shutdown(self) -> None:
        if self._linger is not None:
            self.transport.close()
            return
        super().shutdown()

    def handle_websocket_upgrade(self) -> None:
        # The transport changes hands: nothing of ours may fire on it any more.
        self._done = True
        self._forget()
        super().handle_websocket_upgrade()

    def _forget(self) -> None:
        self._deadline = None
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        self._registry.waiting.pop(self, None)
        self._registry.lingering.pop(self, None)

    # Input

    def data_received(self, data: bytes) -> None:
        if self._done:
            return
        self._unset_keepalive_if_required()
        limit = self.limits.max_header_bytes
        view = memoryview(data)
        start, end = 0, len(data)
        # Fed in pieces of at most the head limit, so that a head is cut off at the limit
        # whatever size the reads are. A head that starts inside a piece is counted from
        # the next piece on: it may reach the parser with up to twice the limit, never more.
        while start < end and not self._done:
            if self._phase == "body":
                piece = view[start : start + limit]
            else:
                if self._deadline is None:
                    self._deadline = self.loop.time() + self.limits.header_timeout
                piece = view[start : start + limit - self._head_bytes]
                self._head_bytes += len(piece)
            start += len(piece)
            if not self._feed(piece):
                return
            if self._phase != "body" and self._head_bytes >= limit and not self._done:
                self._too_large(f"the request head is over {limit} bytes")
        self._sync_timer()

    def _feed(self, piece: memoryview) -> bool:
        """Feed the parser as uvicorn does; False when the connection took another turn."""
        declined = self._declined
        if declined is not None and declined.complete:
            return False  # the connection closes after the answer; the rest is not HTTP/1.1
        try:
            if declined is not None:
                declined.parser.feed_data(piece)
            else:
                self.parser.feed_data(piece)
        except httptools.HttpParserError:
            if self._done or (declined is not None and declined.complete):
                return False  # what follows a declined upgrade's body is not HTTP/1.1
            msg = "Invalid HTTP request received."
            self.logger.warning(msg)
            self._leave()
            self.send_400_response(msg)
            return False
        except httptools.HttpParserUpgrade as exc:
            # Headwater speaks HTTP/1.1 only: an offer to switch (h2c, websocket) is
            # declined, as RFC 9110 allows, and the request served as it is.
            return self._decline_upgrade(piece[int(exc.args[0]) :])
        return True

    def _should_upgrade(self) -> bool:
        return False  # no route of Headwater's is a websocket

    def _decline_upgrade(self, rest: memoryview) -> bool:
        """Serve a request that offered an upgrade as plain HTTP/1.1. httptools ended the
        message at its head, so a body that follows (``rest`` onwards) is read by a parser
        that sees only its framing; the connection closes after the answer, as what
        follows the body cannot be told from the protocol the client asked for."""
        cycle = self.cycle
        if cycle is None or self._done or self._declined is not None:
            return False
        cycle.keep_alive = False
        framing = _body_framing(self.headers)
        if framing is None:  # no body: the request was complete at its head
            self._phase = "idle"
            self._deadline = None
            self._sync_timer()
            return False
        self._declined = _DeclinedUpgrade(self)
        self._phase = "body"
        self._declined.parser.feed_data(b"POST / HTTP/1.1\r\n" + framing + b"\r\n\r\n")
        return self._feed(rest) if rest else True

    # Parser callbacks. Once the connection is done, the rest of the read is ignored.

    def on_message_begin(self) -> None:
        if self._done:
            return
        super().on_message_begin()
        self._phase = "head"
        self._head_lines = 0
        if self._deadline is None:
            self._deadline = self.loop.time() + self.limits.header_timeout

    def on_url(self, url: bytes) -> None:
        if not self._done:
            super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._done:
            return
        self._head_lines += 1
        if self._head_lines > self.limits.max_headers:
            self._too_large(f"the request has over {self.limits.max_headers} headers")
            return
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        if self._done:
            return
        self._phase = "body"
        self._head_bytes = 0
        self._deadline = self.loop.time() + self.limits.body_timeout
        super().on_headers_complete()
        self._update_waiting()

    def on_body(self, body: bytes) -> None:
        if not self._done:
            super().on_body(body)

    def on_message_complete(self) -> None:
        if self._done:
            return
        # httptools ends a request that offers an upgrade at its head: its body is to come.
        declined = self._declined
        if (declined is None or not declined.complete) and (
            self.parser.should_upgrade() and _body_framing(self.headers) is not None
        ):
            return
        super().on_message_complete()
        self._phase = "idle"
        self._deadline = None
        self._update_waiting()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        self._update_waiting()

    # Deadlines

    def _reading_paused(self, paused: bool) -> None:
        # While the server does not read (a pipelined request waits its turn, or the app
        # has not taken the body buffered so far), the client's clock stops.
        now = self.loop.time()
        if paused:
            self._paused_at = now
        elif self._deadline is not None:
            self._deadline += now - self._paused_at
        self._sync_timer()

    def _sync_timer(self) -> None:
        deadline = self._deadline
        if deadline is None or self._done or self.flow.read_paused:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            return
        if self._timer is not None:
            if self._timer_at == deadline:
                return
            self._timer.cancel()
        self._timer = self.loop.call_at(deadline, self._expired)
        self._timer_at = deadline

    def _expired(self) -> None:
        self._timer = None
        if self._done or self._deadline is None:
            return
        if self._phase == "body":
            self._body_expired()
        else:
            self._head_expired()

    def _head_expired(self) -> None:
        cycle = self.cycle
        if cycle is not None and not cycle.response_complete:
            # Answers go out in request order, and an earlier one is not done: end the
            # connection after it rather than answer out of turn.
            log.debug("request head too late behind a pipelined request")
            self._done = True
            self._forget()
            cycle.keep_alive = False
            return
        if self._phase == "head":
            log.debug("request head too late")
            self._reject(408, "request_timeout", _LATE_HEAD)
        else:
            log.debug("connection sent nothing")
            self._leave()
            self.transport.close()

    def _body_expired(self) -> None:
        cycle = self.cycle
        if cycle.waiting_for_100_continue:
            # The client waits for the app to ask for the body: it is not the one late.
            self._deadline = self.loop.time() + self.limits.body_timeout
            self._sync_timer()
            return
        log.debug("request body too late")
        for index, (queued, _) in enumerate(self.pipeline):
            if queued is cycle:
                # Not started yet: answer 408 in its turn, then close.
                self.pipeline[index] = (cycle, _late_body_app)
                cycle.keep_alive = False
                self._done = True
                self._forget()
                return
        owed = not cycle.response_complete
        if owed:
            # The app's next receive() gives http.disconnect and its answer goes nowhere.
            cycle.disconnected = True
            cycle.message_event.set()
        if owed and not cycle.response_started:
            self._reject(408, "request_timeout", _LATE_BODY)
        else:
            self._leave()
            self.transport.close()

    # Answers that end the connection

    def _too_large(self, message: str) -> None:
        if self.cycle is not None and not self.cycle.response_complete:
            # An earlier request's answer is still owed: close after it, out of turn never.
            self._done = True
            self._forget()
            self.cycle.keep_alive = False
            return
        log.debug("request head refused: %s", message)
        self._reject(431, "headers_too_large", message)

    def _reject(
        self,
        status: int,
        code: str,
        message: str,
        extra: Iterable[tuple[bytes, bytes]] = (),
    ) -> None:
        """Answer ``status`` and close, reading out what the client still sends first."""
        if self._done:
            return
        self._leave()
        self._unset_keepalive_if_required()
        transport = self.transport
        transport.write(_answer(status, code, message, self.server_state.default_headers, extra))
        if not transport.can_write_eof():
            transport.close()
            return
        transport.write_eof()
        lingering = self._registry.lingering
        if len(lingering) >= self.limits.max_connections:
            # Lingering ones do not count against the cap; this bounds them apart.
            oldest, _ = lingering.popitem(last=False)
            oldest._end_linger()
        lingering[self] = None
        self._linger = self.loop.call_later(LINGER_SECONDS, self._end_linger)
        # Reading on lets the client's end of input close the connection at once (uvicorn's
        # eof_received closes), and spares the answer a reset.
        self.flow.resume_reading()

    def _end_linger(self) -> None:
        if self._linger is not None:
            self._linger.cancel()
            self._linger = None
        self._registry.lingering.pop(self, None)
        self._close_now()

    def _leave(self) -> None:
        self._done = True
        self._forget()
        self._registry.leaving.add(self)

    def _close_now(self) -> None:
        # A client that does not read could keep unsent output, and with it the
        # connection, for ever: drop what is left instead.
        if self.transport.get_write_buffer_size():
            self.transport.abort()
        else:
            self.transport.close()

    # The connection cap

    def _update_waiting(self) -> None:
        """Keep this connection among the evictable ones exactly while it waits for a head
        with no answer owed; it keeps its place while it stays so."""
        cycle = self.cycle
        waiting = (
            not self._done
            and self._phase != "body"
            and (cycle is None or cycle.response_complete)
            and not self.pipeline
            and not self.transport.is_closing()
        )
        if waiting:
            self._registry.waiting.setdefault(self, None)
        else:
            self._registry.waiting.pop(self, None)

    def _make_room(self) -> bool:
        """Close the connection that has waited longest for a request head, for a new one.
        False when every connection is busy with a request past its head."""
        waiting = self._registry.waiting
        while waiting:
            oldest, _ = waiting.popitem(last=False)
            if oldest._done or oldest.transport.is_closing():
                continue
            oldest._evict()
            return True
        return False

    def _evict(self) -> None:
        if self._phase == "head":
            log.debug("slow request head closed for a new connection")
            self.transport.write(
                _answer(
                    408,
                    "request_timeout",
                    "the server needed the connection; send the request again",
                    self.server_state.default_headers,
                )
            )
        else:
            log.debug("idle connection closed for a new connection")
        self._leave()
        self._close_now()
