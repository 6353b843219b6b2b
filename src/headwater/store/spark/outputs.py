"""Pipeline outputs in the Spark store: columns, and the ``_interval`` partitions."""

from __future__ import annotations

from datetime import UTC, datetime

import pyarrow as pa
from pyspark.errors import PySparkException
from pyspark.sql.pandas.types import from_arrow_schema
from pyspark.sql.types import StructType

from headwater.core.types import Interval
from headwater.store.errors import QueryError
from headwater.store.spark.events import DAY
from headwater.store.spark.session import reason

#: The hidden partition column of incremental outputs: the interval each part was
#: published for, ``<start>_<end>`` (UTC, ``%Y%m%dT%H%M%SZ``).
INTERVAL = "_interval"
_KEY_TIME = "%Y%m%dT%H%M%SZ"


def _visible(stored: StructType) -> StructType:
    return StructType([f for f in stored.fields if f.name not in (DAY, INTERVAL)])


def _columns(data: pa.Table, stored: StructType | None) -> StructType:
    """The Spark columns of ``data``: those of the stored table, which they must match."""
    try:
        columns = from_arrow_schema(data.schema)
    except (TypeError, PySparkException) as exc:
        raise QueryError(f"Spark cannot hold these columns: {reason(exc)}") from None
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


def _bounds(key: str) -> tuple[datetime, datetime]:
    start, end = (datetime.strptime(t, _KEY_TIME).replace(tzinfo=UTC) for t in key.split("_"))
    return start, end


def _overlaps(key: str, interval: Interval) -> bool:
    start, end = _bounds(key)
    return start < interval.end and interval.start < end


def _interval_end(key: str) -> datetime:
    """When the interval of partition ``key`` ends."""
    return _bounds(key)[1]


def _describe(columns: StructType) -> str:
    return ", ".join(f"{f.name} {f.dataType.simpleString()}" for f in columns.fields)
