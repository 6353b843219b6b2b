"""A recording stand-in for ``google.cloud.bigquery.Client``.

BigQuery cannot run on this machine and no emulator of it installs here, so the
tests and benchmarks that drive the BigQuery engine give it this client: it
records every call (query jobs with their config, load jobs with their Parquet
bytes, tables created and dropped) and answers dry runs and results as a test
configures it.
"""

from __future__ import annotations

import io
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from types import SimpleNamespace
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from google.api_core import exceptions as google_errors
from google.cloud import bigquery

PROJECT = "hw-test"


@dataclass
class QueryCall:
    sql: str
    config: bigquery.QueryJobConfig = field(repr=False)

    @property
    def dry(self) -> bool:
        return bool(self.config.dry_run)

    @property
    def params(self) -> dict[str, tuple[str, object]]:
        return {p.name: (p.type_, p.value) for p in self.config.query_parameters}

    @property
    def api_params(self) -> list[dict[str, Any]]:
        return [p.to_api_repr() for p in self.config.query_parameters]

    @property
    def default_dataset(self) -> str | None:
        ref = self.config.default_dataset
        return None if ref is None else f"{ref.project}.{ref.dataset_id}"


@dataclass
class LoadCall:
    destination: str
    config: bigquery.LoadJobConfig = field(repr=False)
    parquet: bytes = field(repr=False)

    @property
    def table(self) -> pa.Table:
        return pq.read_table(io.BytesIO(self.parquet))


@dataclass
class TableCall:
    kind: str  # create_dataset, create_table, update_table, delete_table, list_tables
    name: str
    obj: Any = None
    options: dict[str, Any] = field(default_factory=dict)


class FakeJob:
    def __init__(
        self,
        *,
        total_bytes_processed: int | None = None,
        answer: pa.Table | None = None,
        error: Exception | None = None,
        num_dml_affected_rows: int | None = None,
        schema: list[bigquery.SchemaField] | None = None,
        page_rows: int | None = None,
    ) -> None:
        self.total_bytes_processed = total_bytes_processed
        self.num_dml_affected_rows = num_dml_affected_rows
        self.schema = schema
        self._answer = answer
        self._error = error
        self._page_rows = page_rows
        #: Pages handed out by to_arrow_iterable so far.
        self.pages_read = 0

    def result(self) -> FakeJob:
        if self._error is not None:
            raise self._error
        return self

    def to_arrow(self) -> pa.Table:
        return self._answer if self._answer is not None else pa.table({})

    def to_arrow_iterable(self) -> Iterator[pa.RecordBatch]:
        """The answer a page of ``page_rows`` at a time, handed out as they are asked for."""
        for page in self.to_arrow().to_batches(max_chunksize=self._page_rows):
            self.pages_read += 1
            yield page


def _table_id(table: Any) -> str:
    if isinstance(table, str):
        return table
    return f"{table.project}.{table.dataset_id}.{table.table_id}"


class FakeClient:
    """Stands in for ``google.cloud.bigquery.Client``: records every call, and answers

    - dry runs with ``bytes_for`` (first substring of the SQL that matches, else
      ``default_bytes``), refusing a named parameter the SQL uses but the job does not
      bind, as BigQuery does;
    - real query jobs with ``answers`` (first matching substring, else an empty table),
      and DML jobs with the rows ``dml_rows`` says they affected,
      or fails their ``result()`` with ``failures``; a real job that would bill more
      than its ``maximum_bytes_billed`` fails too, as in BigQuery;
    - load jobs by keeping the Parquet bytes they were given;
    - a dry run's result columns with ``schemas``, and a result's pages of ``page_rows``.
    """

    def __init__(self, project: str = PROJECT) -> None:
        self.project = project
        self.calls: list[QueryCall | LoadCall | TableCall] = []
        self.default_bytes = 1_000
        self.bytes_for: list[tuple[str, int]] = []
        self.answers: list[tuple[str, pa.Table]] = []
        self.dml_rows: list[tuple[str, int]] = []
        self.failures: list[tuple[str, Exception]] = []
        self.load_error: Exception | None = None
        self.create_error: Exception | None = None
        self.tables: dict[str, Any] = {}
        self.closed = False
        #: Dry runs' result columns: (substring of the SQL, its columns).
        self.schemas: list[tuple[str, list[bigquery.SchemaField]]] = []
        #: Rows per page of a real query's result (``None``: one page per answer's chunk).
        self.page_rows: int | None = None
        self.results: list[FakeJob] = []

    # -- what the tests read
    @property
    def queries(self) -> list[QueryCall]:
        return [c for c in self.calls if isinstance(c, QueryCall)]

    @property
    def real_queries(self) -> list[QueryCall]:
        return [c for c in self.queries if not c.dry]

    @property
    def loads(self) -> list[LoadCall]:
        return [c for c in self.calls if isinstance(c, LoadCall)]

    def table_calls(self, kind: str) -> list[TableCall]:
        return [c for c in self.calls if isinstance(c, TableCall) and c.kind == kind]

    @property
    def jobs(self) -> list[QueryCall | LoadCall]:
        return [c for c in self.calls if isinstance(c, QueryCall | LoadCall)]

    # -- the client's API
    def _billed(self, sql: str) -> int:
        return next((n for part, n in self.bytes_for if part in sql), self.default_bytes)

    def query(self, sql: str, job_config: bigquery.QueryJobConfig | None = None, **_: Any) -> Any:
        config = job_config or bigquery.QueryJobConfig()
        self.calls.append(QueryCall(sql, config))
        bound = {p.name for p in config.query_parameters}
        for name in re.findall(r"(?<![@\w])@([A-Za-z_]\w*)", sql):
            if name not in bound:
                raise google_errors.BadRequest(f"Query parameter '{name}' not found")
        billed = self._billed(sql)
        if config.dry_run:
            schema = next((f for part, f in self.schemas if part in sql), None)
            return FakeJob(total_bytes_processed=billed, schema=schema)
        error = next((e for part, e in self.failures if part in sql), None)
        limit = config.maximum_bytes_billed
        if error is None and limit is not None and billed > int(limit):
            error = google_errors.BadRequest(f"Query exceeded limit for bytes billed: {limit}.")
        answer = next((t for part, t in self.answers if part in sql), None)
        affected = next((n for part, n in self.dml_rows if part in sql), None)
        job = FakeJob(
            answer=answer, error=error, num_dml_affected_rows=affected, page_rows=self.page_rows
        )
        self.results.append(job)
        return job

    def load_table_from_file(
        self, file_obj: Any, destination: Any, job_config: Any = None, **_: Any
    ) -> FakeJob:
        name = _table_id(destination)
        self.calls.append(LoadCall(name, job_config, file_obj.read()))
        if self.load_error is None:
            self.tables.setdefault(name, bigquery.Table(name))
        return FakeJob(error=self.load_error)

    def create_dataset(self, dataset: Any, exists_ok: bool = False, **_: Any) -> Any:
        self.calls.append(
            TableCall("create_dataset", dataset.dataset_id, dataset, {"exists_ok": exists_ok})
        )
        if self.create_error is not None:
            raise self.create_error
        return dataset

    def create_table(self, table: Any, exists_ok: bool = False, **_: Any) -> Any:
        name = _table_id(table)
        self.calls.append(TableCall("create_table", name, table, {"exists_ok": exists_ok}))
        self.tables[name] = table
        return table

    def get_table(self, table: Any, **_: Any) -> Any:
        name = _table_id(table)
        self.calls.append(TableCall("get_table", name))
        found = self.tables.get(name)
        return found if found is not None else bigquery.Table(name)

    def update_table(self, table: Any, fields: list[str], **_: Any) -> Any:
        name = _table_id(table)
        self.calls.append(TableCall("update_table", name, table, {"fields": list(fields)}))
        self.tables[name] = table
        return table

    def delete_table(self, table: Any, not_found_ok: bool = False, **_: Any) -> None:
        name = _table_id(table)
        self.calls.append(TableCall("delete_table", name, None, {"not_found_ok": not_found_ok}))
        self.tables.pop(name, None)

    def copy_table(
        self, sources: Any, destination: Any, job_config: Any = None, **_: Any
    ) -> FakeJob:
        source, name = _table_id(sources), _table_id(destination)
        self.calls.append(TableCall("copy_table", name, job_config, {"source": source}))
        self.tables[name] = bigquery.Table(name)
        return FakeJob()

    def list_tables(self, dataset: Any, **_: Any) -> list[Any]:
        name = dataset if isinstance(dataset, str) else f"{dataset.project}.{dataset.dataset_id}"
        self.calls.append(TableCall("list_tables", name))
        return [
            SimpleNamespace(table_id=t.rsplit(".", 1)[1])
            for t in self.tables
            if t.rsplit(".", 1)[0] == name
        ]

    def close(self) -> None:
        self.closed = True
