"""The Spark store: Parquet folders in a folder or bucket, computed by Spark.

Every table is a folder of Parquet files under the warehouse
(``<warehouse>/<table>/``), so anything that reads Parquet reads the store,
and Spark (local, or a cluster: Dataproc, Databricks, EMR) computes the
pipelines over it. There is no catalog: each query first registers a
temporary view for every table it names, which lists the table's files
again, so files written since the last query are seen. A query whose files
were swapped away while it ran (a table replaced) runs again on fresh views.

``events`` and ``failed_events`` are partitioned by the UTC day of
``received_at`` (``received_day=YYYY-MM-DD``, a folder level the views hide).
The collector's writer appends them with pyarrow, without a Spark job: one
new file per day per commit, written under a hidden name and renamed, so a
reader never sees part of a file. The dedupe is exact against the events
stored inside the dedupe window (whose start the collector moves with
``prune_dedupe``; before that, every stored event): their
``(source, message_id)`` are read from the files on the first ingest and then
kept in memory (some 150 bytes per event in the window), which is only right
because **one process writes the event tables** (the one that runs the
collector; nothing else may ingest into the same warehouse).

A pipeline's output is written by Spark from its Arrow table. An
incremental output is partitioned by ``_interval``, the interval each part
was published for (hidden from the views), and publishing an interval
overwrites its partition (Spark's dynamic partition overwrite), rewriting
the partitions of other intervals it overlaps; a full output is written to
a new folder that is then renamed in place of the old.
Each table keeps its Spark schema in ``_schema.json``, so a view needs no
schema inference (a Spark job) and an output with no rows is still a table.
"""

from __future__ import annotations

import json
import os
import re
import sys
import sysconfig
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path
from types import ModuleType
from typing import Any, TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
import sqlglot
from py4j.protocol import Py4JError, Py4JJavaError, Py4JNetworkError
from pyspark import cloudpickle
from pyspark.errors import PySparkException, PythonException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema
from pyspark.sql.types import DateType, StringType, StructField, StructType
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from headwater.core.clock import from_us
from headwater.core.types import Interval
from headwater.store import schema
from headwater.store.engine import Cost, IngestBatch, Selected
from headwater.store.errors import QueryError, ReadOnlyQuery, StoreUnavailable

#: The hidden partition column of incremental outputs: the interval each part was
#: published for, ``<start>_<end>`` (UTC, ``%Y%m%dT%H%M%SZ``).
INTERVAL = "_interval"
#: The hidden partition column of the event tables: the UTC day of ``received_at``.
DAY = "received_day"
SCHEMA_FILE = "_schema.json"

#: Session settings; a user's ``spark_conf`` wins over these.
_SESSION = {
    # Nothing listens beyond loopback unless the user's conf says so.
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.driver.bindAddress": "127.0.0.1",
    "spark.driver.host": "127.0.0.1",
    "spark.sql.session.timeZone": "UTC",
    # Replace exactly the partitions written: one interval of an output.
    "spark.sql.sources.partitionOverwriteMode": "dynamic",
    # "name" is an identifier, as in DuckDB and PostgreSQL (strings are 'text').
    "spark.sql.ansi.doubleQuotedIdentifiers": "true",
    "spark.sql.execution.arrow.pyspark.enabled": "true",
    # Plain Parquet timestamps (not INT96), so other readers of the warehouse agree.
    "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
    "spark.sql.parquet.compression.codec": "zstd",
}
_EVENT_TABLES = {"events": schema.EVENTS, "failed_events": schema.FAILED_EVENTS}
_READ_ONLY = (exp.Query, exp.Values, exp.Describe)
_LEADING_COMMAND = re.compile(
    r"^\s*(?:--[^\n]*\n\s*|/\*.*?\*/\s*)*(EXPLAIN|SHOW)\b"
    r"(?:\s+(EXTENDED|CODEGEN|COST|FORMATTED|ANALY[SZ]E)\b)?",
    re.I | re.S,
)
#: Spark SQL functions that call Java methods: a "read-only" SELECT could change state.
_REFLECTION = frozenset({"reflect", "java_method", "try_reflect"})
_PICKLE_LOCK = threading.Lock()
#: Runs of a query that lost a race with a table's swap (see ``SparkEngine._run``).
_ATTEMPTS = 4
_VANISHED = ("FileNotFoundException", "FILE_NOT_EXIST", "PATH_NOT_FOUND")
_T = TypeVar("_T")
_KEY_TIME = "%Y%m%dT%H%M%SZ"


def quote(identifier: str) -> str:
    """Quote an identifier for Spark SQL.

    >>> quote("odd`name")
    '`odd``name`'
    """
    return "`" + identifier.replace("`", "``") + "`"


class SparkEngine:
    """:class:`~headwater.store.engine.Engine` over a warehouse of Parquet folders."""

    name = "spark"
    dialect = "spark"
    shared = False

    def __init__(
        self, session: SparkSession, filesystem: pafs.FileSystem, root: str, uri: str
    ) -> None:
        self._spark = session
        self._fs = filesystem
        self._root = root.rstrip("/")
        self._uri = uri.rstrip("/")
        self._views: set[str] = set()
        #: ``source NUL message_id`` of the events stored in the dedupe window, by day of
        #: arrival, and when each arrived (µs), so that the window's start can move.
        self._seen: dict[date, dict[str, int]] = {}
        #: The dedupe window's start (µs), which the collector moves by ``prune_dedupe``.
        self._window_start = 0
        self._window_loaded = False
        self._ingest_lock = threading.Lock()
        self._write_lock = threading.RLock()

    @classmethod
    def open(
        cls, warehouse: str, master: str = "local[2]", conf: Mapping[str, str] | None = None
    ) -> SparkEngine:
        """Start (or join) this process's Spark session over ``warehouse``.

        ``warehouse`` is a local folder or a URL that both pyarrow and the
        cluster's Spark can write (``gs://bucket/warehouse``).
        """
        conf = dict(conf or {})
        try:
            if "://" in warehouse:
                filesystem, root = pafs.FileSystem.from_uri(warehouse)
                uri = warehouse
            else:
                path = Path(warehouse).resolve()
                filesystem, root, uri = pafs.LocalFileSystem(), str(path), path.as_uri()
            for table in _EVENT_TABLES:
                filesystem.create_dir(f"{root}/{table}", recursive=True)
        except (OSError, pa.ArrowException) as exc:
            raise StoreUnavailable("spark", f"cannot use {warehouse}: {exc}") from None
        return cls(_session(master, conf), filesystem, root, uri)

    # -- collector -------------------------------------------------------

    def ingest(self, batch: IngestBatch) -> pa.Array:
        # The collector's writer, and an import, may ingest from different threads.
        with self._ingest_lock:
            try:
                # Checked before anything is written: a refused batch leaves no file.
                events = _conform("events", batch.events, schema.EVENTS)
                failed = _conform("failed_events", batch.failed, schema.FAILED_EVENTS)
                new = self._append_events(events)
                for day, rows in _by_day(failed):
                    self._write_day("failed_events", day, rows)
            except (OSError, pa.ArrowException) as exc:
                raise StoreUnavailable(self.name, _reason(exc)) from exc
        return new

    def _append_events(self, events: pa.Table) -> pa.Array:
        self._load_window()
        new = pa.array(
            [
                not any(key in keys for keys in self._seen.values())
                for key in _keys(events).to_pylist()
            ],
            pa.bool_(),
        )
        for day, rows in _by_day(events.filter(new)):
            self._write_day("events", day, rows)
            # Known as soon as its file is in: a batch retried after a failure on a
            # later day then stores only what is still missing.
            self._seen.setdefault(day, {}).update(_keyed_times(rows))
        return new

    def _write_day(self, table: str, day: date, rows: pa.Table) -> None:
        """Write ``rows`` as one new file in the day's folder, under a hidden name then
        renamed: a reader that lists the folder sees the whole file or none of it."""
        folder = f"{self._root}/{table}/{DAY}={day.isoformat()}"
        name = f"part-{uuid.uuid4().hex}.parquet"
        self._fs.create_dir(folder, recursive=True)
        pq.write_table(rows, f"{folder}/.{name}.tmp", filesystem=self._fs, compression="zstd")
        self._fs.move(f"{folder}/.{name}.tmp", f"{folder}/{name}")

    def _load_window(self) -> None:
        """Read the keys of the events stored inside the window, once: after that this
        process is the only writer, so the ones it writes are all the new ones."""
        if self._window_loaded:
            return
        prefix = f"{DAY}="
        selector = pafs.FileSelector(f"{self._root}/events")
        start = from_us(self._window_start)
        cut = pa.scalar(start, schema.TIMESTAMP)
        for info in self._fs.get_file_info(selector):
            if info.type != pafs.FileType.Directory or not info.base_name.startswith(prefix):
                continue
            day = date.fromisoformat(info.base_name.removeprefix(prefix))
            if day < start.date():
                continue
            stored = ds.dataset(info.path, filesystem=self._fs, format="parquet").to_table(
                columns=["source", "message_id", "received_at"],
                filter=ds.field("received_at") >= cut,
            )
            self._seen[day] = _keyed_times(stored)
        self._window_loaded = True

    def prune_dedupe(self, before_us: int) -> int:
        """Move the window's start to ``before_us``: forget the ids received before."""
        with self._ingest_lock:
            self._window_start = cut = max(self._window_start, before_us)
            first_day = from_us(cut).date()
            forgotten = 0
            for day in [d for d in self._seen if d <= first_day]:
                keys = self._seen[day]
                old = [key for key, received in keys.items() if received < cut]
                for key in old:
                    del keys[key]
                forgotten += len(old)
                if not keys:
                    del self._seen[day]
        return forgotten

    def publish_floor(self, collector: str, floor_us: int) -> None:
        """One process writes the events: its collector's floor is known in-process."""

    def retire_floor(self, collector: str) -> None:
        """Nothing is kept."""

    def shared_floor(self, stale_after_seconds: float) -> int | None:
        return None

    # -- reading ----------------------------------------------------------

    def query(self, sql: str, params: Sequence[object] = ()) -> pa.Table:
        """One read-only statement (``?`` parameters). Spark has no read-only
        transaction, so the statement is parsed first and anything but a query,
        DESCRIBE, SHOW or EXPLAIN is refused."""
        _check_read_only(sql)
        return self._run(sql, list(params) or None, DataFrame.toArrow)

    def select(self, sql: str, params: Mapping[str, object]) -> Selected:
        def run(frame: DataFrame) -> Selected:
            return Selected(frame.toArrow(), _rows_scanned(frame))

        return self._run(sql, dict(params) or None, run)

    def map_batches(
        self,
        sql: str,
        params: Mapping[str, object],
        fn: Callable[[pa.RecordBatch], pa.RecordBatch],
        schema: pa.Schema,
    ) -> pa.Table:
        """Run ``fn`` over the query's rows on the executors (``mapInArrow``).

        The input never comes to the driver: each task hands its Arrow batches
        to ``fn`` in a Python worker and only the output is collected. ``fn``
        travels pickled; the module that defines it travels with it unless it
        is installed, so a pipeline's own helpers need not be on the executors.
        """
        try:
            columns = from_arrow_schema(schema)
        except (TypeError, PySparkException) as exc:
            raise QueryError(f"Spark cannot hold these columns: {_reason(exc)}") from None

        # Self-contained (pyarrow and fn only): it runs in the executors' Python.
        def apply(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            for batch in batches:
                out = fn(batch)
                yield pa.RecordBatch.from_arrays(
                    [out.column(f.name).cast(f.type) for f in schema], schema=schema
                )

        def run(frame: DataFrame) -> pa.Table:
            with _shipped(fn):
                mapped = frame.mapInArrow(apply, columns)
            return mapped.toArrow().cast(schema)

        return self._run(sql, dict(params) or None, run)

    def execute(self, sql: str, params: Sequence[object] = ()) -> None:
        self._run(sql, list(params) or None, DataFrame.collect)

    def estimate_cost(self, sql: str, params: Mapping[str, object] | None = None) -> Cost:
        """The size Spark's optimizer gives the relations the query reads (after pruning)."""

        def run(frame: DataFrame) -> Cost:
            leaves = frame._jdf.queryExecution().optimizedPlan().collectLeaves()
            sizes = [int(leaves.apply(i).stats().sizeInBytes()) for i in range(leaves.size())]
            return Cost(bytes_scanned=sum(sizes))

        return self._run(sql, dict(params or {}) or None, run)

    def _run(
        self,
        sql: str,
        args: dict[str, object] | list[object] | None,
        action: Callable[[DataFrame], _T],
    ) -> _T:
        """``action`` on ``sql`` analysed against fresh views of the tables it names.

        A table replaced while the query ran loses the files the query had
        listed; Spark then fails, and the query runs again on fresh views, so a
        reader sees the table before or after, never a part of each.
        """
        for attempt in range(1, _ATTEMPTS + 1):
            try:
                self._register(sql)
                return action(self._spark.sql(sql, args=args))
            except PythonException:
                raise  # a Python function of the pipeline failed: its error, not the engine's
            except (PySparkException, Py4JJavaError) as exc:
                if attempt == _ATTEMPTS or not any(m in str(exc) for m in _VANISHED):
                    raise QueryError(_reason(exc)) from None
                time.sleep(0.05 * 2**attempt)  # past the swap's two renames
            except Py4JNetworkError as exc:
                raise StoreUnavailable(self.name, _reason(exc)) from None
        raise AssertionError("unreachable")

    def list_tables(self) -> list[str]:
        selector = pafs.FileSelector(self._root, allow_not_found=True)
        return sorted(
            info.base_name
            for info in self._fs.get_file_info(selector)
            if info.type == pafs.FileType.Directory and not info.base_name.startswith((".", "_"))
        )

    def _register(self, sql: str) -> None:
        """(Re-)register the views of the tables ``sql`` reads: listing a table's files
        again is how a query sees what was written since the last one."""
        names = _referenced(sql)
        for name in self.list_tables() if names is None else sorted(names):
            frame = self._read(name)
            if frame is not None:
                frame.createOrReplaceTempView(quote(name))
                self._views.add(name)
            elif name in self._views:
                self._spark.catalog.dropTempView(quote(name))
                self._views.discard(name)

    def _read(self, table: str) -> DataFrame | None:
        """The table as queries see it (hidden partition columns dropped), or ``None``."""
        stored = self._stored_schema(table)
        if stored is None:
            return None
        frame = self._spark.read.schema(stored).parquet(f"{self._uri}/{table}")
        hidden = [name for name in (DAY, INTERVAL) if name in stored.fieldNames()]
        return frame.drop(*hidden) if hidden else frame

    def _stored_schema(self, table: str) -> StructType | None:
        if table in _EVENT_TABLES:
            return _event_schema(table)
        try:
            with self._fs.open_input_stream(f"{self._root}/{table}/{SCHEMA_FILE}") as file:
                return StructType.fromJson(json.loads(file.read()))
        except FileNotFoundError:
            return None

    # -- writing ------------------------------------------------------------

    def append(self, table: str, data: pa.Table) -> None:
        with self._writing(table) as stored:
            if stored is None:
                self._write_new(table, self._frame(data))
                return
            self._check_unpartitioned(table, stored, "append to")
            self._frame(data, stored).write.mode("append").parquet(f"{self._uri}/{table}")

    def replace_table(self, table: str, data: pa.Table) -> None:
        with self._writing(table):
            self._write_new(table, self._frame(data))

    def replace_interval(self, table: str, column: str, interval: Interval, data: pa.Table) -> None:
        """Replace the rows whose ``column`` lies in ``interval``.

        The table is partitioned by ``_interval``, the interval each part was
        published for. Publishing the same interval again, the usual case,
        overwrites its partition alone. When intervals differ (a changed
        schedule, a run over other bounds), the partitions it overlaps are
        rewritten, in the same write, without their rows inside it. Both rely
        on each interval's rows lying inside it, which the runner checks.
        """
        key = _interval_key(interval)
        with self._writing(table) as stored:
            if stored is not None and INTERVAL not in stored.fieldNames():
                raise QueryError(
                    f"{table} was written whole, not by interval",
                    hint=f"remove the folder {self._root}/{table} and backfill the pipeline",
                )
            columns = _columns(data, stored)
            target = pa.schema([field.with_nullable(True) for field in data.schema])
            parts = {key: data.cast(target)}
            for other in self._partitions(table):
                if other != key and _overlaps(other, interval):
                    part = self._spark.read.schema(columns).parquet(
                        f"{self._uri}/{table}/{INTERVAL}={other}"
                    )
                    at = F.col(quote(column))
                    inside = (at >= F.lit(interval.start)) & (at < F.lit(interval.end))
                    kept = part.where(at.isNull() | ~inside).toArrow()
                    parts[other] = kept.select(target.names).cast(target)
            written = [
                rows.append_column(INTERVAL, pa.array([name] * rows.num_rows, pa.string()))
                for name, rows in parts.items()
                if rows.num_rows
            ]
            if written:
                frame = self._spark.createDataFrame(pa.concat_tables(written))
                frame.write.mode("overwrite").partitionBy(INTERVAL).parquet(f"{self._uri}/{table}")
            for name, rows in parts.items():
                # An overwrite writes no partition for no rows, so it would replace nothing.
                folder = f"{self._root}/{table}/{INTERVAL}={name}"
                if (
                    not rows.num_rows
                    and self._fs.get_file_info(folder).type != pafs.FileType.NotFound
                ):
                    self._fs.delete_dir(folder)
            if stored is None:
                partitioned = [*columns.fields, StructField(INTERVAL, StringType())]
                self._write_schema(f"{self._root}/{table}", StructType(partitioned))

    def _partitions(self, table: str) -> list[str]:
        """The ``_interval`` values of ``table``'s partitions."""
        prefix = f"{INTERVAL}="
        selector = pafs.FileSelector(f"{self._root}/{table}", allow_not_found=True)
        return [
            info.base_name.removeprefix(prefix)
            for info in self._fs.get_file_info(selector)
            if info.type == pafs.FileType.Directory and info.base_name.startswith(prefix)
        ]

    def upsert(self, table: str, key: Sequence[str], data: pa.Table) -> None:
        """Merge by key into a new folder (stored rows whose key is not in ``data``,
        then ``data``) and swap it in, so a reader sees the table before or after."""
        if not key:
            raise QueryError("upsert needs at least one key column")
        with self._writing(table) as stored:
            if stored is None:
                self._write_new(table, self._frame(data))
                return
            self._check_unpartitioned(table, stored, "upsert into")
            incoming = self._frame(data, stored)
            current = self._read(table)
            assert current is not None
            keys = incoming.select(*[F.col(quote(name)) for name in key])
            kept = current.join(keys, on=list(key), how="left_anti")
            self._write_new(table, kept.unionByName(incoming))

    @contextmanager
    def _writing(self, table: str) -> Iterator[StructType | None]:
        """Serialise writes; yield the table's stored schema; Spark's errors become
        :class:`QueryError`, a store that cannot be written :class:`StoreUnavailable`."""
        if table in _EVENT_TABLES:
            raise QueryError(
                f"{table} is written by the collector only",
                hint="events reach the store through ingest (the collector or an import)",
            )
        with self._write_lock:
            try:
                yield self._stored_schema(table)
            except (PySparkException, Py4JJavaError, pa.ArrowException) as exc:
                raise QueryError(_reason(exc)) from None
            except (OSError, Py4JNetworkError) as exc:
                raise StoreUnavailable(self.name, _reason(exc)) from None

    def _frame(self, data: pa.Table, stored: StructType | None = None) -> DataFrame:
        """``data`` as a Spark DataFrame, its columns in the stored table's order."""
        columns = _columns(data, stored)
        frame = self._spark.createDataFrame(data)
        return frame.select(*[F.col(quote(name)) for name in columns.fieldNames()])

    def _check_unpartitioned(self, table: str, stored: StructType, verb: str) -> None:
        if INTERVAL in stored.fieldNames():
            raise QueryError(
                f"cannot {verb} {table}: it is replaced interval by interval",
                hint="incremental outputs are written by their pipeline's runs only",
            )

    def _write_new(self, table: str, frame: DataFrame) -> None:
        staged = f".{table}.new-{uuid.uuid4().hex}"  # hidden: not a table
        frame.write.parquet(f"{self._uri}/{staged}")
        self._write_schema(f"{self._root}/{staged}", frame.schema)
        self._swap(table, staged)

    def _swap(self, table: str, staged: str) -> None:
        """Rename the folder ``staged`` to ``table``'s, the old folder out of the way first.

        Local renames are atomic, so a reader lists the old files or the new
        ones; on an object store a rename copies every object, so there a
        reader may briefly find no table.
        """
        path = f"{self._root}/{table}"
        retired = f"{self._root}/.{table}.old-{uuid.uuid4().hex}"
        exists = self._fs.get_file_info(path).type == pafs.FileType.Directory
        if exists:
            self._fs.move(path, retired)
        self._fs.move(f"{self._root}/{staged}", path)
        if exists:
            self._fs.delete_dir(retired)

    def _write_schema(self, folder: str, stored: StructType) -> None:
        nullable = StructType([StructField(f.name, f.dataType, True) for f in stored.fields])
        temporary = f"{folder}/.{SCHEMA_FILE}.tmp"
        self._fs.create_dir(folder, recursive=True)
        with self._fs.open_output_stream(temporary) as file:
            file.write(nullable.json().encode())
        self._fs.move(temporary, f"{folder}/{SCHEMA_FILE}")

    def checkpoint(self) -> None:
        """Every commit is already whole files: nothing to fold in."""

    def close(self) -> None:
        """Drop this engine's views; the Spark session is the process's and stays."""
        with self._write_lock, self._ingest_lock:
            for view in list(self._views):
                self._spark.catalog.dropTempView(quote(view))
            self._views.clear()
            self._seen.clear()
            self._window_loaded = False


_SESSION_LOCK = threading.Lock()


def _session(master: str, conf: Mapping[str, str]) -> SparkSession:
    """A new session (its own temporary views) on the process's one Spark context."""
    settings = {**_SESSION, **conf}
    with _SESSION_LOCK:
        if master.startswith("local"):
            # Local Python workers must be this interpreter, which has pyarrow.
            os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
        builder = SparkSession.builder.master(master).appName("headwater")
        for key, value in settings.items():
            builder = builder.config(key, value)
        try:
            base = builder.getOrCreate()
        except (PySparkException, Py4JError, OSError) as exc:
            raise StoreUnavailable(
                "spark", f"Spark did not start ({_reason(exc)}); is Java 17 installed?"
            ) from None
    session = base.newSession()
    for key, value in settings.items():
        # A new session starts from the context's settings; SQL settings are per session.
        if session.conf.isModifiable(key):
            session.conf.set(key, value)
    return session


def _event_schema(table: str) -> StructType:
    columns = from_arrow_schema(_EVENT_TABLES[table])
    return StructType(
        [StructField(f.name, f.dataType, True) for f in columns.fields]
        + [StructField(DAY, DateType(), True)]
    )


def _visible(stored: StructType) -> StructType:
    return StructType([f for f in stored.fields if f.name not in (DAY, INTERVAL)])


def _columns(data: pa.Table, stored: StructType | None) -> StructType:
    """The Spark columns of ``data``: those of the stored table, which they must match."""
    try:
        columns = from_arrow_schema(data.schema)
    except (TypeError, PySparkException) as exc:
        raise QueryError(f"Spark cannot hold these columns: {_reason(exc)}") from None
    if stored is None:
        return columns
    visible = _visible(stored)
    if {(f.name, f.dataType) for f in visible.fields} != {(f.name, f.dataType) for f in columns}:
        raise QueryError(
            f"the columns ({_describe(columns)}) differ from the table's ({_describe(visible)})"
        )
    return visible


def _interval_key(interval: Interval) -> str:
    return "_".join(t.astimezone(UTC).strftime(_KEY_TIME) for t in (interval.start, interval.end))


def _overlaps(key: str, interval: Interval) -> bool:
    start, end = (datetime.strptime(t, _KEY_TIME).replace(tzinfo=UTC) for t in key.split("_"))
    return start < interval.end and interval.start < end


def _describe(columns: StructType) -> str:
    return ", ".join(f"{f.name} {f.dataType.simpleString()}" for f in columns.fields)


def _keys(rows: pa.Table) -> pa.Array:
    """``source NUL message_id``: a source name holds no NUL, so the pair is unambiguous."""
    return pc.binary_join_element_wise(rows["source"], rows["message_id"], "\x00")


def _days(received_at: pa.ChunkedArray) -> pa.Array:
    """The UTC day of each time (the column is UTC, so its days are)."""
    return pc.cast(received_at, pa.date32())


def _by_day(rows: pa.Table) -> Iterator[tuple[date, pa.Table]]:
    days = _days(rows["received_at"])
    for day in pc.unique(days).to_pylist():
        yield day, rows.filter(pc.equal(days, pa.scalar(day, pa.date32())))


def _keyed_times(rows: pa.Table) -> dict[str, int]:
    """Each row's dedupe key and when it arrived (µs)."""
    times = pc.cast(rows["received_at"], pa.int64()).to_pylist()
    return dict(zip(_keys(rows).to_pylist(), times, strict=True))


def _conform(table: str, rows: pa.Table, arrow_schema: pa.Schema) -> pa.Table:
    """``rows`` as ``arrow_schema``; a NULL in a NOT NULL column refuses them."""
    for field in arrow_schema:
        nulls = rows[field.name].null_count if field.name in rows.column_names else 0
        if not field.nullable and nulls:
            raise pa.ArrowInvalid(f"{table}.{field.name} is NULL in {nulls} rows")
    return rows.cast(arrow_schema)


def _referenced(sql: str) -> set[str] | None:
    """The tables ``sql`` names (without CTEs); ``None`` when sqlglot cannot tell."""
    match = _LEADING_COMMAND.match(sql)
    if match is not None and match.group(1).upper() == "SHOW":
        return None
    text = sql[match.end() :] if match else sql
    try:
        statements = [s for s in sqlglot.parse(text, read="spark") if s is not None]
    except (ParseError, TokenError):
        return None
    names: set[str] = set()
    for statement in statements:
        if isinstance(statement, exp.Command):
            return None
        ctes = {cte.alias_or_name for cte in statement.find_all(exp.CTE)}
        names.update(
            t.name
            for t in statement.find_all(exp.Table)
            if t.name and not t.db and t.name not in ctes
        )
    return names


def _check_read_only(sql: str) -> None:
    match = _LEADING_COMMAND.match(sql)
    if match is not None:
        if (match.group(2) or "").upper().startswith("ANALY"):
            raise ReadOnlyQuery("EXPLAIN ANALYZE")  # runs what it explains, where it exists
        return  # Spark's EXPLAIN never runs the statement; SHOW lists
    try:
        statements = [s for s in sqlglot.parse(sql, read="spark") if s is not None]
    except (ParseError, TokenError) as exc:
        raise QueryError(_reason(exc)) from None
    if len(statements) != 1:
        raise QueryError(
            f"expected one statement, got {len(statements)}",
            hint="send one statement at a time",
        )
    statement = statements[0]
    if not isinstance(statement, _READ_ONLY):
        raise ReadOnlyQuery(statement.key.upper())
    for call in statement.find_all(exp.Anonymous):
        if str(call.this).lower() in _REFLECTION:
            raise ReadOnlyQuery(str(call.this).upper())


def _rows_scanned(frame: DataFrame) -> int | None:
    """Rows the file scans of an executed query read (Spark's ``numOutputRows`` of
    each Parquet scan, after row groups skipped by statistics)."""
    try:
        return _scan_rows(frame._jdf.queryExecution().executedPlan())
    except Py4JError:
        return None


def _scan_rows(node: Any) -> int:
    kind = node.getClass().getSimpleName()
    if kind == "AdaptiveSparkPlanExec":
        return _scan_rows(node.executedPlan())
    if kind.endswith("QueryStageExec"):
        return _scan_rows(node.plan())
    total = (
        int(node.metrics().apply("numOutputRows").value()) if kind == "FileSourceScanExec" else 0
    )
    children = node.children()
    return total + sum(_scan_rows(children.apply(i)) for i in range(children.size()))


@contextmanager
def _shipped(fn: Callable[..., object]) -> Iterator[None]:
    """Pickle ``fn``'s module by value while Spark pickles ``fn``, unless it is installed.

    A Python pipeline's module (``headwater_pipelines.NAME``) exists only in
    this process: by reference, the executors could not import it.
    """
    module = sys.modules.get(getattr(fn, "__module__", None) or "")
    if module is None or module.__name__ == "__main__" or _installed(module):
        yield
        return
    with _PICKLE_LOCK:
        registered = module.__name__ in cloudpickle.list_registry_pickle_by_value()
        if not registered:
            cloudpickle.register_pickle_by_value(module)
        try:
            yield
        finally:
            if not registered:
                cloudpickle.unregister_pickle_by_value(module)


def _installed(module: ModuleType) -> bool:
    """Whether ``module`` comes from the standard library or site-packages."""
    origin = getattr(module, "__file__", None)
    if origin is None:
        return True  # built in
    paths = sysconfig.get_paths()
    roots = {paths[key] for key in ("stdlib", "platstdlib", "purelib", "platlib")}
    return any(Path(origin).resolve().is_relative_to(Path(root).resolve()) for root in roots)


def _reason(exc: BaseException) -> str:
    """The error's first line; for one raised in the JVM, its message, not py4j's."""
    text = str(exc.java_exception.toString()) if isinstance(exc, Py4JJavaError) else str(exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__
