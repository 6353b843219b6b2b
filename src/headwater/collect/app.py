"""The tracking API: ``POST /v1/{track,identify,page,screen,group,alias,batch,import}``.

A plain ASGI callable rather than framework routes: this is the hot path, and
every request does the same few steps: check the headers, read the body
within its limit, find the source, validate each event, hand the rows to the
writer, and answer once they are committed.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import threading
import uuid
from collections.abc import Awaitable, Callable, Mapping, MutableMapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from functools import partial
from typing import Any, TypeVar

import msgspec
import pyarrow as pa

from headwater.collect.auth import KeyRing, basic_user
from headwater.collect.body import ClientGone, check_encoding, read_body
from headwater.collect.errors import Rejection, RequestRefused, Unavailable, refusal
from headwater.collect.pii import Redactor
from headwater.collect.settings import CollectorSettings
from headwater.collect.suppress import Suppression
from headwater.collect.validate import (
    Batch,
    BatchEnvelope,
    EventRow,
    Invalid,
    Validator,
    decode_batch,
    probe_key,
)
from headwater.collect.workers import POOL_BYTES, DecodePool
from headwater.collect.writer import Committer, FailedRow, rows_table
from headwater.core import jsonio
from headwater.core.clock import now_us
from headwater.core.errors import ConfigError
from headwater.store import schema

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger(__name__)
T = TypeVar("T")
#: Each source with PII rules: its rules, or why they cannot apply now (its key is not in
#: the environment). A new mapping whenever ``headwater.toml`` changes.
Rules = Callable[[], Mapping[str, Redactor | ConfigError]]

#: Path → the event type it implies; ``None`` for batch endpoints. analytics.js posts to
#: the one-letter paths (``/v1/t`` for a track, ``/v1/b`` for a batch).
ROUTES: dict[str, str | None] = {
    "/v1/track": "track",
    "/v1/identify": "identify",
    "/v1/page": "page",
    "/v1/screen": "screen",
    "/v1/group": "group",
    "/v1/alias": "alias",
    "/v1/batch": None,
    "/v1/import": None,
    "/v1/t": "track",
    "/v1/i": "identify",
    "/v1/p": "page",
    "/v1/s": "screen",
    "/v1/g": "group",
    "/v1/a": "alias",
    "/v1/b": None,
}
#: analytics.js's own usage metrics: read within the limits, then dropped.
METRICS_PATH = "/v1/m"
# Content types that say JSON, or say nothing useful: a body that does not parse is then
# malformed JSON (400). Any other type is still read as JSON, as Segment does (one SDK
# labels gzip JSON as a form, browsers' sendBeacon sends text/plain); only a body that is
# not JSON then answers 415.
_JSON_TYPES = frozenset({b"", b"application/json", b"text/plain"})
#: The member of a body that holds the write key (a secret: never kept in failed_events).
_KEY_NAME = "writeKey"
#: Bodies larger than this are decoded and validated in a worker thread: the event loop
#: that answers every other request does not wait on one request's 2,500 events.
_INLINE_BYTES = 64 * 1024
#: A request with at least this many valid events queues them as an Arrow table; fewer
#: wait as rows and become a table with the others of their commit.
_TABLE_ROWS = 200
_JSON_HEADERS = [(b"content-type", b"application/json")]
_CORS = [(b"access-control-allow-origin", b"*")]
_PREFLIGHT = [
    (b"access-control-allow-methods", b"POST, OPTIONS"),
    (b"access-control-allow-headers", b"Content-Type, Content-Encoding, Authorization"),
    (b"access-control-max-age", b"86400"),
]
# A string key and a string value, escapes and all: how a writeKey is found in a body that
# does not parse, whatever escapes spell its name.
_STRING_MEMBER = re.compile(r'"((?:[^"\\]|\\.)*)"(\s*:\s*)"((?:[^"\\]|\\.)*)"', re.S)


class IngestApp:
    """ASGI app for the Segment-compatible tracking endpoints."""

    def __init__(
        self,
        keys: KeyRing,
        settings: CollectorSettings,
        writer: Committer,
        pool: DecodePool | None = None,
        rules: Rules | None = None,
    ) -> None:
        """``pool``, when given, validates large batches in other processes; ``rules``
        gives the sources' PII rules (one that cannot apply is an error here, at start)."""
        self._keys = keys
        self._rules = rules
        for found in (rules() if rules is not None else {}).values():
            if isinstance(found, ConfigError):
                raise found
        self._pool = pool
        self._settings = settings
        self._writer = writer
        #: Ids whose events are dropped (filled by the server from the metadata database).
        self.suppression = Suppression()
        self._validator = Validator(
            max_event_bytes=settings.max_event_bytes, max_depth=settings.max_depth
        )
        self._arriving: dict[int, int] = {}
        self._tokens = itertools.count()
        # Stamping an arrival and reading the floor happen in different threads.
        self._lock = threading.Lock()
        # Large bodies are decoded here, not on the event loop, and not in the loop's
        # default executor, which the scheduler, the deliverer and operations hold.
        self._decoders = ThreadPoolExecutor(max_workers=2, thread_name_prefix="headwater-decode")

    def close(self) -> None:
        self._decoders.shutdown(wait=False, cancel_futures=True)
        if self._pool is not None:
            self._pool.close()

    async def _decoded(self, size: int, work: Callable[[], T]) -> T:
        """``work()``, in a decoder thread when the body is over ``_INLINE_BYTES``: one
        request's 2,500 events never hold up the event loop that answers the others."""
        if size <= _INLINE_BYTES:
            return work()
        return await asyncio.get_running_loop().run_in_executor(self._decoders, work)

    def _rules_of(self, source: str) -> Redactor | ConfigError | None:
        return None if self._rules is None else self._rules().get(source)

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
        if path not in ROUTES and path != METRICS_PATH:
            return _error(404, "not_found", f"no endpoint {path}; use /v1/batch or /v1/track")
        if scope["method"] != "POST":
            return _error(405, "method_not_allowed", f"{path} takes POST", [(b"allow", b"POST")])
        if path == METRICS_PATH:
            return await self._metrics(scope, receive)
        source: str | None = None
        body: bytes | None = None
        # Stamped once the body is in and the key checked: a client that stalls
        # mid-upload must not hold back the arrival floor of every pipeline.
        token: int | None = None
        received_us = 0
        try:
            headers = dict(scope["headers"])
            media = _media_type(headers.get(b"content-type", b""))
            wbits = check_encoding(headers.get(b"content-encoding", b"").decode("latin-1"))
            key = basic_user(headers.get(b"authorization"))
            if key is not None:
                source = self._keys.source_for(key)
            body = await read_body(receive, self._settings.max_request_bytes, wbits)
            kind = ROUTES[path]
            envelope, body_key = await self._decoded(
                len(body), partial(_parse, body, kind, media, probe=source is None)
            )
            if source is None:
                source = self._keys.source_for(body_key)
            received_us, token = self._arrive()
            answer = await self._ingest(kind, body, envelope, source, received_us)
            self._writer.acknowledged(received_us)
            return answer
        except RequestRefused as refused:
            if token is None:
                received_us, token = self._arrive()
            if source is None and body is not None and refused.keep:
                # Authenticated by a writeKey in a body that did not parse: still the
                # caller's, and kept so that it can be fixed and replayed.
                found = await self._decoded(len(body), partial(_key_in_text, body))
                source = self._keys.known(found)
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
        rules = self._rules_of(source)
        if isinstance(rules, ConfigError):
            # Its rules were changed to ones that cannot apply: refused (and retried by
            # the client), never stored without them.
            raise RequestRefused(
                503,
                "pii_rules_unavailable",
                f"the source's PII rules cannot be applied ({rules.message}); retry later",
                keep=False,
            )
        if envelope is not None:
            raws: list[msgspec.Raw] | list[bytes] = envelope.batch
            if not raws:
                message = "the batch holds no events; send at least one event in `batch`"
                raise RequestRefused(400, "empty_batch", message, field="batch")
            limit = self._settings.max_batch_events
            if len(raws) > limit:
                message = f"the batch holds {len(raws)} events, over the limit of {limit}; split it"
                raise RequestRefused(413, "batch_too_large", message, field="batch")
            batch = self._validator.batch(envelope)
        else:
            raws, batch = [body], None
        self._check_stored_size(raws, batch)

        def validate() -> tuple[pa.Table | list[EventRow], list[FailedRow], list[Rejection]]:
            events, failed, rejected = validate_events(
                self._validator, raws, kind, source, received_us, batch, rules
            )
            # A large request's rows become one Arrow table here, off the writer's thread,
            # and are dropped at once; a small one's are joined with others' at the commit.
            if len(events) >= _TABLE_ROWS:
                return rows_table(events, schema.EVENTS), failed, rejected
            return events, failed, rejected

        keys = None
        events: pa.Table | list[EventRow]
        if self._pool is not None and len(body) >= POOL_BYTES and self._pool.ready():
            validated = await self._pool.validate(body, kind, source, received_us, rules)
            events, keys, rejected = validated.events, validated.keys, validated.rejected
            failed = validated.failed
        else:
            events, failed, rejected = await self._decoded(len(body), validate)
        accepted = events.num_rows if isinstance(events, pa.Table) else len(events)
        # Erased people's events are answered as accepted and stored nowhere; their refused
        # ones are not kept in failed_events either.
        events, keys, _ = self.suppression.filter(events, keys)
        failed, _ = self.suppression.failed(failed)
        outcome = await self._writer.submit(
            events, failed, received_us, nbytes=len(body), keys=keys
        )
        answer = {
            "success": not rejected,
            "accepted": accepted,
            "duplicates": outcome.duplicates,
            "rejected": [
                {"index": r.index, "code": r.code, "field": r.field, "message": r.message}
                for r in rejected
            ],
        }
        # A single event that is refused is a client error; in a batch, the good
        # events were kept, so the batch as a whole succeeded.
        status = 400 if kind is not None and rejected else 200
        if status == 400:  # where SDKs read why (see collect.errors.refusal)
            answer["code"], answer["message"] = rejected[0].code, rejected[0].message
        return status, jsonio.dumps(answer), _JSON_HEADERS

    def _check_stored_size(
        self, raws: list[msgspec.Raw] | list[bytes], batch: Batch | None
    ) -> None:
        """Refuse a request whose events, each with the batch's context merged in, would store
        more than ``max_stored_bytes``: a small body must not become a large store."""
        limit = self._settings.max_stored_bytes
        context = batch.context_bytes if batch is not None else 0
        stored = sum(len(raw) for raw in raws) + context * len(raws)
        if stored > limit:
            raise RequestRefused(
                413,
                "request_too_large",
                f"its events would store {stored} bytes with the batch's context merged into "
                f"each, over the limit of {limit}; send the context in each event, or fewer "
                "events per batch",
                field="context" if context else None,
            )

    async def _metrics(self, scope: Scope, receive: Receive) -> tuple[int, bytes, list[Any]]:
        """analytics.js reports its own usage here; read it within the limits and drop it."""
        headers = dict(scope["headers"])
        try:
            wbits = check_encoding(headers.get(b"content-encoding", b"").decode("latin-1"))
            await read_body(receive, self._settings.max_request_bytes, wbits)
        except RequestRefused as refused:
            return _error(refused.status, refused.code, str(refused))
        except ClientGone:
            return _error(400, "client_gone", "the client disconnected")
        return 200, b"{}", _JSON_HEADERS

    async def _refuse(
        self, refused: RequestRefused, source: str | None, received_us: int, body: bytes | None
    ) -> tuple[int, bytes, list[Any]]:
        rules = None if source is None else self._rules_of(source)
        if source is not None and refused.keep and not isinstance(rules, ConfigError):
            # An authenticated caller's bad body is kept so it can be fixed and replayed.
            row = _failed_row(
                source, received_us, refused.code, refused.field, str(refused), body, rules
            )
            kept, _ = self.suppression.failed([row])
            try:
                # Its bytes count against the queue's and the commit's bounds like any body.
                if kept:
                    await self._writer.submit([], kept, received_us, nbytes=len(body or b""))
            except Unavailable as unavailable:
                log.warning("could not keep a refused request: %s", unavailable)
        return _error(refused.status, refused.code, str(refused))


def validate_events(
    validator: Validator,
    raws: Sequence[bytes | msgspec.Raw],
    kind: str | None,
    source: str,
    received_us: int,
    batch: Batch | None,
    rules: Redactor | None = None,
) -> tuple[list[EventRow], list[FailedRow], list[Rejection]]:
    """Each event validated alone: the rows of the valid ones, and the refused ones as
    ``failed_events`` rows and as rejections for the answer; the source's PII ``rules``
    apply to both."""
    events: list[EventRow] = []
    failed: list[FailedRow] = []
    rejected: list[Rejection] = []
    for index, item in enumerate(raws):
        raw = bytes(item)
        try:
            events.append(validator.event(raw, kind, source, received_us, batch, rules))
        except Invalid as bad:
            rejected.append(Rejection(index, bad.code, bad.field, bad.message))
            kept = _as_validated(raw, batch)
            failed.append(
                _failed_row(source, received_us, bad.code, bad.field, bad.message, kept, rules)
            )
    return events, failed, rejected


def _as_validated(raw: bytes, batch: Batch | None) -> bytes:
    """A refused event of a batch as it was validated: with the batch's ``sentAt`` when it
    has none of its own, and the batch's ``context`` under its own. Kept so, a fixed event
    replayed alone has its clock corrected and its context as its siblings had (the SDKs
    send ``sentAt`` and the library's context once per batch)."""
    if batch is None or (batch.sent_at is None and not batch.context):
        return raw
    try:
        event = jsonio.loads(raw)
    except (jsonio.JSONDecodeError, UnicodeDecodeError, RecursionError):
        return raw
    if not isinstance(event, dict):
        return raw
    if batch.sent_at is not None and event.get("sentAt") is None:
        # As it was written (its offset, or none: UTC), not converted: a time at either
        # end of the range may have no UTC form, and a naive one is no local time.
        event["sentAt"] = batch.sent_at.isoformat()
    own = event.get("context")
    if batch.context and (own is None or isinstance(own, dict)):
        event["context"] = {**batch.context, **(own or {})}
    return jsonio.dumps(event)


def _parse(
    body: bytes, kind: str | None, media: bytes, *, probe: bool
) -> tuple[BatchEnvelope | None, str | None]:
    """A batch's envelope, and the write key the body carries (looked for when ``probe``,
    or when the body is sent as something other than JSON and must be JSON all the same)."""
    try:
        if kind is None:
            envelope = decode_batch(body)
            return envelope, envelope.write_key
        if probe or media not in _JSON_TYPES:
            return None, probe_key(body)
        return None, None
    except RequestRefused as refused:
        raise _unsupported(media) if _not_json(refused, media) else refused from None


def _media_type(value: bytes) -> bytes:
    return value.split(b";", 1)[0].strip().lower()


def _not_json(refused: RequestRefused, media: bytes) -> bool:
    """A body that does not parse, sent as something other than JSON: the wrong content,
    not broken JSON."""
    return refused.code == "malformed_json" and media not in _JSON_TYPES


def _unsupported(media: bytes) -> RequestRefused:
    return RequestRefused(
        415,
        "unsupported_media_type",
        f"the body, sent as {media.decode('latin-1')!r}, is not JSON; send the events as JSON "
        "(application/json)",
        keep=False,
    )


def _failed_row(
    source: str | None,
    received_us: int,
    code: str,
    field: str | None,
    message: str,
    payload: bytes | None,
    rules: Redactor | None = None,
) -> FailedRow:
    return (
        str(uuid.uuid4()),
        source,
        received_us,
        code,
        field,
        message,
        None if payload is None else _payload_json(payload, rules),
        None,
    )


def _payload_json(payload: bytes, rules: Redactor | None = None) -> str | None:
    """The payload as JSON: itself when it parses, else a JSON string of its text.

    A ``writeKey`` in the body is a secret: it is removed, since failed events
    are readable by anyone granted ``failed_events``, wherever it is in the body,
    however its name is spelled (JSON escapes decode to the same key) and even
    when the body does not parse.

    With PII ``rules``, the parsed payload is kept with the rules applied, and a
    payload that does not parse, or is not an object, is not kept at all (``None``):
    where its ruled values are cannot be told, and no raw one may be stored.
    """
    try:
        value = jsonio.loads(payload)
    except (jsonio.JSONDecodeError, UnicodeDecodeError, RecursionError):
        if rules is not None:
            return None
        text = payload.decode("utf-8", errors="replace")
        return jsonio.dumps_str(_STRING_MEMBER.sub(_redact, text))
    if rules is not None:
        value = rules.payload(value)
        if value is None:
            return None
        _remove_keys(value)
        return jsonio.dumps_str(value)
    if _remove_keys(value):
        return jsonio.dumps_str(value)
    return payload.decode()


def _remove_keys(value: object) -> bool:
    """Replace every ``writeKey`` in ``value``, at any depth (analytics.js puts one in each
    event of a batch); whether there was one. A loop, not recursion: the payload may be
    nested as deeply as its decoder allowed."""
    found = False
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            if _KEY_NAME in item:
                item[_KEY_NAME] = "<removed>"
                found = True
            stack.extend(v for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            stack.extend(v for v in item if isinstance(v, dict | list))
    return found


def _is_key_name(spelled: str) -> bool:
    """Whether a JSON string's contents decode to ``writeKey``."""
    if spelled == _KEY_NAME:
        return True
    if "\\" not in spelled:
        return False
    try:
        return bool(jsonio.loads(f'"{spelled}"') == _KEY_NAME)
    except (jsonio.JSONDecodeError, UnicodeDecodeError):
        return False


def _redact(match: re.Match[str]) -> str:
    if _is_key_name(match.group(1)):
        return f'"{match.group(1)}"{match.group(2)}"<removed>"'
    return match.group(0)


def _key_in_text(body: bytes) -> str | None:
    """The value of a ``writeKey`` member found in a body's text, parsed or not."""
    text = body.decode("utf-8", errors="replace")
    for match in _STRING_MEMBER.finditer(text):
        if _is_key_name(match.group(1)):
            try:
                value = jsonio.loads(f'"{match.group(3)}"')
            except (jsonio.JSONDecodeError, UnicodeDecodeError):
                return None
            return value if isinstance(value, str) else None
    return None


def _error(
    status: int, code: str, message: str, headers: list[Any] | None = None
) -> tuple[int, bytes, list[Any]]:
    body = jsonio.dumps(refusal(code, message))
    return status, body, [*_JSON_HEADERS, *(headers or [])]
