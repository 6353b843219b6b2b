"""Read-only queries on a PostgreSQL database over a small pool: what the read API uses
to serve datasets delivered to another service's database."""

from __future__ import annotations

import threading
from collections.abc import Mapping

import psycopg
from psycopg_pool import ConnectionPool

from headwater.store.engine import Selected
from headwater.store.postgres.arrow import escaped, to_arrow
from headwater.store.postgres.errors import classify


class PostgresReader:
    """Answers ``select`` on one PostgreSQL database; the pool opens on first use."""

    dialect = "postgres"

    def __init__(self, name: str, url: str, pool_size: int = 4) -> None:
        self.name = name
        self._url = url
        self._pool_size = pool_size
        self._pool: ConnectionPool | None = None
        self._lock = threading.Lock()

    def _connections(self) -> ConnectionPool:
        with self._lock:
            if self._pool is None:
                self._pool = ConnectionPool(
                    self._url,
                    min_size=1,
                    max_size=max(1, self._pool_size),
                    kwargs={"autocommit": True, "options": "-c TimeZone=UTC"},
                    open=True,
                    name=f"headwater-{self.name}",
                )
            return self._pool

    def exists(self, schema: str, table: str) -> bool:
        found = self.select(
            "SELECT 1 FROM information_schema.tables WHERE table_schema = %(s)s "
            "AND table_name = %(t)s",
            {"s": schema, "t": table},
        )
        return bool(found.table.num_rows > 0)

    def select(self, query: str, params: Mapping[str, object]) -> Selected:
        try:
            with self._connections().connection(timeout=10) as con, con.cursor() as cur:
                cur.execute(escaped(query, params).encode(), dict(params))
                description = cur.description or []
                rows = cur.fetchall()
        except psycopg.Error as exc:
            raise classify(exc, f"PostgreSQL {self.name}") from None
        return Selected(to_arrow(description, rows), None)

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None
