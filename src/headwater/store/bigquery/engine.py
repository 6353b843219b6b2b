"""The BigQuery store: where a company already keeps its data.

- ``events`` is partitioned by day of ``received_at`` and clustered by
  ``source`` and ``event``, so an interval by arrival reads only its days.
- Rows go in with load jobs (Parquet written by Arrow): free, atomic per job.
  Exact dedupe has no unique index to lean on, so a batch is loaded into a
  staging table and merged into ``events`` only where ``(source,
  message_id)`` is not already there within the dedupe window; the merge is
  one statement, so a batch is stored whole or not at all. This store has
  one writer (an import, or one collector); BigQuery serialises merges into
  one table anyway.
- Every query is dry-run first and refused, before it costs anything, when it
  would bill more than ``max_bytes_billed``; the real run carries the same
  limit, so BigQuery itself refuses to go over it.
- An interval is replaced by a multi-statement transaction (``DELETE`` the
  interval, ``INSERT`` it from a staging table), a whole table by a load job
  that truncates it.
"""

from __future__ import annotations

import io
import re
import uuid
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import IO, Any, Literal

import pyarrow as pa
import pyarrow.parquet as pq

from headwater.core.errors import ConfigError
from headwater.core.extras import MissingExtra
from headwater.core.types import Interval
from headwater.store import schema
from headwater.store.bigquery.errors import classify, transient
from headwater.store.engine import (
    Cost,
    Fence,
    IngestBatch,
    Selected,
    map_in_process,
    refuse_replayed,
)
from headwater.store.errors import Fenced, MissingColumn, QueryError, StoreUnavailable, first_line
from headwater.store.readonly import check_read_only

_PARAMETER_TYPES: tuple[tuple[type, str], ...] = (
    (bool, "BOOL"),
    (int, "INT64"),
    (float, "FLOAT64"),
    (datetime, "TIMESTAMP"),
    (date, "DATE"),
    (str, "STRING"),
)
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
Partition = Literal["HOUR", "DAY"]
#: A partition's decorator (``table$2026120413``) by the unit the table is partitioned by.
_PARTITION_FORMATS: dict[str, str] = {"HOUR": "%Y%m%d%H", "DAY": "%Y%m%d"}


class BudgetExceeded(QueryError):
    """A query's dry run says it would bill more than the byte budget."""


class BigQueryEngine:
    """:class:`~headwater.store.engine.Engine` over one BigQuery dataset."""

    name = "bigquery"
    dialect = "bigquery"
    shared = True
    floors = None

    def __init__(
        self,
        client: Any,
        dataset: str,
        max_bytes_billed: int,
        dedupe_window: timedelta = timedelta(days=7),
        partition: Partition = "DAY",
    ) -> None:
        self._bq = _bigquery()
        self.client = client
        self.dataset = f"{client.project}.{dataset}"
        self.max_bytes_billed = max_bytes_billed
        self.dedupe_window = dedupe_window
        #: The event tables' partitions by ``received_at``: a warehouse's are its offload
        #: interval, so one load job replaces one interval.
        self.partition = partition

    @classmethod
    def open(
        cls,
        project: str | None,
        dataset: str,
        location: str | None,
        max_bytes_billed: int,
        *,
        dedupe_window: timedelta = timedelta(days=7),
        partition: Partition = "DAY",
        client: Any = None,
    ) -> BigQueryEngine:
        """Connect (with the environment's credentials), and create the dataset and event
        tables when missing, partitioned by ``partition`` of ``received_at``. ``client``
        replaces ``bigquery.Client`` (tests)."""
        bigquery = _bigquery()
        if not _NAME.match(dataset):
            raise QueryError(f"{dataset!r} is not a BigQuery dataset name")
        try:
            client = client or bigquery.Client(project=project, location=location)
            engine = cls(client, dataset, max_bytes_billed, dedupe_window, partition)
            engine._create_tables(location)
        except (QueryError, ConfigError):
            raise
        except Exception as exc:  # google.auth and google.api_core errors alike
            if transient(exc):
                raise StoreUnavailable("bigquery", first_line(exc)) from None
            raise ConfigError(
                f"BigQuery refused the dataset {project or '(default project)'}.{dataset}: "
                f"{first_line(exc)}",
                hint="check the credentials (GOOGLE_APPLICATION_CREDENTIALS) and [store] "
                "project and dataset",
            ) from None
        return engine

    def _create_tables(self, location: str | None) -> None:
        bq = self._bq
        dataset = bq.Dataset(self.dataset)
        if location:
            dataset.location = location
        self.client.create_dataset(dataset, exists_ok=True)
        for name, arrow in (("events", schema.EVENTS), ("failed_events", schema.FAILED_EVENTS)):
            table = bq.Table(f"{self.dataset}.{name}", schema=bq_schema(arrow))
            table.time_partitioning = bq.TimePartitioning(type_=self.partition, field="received_at")
            if name == "events":
                table.clustering_fields = ["source", "event"]
            made = self.client.create_table(table, exists_ok=True)
            self._check_partitioning(name, made.time_partitioning)
            if name == "events":
                self._add_columns(made)
        fences = [bq.SchemaField("name", "STRING", "REQUIRED"), bq.SchemaField("token", "INT64")]
        self.client.create_table(
            bq.Table(f"{self.dataset}.{schema.FENCES}", fences), exists_ok=True
        )

    def _add_columns(self, events: Any) -> None:
        """An events table made by an older version gets the columns added since (nullable:
        BigQuery adds them to the schema without rewriting the table)."""
        present = {field.name for field in events.schema or []}
        added = [
            field
            for field in bq_schema(schema.EVENTS)
            if field.name in schema.ADDED_EVENT_COLUMNS and field.name not in present
        ]
        if added and present:
            events.schema = [*events.schema, *added]
            self.client.update_table(events, ["schema"])

    def _check_partitioning(self, name: str, found: Any) -> None:
        """An existing event table must be partitioned as this engine loads it: by
        ``received_at``, in partitions of ``self.partition``."""
        unit = getattr(found, "type_", None)
        field = getattr(found, "field", None)
        if unit == self.partition and field == "received_at":
            return
        what = (
            f"partitioned by {unit.lower()} of {field or 'ingestion time'}"
            if unit
            else "not partitioned"
        )
        fix = {"HOUR": '"1h"', "DAY": '"1d"'}.get(unit or "") if field == "received_at" else None
        hint = f"copy it into a table partitioned by {self.partition.lower()} of received_at"
        if fix is not None:
            hint = f"set [warehouse] offload_interval = {fix} to load it as it is, or {hint}"
        raise ConfigError(
            f"{self.dataset}.{name} is {what}; Headwater loads and reads it in partitions of "
            f"one {self.partition.lower()} of received_at",
            hint=hint,
        )

    # -- jobs -----------------------------------------------------------------

    def _parameters(self, params: Mapping[str, object]) -> list[Any]:
        bq = self._bq
        result = []
        for name, value in params.items():
            kind = next((t for cls, t in _PARAMETER_TYPES if isinstance(value, cls)), None)
            if kind is None:
                raise QueryError(f"parameter {name} holds a {type(value).__name__}")
            result.append(bq.ScalarQueryParameter(name, kind, value))
        return result

    def _config(
        self, params: Mapping[str, object], strings: Mapping[str, Sequence[str]], **extra: Any
    ) -> Any:
        """``strings``: arrays of strings (an erasure's ids, for ``IN UNNEST(@name)``), apart
        from ``params``, whose values must be scalars."""
        arrays = [self._bq.ArrayQueryParameter(n, "STRING", list(v)) for n, v in strings.items()]
        return self._bq.QueryJobConfig(
            default_dataset=self.dataset,
            query_parameters=self._parameters(params) + arrays,
            **extra,
        )

    def dry_run(
        self,
        sql: str,
        params: Mapping[str, object] | None = None,
        strings: Mapping[str, Sequence[str]] | None = None,
    ) -> int:
        """Bytes ``sql`` would bill, from BigQuery's dry run (free)."""
        config = self._config(params or {}, strings or {}, dry_run=True, use_query_cache=False)
        return int(self._job(sql, config).total_bytes_processed or 0)

    def _run(
        self,
        sql: str,
        params: Mapping[str, object] | None = None,
        fence: Fence | None = None,
        strings: Mapping[str, Sequence[str]] | None = None,
    ) -> Any:
        """Dry-run, refuse over budget, then run with the budget as BigQuery's own limit; a
        script that raised the fence's error is :class:`Fenced`."""
        planned = self.dry_run(sql, params, strings)
        if planned > self.max_bytes_billed:
            raise BudgetExceeded(
                f"the query would bill {planned:,} bytes, over the budget of "
                f"{self.max_bytes_billed:,}",
                hint="filter on the partition column (received_at, or the interval's column), "
                "or raise [store] max_bytes_billed",
            )
        config = self._config(
            params or {}, strings or {}, maximum_bytes_billed=self.max_bytes_billed
        )
        job = self._job(sql, config)
        try:
            return job.result()
        except Exception as exc:
            if fence is not None and _FENCED in str(exc):
                raise Fenced(fence.name, fence.token) from None
            raise classify(exc) from None

    def _job(self, sql: str, config: Any) -> Any:
        try:
            return self.client.query(sql, job_config=config)
        except Exception as exc:
            raise classify(exc) from None

    def _load(self, table: str, data: pa.Table, disposition: str) -> None:
        out = io.BytesIO()
        pq.write_table(data, out)
        out.seek(0)
        self._load_file(table, out, disposition)

    def _load_file(self, table: str, source: IO[bytes], disposition: str) -> None:
        bq = self._bq
        config = bq.LoadJobConfig(source_format=bq.SourceFormat.PARQUET,
                                  write_disposition=disposition)  # fmt: skip
        try:
            self.client.load_table_from_file(source, table, job_config=config).result()
        except Exception as exc:
            raise classify(exc) from None

    def _staging(self, data: pa.Table) -> str:
        """Load ``data`` into a new staging table that expires within a day (so a process
        killed before it drops the table leaves nothing that bills for long)."""
        name = f"{self.dataset}._hw_stage_{uuid.uuid4().hex[:12]}"
        self._load(name, data, "WRITE_TRUNCATE")
        try:
            table = self.client.get_table(name)
            table.expires = datetime.now(UTC) + timedelta(days=1)
            self.client.update_table(table, ["expires"])
        except Exception as exc:
            self._drop(name)
            raise classify(exc) from None
        return name

    def _drop(self, table: str) -> None:
        self.client.delete_table(table, not_found_ok=True)

    # -- collector --------------------------------------------------------------

    def ingest(self, batch: IngestBatch) -> pa.Array:
        refuse_replayed(self.name, batch)
        events = batch.events
        new = pa.array([True] * events.num_rows, pa.bool_())
        if events.num_rows:
            stage = self._staging(events)
            try:
                # Which ids are new, then the merge that inserts exactly those (one writer).
                known = self._run(
                    f"SELECT s.source, s.message_id FROM `{stage}` s JOIN events e "
                    "USING (source, message_id) WHERE e.received_at >= @since",
                    {"since": self._since(events)},
                ).to_arrow()
                seen = set(zip(known["source"].to_pylist(), known["message_id"].to_pylist(),
                               strict=True))  # fmt: skip
                pairs = zip(events["source"].to_pylist(), events["message_id"].to_pylist(),
                            strict=True)  # fmt: skip
                new = pa.array([pair not in seen for pair in pairs], pa.bool_())
                columns = ", ".join(f"`{c}`" for c in schema.EVENTS.names)
                self._run(
                    f"MERGE events e USING `{stage}` s "
                    "ON e.source = s.source AND e.message_id = s.message_id "
                    "AND e.received_at >= @since "
                    f"WHEN NOT MATCHED THEN INSERT ({columns}) VALUES ({columns})",
                    {"since": self._since(events)},
                )
            finally:
                self._drop(stage)
        if batch.failed.num_rows:
            self._load(f"{self.dataset}.failed_events", batch.failed, "WRITE_APPEND")
        return new

    def _since(self, events: pa.Table) -> datetime:
        """The dedupe looks back from the batch's oldest arrival by the dedupe window (a
        partition filter: only those days are read)."""
        oldest: datetime = min(events["received_at"].to_pylist())
        return oldest - self.dedupe_window

    def prune_dedupe(self, before_us: int) -> int:
        """The dedupe reads ``events`` itself (by partition): nothing to prune."""
        return 0

    # -- generic ----------------------------------------------------------------

    def query(self, sql: str, params: Sequence[object] = ()) -> pa.Table:
        """One read of the dataset's tables, decided by parsing (dry-run and billed like any
        query)."""
        check_read_only(sql, self.dialect, self.list_tables())
        if params:
            raise QueryError(
                "positional parameters are not supported on BigQuery",
                hint="write the values into the query, or use @name parameters",
            )
        table: pa.Table = self._run(sql).to_arrow()
        return table

    def select(self, sql: str, params: Mapping[str, object]) -> Selected:
        result = self._run(sql, params)
        table = result.to_arrow()
        return Selected(table, None)

    def map_batches(
        self,
        sql: str,
        params: Mapping[str, object],
        fn: Callable[[pa.RecordBatch], pa.RecordBatch],
        schema: pa.Schema,
    ) -> pa.Table:
        """In this process, over the query's result (BigQuery runs no Python), read a page
        at a time: a page is scored and dropped before the next is read, so the features
        are never all here at once (the scored rows are, until they are published)."""
        pages = self._run(sql, params).to_arrow_iterable()
        return map_in_process(pages, fn, schema)

    def result_schema(self, sql: str, params: Mapping[str, object]) -> pa.Schema:
        """The columns ``sql`` gives, from its dry run (free), as the Arrow types its result
        would have."""
        job = self._job(sql, self._config(params, {}, dry_run=True, use_query_cache=False))
        return pa.schema([_arrow_field(f) for f in job.schema or []])

    def execute(self, sql: str, params: Sequence[object] = ()) -> None:
        if params:
            raise QueryError("positional parameters are not supported on BigQuery")
        self._run(sql)

    def append(self, table: str, data: pa.Table) -> None:
        self._load(f"{self.dataset}.{_checked(table)}", data, "WRITE_APPEND")

    def replace_table(self, table: str, data: pa.Table, fence: Fence | None = None) -> None:
        """A load job that truncates the table (its schema may change with the data). A
        fenced replace checks and records the token in one statement just before: BigQuery
        cannot put a load job or a table's DDL in a transaction."""
        if fence is not None:
            self._run(_fenced("", fence), _fence_params(fence), fence)
        self._load(f"{self.dataset}.{_checked(table)}", data, "WRITE_TRUNCATE")

    def replace_interval(
        self,
        table: str,
        column: str,
        interval: Interval,
        data: pa.Table,
        fence: Fence | None = None,
    ) -> None:
        target = f"{self.dataset}.{_checked(table)}"
        column = _checked(column)
        columns = ", ".join(f"`{_checked(c)}`" for c in data.column_names)
        bounds: dict[str, object] = {"start": interval.start, "end": interval.end}
        if column in data.column_names and pa.types.is_date(data.schema.field(column).type):
            # A DATE column compares with DATE bounds only.
            bounds = {"start": interval.start.date(), "end": interval.end.date()}
        # Partitioned by day of the interval's column: replacing or reading an interval
        # bills its days, not the whole table.
        partition = ""
        if column in data.column_names:
            kind = data.schema.field(column).type
            if pa.types.is_date(kind):
                partition = f" PARTITION BY `{column}`"
            elif pa.types.is_timestamp(kind):
                partition = f" PARTITION BY TIMESTAMP_TRUNC(`{column}`, DAY)"
        stage = self._staging(data)
        try:
            self._run(
                f"CREATE TABLE IF NOT EXISTS `{target}`{partition} "
                f"AS SELECT * FROM `{stage}` LIMIT 0"
            )
            replace = (
                f"DELETE FROM `{target}` WHERE `{column}` >= @start AND `{column}` < @end; "
                f"INSERT INTO `{target}` ({columns}) SELECT {columns} FROM `{stage}`; "
            )
            if fence is not None:
                replace = _fenced(replace, fence)
                bounds = {**bounds, **_fence_params(fence)}
            self._run(f"BEGIN TRANSACTION; {replace}COMMIT TRANSACTION;", bounds, fence)
        finally:
            self._drop(stage)

    def upsert(self, table: str, key: Sequence[str], data: pa.Table) -> None:
        if not key:
            raise QueryError("upsert needs at least one key column")
        target = f"{self.dataset}.{_checked(table)}"
        on = " AND ".join(f"t.`{_checked(k)}` = s.`{k}`" for k in key)
        columns = ", ".join(f"`{_checked(c)}`" for c in data.column_names)
        updates = ", ".join(f"`{c}` = s.`{c}`" for c in data.column_names if c not in key)
        matched = f"WHEN MATCHED THEN UPDATE SET {updates} " if updates else ""
        stage = self._staging(data)
        try:
            self._run(f"CREATE TABLE IF NOT EXISTS `{target}` AS SELECT * FROM `{stage}` LIMIT 0")
            self._run(
                f"MERGE `{target}` t USING `{stage}` s ON {on} {matched}"
                f"WHEN NOT MATCHED THEN INSERT ({columns}) VALUES ({columns})"
            )
        finally:
            self._drop(stage)

    def load_arrivals(
        self, table: str, interval: Interval, path: str, fence: Fence | None = None
    ) -> None:
        """One load job that truncates the interval's partition (``events$2026120413``):
        free, atomic, and a repeat replaces rather than adds. No query is billed: the fence
        is not checked (that would be a query), and need not be, since a stalled holder's
        load replaces the partition with the same rows."""
        suffix = _PARTITION_FORMATS[self.partition]
        unit = timedelta(hours=1) if self.partition == "HOUR" else timedelta(days=1)
        if interval.end - interval.start != unit or interval.start != _truncated(
            interval.start, self.partition
        ):
            raise QueryError(
                f"{interval} is not one {self.partition.lower()} partition of {table}",
                hint="offload whole partitions of received_at",
            )
        partition = f"{self.dataset}.{_checked(table)}${interval.start.strftime(suffix)}"
        with open(path, "rb") as source:
            self._load_file(partition, source, "WRITE_TRUNCATE")

    def delete_arrivals(self, table: str, before: datetime, limit: int) -> int:
        raise QueryError(
            "BigQuery is a warehouse, not a hot store: it keeps every event offloaded to it",
            hint="expire old partitions with the dataset's partition expiration instead",
        )

    def drop_before(self, table: str, column: str, before: datetime, limit: int) -> int:
        """One ``DELETE`` of the whole partitions that end by ``before`` (the event tables'
        partitions of ``received_at``, an output's days of its time column): a DELETE
        whose filter on the partition column covers whole partitions is a metadata
        operation, which BigQuery neither scans for nor bills (the dry run says 0 bytes),
        so ``limit`` does not apply. An output not partitioned by ``column`` is deleted
        from all the same, billed as a scan, within the byte budget."""
        name = _checked(table)
        column = _checked(column)
        events = name in ("events", "failed_events")
        if events and column != "received_at":
            raise QueryError(f"{name} is partitioned by received_at, not {column}")
        whole = _truncated(before, self.partition if events else "DAY")
        cut: datetime | date = whole
        if not events:
            try:
                found = self.client.get_table(f"{self.dataset}.{name}")
            except Exception as exc:
                raise classify(exc) from None
            kinds = {f.name: f.field_type for f in found.schema or ()}
            if kinds.get(column) == "DATE":
                cut = whole.date()  # a DATE column compares with a DATE bound only
        result = self._run(
            f"DELETE FROM `{self.dataset}.{name}` WHERE `{column}` < @before", {"before": cut}
        )
        return int(getattr(result, "num_dml_affected_rows", None) or 0)

    def delete_matching(self, table: str, column: str, values: Sequence[str]) -> int:
        """One DML ``DELETE`` with the values as an array parameter. A table that does not
        exist has nothing to delete; one that lacks the column is refused."""
        _checked(table), _checked(column)
        if not values or table not in self._table_ids():
            return 0
        try:
            found = self.client.get_table(f"{self.dataset}.{_checked(table)}")
        except Exception as exc:
            raise classify(exc) from None
        present = {f.name for f in getattr(found, "schema", None) or []}
        if column not in present:
            raise MissingColumn(table, column, present)
        statement = (
            f"DELETE FROM `{self.dataset}.{_checked(table)}` "
            f"WHERE CAST(`{_checked(column)}` AS STRING) IN UNNEST(@values)"
        )
        done = self._run(statement, strings={"values": [str(v) for v in values]})
        return int(getattr(done, "num_dml_affected_rows", None) or 0)

    def estimate_cost(self, sql: str, params: Mapping[str, object] | None = None) -> Cost:
        return Cost(bytes_scanned=self.dry_run(sql, params))

    def list_tables(self) -> list[str]:
        return sorted(name for name in self._table_ids() if schema.listed(name))

    def _table_ids(self) -> list[str]:
        """Every table of the dataset, staging and built ones too."""
        try:
            return [t.table_id for t in self.client.list_tables(self.dataset)]
        except Exception as exc:
            raise classify(exc) from None

    def swap_tables(
        self, swaps: Mapping[str, str], drop: Sequence[str] = (), fences: Sequence[Fence] = ()
    ) -> None:
        """Table by table: a copy job (free, and atomic for its table) truncates the live
        table with the built one, which is then deleted. BigQuery's transactions take no
        DDL or copy: a reader may see one table new and another still old."""
        for fence in fences:
            self._run(_fenced("", fence), _fence_params(fence), fence)
        present = set(self._table_ids())
        bq = self._bq
        for live, built in swaps.items():
            if built not in present:
                continue
            config = bq.CopyJobConfig(write_disposition="WRITE_TRUNCATE")
            source = f"{self.dataset}.{_checked(built)}"
            try:
                self.client.copy_table(
                    source, f"{self.dataset}.{_checked(live)}", job_config=config
                ).result()
            except Exception as exc:
                raise classify(exc) from None
            self._drop(source)
        for name in drop:
            self._drop(f"{self.dataset}.{_checked(name)}")

    def checkpoint(self) -> None:
        """BigQuery has nothing to fold."""

    def close(self) -> None:
        self.client.close()


def bq_schema(arrow: pa.Schema) -> list[Any]:
    """BigQuery columns for an Arrow schema (JSON text stays STRING: JSON_VALUE reads it)."""
    from google.cloud import bigquery

    fields = []
    for field in arrow:
        kind = field.type
        if pa.types.is_timestamp(kind):
            name = "TIMESTAMP" if kind.tz else "DATETIME"
        elif pa.types.is_boolean(kind):
            name = "BOOL"
        elif pa.types.is_integer(kind):
            name = "INT64"
        elif pa.types.is_floating(kind):
            name = "FLOAT64"
        elif pa.types.is_date(kind):
            name = "DATE"
        else:
            name = "STRING"
        mode = "NULLABLE" if field.nullable else "REQUIRED"
        fields.append(bigquery.SchemaField(field.name, name, mode=mode))
    return fields


#: BigQuery's column types as its Arrow results give them.
_ARROW_TYPES: dict[str, pa.DataType] = {
    "INTEGER": pa.int64(),
    "INT64": pa.int64(),
    "FLOAT": pa.float64(),
    "FLOAT64": pa.float64(),
    "NUMERIC": pa.decimal128(38, 9),
    "BIGNUMERIC": pa.decimal256(76, 38),
    "BOOLEAN": pa.bool_(),
    "BOOL": pa.bool_(),
    "STRING": pa.string(),
    "BYTES": pa.binary(),
    "TIMESTAMP": pa.timestamp("us", tz="UTC"),
    "DATETIME": pa.timestamp("us"),
    "DATE": pa.date32(),
    "TIME": pa.time64("us"),
    "JSON": pa.string(),
    "GEOGRAPHY": pa.string(),
}


def _arrow_field(field: Any) -> pa.Field:
    """A dry run's column (a ``SchemaField``) as an Arrow field."""
    kind = field.field_type.upper()
    if kind in ("RECORD", "STRUCT"):
        arrow: pa.DataType = pa.struct([_arrow_field(f) for f in field.fields])
    else:
        arrow = _ARROW_TYPES.get(kind, pa.string())
    if field.mode == "REPEATED":
        arrow = pa.list_(arrow)
    return pa.field(field.name, arrow, nullable=field.mode != "REQUIRED")


def _bigquery() -> Any:
    try:
        from google.cloud import bigquery
    except ImportError:
        raise MissingExtra("bigquery", 'engine = "bigquery"', "google-cloud-bigquery") from None
    return bigquery


#: Raised inside a fenced script when a newer token was accepted; found again in the error.
_FENCED = "headwater: fenced"


def _fenced(statements: str, fence: Fence) -> str:
    """``statements`` preceded by the fence: refuse when a larger token was accepted for the
    name, else record this one. Inside a transaction, concurrent fenced writes conflict and
    one is refused by BigQuery itself."""
    table = f"`{schema.FENCES}`"
    return (
        f"IF EXISTS (SELECT 1 FROM {table} WHERE name = @fence_name AND token > @fence_token) "
        f"THEN RAISE USING MESSAGE = '{_FENCED}'; END IF; "
        f"MERGE {table} f USING (SELECT @fence_name AS name, @fence_token AS token) s "
        "ON f.name = s.name WHEN MATCHED THEN UPDATE SET token = s.token "
        "WHEN NOT MATCHED THEN INSERT (name, token) VALUES (s.name, s.token); "
    ) + statements


def _fence_params(fence: Fence) -> dict[str, object]:
    return {"fence_name": fence.name, "fence_token": fence.token}


def _truncated(moment: datetime, partition: Partition) -> datetime:
    moment = moment.replace(minute=0, second=0, microsecond=0)
    return moment if partition == "HOUR" else moment.replace(hour=0)


def _checked(name: str) -> str:
    if not _NAME.match(name):
        raise QueryError(f"{name!r} is not a plain table or column name")
    return name
