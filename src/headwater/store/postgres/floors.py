"""Arrival floors of collectors that share one PostgreSQL store, and their commit fence.

Each collector process upserts its floor into ``collector_floors`` every
second (and before its first request) on a connection of its own, so a busy
pool cannot make a live collector look dead; ``seen_at`` is the database's
clock, so hosts' clocks do not decide who is alive. Runs in any process take
the lowest floor heard within :data:`~headwater.store.engine.FLOOR_STALE_SECONDS`.

A collector others may have taken for dead must not commit events it
stamped before then: they would fall into intervals already run. So every
commit of a collector that publishes floors renews its liveness in the same
transaction, and fails (503: the client sends again, and the events are
stamped anew) when the last sign of life is older than :data:`FENCE_SECONDS`.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any

import psycopg
from psycopg import sql

from headwater.core.clock import from_us, to_us
from headwater.store.engine import FLOOR_STALE_SECONDS
from headwater.store.errors import StoreUnavailable
from headwater.store.postgres.errors import classify

#: Well inside FLOOR_STALE_SECONDS: a collector fences itself before others drop it.
FENCE_SECONDS = FLOOR_STALE_SECONDS * 2 / 3

Connect = Callable[[], AbstractContextManager[psycopg.Connection[Any]]]


class PostgresFloors:
    """:class:`~headwater.store.engine.Floors` in ``collector_floors``."""

    def __init__(self, url: str, table: sql.Identifier, connection: Connect) -> None:
        self._url = url
        self._table = table
        self._connection = connection
        self._con: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()
        #: The collector of this process, once it published a floor: its commits are fenced.
        self.collector: str | None = None

    def publish(self, collector: str, floor_us: int) -> None:
        self.collector = collector
        with self._lock:
            try:
                if self._con is None or self._con.closed:
                    self._con = psycopg.connect(self._url, autocommit=True)
                self._con.execute(
                    sql.SQL(
                        "INSERT INTO {} (collector, floor, seen_at) VALUES (%s, %s, now()) "
                        "ON CONFLICT (collector) DO UPDATE SET floor = EXCLUDED.floor, "
                        "seen_at = EXCLUDED.seen_at"
                    ).format(self._table),
                    [collector, from_us(floor_us)],
                )
            except psycopg.Error as exc:
                if self._con is not None:
                    self._con.close()
                    self._con = None
                raise classify(exc) from None

    def retire(self, collector: str) -> None:
        with self._connection() as con:
            con.execute(
                sql.SQL("DELETE FROM {} WHERE collector = %s").format(self._table), [collector]
            )
        if self.collector == collector:
            # Gone from the table, it can no longer renew its liveness: its commits end.
            self.collector = None

    def lowest(self, stale_after_seconds: float) -> int | None:
        with self._connection() as con:
            row = con.execute(
                sql.SQL(
                    "SELECT min(floor) FROM {} WHERE seen_at > now() - make_interval(secs => %s)"
                ).format(self._table),
                [stale_after_seconds],
            ).fetchone()
        value = row[0] if row else None
        return to_us(value) if value is not None else None

    def fence(self, con: psycopg.Connection[Any]) -> None:
        """Inside a commit: renew this collector's liveness, or refuse the commit when it
        was silent for longer than :data:`FENCE_SECONDS`."""
        if self.collector is None:
            return
        alive = con.execute(
            sql.SQL(
                "UPDATE {} SET seen_at = now() WHERE collector = %s "
                "AND seen_at > now() - make_interval(secs => %s)"
            ).format(self._table),
            [self.collector, FENCE_SECONDS],
        )
        if not alive.rowcount:
            raise StoreUnavailable(
                "postgres",
                f"this collector was not heard from for {FENCE_SECONDS:g}s, so pipelines "
                "elsewhere may have passed its floor; it publishes again, then commits",
            )

    def close(self) -> None:
        with self._lock:
            if self._con is not None:
                self._con.close()
                self._con = None
