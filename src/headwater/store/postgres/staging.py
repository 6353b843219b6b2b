"""A pipeline's output computed inside PostgreSQL and published from there.

``PostgresEngine.stage`` computes the query into a temporary table (```ON COMMIT
DROP``) in the transaction that then publishes it, so the rows never travel to
the process and back; checks run as SQL on the temporary table before anything
is visible. Statements on the temporary table are never prepared: it is made anew
each run, perhaps with other columns, which a prepared plan would refuse. Tables
are made from the output's Arrow schema, as the Arrow path
makes them, so either path leaves the same column types.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import psycopg
import pyarrow as pa
from psycopg import sql

from headwater.core.types import Interval
from headwater.store.engine import Fence, Staged
from headwater.store.postgres.arrow import escaped, names, to_arrow
from headwater.store.postgres.errors import classify

#: The temporary table a staged output is computed into.
STAGED = "_hw_output"
_STAGED = sql.Identifier(STAGED)


@contextmanager
def staged(
    con: psycopg.Connection[Any],
    text: str,
    params: Mapping[str, object],
    table: Callable[[str], sql.Composable],
    fence: Callable[[psycopg.Connection[Any], Fence], None],
    create_like: Callable[[psycopg.Connection[Any], str, pa.Table], object],
) -> Iterator[Staged]:
    """Compute ``text`` into :data:`STAGED` on ``con`` (inside its transaction) and yield
    it; ``table`` qualifies a table's name, ``fence`` and ``create_like`` are the engine's."""
    try:
        create = sql.SQL("CREATE TEMP TABLE {} ON COMMIT DROP AS ").format(_STAGED)
        con.execute(
            create.as_bytes(con) + escaped(text, params).encode(),
            dict(params) or None,
            prepare=False,
        )
        cur = con.execute(sql.SQL("SELECT * FROM {} LIMIT 0").format(_STAGED), prepare=False)
        columns = to_arrow(cur.description or [], []).schema
        counting = sql.SQL("SELECT count(*) FROM {}").format(_STAGED)
        counted = con.execute(counting, prepare=False).fetchone()
    except psycopg.Error as exc:
        raise classify(exc) from None
    yield _Staged(con, columns, int(counted[0]) if counted else 0, table, fence, create_like)


class _Staged:
    """:class:`~headwater.store.engine.Staged` on the staging transaction's connection."""

    table = STAGED

    def __init__(
        self,
        con: psycopg.Connection[Any],
        columns: pa.Schema,
        rows: int,
        table: Callable[[str], sql.Composable],
        fence: Callable[[psycopg.Connection[Any], Fence], None],
        create_like: Callable[[psycopg.Connection[Any], str, pa.Table], object],
    ) -> None:
        self._con = con
        self.schema = columns
        self.rows = rows
        #: PostgreSQL does not say how many rows a statement read.
        self.rows_scanned: int | None = None
        self._table = table
        self._fence = fence
        self._create_like = create_like

    def query(self, text: str, params: Mapping[str, object] | None = None) -> pa.Table:
        try:
            cur = self._con.execute(
                escaped(text, params).encode(), dict(params or {}) or None, prepare=False
            )
            return to_arrow(cur.description or [], cur.fetchall())
        except psycopg.Error as exc:
            raise classify(exc) from None

    def row(self, text: str, params: Mapping[str, object] | None = None) -> dict[str, object]:
        try:
            cur = self._con.execute(
                escaped(text, params).encode(), dict(params or {}) or None, prepare=False
            )
            values = cur.fetchone()
        except psycopg.Error as exc:
            raise classify(exc) from None
        names = [column.name for column in cur.description or []]
        return dict(zip(names, values or (None,) * len(names), strict=True))

    def replace_interval(
        self, table: str, column: str, interval: Interval, fence: Fence | None = None
    ) -> None:
        try:
            if fence is not None:
                self._fence(self._con, fence)
            self._create_like(self._con, table, self.schema.empty_table())
            self._con.execute(
                sql.SQL("DELETE FROM {} WHERE {} >= %s AND {} < %s").format(
                    self._table(table), sql.Identifier(column), sql.Identifier(column)
                ),
                [interval.start, interval.end],
            )
            self._insert(table)
        except psycopg.Error as exc:
            raise classify(exc) from None

    def replace_table(self, table: str, fence: Fence | None = None) -> None:
        try:
            if fence is not None:
                self._fence(self._con, fence)
            self._con.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self._table(table)))
            self._create_like(self._con, table, self.schema.empty_table())
            self._insert(table)
        except psycopg.Error as exc:
            raise classify(exc) from None

    def _insert(self, table: str) -> None:
        columns = names(self.schema.names)
        self._con.execute(
            sql.SQL("INSERT INTO {} ({}) SELECT {} FROM {}").format(
                self._table(table), columns, columns, _STAGED
            )
        )
