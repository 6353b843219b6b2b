"""Open the store an environment names: the embedded DuckDB file, or PostgreSQL."""

from __future__ import annotations

from typing import TYPE_CHECKING

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
    from headwater.store.duckdb import DuckDBEngine

    return DuckDBEngine.open(project.store_path, store, read_only=read_only)


def shared(project: Project) -> bool:
    """Whether several processes may open this store at once (DuckDB allows one)."""
    return project.settings.store.engine != "duckdb"
