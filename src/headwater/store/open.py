"""Open the store an environment names: the embedded DuckDB file, or PostgreSQL."""

from __future__ import annotations

from typing import TYPE_CHECKING

from headwater.core.clock import parse_duration
from headwater.core.secrets import environment_value
from headwater.store.engine import Engine

if TYPE_CHECKING:
    from headwater.config.project import Project


def open_engine(project: Project, *, read_only: bool = False) -> Engine:
    """The project's store in its environment; ``read_only`` applies to the embedded file."""
    store = project.settings.store
    if store.engine == "postgres":
        from headwater.store.postgres import PostgresEngine

        url = environment_value(store.url or "", where="[store] url")
        return PostgresEngine.open(url, store.schema, pool_size=store.pool_size)
    if store.engine == "spark":
        from headwater.store.spark import SparkEngine

        warehouse = store.warehouse
        if "://" not in warehouse:
            warehouse = str((project.data_dir / warehouse).resolve())
        return SparkEngine.open(warehouse, store.master, store.spark_conf)
    if store.engine == "bigquery":
        from headwater.store.bigquery import BigQueryEngine

        return BigQueryEngine.open(
            store.project,
            store.dataset,
            store.location,
            store.max_bytes_billed,
            dedupe_window=parse_duration(project.settings.collector.dedupe_window),
        )
    from headwater.store.duckdb import DuckDBEngine

    return DuckDBEngine.open(project.store_path, store, read_only=read_only)


def shared(project: Project) -> bool:
    """Whether several processes may open this store at once (DuckDB allows one)."""
    return project.settings.store.engine != "duckdb"
