"""Pipeline outputs in the Spark store: columns, and the ``_interval`` partitions."""

from __future__ import annotations

import re
from datetime import UTC, datetime

import pyarrow as pa
from pyspark.errors import PySparkException
from pyspark.sql.pandas.types import from_arrow_schema, to_arrow_schema
from pyspark.sql.types import DataType, StructType

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
    if {(f.name, _kind(f.dataType)) for f in visible.fields} != {
        (f.name, _kind(f.dataType)) for f in columns
    }:
        raise QueryError(
            f"the columns ({_describe(columns)}) differ from the table's ({_describe(visible)})"
        )
    return visible


#: Types an earlier release wrote where the same column is now written wider or as it
#: is (a DATETIME as a ``timestamp``, Spark's ``int`` results): the table keeps its own.
_EARLIER = re.compile(r"\b(timestamp_ntz|int|smallint|tinyint)\b")


def _kind(kind: DataType) -> str:
    """A column's type as compared with the stored table's (see ``_EARLIER``)."""
    return _EARLIER.sub(
        lambda m: "timestamp" if m.group(1) == "timestamp_ntz" else "bigint", kind.simpleString()
    )


def framed(data: pa.Table, columns: StructType) -> pa.Table:
    """``data`` as the Arrow types of ``columns``, in their order, for ``createDataFrame``
    with them as its schema (without one Spark takes a DATETIME for a TIMESTAMP)."""
    try:
        return data.select(columns.fieldNames()).cast(to_arrow_schema(columns, timezone="UTC"))
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise QueryError(
            f"the rows do not fit the table's columns ({_describe(columns)}): {exc}",
            hint="the table was written by an earlier release with narrower types; "
            "rebuild it (headwater apply, or a full run) to take the new ones",
        ) from None


def int64(table: pa.Table) -> pa.Table:
    """``table`` with every integer column INT64, as BigQuery's and DuckDB's (Spark's
    LENGTH, ROW_NUMBER and ARRAY_LENGTH are ``int``), lists of them too: the same pipeline
    has the same column types whichever engine ran it.

    >>> int64(pa.table({"n": pa.array([1], pa.int32())})).schema.field("n").type
    DataType(int64)
    """
    for index, field in enumerate(table.schema):
        wider = _wider(field.type)
        if wider != field.type:
            table = table.set_column(index, field.with_type(wider), table.column(index).cast(wider))
    return table


def _wider(kind: pa.DataType) -> pa.DataType:
    if pa.types.is_integer(kind) and kind.bit_width < 64 and pa.types.is_signed_integer(kind):
        return pa.int64()
    if pa.types.is_list(kind) or pa.types.is_large_list(kind):
        item = _wider(kind.value_type)
        if item != kind.value_type:
            return pa.list_(kind.value_field.with_type(item))
    return kind


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
