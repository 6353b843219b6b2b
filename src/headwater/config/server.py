"""Settings of the process that serves HTTP (``headwater up``, ``headwater serve``): the
``[server]`` table. Kept with the configuration because the runtime, which reads them,
comes after it."""

from __future__ import annotations

import msgspec


class ServerSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """Where the HTTP server listens, and what one connection may take of it."""

    host: str = "127.0.0.1"
    """Address to bind; loopback by default, ``0.0.0.0`` inside a container."""

    port: int = 8787
    """TCP port of the ingest API, health checks and metrics."""

    header_timeout_seconds: float = 10.0
    """From a request's first byte (a new connection's accept) to its whole head; later is
    answered 408 and closed, so trickling clients cannot hold connections."""

    body_timeout_seconds: float = 30.0
    """From the end of a request's head to the end of its body; later is answered 408."""

    max_header_bytes: int = 16 * 1024
    """Request line and headers together; more is answered 431."""

    max_headers: int = 100
    """Header lines per request; more is answered 431."""

    max_connections: int = 1000
    """Open connections; a new one past it closes the one that has waited longest for its
    request head (or, when none waits, is answered 503). Keep it below the process's
    open-file limit."""
