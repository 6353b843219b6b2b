"""The Spark store: Parquet folders in a folder or bucket, computed by Spark.

Every table is a folder of Parquet files under the warehouse
(``<warehouse>/<table>/``), so anything that reads Parquet reads the store,
and Spark (local, or a cluster: Dataproc, Databricks, EMR) computes the
pipelines over it. There is no catalog: each query first registers a
temporary view for every table it names, which lists the table's files
again, so files written since the last query are seen. A query whose files
were swapped away while it ran (a table replaced) runs again on fresh views.

The event tables are written by pyarrow, one file per day per commit (see
``events``). A pipeline's output is written by Spark from its Arrow table. An
incremental output is partitioned by ``_interval``, the interval each part
was published for (hidden from the views), and publishing an interval
overwrites its partition (Spark's dynamic partition overwrite), rewriting
the partitions of other intervals it overlaps; a full output is written to
a new folder that is then renamed in place of the old.
Each table keeps its Spark schema in ``_schema.json``, so a view needs no
schema inference (a Spark job) and an output with no rows is still a table.

A fenced write (see :class:`~headwater.store.engine.Fence`) compares its token
with the one kept in ``_fences/<name>`` under the engine's write lock, then
writes. Within a process that is one step; a second process writing the same
warehouse can slip between the two, which is one more reason a Spark
warehouse has one writing process.
"""

from __future__ import annotations

import json
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import TypeVar

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from py4j.protocol import Py4JJavaError, Py4JNetworkError
from pyspark.errors import PySparkException, PythonException
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F
from pyspark.sql.pandas.types import from_arrow_schema
from pyspark.sql.types import StringType, StructField, StructType

from headwater.core.types import Interval
from headwater.store.engine import Cost, Fence, IngestBatch, Selected, refuse_replayed
from headwater.store.errors import Fenced, MissingColumn, QueryError, StoreUnavailable
from headwater.store.readonly import check_read_only
from headwater.store.spark.buckets import SCHEMES, bucket_filesystem
from headwater.store.spark.events import DAY, EVENT_TABLES, EventFiles, count_rows, event_schema
from headwater.store.spark.outputs import (
    INTERVAL,
    _columns,
    _interval_end,
    _interval_key,
    _overlaps,
    framed,
    int64,
)
from headwater.store.spark.session import reason, session
from headwater.store.spark.shipping import carried, shipped
from headwater.store.spark.sql import quote, referenced, rows_scanned

SCHEMA_FILE = "_schema.json"
#: Per name, the largest fencing token a write carried, one small file each.
FENCES = "_fences"
#: Runs of a query that lost a race with a table's swap (see ``SparkEngine._run``).
_ATTEMPTS = 4
#: What Spark says of a file gone under a query. FAILED_READ_FILE comes without its cause
#: when the read failed in an executor's task (a corrupt file says it too: it fails again).
_VANISHED = ("FileNotFoundException", "FILE_NOT_EXIST", "PATH_NOT_FOUND", "FAILED_READ_FILE")
_T = TypeVar("_T")


def _vanished(exc: BaseException) -> bool:
    """Whether ``exc``, or an error that caused it, says a file the query had listed is gone.

    Spark wraps the executor's error when the file is read in a subquery or a broadcast
    ("Exception thrown in awaitResult:"), and PySpark's error shows only its own message
    unless JVM stack traces are on: the cause is where the missing file is named.
    """
    seen: BaseException | None = exc
    for _ in range(8):
        if seen is None:
            return False
        if any(marker in str(seen) for marker in _VANISHED):
            return True
        # PySpark keeps the JVM error's cause, converted, in ``_cause``.
        seen = getattr(seen, "_cause", None) or seen.__cause__
    return False


class SparkEngine:
    """:class:`~headwater.store.engine.Engine` over a warehouse of Parquet folders."""

    name = "spark"
    dialect = "spark"
    shared = False
    floors = None

    def __init__(
        self, session: SparkSession, filesystem: pafs.FileSystem, root: str, uri: str
    ) -> None:
        self._spark = session
        self._fs = filesystem
        self._root = root.rstrip("/")
        self._uri = uri.rstrip("/")
        self._views: set[str] = set()
        self._events = EventFiles(filesystem, self._root)
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
            if warehouse.startswith(SCHEMES):
                # gcsfs (the files sink's library), not pyarrow's own: see ``buckets``.
                filesystem, root = bucket_filesystem(warehouse, list(EVENT_TABLES))
                uri = warehouse
            elif "://" in warehouse:
                filesystem, root = pafs.FileSystem.from_uri(warehouse)
                uri = warehouse
            else:
                path = Path(warehouse).resolve()
                filesystem, root, uri = pafs.LocalFileSystem(), str(path), path.as_uri()
            for table in EVENT_TABLES:
                filesystem.create_dir(f"{root}/{table}", recursive=True)
        except (OSError, pa.ArrowException) as exc:
            raise StoreUnavailable("spark", f"cannot use {warehouse}: {exc}") from None
        return cls(session(master, conf), filesystem, root, uri)

    # -- collector -------------------------------------------------------

    def ingest(self, batch: IngestBatch) -> pa.Array:
        refuse_replayed(self.name, batch)
        try:
            return self._events.ingest(batch)
        except (OSError, pa.ArrowException) as exc:
            raise StoreUnavailable(self.name, reason(exc)) from exc

    def prune_dedupe(self, before_us: int) -> int:
        """Move the window's start to ``before_us``: forget the ids received before."""
        return self._events.prune(before_us)

    # -- reading ----------------------------------------------------------

    def query(self, sql: str, params: Sequence[object] = ()) -> pa.Table:
        """One read of the store's tables (``?`` parameters). Spark has no read-only
        transaction, so parsing alone decides: anything but one query is refused."""
        check_read_only(sql, self.dialect, self.list_tables())
        return self._run(sql, list(params) or None, lambda frame: int64(frame.toArrow()))

    def select(self, sql: str, params: Mapping[str, object]) -> Selected:
        def run(frame: DataFrame) -> Selected:
            return Selected(int64(frame.toArrow()), rows_scanned(frame))

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
            raise QueryError(f"Spark cannot hold these columns: {reason(exc)}") from None

        # Rows ``fn`` takes at once (a scorer's model's batch_rows): Spark hands a task its
        # rows in batches of its own size (10,000 by default), regrouped here.
        size = int(getattr(fn, "batch_rows", 0) or 0)
        key = secrets.token_bytes(32)

        # Self-contained (pyarrow, the standard library and fn only): it runs in the
        # executors' Python.
        def apply(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
            def mapped(batch: pa.RecordBatch) -> pa.RecordBatch:
                try:
                    out = fn(batch)
                except Exception as exc:  # fn may raise anything: carried whole, signed
                    import base64
                    import hashlib
                    import hmac
                    import pickle

                    try:
                        blob = base64.b64encode(pickle.dumps(exc))
                    except Exception:  # not picklable: Spark's text is all there is
                        raise exc from None
                    mac = hmac.new(key, blob, hashlib.sha256).hexdigest()
                    raise RuntimeError(f"HW-ERROR:{mac}:{blob.decode()}:HW-ERROR") from None
                return pa.RecordBatch.from_arrays(
                    [out.column(f.name).cast(f.type) for f in schema], schema=schema
                )

            pending: list[pa.RecordBatch] = []
            rows = 0
            for batch in batches:
                if size <= 0:
                    yield mapped(batch)
                    continue
                pending.append(batch)
                rows += batch.num_rows
                if rows >= size:
                    yield mapped(pa.Table.from_batches(pending).combine_chunks().to_batches()[0])
                    pending, rows = [], 0
            if rows:
                yield mapped(pa.Table.from_batches(pending).combine_chunks().to_batches()[0])

        def run(frame: DataFrame) -> pa.Table:
            with shipped(fn):
                mapped = frame.mapInArrow(apply, columns)
            try:
                return mapped.toArrow().cast(schema)
            except PythonException as exc:
                raise carried(exc, key) or exc from None

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
            listed: dict[str, int | None] | None = None
            try:
                listed = self._register(sql)
                result = action(self._spark.sql(sql, args=args))
                if attempt < _ATTEMPTS and listed != self._generations(listed):
                    # A table was replaced while its files were listed: the listing may
                    # hold part of either folder (the local file system skips entries
                    # renamed away mid-listing), so the answer is not trusted.
                    time.sleep(0.05 * 2**attempt)
                    continue
                return result
            except PythonException:
                raise  # a Python function of the pipeline failed: its error, not the engine's
            except (PySparkException, Py4JJavaError) as exc:
                # Also any failure while a table it read was replaced: Spark does not
                # always say a file went (a listing's error is wrapped past its cause).
                swapped = listed is not None and listed != self._generations(listed)
                if attempt == _ATTEMPTS or not (_vanished(exc) or swapped):
                    raise QueryError(reason(exc)) from None
                time.sleep(0.05 * 2**attempt)  # past the swap's two renames
            except Py4JNetworkError as exc:
                raise StoreUnavailable(self.name, reason(exc)) from None
        raise AssertionError("unreachable")

    def list_tables(self) -> list[str]:
        selector = pafs.FileSelector(self._root, allow_not_found=True)
        return sorted(
            info.base_name
            for info in self._fs.get_file_info(selector)
            if info.type == pafs.FileType.Directory and not info.base_name.startswith((".", "_"))
        )

    def _register(self, sql: str) -> dict[str, int | None]:
        """(Re-)register the views of the tables ``sql`` reads: listing a table's files
        again is how a query sees what was written since the last one. Each table's
        generation (see :meth:`_generations`) as it was before its files were listed."""
        names = referenced(sql)
        tables = self.list_tables() if names is None else sorted(names)
        generations = self._generations(tables)
        for name in tables:
            frame = self._read(name)
            if frame is not None:
                frame.createOrReplaceTempView(quote(name))
                self._views.add(name)
            elif name in self._views:
                self._spark.catalog.dropTempView(quote(name))
                self._views.discard(name)
        return generations

    def _generations(self, tables: Iterable[str]) -> dict[str, int | None]:
        """Per table, when its schema file was written: a table made whole (``_write_new``)
        writes its own, so a replacement changes it; ``None`` without one."""
        tables = list(tables)
        paths = [f"{self._root}/{name}/{SCHEMA_FILE}" for name in tables]
        found = self._fs.get_file_info(paths) if paths else []
        return {
            name: info.mtime_ns if info.type == pafs.FileType.File else None
            for name, info in zip(tables, found, strict=True)
        }

    def _read(self, table: str) -> DataFrame | None:
        """The table as queries see it (hidden partition columns dropped), or ``None``."""
        stored = self._stored_schema(table)
        if stored is None:
            return None
        frame = self._spark.read.schema(stored).parquet(f"{self._uri}/{table}")
        hidden = [name for name in (DAY, INTERVAL) if name in stored.fieldNames()]
        return frame.drop(*hidden) if hidden else frame

    def _stored_schema(self, table: str) -> StructType | None:
        if table in EVENT_TABLES:
            return event_schema(table)
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

    def replace_table(self, table: str, data: pa.Table, fence: Fence | None = None) -> None:
        with self._writing(table, fence):
            self._write_new(table, self._frame(data))

    def replace_interval(
        self,
        table: str,
        column: str,
        interval: Interval,
        data: pa.Table,
        fence: Fence | None = None,
    ) -> None:
        """Replace the rows whose ``column`` lies in ``interval``.

        The table is partitioned by ``_interval``, the interval each part was
        published for. Publishing the same interval again, the usual case,
        overwrites its partition alone. When intervals differ (a changed
        schedule, a run over other bounds), the partitions it overlaps are
        rewritten, in the same write, without their rows inside it. Both rely
        on each interval's rows lying inside it, which the runner checks.
        """
        key = _interval_key(interval)
        with self._writing(table, fence) as stored:
            if stored is not None and INTERVAL not in stored.fieldNames():
                raise QueryError(
                    f"{table} was written whole, not by interval",
                    hint=f"remove the folder {self._root}/{table} and backfill the pipeline",
                )
            columns = _columns(data, stored)
            data = framed(data, columns)
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
            partitioned = StructType([*columns.fields, StructField(INTERVAL, StringType())])
            if written:
                frame = self._spark.createDataFrame(pa.concat_tables(written), schema=partitioned)
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
                self._write_schema(f"{self._root}/{table}", partitioned)

    def swap_tables(
        self, swaps: Mapping[str, str], drop: Sequence[str] = (), fences: Sequence[Fence] = ()
    ) -> None:
        """Folder by folder: each built folder renamed into its table's place (the old one
        moved aside first, as a full refresh does), then the dropped folders removed. Atomic
        per table on a local disk; a reader may see one table new and another still old."""
        with self._write_lock:
            for fence in fences:
                self._fence(fence)
            for live, built in swaps.items():
                if self._fs.get_file_info(f"{self._root}/{built}").type == pafs.FileType.Directory:
                    self._swap(live, built)
            for name in drop:
                if self._fs.get_file_info(f"{self._root}/{name}").type == pafs.FileType.Directory:
                    self._fs.delete_dir(f"{self._root}/{name}")

    def load_arrivals(
        self, table: str, interval: Interval, path: str, fence: Fence | None = None
    ) -> None:
        """The interval's file in its day's folder, written by pyarrow (no Spark job). One
        file replaced whole: a stalled holder's load puts back the same rows, so the fence
        is not needed."""
        if table not in EVENT_TABLES:
            raise QueryError(f"{table} is not an event table")
        try:
            self._events.load(table, interval, path)
        except (OSError, pa.ArrowException) as exc:
            raise StoreUnavailable(self.name, reason(exc)) from exc

    def delete_arrivals(self, table: str, before: datetime, limit: int) -> int:
        raise QueryError(
            "a Spark warehouse is not a hot store: it keeps every event offloaded to it",
            hint="delete old received_day folders under events/ with the bucket's lifecycle",
        )

    def drop_before(self, table: str, column: str, before: datetime, limit: int) -> int:
        """Whole partitions, oldest first, each a folder deleted (no Spark job): the event
        tables' days of ``received_at``, an output's ``_interval`` folders (every row of
        a published interval lies inside it, so an interval that ends by ``before`` holds
        only older rows)."""
        try:
            if table in EVENT_TABLES:
                if column != "received_at":
                    raise QueryError(f"{table} is partitioned by received_at, not {column}")
                return self._events.drop_days(table, before, limit)
            with self._write_lock:
                stored = self._stored_schema(table)
                if stored is None:
                    return 0
                if INTERVAL not in stored.fieldNames():
                    raise QueryError(
                        f"{table} is replaced whole by every run: it has no intervals to drop",
                        hint="retain is for incremental pipelines",
                    )
                ends = sorted((_interval_end(key), key) for key in self._partitions(table))
                dropped = 0
                for end, key in ends:
                    if end > before:
                        break
                    folder = f"{self._root}/{table}/{INTERVAL}={key}"
                    dropped += count_rows(self._fs, folder)
                    self._fs.delete_dir(folder)
                    if dropped >= limit:
                        break
                return dropped
        except (OSError, pa.ArrowException) as exc:
            raise StoreUnavailable(self.name, reason(exc)) from exc

    def delete_matching(self, table: str, column: str, values: Sequence[str]) -> int:
        """File by file with pyarrow (no Spark job): each Parquet file of ``table`` that holds
        a matching row is written again without it, under a hidden name, then moved over the
        old one, keeping its folder (partition) and name, so the layout stays as it was."""
        if not values:
            return 0
        wanted = pa.array(list(values), pa.string())
        selector = pafs.FileSelector(f"{self._root}/{table}", allow_not_found=True, recursive=True)
        deleted = 0
        # A file written before the column was added lacks it; no file having it is a typo.
        present: set[str] = set()
        with self._write_lock:
            try:
                for info in self._fs.get_file_info(selector):
                    name = info.base_name
                    if info.type != pafs.FileType.File or name.startswith((".", "_")):
                        continue
                    if not name.endswith(".parquet"):
                        continue
                    deleted += self._delete_in_file(info.path, column, wanted, present)
            except (OSError, pa.ArrowException) as exc:
                raise StoreUnavailable(self.name, reason(exc)) from exc
        if present and column not in present:
            raise MissingColumn(table, column, present - {INTERVAL})
        return deleted

    def _delete_in_file(self, path: str, column: str, wanted: pa.Array, present: set[str]) -> int:
        rows = pq.read_table(path, filesystem=self._fs)
        present.update(rows.column_names)
        if column not in rows.column_names:
            return 0
        matched = pc.fill_null(pc.is_in(rows[column].cast(pa.string()), value_set=wanted), False)
        count = pc.sum(matched).as_py() or 0
        if not count:
            return 0
        folder, _, name = path.rpartition("/")
        temporary = f"{folder}/.{name}.{uuid.uuid4().hex}.tmp"
        pq.write_table(rows.filter(pc.invert(matched)), temporary, filesystem=self._fs,
                       compression="zstd")  # fmt: skip
        # Spark's local file system keeps a checksum beside each file it wrote; the old
        # file's would refuse the new one. Without it, the file is read unchecked.
        checksum = f"{folder}/.{name}.crc"
        if self._fs.get_file_info(checksum).type == pafs.FileType.File:
            self._fs.delete_file(checksum)
        self._fs.move(temporary, path)
        return int(count)

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
    def _writing(self, table: str, fence: Fence | None = None) -> Iterator[StructType | None]:
        """Serialise writes, fenced first when ``fence`` is given; yield the table's stored
        schema; Spark's errors become :class:`QueryError`, a store that cannot be written
        :class:`StoreUnavailable`."""
        if table in EVENT_TABLES:
            raise QueryError(
                f"{table} is written by the collector only",
                hint="events reach the store through ingest (the collector or an import)",
            )
        with self._write_lock:
            try:
                if fence is not None:
                    self._fence(fence)
                yield self._stored_schema(table)
            except (PySparkException, Py4JJavaError, pa.ArrowException) as exc:
                raise QueryError(reason(exc)) from None
            except (OSError, Py4JNetworkError) as exc:
                raise StoreUnavailable(self.name, reason(exc)) from None

    def _fence(self, fence: Fence) -> None:
        path = f"{self._root}/{FENCES}/{fence.name}"
        try:
            with self._fs.open_input_stream(path) as file:
                accepted = int(file.read().decode() or 0)
        except FileNotFoundError:
            accepted = 0
        if accepted > fence.token:
            raise Fenced(fence.name, fence.token)
        self._fs.create_dir(f"{self._root}/{FENCES}", recursive=True)
        temporary = f"{self._root}/{FENCES}/.{uuid.uuid4().hex}.tmp"
        with self._fs.open_output_stream(temporary) as file:
            file.write(str(fence.token).encode())
        self._fs.move(temporary, path)

    def _frame(self, data: pa.Table, stored: StructType | None = None) -> DataFrame:
        """``data`` as a Spark DataFrame, its columns in the stored table's order."""
        columns = _columns(data, stored)
        return self._spark.createDataFrame(framed(data, columns), schema=columns)

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
        with self._write_lock:
            for view in list(self._views):
                self._spark.catalog.dropTempView(quote(view))
            self._views.clear()
        self._events.forget()
