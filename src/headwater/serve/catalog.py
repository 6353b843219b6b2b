"""The datasets the read API can serve, with their schemas.

A dataset is a pipeline's output (or an event table): its key, and where it
is read — the engine's table of its name, or a table in another database
(a PostgreSQL sink with ``serve = true``), through any :class:`Reader`. The
runtime says which; the catalog asks the reader for the schema (a ``LIMIT
0`` query) and keeps it a few seconds.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlglot import exp

from headwater.serve.query import Dataset, Reader
from headwater.store.engine import Engine
from headwater.store.errors import QueryError

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
            dataset = _elsewhere(name, served, served.reader, served.table)
        elif name in self._engine.list_tables():
            empty = exp.select("*").from_(exp.table_(name, quoted=True)).limit(0)
            schema = self._reader.select(empty.sql(self._reader.dialect), {}).table.schema
            dataset = Dataset(name, served.key, schema, self._reader)
        else:
            return None
        if dataset is not None:
            self._cache[name] = (time.monotonic(), dataset)
        return dataset


def _elsewhere(name: str, served: Served, reader: Reader, table: tuple[str, str]) -> Dataset | None:
    """A dataset in another database; ``None`` while its table does not exist there (the
    sink has not received its first interval)."""
    empty = exp.select("*").from_(exp.table_(table[1], db=table[0], quoted=True)).limit(0)
    try:
        schema = reader.select(empty.sql(reader.dialect), {}).table.schema
    except QueryError:
        return None
    return Dataset(name, served.key, schema, reader, table)
