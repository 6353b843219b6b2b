"""Settings of the event store: the ``[store]`` table of ``headwater.toml``."""

from __future__ import annotations

from typing import Literal

import msgspec


class StoreSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """Which engine keeps ``events`` and ``failed_events``, and where."""

    engine: Literal["duckdb"] = "duckdb"
    """The engine; only the embedded DuckDB store exists so far."""

    path: str = "events.duckdb"
    """The DuckDB file, relative to the project's data folder."""

    memory_limit: str | None = None
    """DuckDB's ``memory_limit`` (e.g. ``"1GB"``); DuckDB's own default when unset."""
