"""Settings of the collector: the ``[collector]`` table of ``headwater.toml``."""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec


class CollectorSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """Limits, dedupe and back-pressure of the ingest API."""

    max_event_bytes: int = 32 * 1024
    """Largest accepted event, in bytes of JSON; a larger one is rejected as ``event_too_large``."""

    max_request_bytes: int = 500 * 1024
    """Largest request body after decompression; reading stops there and the answer is 413."""

    max_stored_bytes: int = 1024 * 1024
    """Most bytes one request's events may store, each with the batch's ``context`` merged
    in: a 150 KB batch of tiny events with a 32 KB context would otherwise store 80 MB.
    More is answered 413."""

    max_batch_events: int = 2500
    """Most events in one ``/v1/batch`` request; more is answered 413."""

    max_depth: int = 64
    """Deepest nesting of objects and arrays inside one event."""

    dedupe_window: str = "7d"
    """How long a ``(source, messageId)`` pair is remembered, e.g. ``"7d"`` or ``"36h"``."""

    queue_max_events: int = 100_000
    """Events waiting for the writer beyond which requests get 503 with ``Retry-After``."""

    queue_max_bytes: int = 32 * 1024 * 1024
    """Bytes of request bodies waiting for the writer beyond which requests get 503 with
    ``Retry-After``: with ``queue_max_events``, what bounds the queue's memory whatever
    the size of the events."""

    commit_max_events: int = 10_000
    """Most events the writer commits in one transaction."""

    commit_max_bytes: int = 8 * 1024 * 1024
    """Most bytes of request bodies the writer commits in one transaction (one request's
    events are never split, so a commit may hold one request past it)."""

    validate_processes: int = 0
    """Processes that validate large batches beside the one that answers HTTP and commits
    (``collect/workers.py``), so that more than one core works; 0 (the default):
    validate in the server's own process. Off by default until it is measured to pay:
    on a shared two-core machine one worker lowered batch-100 throughput (0.64x)."""

    accept_processes: Annotated[int, msgspec.Meta(ge=0, le=64)] = 0
    """Processes that answer the tracking API beside the one that owns the store
    (``runtime/accept_process.py``): each takes connections on the server's port, validates,
    and sends its requests' events to the owner's writer in frames, so HTTP and
    validation use every core. 0 (the default): the server answers everything itself.
    Each is a process of its own (about 150 MB under load); see docs/architecture.md
    for when they pay."""

    retry_after_seconds: int = 2
    """The ``Retry-After`` given with a 503."""

    drain_timeout_seconds: float = 30.0
    """On shutdown, how long in-flight requests may take to be committed and answered."""


class PiiRule(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """One ``[[sources.<name>.pii]]`` table: what the collector does to one value of each
    event before anything is stored (``collect/pii.py``)."""

    path: str
    """A dotted path into ``properties``, ``traits`` or ``context``, e.g. ``"context.ip"``;
    a ``traits.`` path also applies to ``context.traits``."""

    action: Literal["drop", "hash", "truncate"]
    """``drop`` removes the member; ``hash`` replaces it with the hex HMAC-SHA256 under
    the source's ``pii_key``; ``truncate`` keeps an IP address's network (IPv4 /24,
    IPv6 /48) or an ISO timestamp's hour."""


class SourceSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """One ``[sources.<name>]`` table: a producer of events, its write key, and the PII
    rules applied to its events before they are stored."""

    write_key: str
    """``"sha256:<hex>"`` (as ``headwater sources add`` writes it) or ``"${ENV_NAME}"``."""

    pii_key: str | None = None
    """The HMAC key of the ``hash`` rules, as an environment reference only
    (``"${HEADWATER_PII_KEY}"``): the key itself never goes in the file."""

    pii: list[PiiRule] = msgspec.field(default_factory=list)
    """The source's PII rules (``[[sources.<name>.pii]]``); see docs/events.md."""
