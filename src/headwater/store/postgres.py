"""The PostgreSQL store: events from several collector processes, pipelines as SQL in it.

Every collector process writes through its own connection. A commit stages
the batch with ``COPY`` into a temporary table, then in one statement claims
each ``(source, message_id)`` in ``message_ids`` (``ON CONFLICT DO NOTHING``)
and inserts exactly the claimed events. Two collectors that receive the same
message at once both try to claim it; the unique index makes one wait for the
other's commit and then skip it, so an event is stored once however many
processes see it. The acknowledgement rule is unchanged: a 2xx only after
that transaction commits.

Pipelines run as SQL inside PostgreSQL (rendered by sqlglot in its dialect);
an interval is replaced by ``DELETE`` and ``COPY`` in one transaction, and a
full refresh by dropping and re-creating the table in one transaction, so a
reader sees the old rows or the new ones.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
import pyarrow as pa
from psycopg import sql
from psycopg_pool import ConnectionPool

from headwater.core.clock import from_us, to_us
from headwater.core.types import Interval
from headwater.store import schema
from headwater.store.engine import FLOOR_STALE_SECONDS, Cost, IngestBatch, Selected, map_in_process
from headwater.store.errors import QueryError, ReadOnlyQuery, StoreUnavailable, first_line
from headwater.store.pgarrow import (
    columns_ddl,
    csv_chunks,
    escaped,
    json_as_text,
    names,
    positional,
    to_arrow,
)

_SESSION = "SET TIME ZONE 'UTC'"
#: Well inside FLOOR_STALE_SECONDS: a collector fences itself before others drop it.
_FENCE_SECONDS = FLOOR_STALE_SECONDS * 2 / 3


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
        self._floor_con: psycopg.Connection[Any] | None = None
        self._floor_lock = threading.Lock()
        #: The collector this process runs, once it published a floor: its commits are fenced.
        self._collector: str | None = None

    @classmethod
    def open(cls, url: str, schema_name: str = "public", *, pool_size: int = 4) -> PostgresEngine:
        """Connect, and create the schema and the event tables when missing."""
        engine = cls(url, schema_name, pool_size=pool_size)
        try:
            engine._pool.open(wait=True, timeout=15)
        except psycopg.Error as exc:
            raise StoreUnavailable("postgres", first_line(exc)) from None
        except Exception as exc:  # the pool's timeout
            raise StoreUnavailable("postgres", f"could not connect ({exc})") from None
        engine._create_tables()
        return engine

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
            found = con.execute(
                "SELECT to_regclass(%s) IS NOT NULL",
                [sql.Identifier(self.schema, "message_ids_received").as_string(con)],
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
                    "CREATE INDEX IF NOT EXISTS message_ids_received ON {} (received_at)"
                ).format(self._table("message_ids"))
            )

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        try:
            with self._pool.connection(timeout=30) as con:
                yield con
        except psycopg.OperationalError as exc:
            raise StoreUnavailable("postgres", first_line(exc)) from None

    # -- collector -------------------------------------------------------

    def ingest(self, batch: IngestBatch) -> pa.Array:
        with self._lock:
            try:
                if self._ingest_con is None or self._ingest_con.closed:
                    self._ingest_con = psycopg.connect(self._url, autocommit=True)
                    self._configure(self._ingest_con)
                return self._ingest(self._ingest_con, batch)
            except psycopg.Error as exc:
                if self._ingest_con is not None:
                    self._ingest_con.close()
                    self._ingest_con = None
                raise StoreUnavailable("postgres", first_line(exc)) from None

    def _ingest(self, con: psycopg.Connection[Any], batch: IngestBatch) -> pa.Array:
        events = batch.events
        columns = names(schema.EVENTS.names)
        with con.transaction():
            new = pa.array([True] * events.num_rows, pa.bool_())
            if events.num_rows:
                con.execute(
                    sql.SQL(
                        "CREATE TEMP TABLE IF NOT EXISTS hw_stage (LIKE {} INCLUDING DEFAULTS) "
                        "ON COMMIT DELETE ROWS"
                    ).format(self._table("events"))
                )
                with con.cursor().copy(
                    sql.SQL("COPY hw_stage ({}) FROM STDIN (FORMAT csv)").format(columns)
                ) as copy:
                    for chunk in csv_chunks(events):
                        copy.write(chunk)
                claimed = con.execute(
                    sql.SQL(
                        "WITH claimed AS (INSERT INTO {ids} (source, message_id, received_at) "
                        "SELECT source, message_id, received_at FROM hw_stage "
                        # One order for every collector: two claiming the same ids in
                        # opposite orders would deadlock.
                        "ORDER BY source, message_id "
                        "ON CONFLICT DO NOTHING RETURNING source, message_id) "
                        "INSERT INTO {events} ({columns}) SELECT {staged} FROM hw_stage s "
                        "JOIN claimed c USING (source, message_id) RETURNING source, message_id"
                    ).format(
                        ids=self._table("message_ids"),
                        events=self._table("events"),
                        columns=columns,
                        staged=sql.SQL(", ").join(
                            sql.Identifier("s", c) for c in schema.EVENTS.names
                        ),
                    )
                ).fetchall()
                if len(claimed) != events.num_rows:
                    fresh = set(claimed)
                    pairs = zip(
                        events["source"].to_pylist(), events["message_id"].to_pylist(), strict=True
                    )
                    new = pa.array([pair in fresh for pair in pairs], pa.bool_())
            if batch.failed.num_rows:
                with con.cursor().copy(
                    sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
                        self._table("failed_events"), names(schema.FAILED_EVENTS.names)
                    )
                ) as copy:
                    for chunk in csv_chunks(batch.failed):
                        copy.write(chunk)
            self._fence(con)
        return new

    def _fence(self, con: psycopg.Connection[Any]) -> None:
        """Refuse to commit for a collector other processes may have taken for dead.

        Runs elsewhere stop waiting for a collector not heard from for
        FLOOR_STALE_SECONDS; events it stamped before then and commits after
        would fall into intervals already run. So a commit renews the collector's
        liveness in its own transaction, and fails (503, the client sends again,
        stamped anew) when the last sign of life is older than the fence.
        """
        if self._collector is None:
            return
        alive = con.execute(
            sql.SQL(
                "UPDATE {} SET seen_at = now() WHERE collector = %s "
                "AND seen_at > now() - make_interval(secs => %s)"
            ).format(self._table("collector_floors")),
            [self._collector, _FENCE_SECONDS],
        )
        if not alive.rowcount:
            raise StoreUnavailable(
                "postgres",
                f"this collector was not heard from for {_FENCE_SECONDS:g}s, so pipelines "
                "elsewhere may have passed its floor; it publishes again, then commits",
            )

    def prune_dedupe(self, before_us: int) -> int:
        with self._connection() as con:
            result = con.execute(
                sql.SQL("DELETE FROM {} WHERE received_at < %s").format(self._table("message_ids")),
                [from_us(before_us)],
            )
            return int(result.rowcount or 0)

    def publish_floor(self, collector: str, floor_us: int) -> None:
        # seen_at is the database's clock, so hosts' clocks do not decide who is alive.
        # Its own connection: a busy pool must not make a live collector look dead.
        self._collector = collector
        with self._floor_lock:
            try:
                if self._floor_con is None or self._floor_con.closed:
                    self._floor_con = psycopg.connect(self._url, autocommit=True)
                self._publish(self._floor_con, collector, floor_us)
            except psycopg.Error as exc:
                if self._floor_con is not None:
                    self._floor_con.close()
                    self._floor_con = None
                raise StoreUnavailable("postgres", first_line(exc)) from None

    def _publish(self, con: psycopg.Connection[Any], collector: str, floor_us: int) -> None:
        con.execute(
            sql.SQL(
                "INSERT INTO {} (collector, floor, seen_at) VALUES (%s, %s, now()) "
                "ON CONFLICT (collector) DO UPDATE SET floor = EXCLUDED.floor, "
                "seen_at = EXCLUDED.seen_at"
            ).format(self._table("collector_floors")),
            [collector, from_us(floor_us)],
        )

    def retire_floor(self, collector: str) -> None:
        with self._connection() as con:
            con.execute(
                sql.SQL("DELETE FROM {} WHERE collector = %s").format(
                    self._table("collector_floors")
                ),
                [collector],
            )

    def shared_floor(self, stale_after_seconds: float) -> int | None:
        with self._connection() as con:
            row = con.execute(
                sql.SQL(
                    "SELECT min(floor) FROM {} WHERE seen_at > now() - make_interval(secs => %s)"
                ).format(self._table("collector_floors")),
                [stale_after_seconds],
            ).fetchone()
        value = row[0] if row else None
        return to_us(value) if value is not None else None

    # -- generic ----------------------------------------------------------

    def query(self, text: str, params: Sequence[object] = ()) -> pa.Table:
        """One statement in a READ ONLY transaction: PostgreSQL itself refuses writes."""
        with self._connection() as con:
            try:
                with con.transaction():
                    con.execute("SET TRANSACTION READ ONLY")
                    # Prepared: PostgreSQL refuses a second statement (a "COMMIT; DELETE …"
                    # would otherwise run after the read-only transaction ends).
                    statement = positional(text) if params else text
                    cur = con.execute(statement.encode(), list(params) or None, prepare=True)
                    if cur.description is None:
                        return pa.table({})
                    return to_arrow(cur.description, cur.fetchall())
            except psycopg.errors.SyntaxError as exc:
                if "multiple commands" in str(exc):
                    raise QueryError(
                        "expected one statement", hint="send one statement at a time"
                    ) from None
                raise QueryError(first_line(exc)) from None
            except psycopg.errors.ReadOnlySqlTransaction:
                raise ReadOnlyQuery(
                    text.split(None, 1)[0].upper() if text.strip() else "?"
                ) from None
            except psycopg.OperationalError:
                raise
            except psycopg.Error as exc:
                raise QueryError(first_line(exc)) from None

    def select(self, text: str, params: Mapping[str, object]) -> Selected:
        with self._connection() as con:
            try:
                cur = con.execute(escaped(text, params).encode(), dict(params) or None)
            except psycopg.OperationalError:
                raise
            except psycopg.Error as exc:
                raise QueryError(first_line(exc)) from None
            if cur.description is None:
                return Selected(pa.table({}), None)
            return Selected(to_arrow(cur.description, cur.fetchall()), None)

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
            except psycopg.OperationalError:
                raise
            except psycopg.Error as exc:
                raise QueryError(first_line(exc)) from None

    @contextmanager
    def _writing(self) -> Iterator[psycopg.Connection[Any]]:
        with self._connection() as con:
            try:
                with con.transaction():
                    yield con
            except psycopg.OperationalError:
                raise
            except psycopg.Error as exc:
                raise QueryError(first_line(exc)) from None

    def _create_like(self, con: psycopg.Connection[Any], table: str, data: pa.Table) -> None:
        con.execute(
            sql.SQL("CREATE TABLE IF NOT EXISTS {} ({})").format(
                self._table(table), columns_ddl(_nullable(data.schema))
            )
        )

    def _copy(self, con: psycopg.Connection[Any], table: str, data: pa.Table) -> None:
        if data.num_rows == 0:
            return
        with con.cursor().copy(
            sql.SQL("COPY {} ({}) FROM STDIN (FORMAT csv)").format(
                self._table(table), names(data.column_names)
            )
        ) as copy:
            for chunk in csv_chunks(data):
                copy.write(chunk)

    def append(self, table: str, data: pa.Table) -> None:
        with self._writing() as con:
            self._create_like(con, table, data)
            self._copy(con, table, data)

    def replace_table(self, table: str, data: pa.Table) -> None:
        with self._writing() as con:
            con.execute(sql.SQL("DROP TABLE IF EXISTS {}").format(self._table(table)))
            self._create_like(con, table, data)
            self._copy(con, table, data)

    def replace_interval(self, table: str, column: str, interval: Interval, data: pa.Table) -> None:
        with self._writing() as con:
            self._create_like(con, table, data)
            con.execute(
                sql.SQL("DELETE FROM {} WHERE {} >= %s AND {} < %s").format(
                    self._table(table), sql.Identifier(column), sql.Identifier(column)
                ),
                [interval.start, interval.end],
            )
            self._copy(con, table, data)

    def upsert(self, table: str, key: Sequence[str], data: pa.Table) -> None:
        if not key:
            raise QueryError("upsert needs at least one key column")
        with self._writing() as con:
            self._create_like(con, table, data)
            con.execute(
                sql.SQL(
                    "CREATE TEMP TABLE hw_upsert ON COMMIT DROP AS SELECT * FROM {} WITH NO DATA"
                ).format(self._table(table))
            )
            with con.cursor().copy(
                sql.SQL("COPY hw_upsert ({}) FROM STDIN (FORMAT csv)").format(
                    names(data.column_names)
                )
            ) as copy:
                for chunk in csv_chunks(data):
                    copy.write(chunk)
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
        with self._connection() as con:
            try:
                explain = b"EXPLAIN (FORMAT JSON) " + escaped(text, params).encode()
                plan = con.execute(explain, dict(params or {}) or None).fetchone()
            except psycopg.Error as exc:
                raise QueryError(first_line(exc)) from None
        nodes = plan[0] if plan else []
        if isinstance(nodes, str):
            nodes = json.loads(nodes)
        return Cost(rows_scanned=_scanned(nodes[0]["Plan"]) if nodes else None)

    def list_tables(self) -> list[str]:
        with self._connection() as con:
            rows = con.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = %s "
                "AND table_name NOT IN ('message_ids', 'collector_floors') ORDER BY table_name",
                [self.schema],
            ).fetchall()
        return [str(row[0]) for row in rows]

    def checkpoint(self) -> None:
        """PostgreSQL checkpoints on its own."""

    def close(self) -> None:
        with self._lock:
            if self._ingest_con is not None:
                self._ingest_con.close()
                self._ingest_con = None
        with self._floor_lock:
            if self._floor_con is not None:
                self._floor_con.close()
                self._floor_con = None
        self._pool.close()


def _nullable(arrow: pa.Schema) -> pa.Schema:
    """Pipeline outputs: every column nullable (Arrow's NOT NULL is not a contract here)."""
    return pa.schema([field.with_nullable(True) for field in arrow])


def _scanned(node: dict[str, Any]) -> int:
    total = int(node.get("Plan Rows", 0)) if "Scan" in str(node.get("Node Type", "")) else 0
    for child in node.get("Plans", []) or []:
        total += _scanned(child)
    return total
