"""The tracking API: ``POST /v1/{track,identify,page,screen,group,alias,batch,import}``.

A plain ASGI callable rather than framework routes: this is the hot path, and
every request does the same few steps: check the headers, read the body
within its limit, find the source, validate each event, hand the rows to the
writer, and answer once they are committed.
"""

from __future__ import annotations

import itertools
import logging
import re
import threading
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import msgspec

from headwater.collect.auth import KeyRing, basic_user
from headwater.collect.body import ClientGone, check_encoding, read_body
from headwater.collect.errors import Rejection, RequestRefused, Unavailable
from headwater.collect.settings import CollectorSettings
from headwater.collect.validate import (
    BatchEnvelope,
    EventRow,
    Invalid,
    Validator,
    decode_batch,
    probe_key,
)
from headwater.collect.writer import FailedRow, Writer
from headwater.core import jsonio
from headwater.core.clock import now_us

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger(__name__)

#: Path → the event type it implies; ``None`` for batch endpoints.
ROUTES: dict[str, str | None] = {
    "/v1/track": "track",
    "/v1/identify": "identify",
    "/v1/page": "page",
    "/v1/screen": "screen",
    "/v1/group": "group",
    "/v1/alias": "alias",
    "/v1/batch": None,
    "/v1/import": None,
}
# text/plain is what analytics.js sends from browsers to avoid a CORS preflight.
_CONTENT_TYPES = frozenset({b"", b"application/json", b"text/plain"})
_JSON_HEADERS = [(b"content-type", b"application/json")]
_CORS = [(b"access-control-allow-origin", b"*")]
_PREFLIGHT = [
    (b"access-control-allow-methods", b"POST, OPTIONS"),
    (b"access-control-allow-headers", b"Content-Type, Content-Encoding, Authorization"),
    (b"access-control-max-age", b"86400"),
]
_KEY_IN_TEXT = re.compile(r'("writeKey"\s*:\s*)"[^"]*"')


class IngestApp:
    """ASGI app for the Segment-compatible tracking endpoints."""

    def __init__(self, keys: KeyRing, settings: CollectorSettings, writer: Writer) -> None:
        self._keys = keys
        self._settings = settings
        self._writer = writer
        self._validator = Validator(
            max_event_bytes=settings.max_event_bytes, max_depth=settings.max_depth
        )
        self._arriving: dict[int, int] = {}
        self._tokens = itertools.count()
        # Stamping an arrival and reading the floor happen in different threads.
        self._lock = threading.Lock()

    def arrival_floor(self) -> int:
        """Every event that arrived before this time (µs) is committed or refused.

        Requests being read or validated count here, queued ones in the writer:
        what pipelines by arrival time use to know an interval is complete.
        """
        with self._lock:
            now = now_us()
            arriving = min(self._arriving.values(), default=now)
        pending = self._writer.oldest_pending()
        return min(now, arriving, pending if pending is not None else now)

    def _arrive(self) -> tuple[int, int]:
        """Stamp ``received_at`` and count the request in flight, in one step."""
        with self._lock:
            received_us = now_us()
            token = next(self._tokens)
            self._arriving[token] = received_us
        return received_us, token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] == "OPTIONS":
            # A browser's preflight: analytics.js posts from other origins.
            status, body, headers = 204, b"", list(_PREFLIGHT)
        else:
            status, body, headers = await self._answer(scope, receive)
        headers = [*headers, *_CORS]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _answer(self, scope: Scope, receive: Receive) -> tuple[int, bytes, list[Any]]:
        path = scope["path"].rstrip("/")
        if path not in ROUTES:
            return _error(404, "not_found", f"no endpoint {path}; use /v1/batch or /v1/track")
        if scope["method"] != "POST":
            return _error(405, "method_not_allowed", f"{path} takes POST", [(b"allow", b"POST")])
        source: str | None = None
        body: bytes | None = None
        # Stamped once the body is in and the key checked: a client that stalls
        # mid-upload must not hold back the arrival floor of every pipeline.
        token: int | None = None
        received_us = 0
        try:
            headers = dict(scope["headers"])
            _check_content_type(headers.get(b"content-type", b""))
            wbits = check_encoding(headers.get(b"content-encoding", b"").decode("latin-1"))
            key = basic_user(headers.get(b"authorization"))
            if key is not None:
                source = self._keys.source_for(key)
            body = await read_body(receive, self._settings.max_request_bytes, wbits)
            kind = ROUTES[path]
            envelope = decode_batch(body) if kind is None else None
            if source is None:
                source = self._keys.source_for(
                    envelope.write_key if envelope is not None else probe_key(body)
                )
            received_us, token = self._arrive()
            return await self._ingest(kind, body, envelope, source, received_us)
        except RequestRefused as refused:
            if token is None:
                received_us, token = self._arrive()
            return await self._refuse(refused, source, received_us, body)
        except Unavailable as unavailable:
            return _error(
                503,
                unavailable.code,
                str(unavailable),
                [(b"retry-after", str(unavailable.retry_after).encode())],
            )
        except ClientGone:
            return _error(400, "client_gone", "the client disconnected")
        finally:
            if token is not None:
                with self._lock:
                    del self._arriving[token]

    async def _ingest(
        self,
        kind: str | None,
        body: bytes,
        envelope: BatchEnvelope | None,
        source: str,
        received_us: int,
    ) -> tuple[int, bytes, list[Any]]:
        if envelope is not None:
            raws: list[msgspec.Raw] | list[bytes] = envelope.batch
            if not raws:
                message = "the batch holds no events; send at least one event in `batch`"
                raise RequestRefused(400, "empty_batch", message, field="batch")
            limit = self._settings.max_batch_events
            if len(raws) > limit:
                message = f"the batch holds {len(raws)} events, over the limit of {limit}; split it"
                raise RequestRefused(413, "batch_too_large", message, field="batch")
            sent_at, context = envelope.sent_at, envelope.context
        else:
            raws, sent_at, context = [body], None, None

        events: list[EventRow] = []
        failed: list[FailedRow] = []
        rejected: list[Rejection] = []
        for index, raw in enumerate(raws):
            raw = bytes(raw)
            try:
                events.append(
                    self._validator.event(raw, kind, source, received_us, sent_at, context)
                )
            except Invalid as bad:
                rejected.append(Rejection(index, bad.code, bad.field, bad.message))
                row = _failed_row(source, received_us, bad.code, bad.field, bad.message, raw)
                failed.append(row)
        outcome = await self._writer.submit(events, failed, received_us)
        answer = {
            "success": not rejected,
            "accepted": len(events),
            "duplicates": outcome.duplicates,
            "rejected": [
                {"index": r.index, "code": r.code, "field": r.field, "message": r.message}
                for r in rejected
            ],
        }
        # A single event that is refused is a client error; in a batch, the good
        # events were kept, so the batch as a whole succeeded.
        status = 400 if kind is not None and rejected else 200
        return status, jsonio.dumps(answer), _JSON_HEADERS

    async def _refuse(
        self, refused: RequestRefused, source: str | None, received_us: int, body: bytes | None
    ) -> tuple[int, bytes, list[Any]]:
        if source is not None and refused.keep:
            # An authenticated caller's bad body is kept so it can be fixed and replayed.
            row = _failed_row(source, received_us, refused.code, refused.field, str(refused), body)
            try:
                await self._writer.submit([], [row], received_us)
            except Unavailable as unavailable:
                log.warning("could not keep a refused request: %s", unavailable)
        return _error(refused.status, refused.code, str(refused))


def _check_content_type(value: bytes) -> None:
    media = value.split(b";", 1)[0].strip().lower()
    if media not in _CONTENT_TYPES:
        raise RequestRefused(
            415,
            "unsupported_media_type",
            f"Content-Type {media.decode('latin-1')!r} is not accepted; send application/json",
            keep=False,
        )


def _failed_row(
    source: str | None,
    received_us: int,
    code: str,
    field: str | None,
    message: str,
    payload: bytes | None,
) -> FailedRow:
    return (
        str(uuid.uuid4()),
        source,
        received_us,
        code,
        field,
        message,
        None if payload is None else _payload_json(payload),
        None,
    )


def _payload_json(payload: bytes) -> str:
    """The payload as JSON: itself when it parses, else a JSON string of its text.

    A ``writeKey`` in the body is a secret: it is removed, since failed events
    are readable by anyone granted ``failed_events``.
    """
    try:
        value = jsonio.loads(payload)
    except (jsonio.JSONDecodeError, UnicodeDecodeError, RecursionError):
        text = payload.decode("utf-8", errors="replace")
        return jsonio.dumps_str(_KEY_IN_TEXT.sub(r'\1"<removed>"', text))
    if isinstance(value, dict) and "writeKey" in value:
        value["writeKey"] = "<removed>"
        return jsonio.dumps_str(value)
    return payload.decode()


def _error(
    status: int, code: str, message: str, headers: list[Any] | None = None
) -> tuple[int, bytes, list[Any]]:
    body = jsonio.dumps({"success": False, "error": {"code": code, "message": message}})
    return status, body, [*_JSON_HEADERS, *(headers or [])]
