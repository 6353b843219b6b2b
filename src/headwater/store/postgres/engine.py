"""The PostgreSQL store: events from several collector processes, pipelines as SQL in it.

Every collector process writes through its own connection (see ``ingest``);
the acknowledgement rule is unchanged: a 2xx only after that transaction
commits. Collectors publish their arrival floors (see ``floors``).

Pipelines run as SQL inside PostgreSQL (rendered by sqlglot in its dialect);
an interval is replaced by ``DELETE`` and ``COPY`` in one transaction, and a
full refresh by dropping and re-creating the table in one transaction, so a
reader sees the old rows or the new ones.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from typing import Any, TypeVar

import psycopg
import pyarrow as pa
import pyarrow.parquet as pq
from psycopg import sql
from psycopg_pool import ConnectionPool

from headwater.core.clock import from_us
from headwater.core.types import Interval
from headwater.store import schema
from headwater.store.collation import DATABASE_ROW, collation
from headwater.store.engine import Cost, Fence, IngestBatch, Selected, Staged, map_in_process
from headwater.store.errors import Fenced, MissingColumn, QueryError, StoreUnavailable, first_line
from headwater.store.postgres.arrow import (
    columns_ddl,
    copy_in,
    escaped,
    json_as_text,
    names,
    pg_type,
    positional,
    to_arrow,
    untyped,
    without_nul,
)
from headwater.store.postgres.errors import classify
from headwater.store.postgres.floors import PostgresFloors
from headwater.store.postgres.ingest import ingest
from headwater.store.postgres.reader import read_on
from headwater.store.postgres.staging import staged
from headwater.store.readonly import check_read_only

_SESSION = "SET TIME ZONE 'UTC'"
#: Rows per COPY when a Parquet file is loaded.
_LOAD_ROWS = 50_000


log = logging.getLogger(__name__)
T = TypeVar("T")

#: (database URL, collation) pairs already warned of in this process.
_WARNED_COLLATIONS: set[tuple[str, str]] = set()


class PostgresEngine:
    """:class:`~headwater.store.engine.Engine` over one PostgreSQL schema."""

    name = "postgres"
    dialect = "postgres"
    shared = True

    def __init__(self, url: str, schema_name: str = "public", *, pool_size: int = 4) -> None:
        self._url = url
        self.schema = schema_name
        self._pool = ConnectionPool(
            url,
            min_size=1,
            max_size=max(2, pool_size),
            kwargs={"autocommit": True},
            configure=self._configure,
            open=False,
            name="headwater-store",
        )
        self._ingest_con: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()
        self.floors = PostgresFloors(url, self._table("collector_floors"), self._connection)

    @classmethod
    def open(cls, url: str, schema_name: str = "public", *, pool_size: int = 4) -> PostgresEngine:
        """Connect, and create the schema and the event tables when missing."""
        engine = cls(url, schema_name, pool_size=pool_size)
        try:
            engine._pool.open(wait=True, timeout=15)
        except psycopg.Error as exc:
            raise classify(exc) from None
        except Exception as exc:  # the pool's timeout
            raise StoreUnavailable("postgres", f"could not connect ({exc})") from None
        engine._create_tables()
        engine._check_collation()
        return engine

    def _check_collation(self) -> None:
        """Warn (once per database and process) when the database does not compare text
        byte by byte (then text comparisons, MIN/MAX and ORDER BY follow a language's rules,
        not BigQuery's), or cases only ASCII letters: a pipeline's answer then differs from
        the other engines'."""
        with self._connection() as con:
            row = con.execute(DATABASE_ROW).fetchone()
        # (The store's connections read jsonb as its text.)
        found = json.loads(row[0]) if row and isinstance(row[0], str) else {}
        name, byte_order = collation(found)
        provider = found.get("datlocprovider", "c")
        ctype = str(found.get("datctype", ""))
        ascii_case = provider != "i" and ctype in ("C", "POSIX")
        key = (self._url, f"{name}/{ctype}")
        if (byte_order and not ascii_case) or key in _WARNED_COLLATIONS:
            return
        _WARNED_COLLATIONS.add(key)
        if not byte_order:
            log.warning(
                "the PostgreSQL database of the store compares text by the collation %r, not "
                "byte by byte as BigQuery and DuckDB do: text comparisons, MIN/MAX and "
                "ORDER BY of text may give other answers; create the database with "
                "LC_COLLATE 'C' (docs/engines.md)",
                name,
            )
        if ascii_case:
            log.warning(
                "the PostgreSQL database of the store has the character type %r: LOWER and "
                "UPPER change ASCII letters only (LOWER('ÜBER') is 'Über'), where BigQuery "
                "and DuckDB change every letter; create the database with LC_CTYPE 'C.UTF-8' "
                "(docs/engines.md)",
                ctype,
            )

    def _configure(self, con: psycopg.Connection[Any]) -> None:
        # date_trunc on timestamptz follows the session's zone: pin UTC, as DuckDB's is.
        con.execute(_SESSION)
        json_as_text(con)
        con.execute(sql.SQL("SET search_path TO {}, public").format(sql.Identifier(self.schema)))

    def _table(self, name: str) -> sql.Identifier:
        return sql.Identifier(self.schema, name)

    def _create_tables(self) -> None:
        with self._connection() as con:
            # Every process opens the store; once the tables exist, opening takes no lock
            # (CREATE INDEX IF NOT EXISTS would lock events against the collectors' commits).
            # The last objects each version adds: a store made by an older version still
            # gets what is new (the fencing tokens' table, the index of failed events by
            # arrival) without taking the lock again.
            found = con.execute(
                "SELECT to_regclass(%s) IS NOT NULL AND to_regclass(%s) IS NOT NULL "
                "AND to_regclass(%s) IS NOT NULL AND (SELECT count(*) = %s FROM "
                "information_schema.columns WHERE table_schema = %s AND table_name = 'events' "
                "AND column_name = ANY(%s))",
                [
                    sql.Identifier(self.schema, "message_ids_received").as_string(con),
                    sql.Identifier(self.schema, schema.FENCES).as_string(con),
                    sql.Identifier(self.schema, "failed_events_received_at").as_string(con),
                    len(schema.ADDED_EVENT_COLUMNS),
                    self.schema,
                    list(schema.ADDED_EVENT_COLUMNS),
                ],
            ).fetchone()
            if found is not None and found[0]:
                return
        with self._connection() as con, con.transaction():
            # Several processes may start at once: serialise the DDL.
            con.execute("SELECT pg_advisory_xact_lock(hashtext('headwater-ddl'))")
            con.execute(
                sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(self.schema))
            )
            for table, arrow in (
                ("events", schema.EVENTS),
                ("failed_events", schema.FAILED_EVENTS),
            ):
                con.execute(
                    sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(
                        self._table(table), columns_ddl(arrow, schema.JSON_COLUMNS)
                    )
                )
            for column in schema.ADDED_EVENT_COLUMNS:
                # A store made by an older version: the column is added (a change of the
                # catalog only: nullable, no default), NULL in its rows.
                con.execute(
                    sql.SQL("ALTER TABLE {} ADD COLUMN IF NOT EXISTS {}").format(
                        self._table("events"),
                        columns_ddl(pa.schema([schema.EVENTS.field(column)])),
                    )
                )
            con.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (source text NOT NULL, message_id text NOT NULL,"
                    " received_at timestamptz NOT NULL, PRIMARY KEY (source, message_id))"
                ).format(self._table("message_ids"))
            )
            con.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (collector text PRIMARY KEY, "
                    "floor timestamptz NOT NULL, seen_at timestamptz NOT NULL)"
                ).format(self._table("collector_floors"))
            )
            for column, method in (("received_at", "brin"), ("timestamp", "btree")):
                con.execute(
                    sql.SQL("CREATE INDEX IF NOT EXISTS {} ON {} USING {} ({}){}").format(
                        sql.Identifier(f"events_{column}"),
                        self._table("events"),
                        sql.SQL(method),
                        sql.Identifier(column),
                        # New ranges are summarised as they fill, not at the next VACUUM:
                        # until then an interval's query would scan every new page.
                        sql.SQL(" WITH (autosummarize = on)" if method == "brin" else ""),
                    )
                )
            con.execute(
                sql.SQL(
                    "CREATE TABLE IF NOT EXISTS {} (name text PRIMARY KEY, token bigint NOT NULL)"
                ).format(self._table(schema.FENCES))
            )
            con.execute(
                sql.SQL(
                    "CREATE INDEX IF NOT EXISTS message_ids_received ON {} (received_at)"
                ).format(self._table("message_ids"))
            )
            # An offload reads failed events by interval of arrival, as it reads events.
            con.execute(
                sql.SQL(
                    "CREATE INDEX IF NOT EXISTS failed_events_received_at ON {} "
                    "USING brin (received_at) WITH (autosummarize = on)"
                ).format(self._table("failed_events"))
            )

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        try:
            with self._pool.connection(timeout=30) as con:
                yield con
        except psycopg.OperationalError as exc:
            raise classify(exc) from None

    # -- collector -------------------------------------------------------

    def ingest(self, batch: IngestBatch) -> pa.Array:
        with self._lock:
            try:
                if self._ingest_con is None or self._ingest_con.closed:
                    self._ingest_con = psycopg.connect(self._url, autocommit=True)
                    self._configure(self._ingest_con)
                return ingest(self._ingest_con, self.schema, batch, self.floors)
            except psycopg.Error as exc:
                if self._ingest_con is not None:
                    self._ingest_con.close()
                    self._ingest_con = None
                # Any failed commit is answered 503 and sent again by the client.
                raise StoreUnavailable("postgres", first_line(exc)) from None

    def prune_dedupe(self, before_us: int) -> int:
        with self._connection() as con:
            result = con.execute(
                sql.SQL("DELETE FROM {} WHERE received_at < %s").format(self._table("message_ids")),
                [from_us(before_us)],
            )
            return int(result.rowcount or 0)

    # -- generic ----------------------------------------------------------

    def query(self, text: str, params: Sequence[object] = ()) -> pa.Table:
        """One read of the store's tables, decided by parsing, in a READ ONLY transaction:
        PostgreSQL itself refuses a write the parse let through."""
        check_read_only(text, self.dialect, [*self.list_tables(), *schema.QUERYABLE_INTERNAL])

        def work(con: psycopg.Connection[Any]) -> pa.Table:
            with con.transaction():
                con.execute("SET TRANSACTION READ ONLY")
                # Prepared: PostgreSQL refuses a second statement (a "COMMIT; DELETE …"
                # would otherwise run after the read-only transaction ends).
                statement = positional(text) if params else text
                cur = con.execute(statement.encode(), list(params) or None, prepare=True)
                if cur.description is None:
                    return pa.table({})
                return to_arrow(cur.description, cur.fetchall())

        return self._read(work)

    def select(self, text: str, params: Mapping[str, object]) -> Selected:
        def work(con: psycopg.Connection[Any]) -> pa.Table:
            cur = con.execute(escaped(text, params).encode(), dict(params) or None)
            if cur.description is None:
                return pa.table({})
            return to_arrow(cur.description, cur.fetchall())

        return Selected(self._read(work), None)

    def _read(self, work: Callable[[psycopg.Connection[Any]], T]) -> T:
        """A read on a pooled connection, run again once if the connection was lost."""
        try:
            return read_on(self._pool, work, timeout=30)
        except psycopg.Error as exc:
            raise classify(exc) from None

    def map_batches(
        self,
        text: str,
        params: Mapping[str, object],
        fn: Callable[[pa.RecordBatch], pa.RecordBatch],
        schema: pa.Schema,
    ) -> pa.Table:
        """In this process, over the query's result: PostgreSQL runs no Python."""
        return map_in_process(self.select(text, params).table, fn, schema)

    def execute(self, text: str, params: Sequence[object] = ()) -> None:
        with self._connection() as con:
            try:
                con.execute(text.encode(), list(params) or None)
            except psycopg.Error as exc:
                raise classify(exc) from None

    @contextmanager
    def _writing(self, fence: Fence | None = None) -> Iterator[psycopg.Connection[Any]]:
        """One transaction, fenced first when ``fence`` is given."""
        with self._connection() as con:
            try:
                with con.transaction():
                    if fence is not None:
                        self._fence(con, fence)
                    yield con
            except psycopg.Error as exc:
                raise classify(exc) from None

    def _fence(self, con: psycopg.Connection[Any], fence: Fence) -> None:
        # The row lock taken here holds until commit: a second writer of the same name
        # waits, then sees the larger token.
        accepted = con.execute(
            sql.SQL(
                "INSERT INTO {0} AS f (name, token) VALUES (%s, %s) ON CONFLICT (name) "
                "DO UPDATE SET token = EXCLUDED.token WHERE f.token <= EXCLUDED.token "
                "RETURNING token"
            ).format(self._table(schema.FENCES)),
            [fence.name, fence.token],
        ).fetchone()
        if accepted is None:
            raise Fenced(fence.name, fence.token)

    def _create_like(
        self, con: psycopg.Connection[Any], table: str, data: pa.Table
    ) -> frozenset[str]:
        """Make ``table`` with ``data``'s columns if it is not there; return its columns
        that are arrays (those of a table made before the store made arrays are ``jsonb``
        or ``text``, and take JSON). A text column that holds only NULLs, as a column made
        from Arrow's null type does (a Python pipeline's first output empty), takes
        ``data``'s type for it once it has one."""
        target = self._table(table)
        con.execute(
            sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(
                target, columns_ddl(_nullable(data.schema), arrays=True)
            )
        )
        kinds = dict(
            con.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_schema = %s AND table_name = %s",
                [self.schema, table],
            ).fetchall()
        )
        for field in data.schema:
            kind = pg_type(field.type, arrays=True)
            if kinds.get(field.name) != "text" or untyped(field.type) or kind == "text":
                continue
            column = sql.Identifier(field.name)
            held = con.execute(
                sql.SQL("SELECT 1 FROM {} WHERE {} IS NOT NULL LIMIT 1").format(target, column)
            ).fetchone()
            if held is None:
                con.execute(
                    sql.SQL("ALTER TABLE {} ALTER COLUMN {} TYPE {} USING NULL").format(
                        target, column, sql.SQL(kind)
                    )
                )
                kinds[field.name] = "ARRAY" if kind.endswith("[]") else kind
        return frozenset(str(name) for name, kind in kinds.items() if kind == "ARRAY")

    def append(self, table: str, data: pa.Table) -> None:
        with self._writing() as con:
            copy_in(con, self._table(table), data, self._create_like(con, table, data))

    def replace_table(self, table: str, data: pa.Table, fence: Fence | None = None) -> None:
        with self._writing(fence) as con:
            con.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self._table(table)))
            copy_in(con, self._table(table), data, self._create_like(con, table, data))

    def replace_interval(
        self,
        table: str,
        column: str,
        interval: Interval,
        data: pa.Table,
        fence: Fence | None = None,
    ) -> None:
        with self._writing(fence) as con:
            arrays = self._create_like(con, table, data)
            con.execute(
                sql.SQL("DELETE FROM {} WHERE {} >= %s AND {} < %s").format(
                    self._table(table), sql.Identifier(column), sql.Identifier(column)
                ),
                [interval.start, interval.end],
            )
            copy_in(con, self._table(table), data, arrays)

    @contextmanager
    def stage(self, text: str, params: Mapping[str, object]) -> Iterator[Staged]:
        """The output computed into a temporary table (``postgres/staging.py``)."""
        with (
            self._writing() as con,
            staged(con, text, params, self._table, self._fence, self._create_like) as out,
        ):
            yield out

    def swap_tables(
        self, swaps: Mapping[str, str], drop: Sequence[str] = (), fences: Sequence[Fence] = ()
    ) -> None:
        """``DROP`` and ``ALTER TABLE … RENAME`` in one transaction: PostgreSQL's DDL is
        transactional, and the locks they take make readers of the old tables finish first
        and readers after wait for the commit."""
        with self._writing() as con:
            for fence in fences:
                self._fence(con, fence)
            present = {
                str(row[0])
                for row in con.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = %s",
                    [self.schema],
                ).fetchall()
            }
            for live, built in swaps.items():
                if built in present:
                    con.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self._table(live)))
                    con.execute(
                        sql.SQL("ALTER TABLE {} RENAME TO {}").format(
                            self._table(built), sql.Identifier(live)
                        )
                    )
            for name in drop:
                con.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self._table(name)))

    def load_arrivals(
        self, table: str, interval: Interval, path: str, fence: Fence | None = None
    ) -> None:
        """``DELETE`` the interval and ``COPY`` the file in, batch by batch, in one
        transaction, fenced first."""
        with self._writing(fence) as con:
            con.execute(
                sql.SQL("DELETE FROM {} WHERE received_at >= %s AND received_at < %s").format(
                    self._table(table)
                ),
                [interval.start, interval.end],
            )
            for batch in pq.ParquetFile(path).iter_batches(batch_size=_LOAD_ROWS):
                rows = without_nul(pa.Table.from_batches([batch]), schema.JSON_COLUMNS)
                copy_in(con, self._table(table), rows)

    def delete_arrivals(self, table: str, before: datetime, limit: int) -> int:
        return self.drop_before(table, "received_at", before, limit)

    def drop_before(self, table: str, column: str, before: datetime, limit: int) -> int:
        """One bounded ``DELETE`` by ``ctid`` (on the event tables, the BRIN index on
        ``received_at`` finds the oldest pages), so retention never holds a long lock or a
        long transaction."""
        with self._writing() as con:
            result = con.execute(
                sql.SQL(
                    "DELETE FROM {0} WHERE ctid = ANY(ARRAY("
                    "SELECT ctid FROM {0} WHERE {1} < %s LIMIT %s))"
                ).format(self._table(table), sql.Identifier(column)),
                [before, limit],
            )
            return int(result.rowcount or 0)

    def delete_matching(self, table: str, column: str, values: Sequence[str]) -> int:
        if not values:
            return 0
        with self._writing() as con:
            present = [str(r[0]) for r in con.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = %s "
                "AND table_name = %s",
                [self.schema, table],
            ).fetchall()]  # fmt: skip
            if not present:
                return 0
            if column not in present:
                raise MissingColumn(table, column, present)
            result = con.execute(
                sql.SQL("DELETE FROM {} WHERE {}::text = ANY(%s)").format(
                    self._table(table), sql.Identifier(column)
                ),
                [list(values)],
            )
            return int(result.rowcount or 0)

    def upsert(self, table: str, key: Sequence[str], data: pa.Table) -> None:
        if not key:
            raise QueryError("upsert needs at least one key column")
        with self._writing() as con:
            arrays = self._create_like(con, table, data)
            con.execute(
                sql.SQL(
                    "CREATE TEMP TABLE hw_upsert ON COMMIT DROP AS SELECT * FROM {} WITH NO DATA"
                ).format(self._table(table))
            )
            copy_in(con, sql.Identifier("hw_upsert"), data, arrays)
            con.execute(
                sql.SQL("DELETE FROM {} t USING hw_upsert u WHERE {}").format(
                    self._table(table),
                    sql.SQL(" AND ").join(
                        sql.SQL("t.{0} = u.{0}").format(sql.Identifier(k)) for k in key
                    ),
                )
            )
            con.execute(
                sql.SQL("INSERT INTO {} ({}) SELECT {} FROM hw_upsert").format(
                    self._table(table), names(data.column_names), names(data.column_names)
                )
            )

    def estimate_cost(self, text: str, params: Mapping[str, object] | None = None) -> Cost:
        explain = b"EXPLAIN (FORMAT JSON) " + escaped(text, params).encode()
        plan = self._read(lambda con: con.execute(explain, dict(params or {}) or None).fetchone())
        nodes = plan[0] if plan else []
        if isinstance(nodes, str):
            nodes = json.loads(nodes)
        return Cost(rows_scanned=_scanned(nodes[0]["Plan"]) if nodes else None)

    def list_tables(self) -> list[str]:
        rows = self._read(
            lambda con: con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
                "ORDER BY table_name",
                [self.schema],
            ).fetchall()
        )
        return [str(row[0]) for row in rows if schema.listed(str(row[0]))]

    def checkpoint(self) -> None:
        """PostgreSQL checkpoints on its own."""

    def close(self) -> None:
        with self._lock:
            if self._ingest_con is not None:
                self._ingest_con.close()
                self._ingest_con = None
        self.floors.close()
        self._pool.close()


def _nullable(arrow: pa.Schema) -> pa.Schema:
    """Pipeline outputs: every column nullable (Arrow's NOT NULL is not a contract here)."""
    return pa.schema([field.with_nullable(True) for field in arrow])


def _scanned(node: dict[str, Any]) -> int:
    total = int(node.get("Plan Rows", 0)) if "Scan" in str(node.get("Node Type", "")) else 0
    for child in node.get("Plans", []) or []:
        total += _scanned(child)
    return total
