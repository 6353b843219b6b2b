"""Settings of the process that serves HTTP (``headwater up``, ``headwater serve``): the
``[server]`` table. Kept with the configuration because the runtime, which reads them,
comes after it."""

from __future__ import annotations

import msgspec


class ServerSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """Where the HTTP server listens."""

    host: str = "127.0.0.1"
    """Address to bind; loopback by default, ``0.0.0.0`` inside a container."""

    port: int = 8787
    """TCP port of the ingest API, health checks and metrics."""
