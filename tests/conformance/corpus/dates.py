"""Dates and times: literals, EXTRACT, truncation, arithmetic, formatting and parsing, zones."""

from __future__ import annotations

from datetime import date

from tests.conformance.case import Case, ts

FUNCTIONS = "https://cloud.google.com/bigquery/docs/reference/standard-sql/"
TIMESTAMP_FUNCTIONS = FUNCTIONS + "timestamp_functions"
DATE_FUNCTIONS = FUNCTIONS + "date_functions"

CASES: list[Case] = [
    Case(
        name="extract_hour_from_timestamp",
        sql="""SELECT
  EXTRACT(HOUR FROM TIMESTAMP '2008-12-25 05:30:00+00') AS h""",
        expect=[(5,)],
        source=TIMESTAMP_FUNCTIONS + "#extract",
    ),
    Case(
        name="timestamp_literal_is_utc",
        sql="SELECT TIMESTAMP '2024-03-10 02:30:00' AS t, DATE '2024-03-10' AS d",
        expect=[(ts("2024-03-10 02:30:00"), date(2024, 3, 10))],
        source=FUNCTIONS + "data-types#timestamp_type",
    ),
]
