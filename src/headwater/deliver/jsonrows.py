"""An Arrow table's rows as the values a JSON body is written from, made column by column.

``table.to_pylist()`` makes a Python object of every value, and a timestamp costs most: a
``datetime`` with its time zone, made only for the JSON encoder to write it out as text
again. Here a timestamp column becomes that same text inside Arrow, in one pass, and every
other column becomes Python values as ``to_pylist`` makes them. Each row is then a
msgspec struct of the table's column names rather than a dict (made and encoded in C), so
the JSON is the same bytes either way (a test compares them).

>>> import pyarrow as pa
>>> from headwater.core import jsonio
>>> table = pa.table({"at": pa.array([1_700_000_000_000_000], pa.timestamp("us", "UTC"))})
>>> jsonio.dumps(rows(table))
b'[{"at":"2023-11-14T22:13:20Z"}]'
"""

from __future__ import annotations

import functools
from typing import Any

import msgspec
import pyarrow as pa
import pyarrow.compute as pc

#: What the JSON encoder writes after a timestamp of each time zone written here as text
#: (others are made Python values: the encoder writes their offset).
_SUFFIX = {None: "", "UTC": "Z"}
#: Python's datetime holds years 1 to 9999; outside them ``to_pylist`` fails, and so must
#: this, rather than write what the encoder never would.
_FIRST_US = -62_135_596_800_000_000  # 0001-01-01T00:00:00
_LAST_US = 253_402_300_799_999_999  # 9999-12-31T23:59:59.999999
_UNITS = frozenset({"s", "ms", "us"})


def rows(table: pa.Table) -> list[Any]:
    """What ``table.to_pylist()`` encodes to, for the JSON encoder: timestamps as it writes
    them (ISO 8601, ``Z`` for UTC, microseconds only when there are any)."""
    if not table.num_columns:
        return [{} for _ in range(table.num_rows)]
    names = table.column_names
    columns = [_values(column) for column in table.columns]
    row = _row_type(tuple(names))
    if row is None:
        return [dict(zip(names, values, strict=True)) for values in zip(*columns, strict=True)]
    return [row(*values) for values in zip(*columns, strict=True)]


@functools.lru_cache(maxsize=256)
def _row_type(names: tuple[str, ...]) -> type[msgspec.Struct] | None:
    """A struct with these fields, encoded as the dict of them would be; ``None`` for names
    a struct cannot have (twice the same, or one msgspec refuses): rows are dicts then."""
    if len(set(names)) != len(names):
        return None
    try:
        return msgspec.defstruct("Row", names)
    except (TypeError, ValueError):
        return None


def _values(column: pa.ChunkedArray) -> list[Any]:
    kind = column.type
    if (
        not pa.types.is_timestamp(kind)
        or kind.unit not in _UNITS
        or kind.tz not in _SUFFIX
        or not _in_range(column)
    ):
        values: list[Any] = column.to_pylist()
        return values
    # The wall-clock time in the column's zone (UTC, or none), as "YYYY-MM-DD HH:MM:SS.ffffff".
    text = column.cast(pa.timestamp("us")).cast(pa.string())
    text = pc.replace_substring(text, " ", "T", max_replacements=1)
    # The only dot is the fraction's: a whole second has none.
    text = pc.replace_substring(text, ".000000", "")
    suffix = _SUFFIX[kind.tz]
    if suffix:
        text = pc.binary_join_element_wise(text, pa.scalar(suffix), "")
    texts: list[Any] = text.to_pylist()
    return texts


def _in_range(column: pa.ChunkedArray) -> bool:
    try:
        bounds = pc.min_max(column.cast(pa.timestamp("us", column.type.tz)).cast(pa.int64()))
    except pa.ArrowInvalid:  # past microseconds' range: to_pylist says what is wrong
        return False
    low, high = bounds["min"].as_py(), bounds["max"].as_py()
    return low is None or (low >= _FIRST_US and high <= _LAST_US)
