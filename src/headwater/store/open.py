"""Open the store a ``[store]`` table names: the embedded DuckDB file, PostgreSQL, Spark or
BigQuery. Each engine's module is imported only when it is used."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Literal

from headwater.core.extras import load
from headwater.core.secrets import environment_value
from headwater.store.engine import Engine
from headwater.store.settings import EngineSettings


def open_engine(
    settings: EngineSettings,
    data_dir: Path,
    *,
    dedupe_window: timedelta,
    read_only: bool = False,
    partition: Literal["HOUR", "DAY"] = "DAY",
) -> Engine:
    """The store ``settings`` describe; relative paths start at ``data_dir``. ``read_only``
    applies to the embedded file, ``dedupe_window`` to stores that dedupe by reading
    ``events`` (BigQuery), ``partition`` to BigQuery's event tables (a warehouse's are
    partitioned by its offload interval)."""
    if settings.engine == "postgres":
        from headwater.store.postgres import PostgresEngine

        url = environment_value(settings.url or "", where="[store] url")
        return PostgresEngine.open(url, settings.schema, pool_size=settings.pool_size)
    if settings.engine == "spark":
        spark = load("headwater.store.spark", extra="spark", what='engine = "spark"')
        warehouse = settings.warehouse
        if "://" not in warehouse:
            warehouse = str((data_dir / warehouse).resolve())
        return spark.SparkEngine.open(  # type: ignore[no-any-return]
            warehouse, settings.master, settings.spark_conf
        )
    if settings.engine == "bigquery":
        bigquery = load("headwater.store.bigquery", extra="bigquery", what='engine = "bigquery"')
        return bigquery.BigQueryEngine.open(  # type: ignore[no-any-return]
            settings.project,
            settings.dataset,
            settings.location,
            settings.max_bytes_billed,
            dedupe_window=dedupe_window,
            partition=partition,
        )
    from headwater.store.duckdb import DuckDBEngine

    return DuckDBEngine.open(
        data_dir / settings.path, memory_limit=settings.memory_limit, read_only=read_only
    )
