"""The embedded store: one DuckDB file, owned by one process.

DuckDB lets one process open a file read-write and no other process open it at
all, so the server owns the file and every other command asks the server (see
``headwater.runtime.control``). Inside the owner, writes use their own
connection per thread and reads a cursor of their own (one at a time each, kept
between pipeline runs and per thread for the read API), so a long query never
holds up a commit: DuckDB's MVCC gives each its snapshot.
"""

from __future__ import annotations

import contextlib
import json
import re
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import duckdb
import numpy as np
import numpy.typing as npt
import pyarrow as pa
import pyarrow.compute as pc

from headwater.core.types import Interval
from headwater.store import schema
from headwater.store.dedupe import KeyIndex
from headwater.store.engine import Cost, Fence, IngestBatch, Selected, Staged, map_in_process
from headwater.store.errors import (
    Fenced,
    MissingColumn,
    QueryError,
    StoreLocked,
    StoreUnavailable,
    first_line,
)
from headwater.store.readonly import check_read_only

_FENCE = (
    f"INSERT INTO {schema.FENCES} VALUES (?, ?) ON CONFLICT (name) DO UPDATE "
    f"SET token = excluded.token WHERE {schema.FENCES}.token <= excluded.token RETURNING token"
)
#: The fence of a name that has one: about a third of the upsert's cost (no conflict to
#: resolve), and a write all the same, so two publishers of one name still conflict. Its
#: count of rows updated tells (a RETURNING clause would double its cost).
_FENCE_UPDATE = f"UPDATE {schema.FENCES} SET token = $token WHERE name = $name AND token <= $token"


def quote(identifier: str) -> str:
    """Quote an identifier for DuckDB (values always go in as parameters).

    >>> quote('my "odd" table')
    '"my ""odd"" table"'
    """
    return '"' + identifier.replace('"', '""') + '"'


def _kind(field: pa.Field) -> str:
    if field.name in schema.JSON_COLUMNS:
        return "JSON"
    if pa.types.is_timestamp(field.type):
        return "TIMESTAMPTZ"
    if pa.types.is_uint64(field.type):
        return "UBIGINT"
    return "VARCHAR"


def _ddl(table: str, arrow_schema: pa.Schema, primary_key: Sequence[str] = ()) -> str:
    columns = []
    for field in arrow_schema:
        null = "" if field.nullable else " NOT NULL"
        columns.append(f"{quote(field.name)} {_kind(field)}{null}")
    if primary_key:
        columns.append(f"PRIMARY KEY ({', '.join(quote(c) for c in primary_key)})")
    return f"CREATE TABLE IF NOT EXISTS {quote(table)} ({', '.join(columns)})"


def _utc(con: duckdb.DuckDBPyConnection) -> None:
    """Pin the database's time zone to UTC (date_trunc and friends follow it): as the
    global default, which every cursor of the connection starts with, so a cursor costs
    no statement of its own. (Another ``duckdb.connect`` of the same file in this process
    shares the database, so it starts in UTC too while the engine has it open.)"""
    con.execute("SET GLOBAL TimeZone = 'UTC'")


class DuckDBEngine:
    """:class:`~headwater.store.engine.Engine` over one DuckDB file."""

    name = "duckdb"
    dialect = "duckdb"
    shared = False
    floors = None

    def __init__(self, con: duckdb.DuckDBPyConnection, path: str, *, read_only: bool) -> None:
        self._con = con
        self._path = path
        self._read_only = read_only
        self._ingest_con: duckdb.DuckDBPyConnection | None = None
        self._lock = threading.Lock()
        self._ingest_lock = threading.Lock()
        self._readers: list[DuckDBReader] = []
        #: Cursors with DuckDB's profiler on, idle between pipeline runs (see _profiled).
        self._profiled_idle: list[duckdb.DuckDBPyConnection] = []
        self._closed = False
        # The window's keys, loaded from message_ids at the first ingest (a process that
        # only reads never holds them); None again after a failed commit, so the next
        # ingest reloads what the table holds rather than trust a copy that may differ.
        self._keys: KeyIndex | None = None
        #: Whether events and message_ids have their columns in the collector's order.
        self._in_order: bool | None = None

    @classmethod
    def open(
        cls, path: Path, *, memory_limit: str | None = None, read_only: bool = False
    ) -> DuckDBEngine:
        """Open (and when writable, create and migrate) the store at ``path``."""
        if read_only and not path.exists():
            cls.open(path, memory_limit=memory_limit).close()
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            con = duckdb.connect(str(path), read_only=read_only)
        except duckdb.IOException as exc:
            raise StoreLocked(str(path), first_line(exc)) from None
        _utc(con)
        if memory_limit:
            con.execute("SET memory_limit = ?", [memory_limit])
        engine = cls(con, str(path), read_only=read_only)
        if not read_only:
            # DuckDB checkpoints when its WAL passes the threshold, stalling the commit
            # that crosses it; the writer checkpoints in pauses instead (see checkpoint).
            con.execute("SET checkpoint_threshold = '64MB'")
            engine._create_tables()
        return engine

    def _create_tables(self) -> None:
        self._con.execute(_ddl("events", schema.EVENTS))
        for column in schema.ADDED_EVENT_COLUMNS:
            # A store made by an older version: the column is added, NULL in its rows.
            self._con.execute(
                f"ALTER TABLE events ADD COLUMN IF NOT EXISTS {quote(column)} "
                f"{_kind(schema.EVENTS.field(column))}"
            )
        self._con.execute(_ddl("failed_events", schema.FAILED_EVENTS))
        self._con.execute(_ddl("message_ids", schema.MESSAGE_IDS))
        _drop_key_index(self._con)
        self._con.execute(
            f"CREATE TABLE IF NOT EXISTS {schema.FENCES} "
            "(name VARCHAR PRIMARY KEY, token BIGINT NOT NULL)"
        )

    @contextmanager
    def _cursor(self) -> Iterator[duckdb.DuckDBPyConnection]:
        cur = self._con.cursor()
        try:
            yield cur
        finally:
            cur.close()

    @contextmanager
    def _profiled(self) -> Iterator[duckdb.DuckDBPyConnection]:
        """A cursor with DuckDB's profiler on, which counts the rows a pipeline's query
        scanned: kept for the next run, as turning the profiler on and off costs as much as
        publishing a small interval. A cursor whose work raised is closed, not kept (its
        temporary tables go with it). As many are kept as were ever in use at once (the
        scheduler's and the deliverer's threads, a few), until the engine closes."""
        with self._lock:
            cur = self._profiled_idle.pop() if self._profiled_idle else None
        if cur is None:
            cur = self._con.cursor()
            cur.execute("SET enable_profiling = 'no_output'")
            # A name not in the catalog is an error here, never a Python variable of this
            # process that happens to share it (DuckDB's replacement scans).
            cur.execute("SET python_enable_replacements = false")
        kept = False
        try:
            yield cur
            with self._lock:
                if not self._closed:
                    self._profiled_idle.append(cur)
                    kept = True
        finally:
            if not kept:
                cur.close()

    @contextmanager
    def _transaction(self, con: duckdb.DuckDBPyConnection) -> Iterator[None]:
        """One transaction; DuckDB's errors become :class:`QueryError` after the rollback."""
        con.begin()
        try:
            yield
        except duckdb.Error as exc:
            con.rollback()
            raise classify(exc) from exc
        except BaseException:
            con.rollback()
            raise
        con.commit()

    # -- collector -------------------------------------------------------

    def ingest(self, batch: IngestBatch) -> pa.Array:
        # The collector's writer, and an import, may ingest from different threads.
        with self._ingest_lock:
            return self._ingest(batch)

    def _ingest(self, batch: IngestBatch) -> pa.Array:
        if self._ingest_con is None:
            self._ingest_con = self._con.cursor()
        con = self._ingest_con
        keys = self._keys if self._keys is not None else self._load_keys(con)
        events = batch.events
        hi, lo = batch.keys or schema.message_keys(
            events["source"].to_pylist(), events["message_id"].to_pylist()
        )
        his, los = hi.to_numpy(), lo.to_numpy()
        new = ~keys.contains(his, los)
        received = events["received_at"].cast(pa.int64()).to_numpy()
        # The index changes only after a commit: a statement that fails is rolled back and
        # leaves the table as the index says. Only a commit that raised leaves it unknown
        # whether the keys went in; then the index is loaded again from the table.
        committing = False  # from the commit on: whether the keys went in may be unknown
        try:
            con.begin()
            try:
                if new.any():
                    self._insert_new(con, events, hi, lo, new)
                if batch.failed.num_rows:
                    con.register("_hw_failed", _as_json(batch.failed))
                    con.execute("INSERT INTO failed_events BY NAME SELECT * FROM _hw_failed")
                    con.unregister("_hw_failed")
                if batch.replayed is not None and batch.replayed.num_rows:
                    con.register("_hw_replayed", batch.replayed)
                    con.execute(
                        "UPDATE failed_events SET replayed_at = r.replayed_at "
                        "FROM _hw_replayed r WHERE failed_events.id = r.id "
                        "AND failed_events.replayed_at IS NULL"
                    )
                    con.unregister("_hw_replayed")
            except BaseException:
                con.rollback()
                raise
            committing = True
            con.commit()
            keys.add(his[new], los[new], received[new])
        except duckdb.Error as exc:
            self._in_order = None  # checked again, in case the tables changed
            if committing:
                self._keys = None
                with contextlib.suppress(duckdb.Error):  # a transaction the commit left open
                    con.rollback()
            error = classify(exc)
            # The collector answers 503 and the client sends again: nothing is lost.
            if isinstance(error, QueryError):
                raise StoreUnavailable(self.name, error.reason) from exc
            raise error from exc
        except BaseException:
            if committing:  # a commit that raised, or keys not added after one
                self._keys = None
            raise
        return pa.array(new)

    def _insert_new(
        self,
        con: duckdb.DuckDBPyConnection,
        events: pa.Table,
        hi: pa.Array,
        lo: pa.Array,
        new: npt.NDArray[np.bool_],
    ) -> None:
        # The keys go to message_ids in the same transaction as their events: the table
        # is what a restart loads the index from.
        fresh = events if new.all() else events.filter(pa.array(new))
        rows = pa.Table.from_arrays(
            [
                hi.filter(pa.array(new)),
                lo.filter(pa.array(new)),
                fresh["source"],
                fresh["message_id"],
                fresh["received_at"],
            ],
            schema=schema.MESSAGE_IDS,
        )
        # Relations, not SQL over registered tables: no statement to parse and bind on
        # each commit (a third of a small commit's time). Positional, so only while the
        # tables' columns are in the order the collector writes them (checked once).
        if self._in_order is None:
            self._in_order = all(
                _columns(con, name) == arrow.names
                for name, arrow in (("message_ids", schema.MESSAGE_IDS), ("events", schema.EVENTS))
            )
        if self._in_order and fresh.schema.names == schema.EVENTS.names:
            con.from_arrow(rows).insert_into("message_ids")
            con.from_arrow(_as_json(fresh)).insert_into("events")
            return
        con.register("_hw_keys", rows)
        con.execute("INSERT INTO message_ids BY NAME SELECT * FROM _hw_keys")
        con.unregister("_hw_keys")
        con.register("_hw_events", _as_json(fresh))
        con.execute("INSERT INTO events BY NAME SELECT * FROM _hw_events")
        con.unregister("_hw_events")

    def _load_keys(self, con: duckdb.DuckDBPyConnection) -> KeyIndex:
        """The index, from what message_ids holds now."""
        keys = KeyIndex()
        table = con.sql(
            "SELECT key_hi, key_lo, epoch_us(received_at) AS at FROM message_ids"
        ).to_arrow_table()
        if table.num_rows:
            keys.add(
                table["key_hi"].to_numpy(),
                table["key_lo"].to_numpy(),
                table["at"].to_numpy(),
            )
        self._keys = keys
        return keys

    def dedupe_keys(self) -> int:
        """Keys the window holds in memory (0 before the first ingest)."""
        keys = self._keys  # (read once: the writer may set it aside meanwhile)
        return len(keys) if keys is not None else 0

    def dedupe_bytes(self) -> int:
        """Bytes the in-memory dedupe index holds."""
        keys = self._keys
        return keys.nbytes if keys is not None else 0

    def prune_dedupe(self, before_us: int) -> int:
        with self._ingest_lock, self._cursor() as cur:
            rows = cur.execute(
                "DELETE FROM message_ids WHERE received_at < make_timestamptz(?::BIGINT)",
                [before_us],
            ).fetchall()
            if self._keys is not None:
                self._keys.prune(before_us)
        return int(rows[0][0]) if rows else 0

    # -- generic ----------------------------------------------------------

    def query(self, sql: str, params: Sequence[object] = ()) -> pa.Table:
        """One read of the store's tables, decided by parsing, run in a read-only
        transaction: DuckDB itself refuses a write the parse let through."""
        check_read_only(sql, self.dialect, [*self.list_tables(), *schema.QUERYABLE_INTERNAL])
        with self._cursor() as cur:
            try:
                cur.execute("BEGIN TRANSACTION READ ONLY")
                try:
                    return cur.sql(sql, params=list(params) or None).to_arrow_table()
                finally:
                    cur.rollback()
            except duckdb.Error as exc:
                raise classify(exc) from None

    def select(self, sql: str, params: Mapping[str, object]) -> Selected:
        with self._profiled() as cur:
            try:
                table = cur.sql(sql, params=dict(params) or None).to_arrow_table()
            except duckdb.Error as exc:
                raise classify(exc) from None
            scanned = _rows_scanned(cur)
        return Selected(int64_sums(table), scanned)

    def reader(self) -> DuckDBReader:
        """A reader for the read API: :meth:`select` on a cursor kept per thread, without
        counting the rows scanned; closed with the engine."""
        reader = DuckDBReader(self._con)
        with self._lock:
            self._readers.append(reader)
        return reader

    def map_batches(
        self,
        sql: str,
        params: Mapping[str, object],
        fn: Callable[[pa.RecordBatch], pa.RecordBatch],
        schema: pa.Schema,
    ) -> pa.Table:
        """In this process: the query's result is already here."""
        return map_in_process(self.select(sql, params).table, fn, schema)

    def execute(self, sql: str, params: Sequence[object] = ()) -> None:
        with self._cursor() as cur:
            try:
                cur.execute(sql, list(params))
            except duckdb.Error as exc:
                raise classify(exc) from None

    def append(self, table: str, data: pa.Table) -> None:
        with self._cursor() as cur, self._transaction(cur):
            cur.register("_hw_data", data)
            _create_like(cur, table)
            cur.execute(f"INSERT INTO {quote(table)} BY NAME SELECT * FROM _hw_data")

    def _fence(self, cur: duckdb.DuckDBPyConnection, fence: Fence | None) -> None:
        if fence is None:
            return
        named = {"name": fence.name, "token": fence.token}
        updated = cur.execute(_FENCE_UPDATE, named).fetchall()
        if updated and updated[0][0]:
            return
        # No row, or one with a higher token: the upsert tells which.
        if not cur.execute(_FENCE, [fence.name, fence.token]).fetchall():
            raise Fenced(fence.name, fence.token)

    def replace_table(self, table: str, data: pa.Table, fence: Fence | None = None) -> None:
        with self._cursor() as cur, self._transaction(cur):
            self._fence(cur, fence)
            cur.register("_hw_data", data)
            cur.execute(f"CREATE OR REPLACE TABLE {quote(table)} AS FROM _hw_data")

    def replace_interval(
        self,
        table: str,
        column: str,
        interval: Interval,
        data: pa.Table,
        fence: Fence | None = None,
    ) -> None:
        with self._cursor() as cur, self._transaction(cur):
            self._fence(cur, fence)
            cur.register("_hw_data", data)
            _create_like(cur, table)
            cur.execute(
                f"DELETE FROM {quote(table)} WHERE {quote(column)} >= ? AND {quote(column)} < ?",
                [interval.start, interval.end],
            )
            cur.execute(f"INSERT INTO {quote(table)} BY NAME SELECT * FROM _hw_data")

    @contextmanager
    def stage(self, sql: str, params: Mapping[str, object]) -> Iterator[Staged]:
        with self._profiled() as cur, self._transaction(cur):
            made = cur.execute(f"CREATE TEMP TABLE {_STAGED} AS {sql}", dict(params) or None)
            rows = made.fetchall()[0][0]
            scanned = _rows_scanned(cur)
            columns = _arrow_schema(cur, _STAGED)
            for field in columns:
                if field.type == _HUGEINT:
                    _narrow(cur, field.name)
                    columns = columns.set(
                        columns.get_field_index(field.name), pa.field(field.name, pa.int64())
                    )
            yield _Staged(
                self,
                cur,
                schema=columns,
                rows=int(rows),
                rows_scanned=scanned,
            )
            cur.execute(f"DROP TABLE {_STAGED}")

    def swap_tables(
        self, swaps: Mapping[str, str], drop: Sequence[str] = (), fences: Sequence[Fence] = ()
    ) -> None:
        with self._cursor() as cur, self._transaction(cur):
            for fence in fences:
                self._fence(cur, fence)
            present = {
                str(row[0])
                for row in cur.execute(
                    "SELECT table_name FROM information_schema.tables WHERE table_schema = 'main'"
                ).fetchall()
            }
            for live, built in swaps.items():
                if built in present:
                    cur.execute(f"DROP TABLE IF EXISTS {quote(live)}")
                    cur.execute(f"ALTER TABLE {quote(built)} RENAME TO {quote(live)}")
            for name in drop:
                cur.execute(f"DROP TABLE IF EXISTS {quote(name)}")

    def upsert(self, table: str, key: Sequence[str], data: pa.Table) -> None:
        if not key:
            raise QueryError("upsert needs at least one key column")
        columns = ", ".join(quote(k) for k in key)
        with self._cursor() as cur, self._transaction(cur):
            cur.register("_hw_data", data)
            _create_like(cur, table)
            cur.execute(
                f"DELETE FROM {quote(table)} WHERE ({columns}) IN (SELECT {columns} FROM _hw_data)"
            )
            cur.execute(f"INSERT INTO {quote(table)} BY NAME SELECT * FROM _hw_data")

    def load_arrivals(
        self, table: str, interval: Interval, path: str, fence: Fence | None = None
    ) -> None:
        with self._cursor() as cur, self._transaction(cur):
            self._fence(cur, fence)
            cur.execute(
                f"DELETE FROM {quote(table)} WHERE received_at >= ? AND received_at < ?",
                [interval.start, interval.end],
            )
            cur.execute(f"INSERT INTO {quote(table)} BY NAME SELECT * FROM read_parquet(?)", [path])

    def delete_arrivals(self, table: str, before: datetime, limit: int) -> int:
        return self.drop_before(table, "received_at", before, limit)

    def drop_before(self, table: str, column: str, before: datetime, limit: int) -> int:
        """One bounded ``DELETE`` by ``rowid``: a batch is one short transaction."""
        with self._cursor() as cur, self._transaction(cur):
            deleted = cur.execute(
                f"DELETE FROM {quote(table)} WHERE rowid IN (SELECT rowid FROM {quote(table)} "
                f"WHERE {quote(column)} < ? LIMIT ?)",
                [before, limit],
            ).fetchone()
        return int(deleted[0]) if deleted else 0

    def delete_matching(self, table: str, column: str, values: Sequence[str]) -> int:
        if not values:
            return 0
        with self._cursor() as cur:
            present = [r[0] for r in cur.execute(
                "SELECT column_name FROM information_schema.columns WHERE table_schema = 'main' "
                "AND table_name = ?",
                [table],
            ).fetchall()]  # fmt: skip
            if not present:
                return 0
            if column not in present:
                raise MissingColumn(table, column, present)
            with self._transaction(cur):
                deleted = cur.execute(
                    f"DELETE FROM {quote(table)} WHERE {quote(column)} IN "
                    "(SELECT unnest(?::VARCHAR[]))",
                    [list(values)],
                ).fetchone()
        return int(deleted[0]) if deleted else 0

    def estimate_cost(self, sql: str, params: Mapping[str, object] | None = None) -> Cost:
        with self._cursor() as cur:
            try:
                explained = cur.execute(f"EXPLAIN (FORMAT JSON) {sql}", dict(params or {}) or None)
                plan = explained.fetchall()[0][1]
            except duckdb.Error as exc:
                raise classify(exc) from None
        return Cost(rows_scanned=_scanned_rows(json.loads(plan)))

    def list_tables(self) -> list[str]:
        with self._cursor() as cur:
            rows = cur.execute(
                "SELECT table_name FROM information_schema.tables "
                "WHERE table_schema = 'main' ORDER BY table_name"
            ).fetchall()
        return [str(row[0]) for row in rows if schema.listed(str(row[0]))]

    def checkpoint(self) -> None:
        with self._cursor() as cur:
            cur.execute("CHECKPOINT")

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for cur in self._profiled_idle:
                cur.close()
            self._profiled_idle.clear()
            for reader in self._readers:
                reader.close()
            if self._ingest_con is not None:
                self._ingest_con.close()
                self._ingest_con = None
            self._con.close()


class DuckDBReader:
    """Reads for the read API, whose point lookups take a millisecond: a fresh cursor and
    DuckDB's profiler (which :meth:`DuckDBEngine.select` keeps on to count the rows a
    pipeline scanned) would cost more than the query. Each thread keeps its
    cursor; every query still sees the latest commit (autocommit: one transaction each)."""

    dialect = "duckdb"

    def __init__(self, con: duckdb.DuckDBPyConnection) -> None:
        self._con = con
        self._local = threading.local()
        self._cursors: list[duckdb.DuckDBPyConnection] = []
        self._lock = threading.Lock()
        self._closed = False

    def select(self, sql: str, params: Mapping[str, object]) -> Selected:
        cur: duckdb.DuckDBPyConnection | None = getattr(self._local, "cursor", None)
        if cur is None:
            with self._lock:
                if self._closed:
                    raise StoreUnavailable("duckdb", "the store is closed")
                cur = self._con.cursor()
                self._cursors.append(cur)
            self._local.cursor = cur
        try:
            table = cur.sql(sql, params=dict(params) or None).to_arrow_table()
        except duckdb.Error as exc:
            raise classify(exc) from None
        return Selected(int64_sums(table), None)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            for cur in self._cursors:
                cur.close()
            self._cursors.clear()


#: The temporary table a staged output is computed into (see ``DuckDBEngine.stage``).
_STAGED = "_hw_output"


class _Staged:
    """:class:`~headwater.store.engine.Staged` on the cursor of the staging transaction."""

    table = _STAGED

    def __init__(
        self,
        engine: DuckDBEngine,
        cur: duckdb.DuckDBPyConnection,
        *,
        schema: pa.Schema,
        rows: int,
        rows_scanned: int | None,
    ) -> None:
        self._engine = engine
        self._cur = cur
        self.schema = schema
        self.rows = rows
        self.rows_scanned = rows_scanned

    def query(self, sql: str, params: Mapping[str, object] | None = None) -> pa.Table:
        try:
            return self._cur.sql(sql, params=dict(params or {}) or None).to_arrow_table()
        except duckdb.Error as exc:
            raise classify(exc) from None

    def row(self, sql: str, params: Mapping[str, object] | None = None) -> dict[str, object]:
        try:
            found = self._cur.execute(sql, dict(params or {}) or None)
            rows = found.fetchall()  # to the end: DuckDB takes no other work before
        except duckdb.Error as exc:
            raise classify(exc) from None
        names = [column[0] for column in found.description or []]
        return dict(zip(names, rows[0] if rows else (None,) * len(names), strict=True))

    def replace_interval(
        self, table: str, column: str, interval: Interval, fence: Fence | None = None
    ) -> None:
        cur = self._cur
        try:
            self._engine._fence(cur, fence)
            if not _has_table(cur, table):
                cur.execute(f"CREATE TABLE {quote(table)} AS FROM {_STAGED} LIMIT 0")
            cur.execute(
                f"DELETE FROM {quote(table)} WHERE {quote(column)} >= ? AND {quote(column)} < ?",
                [interval.start, interval.end],
            )
            cur.execute(f"INSERT INTO {quote(table)} BY NAME SELECT * FROM {_STAGED}")
        except duckdb.Error as exc:
            raise classify(exc) from None

    def replace_table(self, table: str, fence: Fence | None = None) -> None:
        try:
            self._engine._fence(self._cur, fence)
            self._cur.execute(f"CREATE OR REPLACE TABLE {quote(table)} AS FROM {_STAGED}")
        except duckdb.Error as exc:
            raise classify(exc) from None


#: DuckDB's SUM of integers is a HUGEINT, which Arrow holds as DECIMAL(38, 0).
_HUGEINT = pa.decimal128(38, 0)

#: DuckDB's types (as it names them) in the Arrow types it hands them over as, with the
#: time zone pinned to UTC; tests/test_store_duckdb.py checks each against DuckDB's own export.
#: A column of any other type has the schema asked of DuckDB (a query).
_ARROW_TYPES: dict[str, pa.DataType] = {
    "BOOLEAN": pa.bool_(),
    "TINYINT": pa.int8(),
    "SMALLINT": pa.int16(),
    "INTEGER": pa.int32(),
    "BIGINT": pa.int64(),
    "HUGEINT": _HUGEINT,
    "UTINYINT": pa.uint8(),
    "USMALLINT": pa.uint16(),
    "UINTEGER": pa.uint32(),
    "UBIGINT": pa.uint64(),
    "FLOAT": pa.float32(),
    "DOUBLE": pa.float64(),
    "VARCHAR": pa.string(),
    "BLOB": pa.binary(),
    "DATE": pa.date32(),
    "TIMESTAMP": pa.timestamp("us"),
    "TIMESTAMP WITH TIME ZONE": pa.timestamp("us", tz="UTC"),
}
_DECIMAL = re.compile(r"DECIMAL\((\d+),(\d+)\)")


def _arrow_schema(cur: duckdb.DuckDBPyConnection, table: str) -> pa.Schema:
    """The Arrow schema of ``table``'s rows as DuckDB would hand them over, read from the
    catalog (binding a relation): a tenth of the cost of exporting none of its rows."""
    relation = cur.table(table)
    fields = []
    for name, kind in zip(relation.columns, relation.types, strict=True):
        text = str(kind)
        arrow = _ARROW_TYPES.get(text)
        if arrow is None and (decimal := _DECIMAL.fullmatch(text)) is not None:
            arrow = pa.decimal128(int(decimal[1]), int(decimal[2]))
        if arrow is None:
            return cur.sql(f"FROM {quote(table)} LIMIT 0").to_arrow_table().schema
        fields.append(pa.field(name, arrow))
    return pa.schema(fields)


def _create_like(cur: duckdb.DuckDBPyConnection, table: str) -> None:
    """Make ``table`` from ``_hw_data``'s columns if it is not there. A column it was made
    with as Arrow's null type (a Python pipeline's first output empty, or all NULL) is given
    the type ``_hw_data`` has for it now: it holds only NULLs, and would refuse every value
    after."""
    cur.execute(f"CREATE TABLE IF NOT EXISTS {quote(table)} AS FROM _hw_data LIMIT 0")
    untyped = [str(row[0]) for row in cur.execute(_UNTYPED, [table]).fetchall()]
    if not untyped:
        return
    given = {
        str(r[0]): str(r[1]) for r in cur.execute("DESCRIBE SELECT * FROM _hw_data").fetchall()
    }
    for name in untyped:
        kind = given.get(name, '"NULL"')
        # A type DuckDB wrote (not a user's text); one naming fields is left as it is.
        if '"NULL"' not in kind and _PLAIN_TYPE.fullmatch(kind):
            cur.execute(f"ALTER TABLE {quote(table)} ALTER {quote(name)} TYPE {kind}")


#: The columns of a table that were made of Arrow's null type.
_UNTYPED = (
    "SELECT column_name FROM information_schema.columns WHERE table_schema = 'main' "
    "AND table_name = ? AND data_type LIKE '%\"NULL\"%'"
)
_PLAIN_TYPE = re.compile(r"[A-Z][A-Z0-9_ (),\[\]]*")


def _rows_scanned(cur: duckdb.DuckDBPyConnection) -> int | None:
    """The rows the last statement on ``cur`` (a cursor with the profiler on) read."""
    profile = json.loads(cur.get_profiling_information(format="json"))
    rows = profile.get("query", {}).get("total_rows_scanned")
    return int(rows) if rows is not None else None


def _has_table(cur: duckdb.DuckDBPyConnection, table: str) -> bool:
    """Whether the store has ``table`` (in ``main``: not a system view of the same name),
    asked of the catalog: a missing table's error leaves the transaction usable, and a
    third of the cost of ``CREATE TABLE IF NOT EXISTS``. ``cur`` is a profiled cursor, on
    which DuckDB does not look for a Python variable of a missing table's name."""
    try:
        cur.table(f"main.{quote(table)}")
    except duckdb.CatalogException:
        return False
    return True


def _narrow(cur: duckdb.DuckDBPyConnection, column: str) -> None:
    """A staged HUGEINT column (a SUM of integers) as BIGINT, as :func:`int64_sums` makes
    a selected one."""
    try:
        cur.execute(f"ALTER TABLE {_STAGED} ALTER {quote(column)} SET DATA TYPE BIGINT")
    except duckdb.ConversionException as exc:
        raise QueryError(f"{column}: a sum past INT64's range ({first_line(exc)})") from None


def classify(exc: duckdb.Error) -> QueryError | StoreUnavailable:
    """DuckDB's error as transient (a write conflict with another transaction, an I/O
    failure such as a full disk) or terminal (the statement itself is wrong)."""
    if isinstance(exc, duckdb.TransactionException | duckdb.IOException):
        return StoreUnavailable("duckdb", first_line(exc))
    return QueryError(first_line(exc))


def int64_sums(table: pa.Table) -> pa.Table:
    """A SUM of integers is INT64 in BigQuery; DuckDB's is a HUGEINT. Its columns become
    INT64 (a sum past INT64's range fails, as it does in BigQuery)."""
    for index, field in enumerate(table.schema):
        if field.type == _HUGEINT:
            try:
                column = pc.cast(table.column(index), pa.int64())
            except pa.ArrowInvalid as exc:
                raise QueryError(f"{field.name}: a sum past INT64's range ({exc})") from None
            table = table.set_column(index, pa.field(field.name, pa.int64()), column)
    return table


def _columns(con: duckdb.DuckDBPyConnection, table: str) -> list[str]:
    found = con.execute(
        "SELECT column_name FROM duckdb_columns() WHERE schema_name = 'main' "
        "AND table_name = ? ORDER BY column_index",
        [table],
    ).fetchall()
    return [str(row[0]) for row in found]


def _as_json(table: pa.Table) -> pa.Table:
    """The JSON columns typed as Arrow's JSON extension: DuckDB then stores them in its JSON
    type as they are, without parsing each value again (the collector's decoder wrote them,
    so they are valid JSON)."""
    for index, field in enumerate(table.schema):
        if field.name in schema.JSON_COLUMNS and pa.types.is_string(field.type):
            column = table.column(index)
            chunks = [pa.ExtensionArray.from_storage(_JSON, chunk) for chunk in column.chunks]
            table = table.set_column(
                index, pa.field(field.name, _JSON, field.nullable), pa.chunked_array(chunks, _JSON)
            )
    return table


_JSON = pa.json_(pa.string())


def _drop_key_index(con: duckdb.DuckDBPyConnection) -> None:
    """A store made before the index moved into memory has a primary key on message_ids:
    copy the table without it (DuckDB cannot drop a constraint)."""
    found = con.execute(
        "SELECT count(*) FROM duckdb_constraints() WHERE table_name = 'message_ids' "
        "AND constraint_type = 'PRIMARY KEY'"
    ).fetchall()
    if not found[0][0]:
        return
    con.begin()
    try:
        con.execute("CREATE TABLE _hw_message_ids AS SELECT * FROM message_ids")
        con.execute("DROP TABLE message_ids")
        con.execute("ALTER TABLE _hw_message_ids RENAME TO message_ids")
    except BaseException:
        con.rollback()
        raise
    con.commit()


def _scanned_rows(nodes: list[dict[str, object]]) -> int:
    total = 0
    for node in nodes:
        info = node.get("extra_info")
        if isinstance(info, dict) and "SCAN" in str(node.get("name", "")):
            total += int(str(info.get("Estimated Cardinality", "0")) or 0)
        children = node.get("children")
        if isinstance(children, list):
            total += _scanned_rows(children)
    return total
