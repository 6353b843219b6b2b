"""BigQuery's UTC calendar functions on DuckDB by epoch arithmetic, not time zone lookups.

DuckDB converts a TIMESTAMPTZ to its civil time through ICU for the session's zone even
when that is UTC; the DuckDB rendering moves between the two as microseconds since the
epoch instead (``duckdb_sql.utc_by_arithmetic``). These tests hold it to the answers
computed in Python, over instants before the epoch, at the ends of DuckDB's range, on
leap days and at every microsecond boundary, in sessions whose zone is not UTC.
"""

from __future__ import annotations

import random
from datetime import UTC, date, datetime, timedelta

import duckdb
import pytest

from headwater.process.ranges import truncate
from headwater.process.sql import parse, render

UNITS = [
    ("MICROSECOND", "MICROSECOND"),
    ("MILLISECOND", "MILLISECOND"),
    ("SECOND", "SECOND"),
    ("MINUTE", "MINUTE"),
    ("HOUR", "HOUR"),
    ("DAY", "DAY"),
    ("WEEK", "WEEK_SUNDAY"),
    ("WEEK(MONDAY)", "WEEK_MONDAY"),
    ("WEEK(SATURDAY)", "WEEK_SATURDAY"),
    ("ISOWEEK", "ISOWEEK"),
    ("MONTH", "MONTH"),
    ("QUARTER", "QUARTER"),
    ("YEAR", "YEAR"),
]


def instants() -> list[datetime]:
    fixed = [
        datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(1970, 1, 1, tzinfo=UTC),
        datetime(1900, 2, 28, 23, 30, 0, 500000, tzinfo=UTC),
        datetime(1600, 2, 29, 12, 0, tzinfo=UTC),
        datetime(2024, 2, 29, 23, 59, 59, 999999, tzinfo=UTC),
        datetime(2026, 3, 29, 1, 30, tzinfo=UTC),  # Europe's clocks change in this hour
        datetime(2026, 4, 5, 14, 45, tzinfo=UTC),  # and Chatham's in this one
        datetime(1, 1, 1, 0, 0, 0, 1, tzinfo=UTC),
        datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC),
    ]
    rng = random.Random(20261205)
    start = datetime(1800, 1, 1, tzinfo=UTC)
    span = int((datetime(2200, 1, 1, tzinfo=UTC) - start).total_seconds() * 1_000_000)
    drawn = [start + timedelta(microseconds=rng.randrange(span)) for _ in range(300)]
    return fixed + drawn


def duckdb_sql(bigquery: str) -> str:
    return render(parse(bigquery, "bigquery", "t.sql"), "duckdb")


def session(zone: str) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    con.execute(f"SET TimeZone = '{zone}'")
    values = [(i, t) for i, t in enumerate(instants())]
    con.execute("CREATE TABLE events (i INTEGER, received_at TIMESTAMPTZ)")
    con.executemany("INSERT INTO events VALUES (?, ?)", values)
    con.execute("INSERT INTO events VALUES (-1, NULL)")
    return con


def micros(moment: datetime) -> int:
    return (moment - EPOCH) // timedelta(microseconds=1)


EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@pytest.mark.parametrize("zone", ["UTC", "Pacific/Chatham", "America/New_York"])
def test_timestamp_trunc_is_utc_truncation_whatever_the_session_zone(zone: str) -> None:
    con = session(zone)
    columns = ", ".join(
        f"TIMESTAMP_TRUNC(received_at, {u}) AS u{n}" for n, (u, _) in enumerate(UNITS)
    )
    query = duckdb_sql(f"SELECT i, {columns} FROM events ORDER BY i")
    assert "AT TIME ZONE" not in query
    # Compared as microseconds since the epoch: Python's datetime ends at year 9999, and
    # the week of 9999-12-31 is still in it, but its conversions through a zone are not.
    rows = con.execute(
        f"SELECT i, {', '.join(f'EPOCH_US(u{n})' for n in range(len(UNITS)))} FROM ({query})"
    ).fetchall()
    moments = dict(enumerate(instants()))
    assert rows[0] == (-1, *[None] * len(UNITS))
    checked = 0
    for row in rows[1:]:
        moment = moments[row[0]]
        for (unit, name), got in zip(UNITS, row[1:], strict=True):
            try:
                expected = truncate(moment, name)
            except OverflowError:  # the week holding 0001-01-01 starts in year 0
                continue
            assert got == micros(expected), (moment, unit)
            checked += 1
    assert checked > 300 * len(UNITS)
    types = {t for (t,) in con.execute(f"SELECT DISTINCT typeof(u0) FROM ({query})").fetchall()}
    assert types == {"TIMESTAMP WITH TIME ZONE"}


@pytest.mark.parametrize("zone", ["Asia/Kolkata", "Pacific/Chatham"])
def test_utc_dates_and_civil_times_ignore_the_session_zone(zone: str) -> None:
    con = session(zone)
    query = duckdb_sql(
        "SELECT i, DATE(received_at, 'UTC') AS d, TIMESTAMP(DATE(received_at, 'UTC')) AS t, "
        "DATETIME(CAST(received_at AS TIMESTAMP)) AS c, "
        "DATE(CAST(received_at AS TIMESTAMP)) AS e FROM events WHERE i >= 0 ORDER BY i"
    )
    assert "AT TIME ZONE" not in query
    moments = dict(enumerate(instants()))
    outer = f"SELECT i, d, EPOCH_US(t), EPOCH_US(c), e FROM ({query}) WHERE i >= 0 ORDER BY i"
    for i, d, t, c, e in con.execute(outer).fetchall():
        moment = moments[i]
        day: date = moment.date()
        assert (d, e) == (day, day), moment
        assert t == micros(datetime(day.year, day.month, day.day, tzinfo=UTC)), moment
        assert c == micros(moment), moment


def test_a_named_zone_still_goes_through_the_zone_rules() -> None:
    # Only UTC is arithmetic; a day in Kolkata is the zone's day, DST and all.
    query = duckdb_sql(
        "SELECT TIMESTAMP_TRUNC(TIMESTAMP '2026-03-08 06:30:00+00', DAY, 'America/New_York') AS d"
    )
    assert "AT TIME ZONE 'America/New_York'" in query
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    assert con.execute(query).fetchall() == [(datetime(2026, 3, 8, 5, tzinfo=UTC),)]


@pytest.mark.parametrize("zone", ["Pacific/Chatham", "America/New_York"])
def test_the_built_in_tables_timestamp_columns_are_known_to_be_timestamps(zone: str) -> None:
    # DATE(received_at) of the stored column, without a cast or a zone to show its type.
    con = session(zone)
    query = duckdb_sql(
        "SELECT i, DATE(received_at) AS d, CAST(received_at AS DATE) AS e, "
        "DATETIME(received_at) AS c FROM events WHERE i >= 0 ORDER BY i"
    )
    assert "MAKE_TIMESTAMP(EPOCH_US(received_at))" in query
    moments = dict(enumerate(instants()))
    outer = f"SELECT i, d, e, EPOCH_US(c) FROM ({query}) ORDER BY i"
    rows = con.execute(outer).fetchall()
    assert len(rows) == len(moments)
    for i, d, e, c in rows:
        moment = moments[i]
        assert (d, e) == (moment.date(), moment.date()), moment
        assert c == micros(moment), moment


def test_a_table_of_the_same_name_in_with_is_not_taken_for_events() -> None:
    # Its received_at is a string here: EPOCH_US of it would fail.
    query = duckdb_sql(
        "WITH events AS (SELECT '2026-03-08' AS received_at) "
        "SELECT DATE(received_at) AS d FROM events"
    )
    assert "EPOCH_US" not in query
    assert duckdb.connect().execute(query).fetchall() == [(date(2026, 3, 8),)]
