"""Webhook bodies made column by column are the bytes ``to_pylist`` would have made."""

from __future__ import annotations

import decimal
from datetime import date

import pyarrow as pa
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from headwater.core import jsonio
from headwater.deliver.jsonrows import rows

#: Microseconds from 0001-01-01 to 9999-12-31T23:59:59.999999, Python's datetime's range.
FIRST, LAST = -62_135_596_800_000_000, 253_402_300_799_999_999
PER_UNIT = {"s": 1_000_000, "ms": 1_000, "us": 1}


@settings(max_examples=60, deadline=None)
@given(
    unit=st.sampled_from(["s", "ms", "us"]),
    tz=st.sampled_from([None, "UTC", "Europe/Paris", "+05:30"]),
    micros=st.lists(
        st.one_of(
            st.none(),
            st.integers(FIRST + 86_400_000_000, LAST - 86_400_000_000),
            st.sampled_from([0, FIRST, LAST, 1_700_000_000_000_000, 1_700_000_000_100_000]),
        ),
        max_size=40,
    ),
)
def test_timestamps_are_written_as_the_encoder_writes_datetimes(
    unit: str, tz: str | None, micros: list[int | None]
) -> None:
    if tz not in (None, "UTC"):  # a zone's offset can carry the ends past year 9999
        day = 86_400_000_000
        micros = [m for m in micros if m is None or FIRST + day < m < LAST - day]
    values = [None if m is None else m // PER_UNIT[unit] for m in micros]
    table = pa.table({"at": pa.array(values, pa.timestamp(unit, tz)), "n": range(len(values))})
    assert jsonio.dumps(rows(table)) == jsonio.dumps(table.to_pylist())


def test_every_other_type_is_as_to_pylist_makes_it() -> None:
    table = pa.table(
        {
            "text": ['a "quoted" \\ é', None],
            "day": [date(2026, 11, 1), None],
            "price": pa.array([decimal.Decimal("1.20"), None], pa.decimal128(5, 2)),
            "tags": [[1, 2], None],
            "extra": [{"a": 1}, None],
            "ratio": [float("nan"), 1e300],
            "raw": [b"x", None],
            "ok": [True, None],
        }
    )
    assert jsonio.dumps(rows(table)) == jsonio.dumps(table.to_pylist())


def test_odd_shapes_too() -> None:
    same_name = pa.table([pa.array([1]), pa.array([2])], names=["a", "a"])
    assert rows(same_name) == same_name.to_pylist()
    no_columns = pa.table({"a": [1, 2]}).drop_columns(["a"])
    assert rows(no_columns) == no_columns.to_pylist()
    chunked = pa.concat_tables([pa.table({"at": pa.array([0], pa.timestamp("us", "UTC"))})] * 2)
    assert jsonio.loads(jsonio.dumps(rows(chunked))) == [{"at": "1970-01-01T00:00:00Z"}] * 2


@pytest.mark.parametrize(
    "names",
    [
        ["user id", "class", "_x", "é", 'a"b', "", "1", "__init__", "__slots__", "x-y"],
        ["self"],
        ["__weakref__"],
        ["__dict__"],
    ],
)
def test_any_column_names(names: list[str]) -> None:
    table = pa.table([pa.array([1, None]) for _ in names], names=names)
    assert jsonio.dumps(rows(table)) == jsonio.dumps(table.to_pylist())


def test_a_timestamp_python_cannot_hold_fails_as_to_pylist_does() -> None:
    table = pa.table({"at": pa.array([LAST + 1], pa.timestamp("us", "UTC"))})
    with pytest.raises(OverflowError):
        table.to_pylist()
    with pytest.raises(OverflowError):
        rows(table)
