"""The event tables of the Spark store: Parquet files by day of arrival, deduped in memory.

``events`` and ``failed_events`` are partitioned by the UTC day of
``received_at`` (``received_day=YYYY-MM-DD``, a folder level the views hide).
The collector's writer appends them with pyarrow, without a Spark job: one new
file per day per commit, written under a hidden name and renamed, so a reader
never sees part of a file. The dedupe is exact against the events stored
inside the dedupe window (whose start the collector moves with
``prune_dedupe``; before that, every stored event): their ``(source,
message_id)`` are read from the files on the first ingest and then kept in
memory (some 150 bytes per event in the window), which is only right because
**one process writes the event tables** (the one that runs the collector;
nothing else may ingest into the same warehouse).
"""

from __future__ import annotations

import shutil
import threading
import uuid
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq
from pyspark.sql.pandas.types import from_arrow_schema
from pyspark.sql.types import DateType, StructField, StructType

from headwater.core.clock import from_us
from headwater.core.types import Interval
from headwater.store import schema
from headwater.store.engine import IngestBatch

#: The hidden partition column of the event tables: the UTC day of ``received_at``.
DAY = "received_day"
EVENT_TABLES = {"events": schema.EVENTS, "failed_events": schema.FAILED_EVENTS}
_COPY_BYTES = 8 << 20


class EventFiles:
    """Appends the event tables of one warehouse, with the dedupe window in memory."""

    def __init__(self, filesystem: pafs.FileSystem, root: str) -> None:
        self._fs = filesystem
        self._root = root
        #: ``source NUL message_id`` of the events stored in the dedupe window, by day of
        #: arrival, and when each arrived (µs), so that the window's start can move.
        self._seen: dict[date, dict[str, int]] = {}
        #: The dedupe window's start (µs), which the collector moves by ``prune``.
        self._window_start = 0
        self._window_loaded = False
        self._lock = threading.Lock()

    def ingest(self, batch: IngestBatch) -> pa.Array:
        # The collector's writer, and an import, may ingest from different threads.
        with self._lock:
            # Checked before anything is written: a refused batch leaves no file.
            events = _conform("events", batch.events, schema.EVENTS)
            failed = _conform("failed_events", batch.failed, schema.FAILED_EVENTS)
            new = self._append_events(events)
            for day, rows in _by_day(failed):
                self._write_day("failed_events", day, rows)
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

    def load(self, table: str, interval: Interval, path: str) -> None:
        """The arrivals of ``interval`` as one file, ``offload-<start>.parquet`` in its day's
        folder, copied under a hidden name and moved over any earlier one: loading the same
        interval again replaces its file (a partition overwrite at the file's grain)."""
        day = interval.start.date()
        if interval.end > datetime.combine(day + timedelta(days=1), time(), UTC):
            raise pa.ArrowInvalid(f"{interval} spans more than one day of arrival")
        folder = f"{self._root}/{table}/{DAY}={day.isoformat()}"
        name = f"offload-{interval.start:%Y%m%dT%H%M%S}.parquet"
        temporary = f"{folder}/.{name}.{uuid.uuid4().hex}.tmp"
        with self._lock:
            self._fs.create_dir(folder, recursive=True)
            with open(path, "rb") as source, self._fs.open_output_stream(temporary) as out:
                shutil.copyfileobj(source, out, _COPY_BYTES)
            self._fs.move(temporary, f"{folder}/{name}")

    def drop_days(self, table: str, before: datetime, limit: int) -> int:
        """Retention: delete the day folders of ``table`` whose day ends by ``before``,
        oldest first, until ``limit`` rows went; return how many rows (from the files'
        footers, not a scan)."""
        prefix = f"{DAY}="
        selector = pafs.FileSelector(f"{self._root}/{table}", allow_not_found=True)
        days = sorted(
            (date.fromisoformat(info.base_name.removeprefix(prefix)), info.path)
            for info in self._fs.get_file_info(selector)
            if info.type == pafs.FileType.Directory and info.base_name.startswith(prefix)
        )
        dropped = 0
        with self._lock:
            for day, folder in days:
                if datetime.combine(day + timedelta(days=1), time(), UTC) > before:
                    break
                dropped += count_rows(self._fs, folder)
                self._fs.delete_dir(folder)
                # Its ids are older than the dedupe window (retention keeps at least that).
                self._seen.pop(day, None)
                if dropped >= limit:
                    break
        return dropped

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

    def prune(self, before_us: int) -> int:
        """Move the window's start to ``before_us``: forget the ids received before."""
        with self._lock:
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

    def forget(self) -> None:
        with self._lock:
            self._seen.clear()
            self._window_loaded = False


def event_schema(table: str) -> StructType:
    columns = from_arrow_schema(EVENT_TABLES[table])
    return StructType(
        [StructField(f.name, f.dataType, True) for f in columns.fields]
        + [StructField(DAY, DateType(), True)]
    )


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


def count_rows(filesystem: pafs.FileSystem, folder: str) -> int:
    """The rows of the Parquet files under ``folder``, from their footers; hidden files (a
    write in progress) are not counted."""
    return int(ds.dataset(folder, filesystem=filesystem, format="parquet").count_rows())


def _conform(table: str, rows: pa.Table, arrow_schema: pa.Schema) -> pa.Table:
    """``rows`` as ``arrow_schema``; a NULL in a NOT NULL column refuses them."""
    for field in arrow_schema:
        nulls = rows[field.name].null_count if field.name in rows.column_names else 0
        if not field.nullable and nulls:
            raise pa.ArrowInvalid(f"{table}.{field.name} is NULL in {nulls} rows")
    return rows.cast(arrow_schema)
