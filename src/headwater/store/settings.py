"""Settings of the event store: the ``[store]`` table of ``headwater.toml``."""

from __future__ import annotations

from typing import Literal

import msgspec


class StoreSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """Which engine keeps ``events``, ``failed_events`` and the pipelines' tables, and where."""

    engine: Literal["duckdb", "postgres"] = "duckdb"
    """``duckdb`` (embedded, one process) or ``postgres`` (shared by several processes)."""

    path: str = "events.duckdb"
    """DuckDB: the file, relative to the project's data folder."""

    memory_limit: str | None = None
    """DuckDB: its ``memory_limit`` (e.g. ``"1GB"``); DuckDB's own default when unset."""

    url: str | None = None
    """PostgreSQL: ``postgresql://user@host/db``; a URL with a password must be ``"${NAME}"``."""

    schema: str = "headwater"
    """PostgreSQL: the schema holding the event tables and the pipelines' tables."""

    pool_size: int = 8
    """PostgreSQL: connections kept open by one process for queries and pipelines."""
