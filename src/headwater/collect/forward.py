"""An accept process's side of the wire: requests' events to the owner, answers back.

:class:`Forwarder` stands where the writer stands in the owner (the tracking API
calls ``submit`` and waits), and does what the writer does one step earlier:
everything submitted while the previous frame was on its way becomes the next
frame, so under load a frame carries many requests and the owner pays its
fixed costs once for all of them. At most ``_IN_FLIGHT`` frames are unanswered
at a time; the owner's own group commit joins frames of every accept process.

:class:`Proxy` sends every other request (read API, dashboard, health, metrics)
to the owner's HTTP socket as it came, and its answer back as it comes, so one
port serves everything whichever process the kernel gave the connection to.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
from collections import deque
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pyarrow as pa

from headwater.collect.errors import Overloaded, Unavailable, refusal
from headwater.collect.frames import WIRE_VERSION, Header, encode_frame, read_reply
from headwater.collect.validate import EventRow
from headwater.collect.writer import FailedRow, Outcome, join_events, rows_table, take_group
from headwater.core import jsonio
from headwater.core.clock import now_us
from headwater.store import schema
from headwater.store.dedupe import U64

log = logging.getLogger(__name__)

#: Frames sent and not answered yet: one being committed while the next one fills.
_IN_FLIGHT = 2
#: With nothing to send, the arrival floor still goes to the owner this often.
HEARTBEAT_SECONDS = 0.2


@dataclass(slots=True)
class _Request:
    events: pa.Table | Sequence[EventRow]
    failed: Sequence[FailedRow]
    received_us: int
    nbytes: int
    future: asyncio.Future[Outcome]
    #: Computed for the whole frame at once, not per request.
    keys: None = None

    @property
    def count(self) -> int:
        events = self.events
        return int(events.num_rows) if isinstance(events, pa.Table) else len(events)

    @property
    def size(self) -> int:
        return self.count + len(self.failed)


class OwnerGone(Unavailable):
    code = "store_unavailable"


class Forwarder:
    """Requests' events, sent in frames to the owner over its Unix socket."""

    def __init__(
        self,
        path: Path,
        *,
        retry_after: int,
        queue_max_events: int,
        queue_max_bytes: int,
        on_lost: Callable[[], None],
        frame_max_events: int = 10_000,
        frame_max_bytes: int = 8 * 1024 * 1024,
        clock: Callable[[], int] = now_us,
    ) -> None:
        """``on_lost`` is called once if the owner goes away: nothing can be stored then;
        ``frame_max_*``: the owner's commit limits, so that a frame is one commit's worth."""
        self._path = path
        self._retry_after = retry_after
        self._queue_max = queue_max_events
        self._queue_max_bytes = queue_max_bytes
        self._on_lost = on_lost
        self._clock = clock
        self._queue: deque[_Request] = deque()
        self._queued = self._queued_bytes = 0
        self._sent: dict[int, list[_Request]] = {}
        self._ids = itertools.count()
        self._wake = asyncio.Event()
        self._room = asyncio.Event()
        self._stream: asyncio.StreamWriter | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._lost = False
        #: Every request this process took before the time it returns (µs) is queued here,
        #: in a frame, or answered: the tracking API's own floor, which also counts requests
        #: still being read or validated (set by the accept process; this default knows
        #: only what was submitted).
        self.arrival_floor: Callable[[], int] = lambda: min(
            self._clock(), self.oldest_pending() or self._clock()
        )
        self._frame_max_events = frame_max_events
        self._frame_max_bytes = frame_max_bytes

    async def connect(self) -> None:
        reader, self._stream = await asyncio.open_unix_connection(str(self._path))
        # The first frame says this process is up, before it takes any request.
        self._stream.write(encode_frame(*self._empty(self._clock())))
        await self._stream.drain()
        self._tasks = [
            asyncio.create_task(self._send(), name="headwater-forward-send"),
            asyncio.create_task(self._receive(reader), name="headwater-forward-receive"),
        ]

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if self._stream is not None:
            self._stream.close()
        self._fail_all(OwnerGone("the accept process is stopping; retry", retry_after=1))

    # -- what the tracking API calls -------------------------------------------

    async def submit(
        self,
        events: pa.Table | Sequence[EventRow],
        failed: Sequence[FailedRow],
        received_us: int,
        *,
        nbytes: int = 0,
        keys: tuple[U64, U64] | None = None,
    ) -> Outcome:
        """Queue one request's events for the next frame and wait for the owner's commit."""
        del keys  # computed for the whole frame at once
        if self._lost:
            raise OwnerGone(
                "the process that owns the store is gone; retry", retry_after=self._retry_after
            )
        request = _Request(events, failed, received_us, nbytes, asyncio.Future())
        size = request.count + len(failed)
        if self._queued > 0 and (
            self._queued + size > self._queue_max
            or self._queued_bytes + nbytes > self._queue_max_bytes
        ):
            raise Overloaded(
                f"{self._queued} events ({self._queued_bytes} bytes) wait to be sent to the "
                "store; retry after a pause",
                retry_after=self._retry_after,
            )
        self._queue.append(request)
        self._queued += size
        self._queued_bytes += nbytes
        self._wake.set()
        # As in the writer: the commit goes on if the client leaves; its retry is a duplicate.
        return await asyncio.shield(request.future)

    def acknowledged(self, received_us: int) -> None:
        """The owner counts acknowledgements (it sees each request's arrival time)."""

    def oldest_pending(self) -> int | None:
        """Arrival time of the oldest request not answered yet: queued or in a frame."""
        times = [r.received_us for r in self._queue]
        times += [r.received_us for frame in self._sent.values() for r in frame]
        return min(times, default=None)

    # -- the two tasks ---------------------------------------------------------

    async def _send(self) -> None:
        assert self._stream is not None
        try:
            while True:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), HEARTBEAT_SECONDS)
                while len(self._sent) >= _IN_FLIGHT:
                    self._room.clear()
                    await self._room.wait()
                self._wake.clear()
                # The floor is read before the requests are taken: it covers them, and
                # any request stamped after it is later than it.
                floor = self.arrival_floor()
                taken = self._take()
                try:
                    frame = self._frame(floor, taken)
                except Exception as exc:  # answer them, and keep sending the others
                    log.exception("could not make a frame of %d requests", len(taken))
                    for frame_id in [k for k, v in self._sent.items() if v is taken]:
                        del self._sent[frame_id]
                    failure = Unavailable(f"unexpected error: {exc}", retry_after=self._retry_after)
                    for request in taken:
                        _settle(request, error=failure)
                    if self._queue:
                        self._wake.set()
                    continue
                self._stream.write(frame)
                await self._stream.drain()
                if self._queue:
                    self._wake.set()
        except (ConnectionError, OSError) as exc:
            self._lose(f"could not send to the store's process: {exc}")
        except Exception as exc:  # never a silent end: every later request would wait
            log.exception("the sender of frames failed")
            self._lose(f"the sender of frames failed: {exc!r}")

    async def _receive(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                reply = await read_reply(reader)
                requests = self._sent.pop(reply.id, [])
                self._room.set()
                for index, request in enumerate(requests):
                    error = reply.error_of(index)
                    if error is not None:
                        _settle(request, error=error)
                    else:
                        stored = reply.stored[index]
                        _settle(request, Outcome(stored, reply.kept[index] - stored))
        except (
            asyncio.IncompleteReadError,
            ConnectionError,
            OSError,
            ValueError,
            IndexError,
        ) as exc:
            self._lose(f"the store's process closed the connection ({exc!r})")

    def _take(self) -> list[_Request]:
        taken, size, nbytes = take_group(self._queue, self._frame_max_events, self._frame_max_bytes)
        self._queued -= size
        self._queued_bytes -= nbytes
        return taken

    def _frame(self, floor: int, taken: list[_Request]) -> bytes:
        if not taken:
            return encode_frame(*self._empty(floor))
        frame_id = next(self._ids)
        self._sent[frame_id] = taken
        events, keys = join_events(taken)
        failed = rows_table([row for r in taken for row in r.failed], schema.FAILED_EVENTS)
        header = Header(
            WIRE_VERSION,
            frame_id,
            floor,
            [r.received_us for r in taken],
            [r.count for r in taken],
            [len(r.failed) for r in taken],
            [r.nbytes for r in taken],
        )
        return encode_frame(header, events, keys, failed)

    def _empty(self, floor: int) -> tuple[Header, pa.Table, tuple[U64, U64], pa.Table]:
        empty = np.empty(0, np.uint64)
        return (
            Header(WIRE_VERSION, -1, floor),
            schema.EVENTS.empty_table(),
            (empty, empty),
            schema.FAILED_EVENTS.empty_table(),
        )

    def _lose(self, why: str) -> None:
        if self._lost:
            return
        self._lost = True
        log.error("%s; this accept process stops", why)
        self._fail_all(
            OwnerGone(
                "the process that owns the store is gone; retry", retry_after=self._retry_after
            )
        )
        self._on_lost()

    def _fail_all(self, error: Unavailable) -> None:
        for request in [*self._queue, *(r for f in self._sent.values() for r in f)]:
            _settle(request, error=error)
        self._queue.clear()
        self._sent.clear()
        self._queued = self._queued_bytes = 0


def _settle(
    request: _Request, outcome: Outcome | None = None, error: Exception | None = None
) -> None:
    if request.future.done():
        return
    if error is not None:
        request.future.set_exception(error)
    elif outcome is not None:
        request.future.set_result(outcome)


# Hop-by-hop headers end at each hop (RFC 9110, 7.6.1); ``date`` and ``server`` are
# written by this process's own HTTP server. The rest pass as they came.
_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"transfer-encoding",
        b"upgrade",
    }
)
_OWN = frozenset({b"date", b"server"})
# What a client says about its own address is not believed: the proxy says it.
_FORWARDED = frozenset({b"forwarded", b"x-forwarded-for", b"x-forwarded-proto"})
_UNAVAILABLE = jsonio.dumps(
    refusal("unavailable", "the server's main process does not answer; retry")
)


class ClientLeft(Exception):
    """The client disconnected before its request's body was whole."""


class Proxy:
    """ASGI app sending each request to the owner's HTTP socket and streaming back its
    answer (server-sent events included).

    It speaks through the transport itself, not an HTTP client: a client would keep
    the cookies the owner sets (a dashboard session) and send them with the next
    request of anyone else, and would add headers of its own.
    """

    def __init__(self, path: Path) -> None:
        self._transport = httpx.AsyncHTTPTransport(uds=str(path))

    async def close(self) -> None:
        await self._transport.aclose()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        named = _connection_named(scope["headers"])
        headers = [
            (k, v)
            for k, v in scope["headers"]
            if k.lower() not in _HOP and k.lower() not in _FORWARDED and k.lower() not in named
        ]
        client = scope.get("client")
        if client:
            headers.append((b"x-forwarded-for", str(client[0]).encode()))
        headers.append((b"x-forwarded-proto", scope.get("scheme", "http").encode()))
        sent = {k.lower() for k, _ in scope["headers"]}
        has_body = b"content-length" in sent or b"transfer-encoding" in sent
        request = httpx.Request(
            scope["method"],
            httpx.URL(
                scheme="http",
                host="headwater",
                path=scope["raw_path"].decode("latin-1"),
                query=scope["query_string"],
            ),
            headers=headers,
            content=_body(receive) if has_body else None,
            extensions={"timeout": {"connect": 5.0, "pool": 5.0, "read": None, "write": 30.0}},
        )
        try:
            response = await self._transport.handle_async_request(request)
        except (httpx.HTTPError, ClientLeft) as exc:
            log.warning("proxy to the server's main process failed: %r", exc)
            await _answer_unavailable(send)
            return
        try:
            named = _connection_named(response.headers.raw)
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": [
                        (k, v)
                        for k, v in response.headers.raw
                        if k.lower() not in _HOP and k.lower() not in _OWN
                        and k.lower() not in named
                    ],
                }
            )  # fmt: skip
            await _stream(response, receive, send)
        finally:
            await response.aclose()


async def _stream(response: httpx.Response, receive: Any, send: Any) -> None:
    """The answer's body as it comes, until it ends or the client leaves (an endless
    stream, the live tail's, would otherwise hold the owner's side open for good)."""

    async def pump() -> None:
        async for chunk in response.aiter_raw():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b""})

    async def left() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    pumping = asyncio.create_task(pump())
    watching = asyncio.create_task(left())
    try:
        await asyncio.wait({pumping, watching}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (pumping, watching):
            task.cancel()
        for task in (pumping, watching):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    if pumping.done() and not pumping.cancelled() and pumping.exception() is not None:
        log.warning("proxied answer cut short: %r", pumping.exception())


def _connection_named(headers: Sequence[tuple[bytes, bytes]]) -> frozenset[bytes]:
    """Headers a ``Connection`` header names: hop-by-hop too."""
    return frozenset(
        name.strip().lower()
        for key, value in headers
        if key.lower() == b"connection"
        for name in value.split(b",")
    )


async def _answer_unavailable(send: Any) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": 503,
            "headers": [(b"content-type", b"application/json"), (b"retry-after", b"1")],
        }
    )
    await send({"type": "http.response.body", "body": _UNAVAILABLE})


async def _body(receive: Any) -> AsyncIterator[bytes]:
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            # Raised, not ended: the owner must not take a cut body for a whole one.
            raise ClientLeft
        body = message.get("body", b"")
        if body:
            yield body
        if not message.get("more_body", False):
            return
