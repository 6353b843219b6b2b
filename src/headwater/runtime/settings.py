"""Settings of the ``headwater up`` process: the ``[server]`` table."""

from __future__ import annotations

import msgspec


class ServerSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """Where the HTTP server listens."""

    host: str = "127.0.0.1"
    """Address to bind; loopback by default, ``0.0.0.0`` inside a container."""

    port: int = 8787
    """TCP port of the ingest API, health checks and metrics."""
