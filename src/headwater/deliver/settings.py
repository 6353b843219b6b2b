"""Settings of delivery: ``[sinks.<name>]`` and the ``[delivery]`` table.

A sink is a place a pipeline's output goes besides the engine's own table; a
pipeline names its sinks in its header (``sinks = ["crm", "lake"]``). Every
sink retries a failed delivery with exponential backoff and jitter, and after
``max_attempts`` keeps it as a dead letter for ``headwater replay``.
"""

from __future__ import annotations

from typing import Literal

import msgspec


class _Sink(
    msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True, tag_field="type"
):
    max_attempts: int = 8
    """Attempts before a delivery (for a webhook: a batch) becomes a dead letter."""

    backoff_seconds: float = 1.0
    """Delay before the second attempt; doubles each attempt, half of it fixed and half
    random (so failed deliveries do not all retry in step)."""

    max_backoff_seconds: float = 300.0
    """The longest delay between two attempts."""


class FilesSink(_Sink, tag="files", frozen=True):
    """One file per interval (per run of a full pipeline), replaced atomically."""

    url: str
    """A folder: a path relative to ``headwater.toml``, or an fsspec URL (``gs://bucket/prefix``)."""

    format: Literal["parquet", "csv", "jsonl"] = "parquet"
    """``parquet``, ``csv`` or ``jsonl`` (JSON lines)."""

    storage_options: dict[str, str] = msgspec.field(default_factory=dict)
    """Passed to the fsspec filesystem (e.g. ``project``, ``token`` for ``gs://``)."""


class PostgresSink(_Sink, tag="postgres", frozen=True):
    """A table per pipeline in another service's PostgreSQL database, upserted by key."""

    url: str
    """``postgresql://user@host:5432/db``; a URL with a password must be ``"${ENV_NAME}"``."""

    schema: str = "public"
    """The PostgreSQL schema the tables are created in."""

    table_prefix: str = ""
    """Put before each pipeline's name to make its table's name."""

    serve: bool = False
    """Serve the read API's lookups of these datasets from this database (indexed by key)."""

    pool_size: int = 4
    """Connections kept open for serving."""

    latest: dict[str, list[str]] = msgspec.field(default_factory=dict)
    """Pipelines whose table here holds one row per key, the latest: pipeline name -> the
    table's key (``{ churn_scores = ["user_id"] }``). The latest row is the one with the
    greatest time column, then ``scored_at``, so a scoring pipeline's table serves each
    person's newest prediction; an older interval delivered again never overwrites a newer
    one. The read API's lookups (``serve = true``) go by this key."""


class WebhookSink(_Sink, tag="webhook", frozen=True):
    """Batched JSON POSTs, signed, each with an idempotency key."""

    url: str
    """``https://…`` (or ``http://``); private addresses only when allowed in ``[delivery]``."""

    secret: str
    """``"${ENV_NAME}"``: the environment variable holding the HMAC-SHA256 signing secret."""

    batch_rows: int = 500
    """Rows per POST."""

    timeout_seconds: float = 10.0
    """Connect, write and each read's timeout of one POST, and how long its answer's body
    is read from the request's start (at most about twice this in all); a timeout is
    retried."""


Sink = FilesSink | PostgresSink | WebhookSink


class DeliverySettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """The ``[delivery]`` table."""

    allow_hosts: list[str] = msgspec.field(default_factory=list)
    """Webhook host names allowed to resolve to loopback, private or link-local addresses."""

    poll_seconds: float = 1.0
    """How often ``headwater up`` looks for deliveries due for another attempt."""
