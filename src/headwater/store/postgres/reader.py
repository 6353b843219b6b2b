"""Read-only queries on a PostgreSQL database over a small pool: what the read API uses
to serve datasets delivered to another service's database."""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import psycopg
from psycopg_pool import ConnectionPool

from headwater.store.engine import Selected
from headwater.store.postgres.arrow import escaped, to_arrow
from headwater.store.postgres.errors import classify

T = TypeVar("T")


def read_on(
    pool: ConnectionPool, work: Callable[[psycopg.Connection[Any]], T], timeout: float
) -> T:
    """``work`` (a read: safe to run twice) on a connection of ``pool``, and once more if
    the connection it had turns out lost.

    A server restart or failover leaves every idle connection of the pool dead, and
    each would otherwise cost one failed request before the pool replaced it: after the
    first loss the pool checks its idle connections (dropping the dead ones) and the read
    runs on a fresh one. Any other error, or a second loss, goes to the caller.
    """
    had: psycopg.Connection[Any] | None = None
    try:
        with pool.connection(timeout=timeout) as con:
            had = con
            return work(con)
    except psycopg.OperationalError:
        if had is None or not had.broken:
            raise
    pool.check()
    with pool.connection(timeout=timeout) as con:
        return work(con)


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
        def work(con: psycopg.Connection[Any]) -> tuple[list[Any], list[tuple[Any, ...]]]:
            with con.cursor() as cur:
                cur.execute(escaped(query, params).encode(), dict(params))
                return list(cur.description or []), cur.fetchall()

        try:
            description, rows = read_on(self._connections(), work, timeout=10)
        except psycopg.Error as exc:
            raise classify(exc, f"PostgreSQL {self.name}") from None
        return Selected(to_arrow(description, rows), None)

    def close(self) -> None:
        with self._lock:
            if self._pool is not None:
                self._pool.close()
                self._pool = None
