"""The datasets the read API can serve, with their schemas.

A dataset is a pipeline's output (or an event table): its key, and where it
is read — the engine's table of its name, or a table in another database
(a PostgreSQL sink with ``serve = true``), through any :class:`Reader`. The
runtime says which; the catalog asks the reader for the schema (a ``LIMIT
0`` query) and keeps it a few seconds.

A PostgreSQL sink keeps a nested column (a list, a struct) as ``jsonb``, which
reads back as its text: served from there, such a column is decoded into the
type the store gives it, so a dataset answers the same wherever it is read.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import pyarrow as pa
from sqlglot import exp

from headwater.core import jsonio
from headwater.serve.query import Dataset, Reader
from headwater.store.collation import DATABASE_ROW, collation
from headwater.store.engine import Engine, Selected
from headwater.store.errors import QueryError, StoreUnavailable
from headwater.store.schema import rebuilt

_SCHEMA_TTL = 5.0


@dataclass(frozen=True)
class Served:
    """How a dataset is served: its key, and the reader and ``(schema, table)`` that hold it
    when that is not the engine's table of the dataset's name."""

    key: tuple[str, ...]
    reader: Reader | None = None
    table: tuple[str, str] | None = None


#: name -> how each dataset that can be served is served (pipelines and built-ins).
ServedFn = Callable[[], dict[str, Served]]


class DatasetCatalog:
    """Datasets with their schemas, kept a few seconds."""

    def __init__(self, engine: Engine, served: ServedFn, *, reader: Reader | None = None) -> None:
        """``reader``: how the engine's tables are read, when not through the engine itself
        (the embedded store's reader, which keeps its cursors)."""
        self._engine = engine
        self._reader: Reader = reader or engine
        self._served = served
        self._cache: dict[str, tuple[float, Dataset]] = {}

    def declared(self, name: str) -> bool:
        """Whether ``name`` is a pipeline (or event table), computed yet or not."""
        return name in self._served()

    def get(self, name: str) -> Dataset | None:
        """The dataset, or ``None`` when it is not declared or not computed yet."""
        cached = self._cache.get(name)
        if cached is not None and time.monotonic() - cached[0] < _SCHEMA_TTL:
            return cached[1]
        served = self._served().get(name)
        if served is None:
            return None
        if served.reader is not None and served.table is not None:
            try:
                # Only the nested columns' types: the store need not answer for it.
                stored = self._stored(name)
            except (QueryError, StoreUnavailable):
                stored = None
            dataset = _elsewhere(name, served, served.reader, served.table, stored)
        elif (stored := self._stored(name)) is not None:
            dataset = Dataset(
                name, served.key, stored, self._reader, collate=needs_collate(self._reader)
            )
        else:
            return None
        if dataset is not None:
            self._cache[name] = (time.monotonic(), dataset)
        return dataset

    def _stored(self, name: str) -> pa.Schema | None:
        """The schema of the store's table ``name``; ``None`` while it does not exist."""
        if name not in self._engine.list_tables():
            return None
        empty = exp.select("*").from_(exp.table_(name, quoted=True)).limit(0)
        return self._reader.select(empty.sql(self._reader.dialect), {}).table.schema


def _elsewhere(
    name: str, served: Served, reader: Reader, table: tuple[str, str], stored: pa.Schema | None
) -> Dataset | None:
    """A dataset in another database; ``None`` while its table does not exist there (the
    sink has not received its first interval)."""
    empty = exp.select("*").from_(exp.table_(table[1], db=table[0], quoted=True)).limit(0)
    try:
        schema = reader.select(empty.sql(reader.dialect), {}).table.schema
    except QueryError:
        return None
    # The sink's table holds nested values as JSON and decimals as NUMERIC of any scale
    # (a page's scale would be its values'): both are served as the store's types.
    restored = {
        field.name: stored.field(field.name).type
        for field in schema
        if stored is not None
        and field.name in stored.names
        and (
            (pa.types.is_string(field.type) and pa.types.is_nested(stored.field(field.name).type))
            or (
                pa.types.is_decimal(field.type)
                and pa.types.is_decimal(stored.field(field.name).type)
                and field.type != stored.field(field.name).type
            )
        )
    }
    if restored:
        reader = _Restored(reader, restored)
        for column, kind in restored.items():
            index = schema.get_field_index(column)
            schema = schema.set(index, schema.field(index).with_type(kind))
    return Dataset(name, served.key, schema, reader, table, collate=needs_collate(reader))


#: Per PostgreSQL reader (by identity, the reader kept), whether its database compares
#: text other than byte by byte: looked at once.
_COLLATES: dict[int, tuple[Reader, bool]] = {}


def needs_collate(reader: Reader) -> bool:
    """Whether text read through ``reader`` must be compared with ``COLLATE "C"``: a
    PostgreSQL database whose collation is not byte order (``C``, ``C.UTF-8`` keep the
    plain column, whose index orders pages)."""
    if reader.dialect != "postgres":
        return False
    known = _COLLATES.get(id(reader))
    if known is not None and known[0] is reader:
        return known[1]
    rows = reader.select(DATABASE_ROW, {}).table.column("d").to_pylist()
    found = jsonio.loads(rows[0]) if rows and isinstance(rows[0], str) else {}
    needed = not collation(found)[1]
    _COLLATES[id(reader)] = (reader, needed)
    return needed


class _Restored:
    """A reader whose columns come back as the store's types: JSON text as the nested
    values it holds, a NUMERIC at the store's scale."""

    def __init__(self, inner: Reader, types: dict[str, pa.DataType]) -> None:
        self.dialect = inner.dialect
        self._inner = inner
        self._types = types

    def select(self, sql: str, params: Mapping[str, object]) -> Selected:
        found = self._inner.select(sql, params)
        table = found.table
        for column, kind in self._types.items():
            index = table.schema.get_field_index(column)
            if index < 0:
                continue
            field = table.schema.field(index)
            if pa.types.is_decimal(field.type) and pa.types.is_decimal(kind):
                table = table.set_column(
                    index, field.with_type(kind), table.column(index).cast(kind)
                )
                continue
            if not pa.types.is_string(field.type):
                continue
            texts = table.column(index).to_pylist()
            values = [None if text is None else jsonio.loads(text) for text in texts]
            decoded = _typed(values, kind)
            if decoded is None:
                continue  # served as the text it is
            table = table.set_column(index, table.schema.field(index).with_type(kind), decoded)
        return Selected(table, found.rows_scanned)


def _typed(values: list[object], kind: pa.DataType) -> pa.Array | None:
    """Decoded JSON values as ``kind``; times and decimals, which JSON holds as text, by way
    of the same type with text in their place. ``None`` when they are not of that type.

    >>> kind = pa.list_(pa.timestamp("s", "UTC"))
    >>> [str(t) for t in _typed([["2026-12-04T10:00:00+00:00"]], kind)[0].as_py()]
    ['2026-12-04 10:00:00+00:00']
    >>> _typed([["0.100000000", None]], pa.list_(pa.decimal128(38, 9)))[0].as_py()
    [Decimal('0.100000000'), None]
    """
    try:
        return pa.array(values, kind)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        pass
    try:
        return pa.array(values, rebuilt(kind, _time_as_text)).cast(kind)
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None


def _time_as_text(kind: pa.DataType) -> pa.DataType:
    """What JSON holds as text: times, and decimals (written as strings, to keep digits)."""
    as_text = pa.types.is_timestamp(kind) or pa.types.is_date(kind) or pa.types.is_decimal(kind)
    return pa.string() if as_text else kind
