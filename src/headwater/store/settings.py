"""Settings of the event store and the warehouse: the ``[store]`` and ``[warehouse]`` tables
of ``headwater.toml``."""

from __future__ import annotations

from typing import Literal

import msgspec


class EngineSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """Which engine keeps ``events``, ``failed_events`` and the pipelines' tables, and where:
    the keys ``[store]`` and ``[warehouse]`` share."""

    engine: Literal["duckdb", "postgres", "spark", "bigquery"] = "duckdb"
    """``duckdb`` (embedded, one process), ``postgres`` (shared by several processes),
    ``spark`` (Parquet tables in a folder or bucket, computed by Spark) or ``bigquery``."""

    path: str = "events.duckdb"
    """DuckDB: the file, relative to the project's data folder."""

    memory_limit: str | None = "128MB"
    """DuckDB: its ``memory_limit`` (e.g. ``"1GB"``): past it DuckDB writes to temporary
    files beside the store. Bounds the server's memory under any load (docs/architecture.md,
    "Memory"); raise it for pipelines over large data. Empty or unset: DuckDB's own default,
    80% of the machine's memory."""

    url: str | None = None
    """PostgreSQL: ``postgresql://user@host/db``; a URL with a password must be ``"${NAME}"``."""

    schema: str = "headwater"
    """PostgreSQL: the schema holding the event tables and the pipelines' tables."""

    pool_size: int = 8
    """PostgreSQL: connections kept open by one process for queries and pipelines."""

    master: str = "local[2]"
    """Spark: the master URL (``local[N]``, ``spark://host:7077``, ``yarn``, ...)."""

    warehouse: str = "warehouse"
    """Spark: the folder or bucket of the Parquet tables (relative to the data folder, or a
    URL such as ``gs://bucket/warehouse``)."""

    spark_conf: dict[str, str] = msgspec.field(default_factory=dict)
    """Spark: extra ``spark.*`` settings for the session."""

    project: str | None = None
    """BigQuery: the Google Cloud project (default: the credentials')."""

    dataset: str = "headwater"
    """BigQuery: the dataset holding the event tables and the pipelines' tables."""

    location: str | None = None
    """BigQuery: the dataset's location (e.g. ``"EU"``)."""

    max_bytes_billed: int = 10 * 1024**3
    """BigQuery: every query is dry-run first and refused when it would bill more bytes."""

    def same_place(self, other: EngineSettings) -> bool:
        """Whether ``other`` names the same tables (a warehouse declared as the store
        itself)."""
        where = {
            "duckdb": ("path",),
            "postgres": ("url", "schema"),
            "spark": ("warehouse",),
            "bigquery": ("project", "dataset"),
        }[self.engine]
        return self.engine == other.engine and all(
            getattr(self, name) == getattr(other, name) for name in where
        )

    @property
    def can_collect(self) -> bool:
        """Whether collectors may write this store: many processes at once (PostgreSQL) or
        one that owns it (DuckDB). A warehouse takes loads, not a commit per request."""
        return self.engine in ("duckdb", "postgres")


class StoreSettings(EngineSettings, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """The ``[store]`` table: where collectors write (and pipelines run, without a
    warehouse)."""

    retain: str = "7d"
    """With a warehouse: how long offloaded events stay in this store (at least the dedupe
    window). Events not yet offloaded are never deleted."""


class WarehouseSettings(EngineSettings, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """Where pipelines run and events are kept, fed from the hot store by offloads: the
    ``[warehouse]`` table (or ``[environments.NAME.warehouse]``). The same keys as
    ``[store]`` for its engine, and how much arrival time one offload moves."""

    offload_interval: str = "1h"
    """Every whole interval of arrival (an hour by default) below the collectors' arrival
    floor is moved in one load. It divides a day; on BigQuery it is ``"1h"`` or ``"1d"``,
    the partitions of ``events``."""


class RetentionSettings(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, frozen=True):
    """The ``[retention]`` table (or ``[environments.NAME.retention]``): how long the event
    tables keep their rows where pipelines run (the warehouse, or the store without one).
    A pipeline's output keeps its own, ``retain`` in its header. Unset: kept for good."""

    events: str | None = None
    """Events that arrived longer ago than this (``"400d"``) are dropped, by
    ``received_at``; at least ``[collector] dedupe_window``. Incremental intervals that
    would read dropped events are retired: never recomputed, and a backfill stops there."""

    failed_events: str | None = None
    """Failed events that arrived longer ago than this (``"30d"``) are dropped."""

    batch_rows: int = 10_000
    """Rows one statement deletes, where an engine deletes rows (DuckDB, PostgreSQL); each
    pass deletes a few such batches per table, so retention never holds the store long."""
