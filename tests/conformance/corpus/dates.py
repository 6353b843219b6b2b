"""Dates and times: literals, EXTRACT, truncation, arithmetic, differences, formatting and
parsing, Unix time, explicit time zones, GENERATE_DATE_ARRAY.

BigQuery's TIMESTAMP is an instant (``expect`` holds it in UTC), DATETIME a civil
time (a naive datetime), DATE a date. Without a time zone argument, BigQuery
works in UTC, whatever the zone of the machine that runs the query.
"""

from __future__ import annotations

from datetime import date, datetime

from tests.conformance.case import Case, ts

DOCS = "https://cloud.google.com/bigquery/docs/reference/standard-sql/"
TIMESTAMP = DOCS + "timestamp_functions"
DATE = DOCS + "date_functions"
DATETIME = DOCS + "datetime_functions"
ARRAY = DOCS + "array_functions"
LEXICAL = DOCS + "lexical"
FORMAT = DOCS + "format-elements#format_elements_date_time"


def d(text: str) -> date:
    return date.fromisoformat(text)


def dt(text: str) -> datetime:
    return datetime.fromisoformat(text)


CASES: list[Case] = [
    # -- literals ----------------------------------------------------------------
    Case(
        name="date_literal",
        sql="SELECT DATE '2024-03-10' AS d",
        expect=[(d("2024-03-10"),)],
        source=LEXICAL + "#date_literals",
    ),
    Case(
        name="timestamp_literal_without_zone_is_utc",
        # 02:30 on 2024-03-10 does not exist in Los Angeles (clocks went forward).
        sql="SELECT TIMESTAMP '2024-03-10 02:30:00' AS t",
        expect=[(ts("2024-03-10 02:30:00"),)],
        source=LEXICAL + "#timestamp_literals",
    ),
    Case(
        name="timestamp_literal_with_offset_and_zone",
        sql="""SELECT
  TIMESTAMP '2024-03-10 02:30:00+09' AS east,
  TIMESTAMP '2024-03-10 02:30:00.123456-08:00' AS west,
  TIMESTAMP '2008-12-25 15:30:00 America/Los_Angeles' AS named""",
        expect=[
            (
                ts("2024-03-09 17:30:00"),
                ts("2024-03-10 10:30:00.123456"),
                ts("2008-12-25 23:30:00"),
            )
        ],
        source=LEXICAL + "#timestamp_literals",
    ),
    Case(
        name="datetime_literal",
        sql="SELECT DATETIME '2024-03-10 02:30:00.5' AS t",
        expect=[(dt("2024-03-10 02:30:00.500000"),)],
        source=LEXICAL + "#datetime_literals",
    ),
    Case(
        name="date_and_datetime_constructors",
        sql="""SELECT
  DATE(2016, 12, 25) AS d,
  DATETIME(2008, 12, 25, 5, 30, 0) AS t,
  DATE(DATETIME '2016-12-25 23:59:59') AS from_datetime""",
        expect=[(d("2016-12-25"), dt("2008-12-25 05:30:00"), d("2016-12-25"))],
        source=DATE + "#date",
    ),
    # -- EXTRACT -----------------------------------------------------------------
    Case(
        name="extract_hour_from_timestamp_literal",
        sql="""SELECT
  EXTRACT(HOUR FROM TIMESTAMP '2008-12-25 05:30:00+00') AS h""",
        expect=[(5,)],
        source=TIMESTAMP + "#extract",
    ),
    Case(
        name="extract_time_parts_from_timestamp_column",
        sql="""WITH t AS (SELECT TIMESTAMP '2008-12-25 05:30:12.345678+00' AS ts)
SELECT
  EXTRACT(HOUR FROM ts) AS h,
  EXTRACT(MINUTE FROM ts) AS mi,
  EXTRACT(SECOND FROM ts) AS s,
  EXTRACT(MILLISECOND FROM ts) AS ms,
  EXTRACT(MICROSECOND FROM ts) AS us
FROM t""",
        expect=[(5, 30, 12, 345, 345678)],
        source=TIMESTAMP + "#extract",
    ),
    Case(
        name="extract_date_parts_from_timestamp_column",
        sql="""WITH t AS (SELECT TIMESTAMP '2008-12-25 23:30:00+00' AS ts)
SELECT
  EXTRACT(YEAR FROM ts) AS y,
  EXTRACT(QUARTER FROM ts) AS q,
  EXTRACT(MONTH FROM ts) AS m,
  EXTRACT(DAY FROM ts) AS d,
  EXTRACT(DAYOFWEEK FROM ts) AS dow,
  EXTRACT(DAYOFYEAR FROM ts) AS doy,
  EXTRACT(DATE FROM ts) AS the_date
FROM t""",
        expect=[(2008, 4, 12, 25, 5, 360, d("2008-12-25"))],
        source=TIMESTAMP + "#extract",
    ),
    Case(
        name="extract_weeks_and_iso_years_from_timestamps",
        sql="""WITH Timestamps AS (
  SELECT TIMESTAMP '2005-01-03 12:34:56+00' AS timestamp_value UNION ALL
  SELECT TIMESTAMP '2007-12-31 12:00:00+00' UNION ALL
  SELECT TIMESTAMP '2009-01-01 12:00:00+00' UNION ALL
  SELECT TIMESTAMP '2009-12-31 12:00:00+00' UNION ALL
  SELECT TIMESTAMP '2017-01-02 12:00:00+00' UNION ALL
  SELECT TIMESTAMP '2017-05-26 12:00:00+00'
)
SELECT
  EXTRACT(ISOYEAR FROM timestamp_value) AS isoyear,
  EXTRACT(ISOWEEK FROM timestamp_value) AS isoweek,
  EXTRACT(YEAR FROM timestamp_value) AS year,
  EXTRACT(WEEK FROM timestamp_value) AS week
FROM Timestamps
ORDER BY timestamp_value""",
        expect=[
            (2005, 1, 2005, 1),
            (2008, 1, 2007, 52),
            (2009, 1, 2009, 0),
            (2009, 53, 2009, 52),
            (2017, 1, 2017, 1),
            (2017, 21, 2017, 21),
        ],
        source=TIMESTAMP + "#extract",
    ),
    Case(
        name="extract_week_starting_monday",
        sql="""WITH t AS (SELECT TIMESTAMP '2017-11-05 00:00:00+00' AS timestamp_value)
SELECT
  EXTRACT(WEEK(SUNDAY) FROM timestamp_value) AS week_sunday,
  EXTRACT(WEEK(MONDAY) FROM timestamp_value) AS week_monday
FROM t""",
        expect=[(45, 44)],
        source=TIMESTAMP + "#extract",
    ),
    Case(
        name="extract_in_a_named_zone",
        sql="""SELECT
  EXTRACT(DAY FROM TIMESTAMP '2008-12-25 05:30:00+00' AT TIME ZONE 'UTC') AS the_day_utc,
  EXTRACT(DAY FROM TIMESTAMP '2008-12-25 05:30:00+00' AT TIME ZONE 'America/Los_Angeles')
    AS the_day_california""",
        expect=[(25, 24)],
        source=TIMESTAMP + "#extract",
    ),
    Case(
        name="extract_from_dates_at_the_turn_of_the_year",
        sql="""SELECT
  dt,
  EXTRACT(ISOYEAR FROM dt) AS isoyear,
  EXTRACT(ISOWEEK FROM dt) AS isoweek,
  EXTRACT(YEAR FROM dt) AS year,
  EXTRACT(WEEK FROM dt) AS week
FROM UNNEST([DATE '2015-12-23', DATE '2015-12-27', DATE '2015-12-28', DATE '2016-01-01',
             DATE '2016-01-03', DATE '2016-01-04']) AS dt
ORDER BY dt""",
        expect=[
            (d("2015-12-23"), 2015, 52, 2015, 51),
            (d("2015-12-27"), 2015, 52, 2015, 52),
            (d("2015-12-28"), 2015, 53, 2015, 52),
            (d("2016-01-01"), 2015, 53, 2016, 0),
            (d("2016-01-03"), 2015, 53, 2016, 1),
            (d("2016-01-04"), 2016, 1, 2016, 1),
        ],
        source=DATE + "#extract",
    ),
    Case(
        name="extract_date_parts_from_date",
        sql="""SELECT
  EXTRACT(DAY FROM DATE '2013-12-25') AS day,
  EXTRACT(DAYOFWEEK FROM DATE '2013-12-25') AS dow,
  EXTRACT(DAYOFYEAR FROM DATE '2013-12-25') AS doy,
  EXTRACT(QUARTER FROM DATE '2013-12-25') AS q,
  EXTRACT(MONTH FROM DATE '2013-12-25') AS m""",
        expect=[(25, 4, 359, 4, 12)],
        source=DATE + "#extract",
    ),
    Case(
        name="extract_from_datetime",
        sql="""WITH t AS (SELECT DATETIME '2008-12-25 15:30:00' AS dt)
SELECT
  EXTRACT(HOUR FROM dt) AS h,
  EXTRACT(DAYOFWEEK FROM dt) AS dow,
  EXTRACT(DATE FROM dt) AS the_date
FROM t""",
        expect=[(15, 5, d("2008-12-25"))],
        source=DATETIME + "#extract",
    ),
    # -- truncation --------------------------------------------------------------
    Case(
        name="date_trunc_month_quarter_year",
        sql="""SELECT
  DATE_TRUNC(DATE '2008-12-25', MONTH) AS month,
  DATE_TRUNC(DATE '2008-12-25', QUARTER) AS quarter,
  DATE_TRUNC(DATE '2008-12-25', YEAR) AS year""",
        expect=[(d("2008-12-01"), d("2008-10-01"), d("2008-01-01"))],
        source=DATE + "#date_trunc",
    ),
    Case(
        name="date_trunc_weeks",
        sql="""WITH t AS (SELECT DATE '2017-11-05' AS day)
SELECT
  DATE_TRUNC(day, WEEK) AS sunday_week,
  DATE_TRUNC(day, WEEK(MONDAY)) AS monday_week,
  DATE_TRUNC(day, ISOWEEK) AS isoweek
FROM t""",
        expect=[(d("2017-11-05"), d("2017-10-30"), d("2017-10-30"))],
        source=DATE + "#date_trunc",
    ),
    Case(
        name="date_trunc_isoyear",
        sql="""SELECT
  DATE_TRUNC('2015-06-15', ISOYEAR) AS isoyear_boundary,
  EXTRACT(ISOYEAR FROM DATE '2015-06-15') AS isoyear_number""",
        expect=[(d("2014-12-29"), 2015)],
        source=DATE + "#date_trunc",
    ),
    Case(
        name="timestamp_trunc_day_in_zones",
        sql="""SELECT
  TIMESTAMP_TRUNC(TIMESTAMP '2008-12-25 15:30:00+00', DAY, 'UTC') AS utc,
  TIMESTAMP_TRUNC(TIMESTAMP '2008-12-25 15:30:00+00', DAY, 'America/Los_Angeles') AS la""",
        expect=[(ts("2008-12-25 00:00:00"), ts("2008-12-25 08:00:00"))],
        source=TIMESTAMP + "#timestamp_trunc",
    ),
    Case(
        # BigQuery takes the civil time's minutes and seconds off the instant: in the hour
        # New York's clock turns back (01:00-02:00 twice) each half keeps its own offset,
        # and a zone half an hour off UTC truncates on its own hours.
        name="timestamp_trunc_hour_and_minute_in_zones_across_clock_changes",
        sql="""SELECT
  TIMESTAMP_TRUNC(TIMESTAMP '2026-11-01 05:30:00+00', HOUR, 'America/New_York') AS edt,
  TIMESTAMP_TRUNC(TIMESTAMP '2026-11-01 06:30:00+00', HOUR, 'America/New_York') AS est,
  TIMESTAMP_TRUNC(TIMESTAMP '2026-11-01 05:59:59.5+00', MINUTE, 'America/New_York') AS m,
  TIMESTAMP_TRUNC(TIMESTAMP '2026-10-25 00:30:00+00', HOUR, 'Europe/Berlin') AS cest,
  TIMESTAMP_TRUNC(TIMESTAMP '2026-03-08 07:30:00+00', HOUR, 'America/New_York') AS spring,
  TIMESTAMP_TRUNC(TIMESTAMP '2026-12-01 05:10:00+00', HOUR, 'Asia/Kolkata') AS ist,
  TIMESTAMP_TRUNC(TIMESTAMP '2026-11-01 05:30:00+00', DAY, 'America/New_York') AS day""",
        expect=[
            (
                ts("2026-11-01 05:00:00"),
                ts("2026-11-01 06:00:00"),
                ts("2026-11-01 05:59:00"),
                ts("2026-10-25 00:00:00"),
                ts("2026-03-08 07:00:00"),
                ts("2026-12-01 04:30:00"),
                ts("2026-11-01 04:00:00"),
            )
        ],
        source=TIMESTAMP + "#timestamp_trunc",
    ),
    Case(
        # A civil time the clock shows twice is read with the offset in force before the
        # change (the earlier instant), as BigQuery's reference implementation does
        # (ZetaSQL's date_time_util.cc: absl's TimeZone::At(...).pre); a skipped time
        # too. Havana's clock turns back over midnight, so the day there starts at the
        # first midnight, before the input, not after it.
        name="civil_times_a_clock_shows_twice_are_the_earlier_instant",
        sql="""SELECT
  TIMESTAMP('2026-11-01 01:30:00', 'America/New_York') AS ny_repeated,
  TIMESTAMP(DATETIME '2026-10-25 02:15:00', 'Europe/Berlin') AS berlin_repeated,
  TIMESTAMP('2026-04-05 01:45:00', 'Australia/Lord_Howe') AS half_hour_change,
  TIMESTAMP('2026-03-08 02:30:00', 'America/New_York') AS ny_skipped,
  TIMESTAMP_TRUNC(TIMESTAMP '2024-11-03 04:30:00+00', DAY, 'America/Havana') AS havana_day,
  PARSE_TIMESTAMP('%Y-%m-%d %H:%M', '2026-11-01 01:05', 'America/New_York') AS parsed""",
        expect=[
            (
                ts("2026-11-01 05:30:00"),
                ts("2026-10-25 00:15:00"),
                ts("2026-04-04 14:45:00"),
                ts("2026-03-08 07:30:00"),
                ts("2024-11-03 04:00:00"),
                ts("2026-11-01 05:05:00"),
            )
        ],
        source=TIMESTAMP + "#timestamp",
    ),
    Case(
        # A zone may be an offset from UTC, [UTC](+|-)H[H][[:]MM], east of UTC positive.
        name="zones_written_as_offsets",
        sql="""SELECT
  TIMESTAMP('2026-01-01 00:00:00', '+05:30') AS plus,
  TIMESTAMP('2026-01-01 00:00:00', 'UTC-8') AS utc_minus,
  TIMESTAMP('2026-01-01 00:00:00', '-7') AS hours_only,
  DATETIME(TIMESTAMP '2026-01-01 00:00:00+00', '+0530') AS civil,
  DATE(TIMESTAMP '2026-01-01 20:00:00+00', 'UTC+5:30') AS day,
  TIMESTAMP_TRUNC(TIMESTAMP '2026-01-01 20:00:00+00', DAY, '+05:30') AS day_start,
  FORMAT_TIMESTAMP('%F %H:%M', TIMESTAMP '2026-01-01 20:00:00+00', '-03:30') AS formatted,
  EXTRACT(HOUR FROM TIMESTAMP '2026-01-01 20:00:00+00' AT TIME ZONE '+05:30') AS hour,
  DATE(TIMESTAMP '2026-01-01 23:30:00+00', '+00:00') AS zero""",
        expect=[
            (
                ts("2025-12-31 18:30:00"),
                ts("2026-01-01 08:00:00"),
                ts("2026-01-01 07:00:00"),
                datetime(2026, 1, 1, 5, 30),
                d("2026-01-02"),
                ts("2026-01-01 18:30:00"),
                "2026-01-01 16:30",
                1,
                d("2026-01-01"),
            )
        ],
        source=TIMESTAMP + "#timezone_definitions",
    ),
    Case(
        name="timestamp_trunc_without_zone_is_utc",
        sql="""WITH t AS (SELECT TIMESTAMP '2008-12-25 23:30:45.5+00' AS ts)
SELECT
  TIMESTAMP_TRUNC(ts, DAY) AS day,
  TIMESTAMP_TRUNC(ts, HOUR) AS hour,
  TIMESTAMP_TRUNC(ts, MINUTE) AS minute,
  TIMESTAMP_TRUNC(ts, MONTH) AS month
FROM t""",
        expect=[
            (
                ts("2008-12-25 00:00:00"),
                ts("2008-12-25 23:00:00"),
                ts("2008-12-25 23:30:00"),
                ts("2008-12-01 00:00:00"),
            )
        ],
        source=TIMESTAMP + "#timestamp_trunc",
    ),
    Case(
        name="timestamp_trunc_week_monday_in_zones",
        sql="""SELECT
  TIMESTAMP_TRUNC(TIMESTAMP '2017-11-06 00:00:00+12', WEEK(MONDAY), 'UTC') AS utc,
  TIMESTAMP_TRUNC(TIMESTAMP '2017-11-06 00:00:00+12', WEEK(MONDAY), 'Pacific/Auckland')
    AS auckland""",
        expect=[(ts("2017-10-30 00:00:00"), ts("2017-11-05 11:00:00"))],
        source=TIMESTAMP + "#timestamp_trunc",
    ),
    Case(
        name="timestamp_trunc_week_and_isoyear",
        sql="""WITH t AS (SELECT TIMESTAMP '2015-06-15 00:00:00+00' AS ts)
SELECT
  TIMESTAMP_TRUNC(ts, WEEK) AS week,
  TIMESTAMP_TRUNC(ts, ISOWEEK) AS isoweek,
  TIMESTAMP_TRUNC(ts, ISOYEAR) AS isoyear
FROM t""",
        expect=[(ts("2015-06-14 00:00:00"), ts("2015-06-15 00:00:00"), ts("2014-12-29 00:00:00"))],
        source=TIMESTAMP + "#timestamp_trunc",
    ),
    Case(
        name="datetime_trunc",
        sql="""WITH t AS (SELECT DATETIME '2017-11-05 15:30:00' AS dt)
SELECT
  DATETIME_TRUNC(dt, DAY) AS day,
  DATETIME_TRUNC(dt, WEEK(MONDAY)) AS monday_week,
  DATETIME_TRUNC(dt, HOUR) AS hour
FROM t""",
        expect=[(dt("2017-11-05 00:00:00"), dt("2017-10-30 00:00:00"), dt("2017-11-05 15:00:00"))],
        source=DATETIME + "#datetime_trunc",
    ),
    Case(
        name="last_day",
        sql="""SELECT
  LAST_DAY(DATE '2008-11-25', MONTH) AS month,
  LAST_DAY(DATE '2008-11-25') AS default_month,
  LAST_DAY(DATE '2008-11-10', WEEK(MONDAY)) AS week_monday""",
        expect=[(d("2008-11-30"), d("2008-11-30"), d("2008-11-16"))],
        source=DATE + "#last_day",
    ),
    # -- adding and subtracting ----------------------------------------------------
    Case(
        name="date_add_and_sub",
        sql="""WITH t AS (SELECT DATE '2008-12-25' AS day)
SELECT
  DATE_ADD(day, INTERVAL 5 DAY) AS five_later,
  DATE_SUB(day, INTERVAL 5 DAY) AS five_earlier,
  DATE_ADD(day, INTERVAL 1 WEEK) AS week_later,
  DATE_SUB(day, INTERVAL 1 YEAR) AS year_earlier
FROM t""",
        expect=[(d("2008-12-30"), d("2008-12-20"), d("2009-01-01"), d("2007-12-25"))],
        source=DATE + "#date_add",
    ),
    Case(
        name="date_add_month_at_the_end_of_a_month",
        sql="""SELECT
  DATE_ADD(DATE '2008-01-31', INTERVAL 1 MONTH) AS leap,
  DATE_ADD(DATE '2009-01-31', INTERVAL 1 MONTH) AS common,
  DATE_SUB(DATE '2008-03-31', INTERVAL 1 MONTH) AS back,
  DATE_ADD(DATE '2008-02-29', INTERVAL 1 YEAR) AS year""",
        expect=[(d("2008-02-29"), d("2009-02-28"), d("2008-02-29"), d("2009-02-28"))],
        source=DATE + "#date_add",
    ),
    Case(
        name="timestamp_add_and_sub",
        sql="""WITH t AS (SELECT TIMESTAMP '2008-12-25 15:30:00+00' AS ts)
SELECT
  TIMESTAMP_ADD(ts, INTERVAL 10 MINUTE) AS later,
  TIMESTAMP_SUB(ts, INTERVAL 10 MINUTE) AS earlier,
  TIMESTAMP_ADD(ts, INTERVAL 36 HOUR) AS hours,
  TIMESTAMP_SUB(ts, INTERVAL 1500 MILLISECOND) AS millis
FROM t""",
        expect=[
            (
                ts("2008-12-25 15:40:00"),
                ts("2008-12-25 15:20:00"),
                ts("2008-12-27 03:30:00"),
                ts("2008-12-25 15:29:58.500000"),
            )
        ],
        source=TIMESTAMP + "#timestamp_add",
    ),
    Case(
        name="timestamp_add_day_is_24_hours",
        # The night Los Angeles moves its clocks forward: a DAY is still 24 hours.
        sql="SELECT TIMESTAMP_ADD(TIMESTAMP '2024-03-09 12:00:00+00', INTERVAL 1 DAY) AS t",
        expect=[(ts("2024-03-10 12:00:00"),)],
        source=TIMESTAMP + "#timestamp_add",
    ),
    Case(
        name="datetime_add_and_sub",
        sql="""WITH t AS (SELECT DATETIME '2008-12-25 15:30:00' AS dt)
SELECT
  DATETIME_ADD(dt, INTERVAL 10 MINUTE) AS later,
  DATETIME_SUB(dt, INTERVAL 1 DAY) AS day_earlier
FROM t""",
        expect=[(dt("2008-12-25 15:40:00"), dt("2008-12-24 15:30:00"))],
        source=DATETIME + "#datetime_add",
    ),
    # -- differences -------------------------------------------------------------
    Case(
        name="date_diff_days",
        sql="""SELECT
  DATE_DIFF(DATE '2010-07-07', DATE '2008-12-25', DAY) AS days_diff,
  DATE_DIFF(DATE '2008-12-25', DATE '2010-07-07', DAY) AS negative""",
        expect=[(559, -559)],
        source=DATE + "#date_diff",
    ),
    Case(
        name="date_diff_weeks_count_sundays",
        sql="""SELECT
  DATE_DIFF(DATE '2017-10-15', DATE '2017-10-14', DAY) AS days_diff,
  DATE_DIFF(DATE '2017-10-15', DATE '2017-10-14', WEEK) AS weeks_diff""",
        expect=[(1, 1)],
        source=DATE + "#date_diff",
    ),
    Case(
        name="date_diff_year_and_isoyear",
        sql="""SELECT
  DATE_DIFF('2017-12-30', '2014-12-30', YEAR) AS year_diff,
  DATE_DIFF('2017-12-30', '2014-12-30', ISOYEAR) AS isoyear_diff""",
        expect=[(3, 2)],
        source=DATE + "#date_diff",
    ),
    Case(
        name="date_diff_week_monday_and_isoweek",
        sql="""SELECT
  DATE_DIFF('2017-12-18', '2017-12-17', WEEK) AS week_diff,
  DATE_DIFF('2017-12-18', '2017-12-17', WEEK(MONDAY)) AS week_weekday_diff,
  DATE_DIFF('2017-12-18', '2017-12-17', ISOWEEK) AS isoweek_diff""",
        expect=[(0, 1, 1)],
        source=DATE + "#date_diff",
    ),
    Case(
        name="date_diff_months_count_boundaries",
        sql="""WITH t AS (SELECT DATE '2008-10-01' AS a, DATE '2008-09-30' AS b)
SELECT
  DATE_DIFF(a, b, MONTH) AS months,
  DATE_DIFF(a, b, QUARTER) AS quarters,
  DATE_DIFF(b, a, MONTH) AS back
FROM t""",
        expect=[(1, 1, -1)],
        source=DATE + "#date_diff",
    ),
    Case(
        name="timestamp_diff_hours",
        sql="""SELECT
  TIMESTAMP_DIFF(TIMESTAMP '2010-07-07 10:20:00+00', TIMESTAMP '2008-12-25 15:30:00+00', HOUR)
    AS hours""",
        expect=[(13410,)],
        source=TIMESTAMP + "#timestamp_diff",
    ),
    Case(
        name="timestamp_diff_whole_units_toward_zero",
        sql="""WITH t AS (
  SELECT TIMESTAMP '2001-02-01 01:00:00' AS later, TIMESTAMP '2001-02-01 00:00:01' AS earlier
)
SELECT
  TIMESTAMP_DIFF(later, earlier, HOUR) AS forward,
  TIMESTAMP_DIFF(earlier, later, HOUR) AS backward,
  TIMESTAMP_DIFF(later, earlier, MINUTE) AS minutes,
  TIMESTAMP_DIFF(later, earlier, SECOND) AS seconds,
  TIMESTAMP_DIFF(later, earlier, MILLISECOND) AS millis
FROM t""",
        expect=[(0, 0, 59, 3599, 3599000)],
        source=TIMESTAMP + "#timestamp_diff",
    ),
    Case(
        name="timestamp_diff_days_negative",
        sql="""SELECT
  TIMESTAMP_DIFF(TIMESTAMP '2018-08-14', TIMESTAMP '2018-10-14', DAY) AS negative_diff""",
        expect=[(-61,)],
        source=TIMESTAMP + "#timestamp_diff",
    ),
    Case(
        name="datetime_diff_weeks_and_years",
        sql="""SELECT
  DATETIME_DIFF(DATETIME '2017-10-15 00:00:00', DATETIME '2017-10-14 00:00:00', DAY) AS days,
  DATETIME_DIFF(DATETIME '2017-10-15 00:00:00', DATETIME '2017-10-14 00:00:00', WEEK) AS weeks,
  DATETIME_DIFF(DATETIME '2017-12-30 00:00:00', DATETIME '2014-12-30 00:00:00', YEAR) AS years,
  DATETIME_DIFF(DATETIME '2017-12-30 00:00:00', DATETIME '2014-12-30 00:00:00', ISOYEAR)
    AS isoyears""",
        expect=[(1, 1, 3, 2)],
        source=DATETIME + "#datetime_diff",
    ),
    Case(
        # Boundaries of the part between them, not whole parts: 10:59 and 11:00 are an
        # hour apart (Spark counted whole hours, PostgreSQL had no translation).
        name="datetime_diff_counts_time_part_boundaries",
        sql="""SELECT
  DATETIME_DIFF(DATETIME '2026-01-01 11:00:00', DATETIME '2026-01-01 10:59:00', HOUR) AS h,
  DATETIME_DIFF(DATETIME '2026-01-01 10:59:00', DATETIME '2026-01-01 11:00:00', HOUR) AS back,
  DATETIME_DIFF(DATETIME '2026-01-02 00:00:00', DATETIME '2026-01-01 23:59:59.999', MINUTE)
    AS m,
  DATETIME_DIFF(DATETIME '1969-12-31 23:59:59.5', DATETIME '1970-01-01 00:00:00', SECOND) AS s,
  DATETIME_DIFF(DATETIME '2026-01-01 00:00:00.0011', DATETIME '2026-01-01 00:00:00.0009',
    MILLISECOND) AS ms,
  DATETIME_DIFF(DATETIME '2026-01-01 00:00:01', DATETIME '2026-01-01 00:00:00', MICROSECOND)
    AS us""",
        expect=[(1, -1, 1, -1, 1, 1_000_000)],
        source=DATETIME + "#datetime_diff",
    ),
    # -- formatting and parsing ------------------------------------------------------
    Case(
        name="format_date_common_elements",
        sql="""SELECT
  FORMAT_DATE('%Y-%m-%d', DATE '2008-12-25') AS iso,
  FORMAT_DATE('%F', DATE '2008-12-25') AS f,
  FORMAT_DATE('%b-%d-%Y', DATE '2008-12-25') AS formatted,
  FORMAT_DATE('%b %Y', DATE '2008-12-25') AS month_year,
  FORMAT_DATE('%Y%m', DATE '2008-12-05') AS yyyymm,
  FORMAT_DATE('%d/%m/%y', DATE '2008-12-05') AS short""",
        expect=[("2008-12-25", "2008-12-25", "Dec-25-2008", "Dec 2008", "200812", "05/12/08")],
        source=DATE + "#format_date",
    ),
    Case(
        name="format_date_names_of_days_and_months",
        sql="""SELECT
  FORMAT_DATE('%A', DATE '2008-12-25') AS weekday,
  FORMAT_DATE('%a', DATE '2008-12-25') AS wd,
  FORMAT_DATE('%B', DATE '2008-12-25') AS month""",
        expect=[("Thursday", "Thu", "December")],
        source=FORMAT,
    ),
    Case(
        name="format_date_x",
        sql="SELECT FORMAT_DATE('%x', DATE '2008-12-25') AS us_format",
        expect=[("12/25/08",)],
        source=DATE + "#format_date",
    ),
    Case(
        name="format_date_day_of_year",
        sql="SELECT FORMAT_DATE('%j', DATE '2008-02-05') AS doy",
        expect=[("036",)],
        source=FORMAT,
    ),
    Case(
        name="format_date_space_padded_day",
        sql="SELECT FORMAT_DATE('%e', DATE '2008-12-05') AS day",
        expect=[(" 5",)],
        source=FORMAT,
    ),
    Case(
        name="format_date_weekday_numbers",
        sql="""SELECT
  FORMAT_DATE('%u', DATE '2008-12-28') AS monday_one,
  FORMAT_DATE('%w', DATE '2008-12-28') AS sunday_zero""",
        expect=[("7", "0")],
        source=FORMAT,
    ),
    Case(
        name="format_date_iso_week_and_year",
        sql="""SELECT
  FORMAT_DATE('%V', DATE '2016-01-01') AS isoweek,
  FORMAT_DATE('%G', DATE '2016-01-01') AS isoyear""",
        expect=[("53", "2015")],
        source=FORMAT,
    ),
    Case(
        name="format_date_sunday_week",
        sql="SELECT FORMAT_DATE('%U', DATE '2008-12-25') AS week",
        expect=[("51",)],
        source=FORMAT,
    ),
    Case(
        name="format_date_quarter",
        sql="SELECT FORMAT_DATE('%Q', DATE '2008-12-25') AS quarter",
        expect=[("4",)],
        source=FORMAT,
    ),
    Case(
        name="format_timestamp_common_elements",
        sql="""WITH t AS (SELECT TIMESTAMP '2050-12-25 15:30:55+00' AS ts)
SELECT
  FORMAT_TIMESTAMP('%b-%d-%Y', ts) AS formatted,
  FORMAT_TIMESTAMP('%Y-%m-%dT%H:%M:%SZ', ts) AS iso,
  FORMAT_TIMESTAMP('%Y-%m-%d %H:%M:%S', ts) AS plain,
  FORMAT_TIMESTAMP('%F %T', ts) AS ft,
  FORMAT_TIMESTAMP('%Y-%m-%d %H:00', ts) AS hour
FROM t""",
        expect=[
            (
                "Dec-25-2050",
                "2050-12-25T15:30:55Z",
                "2050-12-25 15:30:55",
                "2050-12-25 15:30:55",
                "2050-12-25 15:00",
            )
        ],
        source=TIMESTAMP + "#format_timestamp",
    ),
    Case(
        name="format_timestamp_in_a_zone",
        sql="""SELECT
  FORMAT_TIMESTAMP('%Y-%m-%d %H:%M', TIMESTAMP '2050-12-25 15:30:55+00', 'Asia/Seoul') AS seoul,
  FORMAT_TIMESTAMP('%Y-%m-%d %H:%M', TIMESTAMP '2050-12-25 05:30:55+00', 'America/Los_Angeles')
    AS la,
  FORMAT_TIMESTAMP('%Y-%m-%d %H:%M', TIMESTAMP '2050-12-25 05:30:55+00', 'UTC') AS utc""",
        expect=[("2050-12-26 00:30", "2050-12-24 21:30", "2050-12-25 05:30")],
        source=TIMESTAMP + "#format_timestamp",
    ),
    Case(
        name="format_timestamp_c",
        sql="SELECT FORMAT_TIMESTAMP('%c', TIMESTAMP '2050-12-25 15:30:55+00', 'UTC') AS c",
        expect=[("Sun Dec 25 15:30:55 2050",)],
        source=TIMESTAMP + "#format_timestamp",
    ),
    Case(
        name="format_timestamp_twelve_hour_clock",
        sql="SELECT FORMAT_TIMESTAMP('%I:%M %p', TIMESTAMP '2050-12-25 15:30:55+00') AS t",
        expect=[("03:30 PM",)],
        source=FORMAT,
    ),
    Case(
        name="format_timestamp_fractional_seconds",
        sql="""SELECT
  FORMAT_TIMESTAMP('%H:%M:%E3S', TIMESTAMP '2008-12-25 15:30:55.123456+00') AS millis,
  FORMAT_TIMESTAMP('%H:%M:%E6S', TIMESTAMP '2008-12-25 15:30:55.123456+00') AS micros""",
        expect=[("15:30:55.123", "15:30:55.123456")],
        source=FORMAT,
    ),
    Case(
        name="format_timestamp_zone_and_offset",
        sql="""SELECT
  FORMAT_TIMESTAMP('%z', TIMESTAMP '2008-12-25 15:30:00+00', 'Asia/Seoul') AS offset""",
        expect=[("+0900",)],
        source=FORMAT,
        refused=frozenset({"duckdb", "postgres", "spark"}),
    ),
    Case(
        name="format_datetime",
        sql="""SELECT
  FORMAT_DATETIME('%b-%d-%Y', DATETIME '2008-12-25 15:30:00') AS formatted,
  FORMAT_DATETIME('%Y-%m-%d %H:%M:%S', DATETIME '2008-12-25 15:30:00') AS plain""",
        expect=[("Dec-25-2008", "2008-12-25 15:30:00")],
        source=DATETIME + "#format_datetime",
    ),
    Case(
        name="parse_date",
        sql="""SELECT
  PARSE_DATE('%Y%m%d', '20081225') AS compact,
  PARSE_DATE('%F', '2000-12-30') AS f,
  PARSE_DATE('%Y-%m-%d', '2008-12-25') AS iso,
  PARSE_DATE('%d/%m/%Y', '25/12/2008') AS european""",
        expect=[(d("2008-12-25"), d("2000-12-30"), d("2008-12-25"), d("2008-12-25"))],
        source=DATE + "#parse_date",
    ),
    Case(
        name="parse_date_with_names",
        sql="SELECT PARSE_DATE('%A %b %e %Y', 'Thursday Dec 25 2008') AS d",
        expect=[(d("2008-12-25"),)],
        source=DATE + "#parse_date",
        refused=frozenset({"spark"}),
    ),
    Case(
        name="parse_date_x",
        sql="SELECT PARSE_DATE('%x', '12/25/08') AS d",
        expect=[(d("2008-12-25"),)],
        source=DATE + "#parse_date",
    ),
    Case(
        name="safe_parse_date_of_text_that_is_no_date",
        sql="""SELECT
  SAFE.PARSE_DATE('%Y-%m-%d', 'not a date') AS nothing,
  SAFE.PARSE_DATE('%Y-%m-%d', '2008-12-25') AS something""",
        expect=[(None, d("2008-12-25"))],
        source=DOCS + "functions-reference#safe_prefix",
        refused=frozenset({"postgres"}),
    ),
    Case(
        name="parse_timestamp_is_utc",
        sql="""SELECT
  PARSE_TIMESTAMP('%Y-%m-%d %H:%M:%S', '2008-12-25 07:30:00') AS plain,
  PARSE_TIMESTAMP('%Y-%m-%dT%H:%M:%SZ', '2008-12-25T07:30:00Z') AS iso""",
        expect=[(ts("2008-12-25 07:30:00"), ts("2008-12-25 07:30:00"))],
        source=TIMESTAMP + "#parse_timestamp",
    ),
    Case(
        name="parse_timestamp_in_a_zone",
        sql="""SELECT
  PARSE_TIMESTAMP('%Y-%m-%d %H:%M:%S', '2008-12-25 07:30:00', 'Asia/Seoul') AS seoul,
  PARSE_TIMESTAMP('%Y-%m-%d %H:%M:%S', '2008-12-25 07:30:00', 'America/Los_Angeles') AS la""",
        expect=[(ts("2008-12-24 22:30:00"), ts("2008-12-25 15:30:00"))],
        source=TIMESTAMP + "#parse_timestamp",
    ),
    Case(
        name="parse_timestamp_c",
        sql="SELECT PARSE_TIMESTAMP('%c', 'Thu Dec 25 07:30:00 2008') AS parsed",
        expect=[(ts("2008-12-25 07:30:00"),)],
        source=TIMESTAMP + "#parse_timestamp",
        refused=frozenset({"spark"}),
    ),
    Case(
        name="parse_datetime",
        sql="""SELECT
  PARSE_DATETIME('%Y-%m-%d %H:%M:%S', '1998-10-18 13:45:55') AS datetime""",
        expect=[(dt("1998-10-18 13:45:55"),)],
        source=DATETIME + "#parse_datetime",
    ),
    # -- Unix time -----------------------------------------------------------------
    Case(
        name="unix_seconds_millis_micros",
        sql="""WITH t AS (SELECT TIMESTAMP '2008-12-25 15:30:00+00' AS ts)
SELECT UNIX_SECONDS(ts) AS s, UNIX_MILLIS(ts) AS ms, UNIX_MICROS(ts) AS us FROM t""",
        expect=[(1230219000, 1230219000000, 1230219000000000)],
        source=TIMESTAMP + "#unix_seconds",
    ),
    Case(
        name="unix_seconds_and_millis_truncate",
        sql="""SELECT
  UNIX_SECONDS(TIMESTAMP '1970-01-01 00:00:01.8+00') AS s,
  UNIX_MILLIS(TIMESTAMP '1970-01-01 00:00:00.0018+00') AS ms""",
        expect=[(1, 1)],
        source=TIMESTAMP + "#unix_seconds",
    ),
    Case(
        name="unix_seconds_before_1970_round_down",
        sql="SELECT UNIX_SECONDS(TIMESTAMP '1969-12-31 23:59:59.5+00') AS s",
        expect=[(-1,)],
        source=TIMESTAMP + "#unix_seconds",
    ),
    Case(
        name="timestamp_from_unix_time",
        sql="""SELECT
  TIMESTAMP_SECONDS(1230219000) AS s,
  TIMESTAMP_MILLIS(1230219000123) AS ms,
  TIMESTAMP_MICROS(1230219000123456) AS us""",
        expect=[
            (
                ts("2008-12-25 15:30:00"),
                ts("2008-12-25 15:30:00.123"),
                ts("2008-12-25 15:30:00.123456"),
            )
        ],
        source=TIMESTAMP + "#timestamp_seconds",
    ),
    Case(
        name="unix_date",
        sql="""SELECT
  UNIX_DATE(DATE '2008-12-25') AS days,
  DATE_FROM_UNIX_DATE(14238) AS day""",
        expect=[(14238, d("2008-12-25"))],
        source=DATE + "#unix_date",
    ),
    # -- explicit time zones ---------------------------------------------------------
    Case(
        name="date_of_timestamp_in_a_zone",
        sql="""WITH t AS (SELECT TIMESTAMP '2008-12-25 20:00:00+00' AS ts)
SELECT
  DATE(ts) AS utc,
  DATE(ts, 'Asia/Seoul') AS seoul,
  DATE(ts, 'America/Los_Angeles') AS la,
  DATE(TIMESTAMP '2016-12-25 05:30:00+07', 'America/Los_Angeles') AS doc
FROM t""",
        expect=[(d("2008-12-25"), d("2008-12-26"), d("2008-12-25"), d("2016-12-24"))],
        source=DATE + "#date",
    ),
    Case(
        name="datetime_of_timestamp_in_a_zone",
        sql="""WITH t AS (SELECT TIMESTAMP '2008-12-25 05:30:00+00' AS ts)
SELECT
  DATETIME(ts, 'America/Los_Angeles') AS la,
  DATETIME(ts, 'Asia/Seoul') AS seoul,
  DATETIME(ts) AS utc
FROM t""",
        expect=[(dt("2008-12-24 21:30:00"), dt("2008-12-25 14:30:00"), dt("2008-12-25 05:30:00"))],
        source=DATETIME + "#datetime",
    ),
    Case(
        name="timestamp_of_text_and_datetime_in_a_zone",
        sql="""SELECT
  TIMESTAMP('2008-12-25 15:30:00+00') AS with_offset,
  TIMESTAMP('2008-12-25 15:30:00', 'America/Los_Angeles') AS la_text,
  TIMESTAMP(DATETIME '2008-12-25 15:30:00', 'Asia/Seoul') AS seoul_datetime,
  TIMESTAMP(DATE '2008-12-25') AS from_date,
  TIMESTAMP('2008-12-25 15:30:00') AS utc_text""",
        expect=[
            (
                ts("2008-12-25 15:30:00"),
                ts("2008-12-25 23:30:00"),
                ts("2008-12-25 06:30:00"),
                ts("2008-12-25 00:00:00"),
                ts("2008-12-25 15:30:00"),
            )
        ],
        source=TIMESTAMP + "#timestamp",
    ),
    Case(
        name="events_per_day_in_seoul",
        sql="""WITH events AS (
  SELECT ts FROM UNNEST([
    TIMESTAMP '2024-03-09 14:59:59+00', TIMESTAMP '2024-03-09 15:00:00+00',
    TIMESTAMP '2024-03-10 09:00:00+00', TIMESTAMP '2024-03-10 16:00:00+00'
  ]) AS ts
)
SELECT DATE(ts, 'Asia/Seoul') AS day, COUNT(*) AS n
FROM events
GROUP BY day
ORDER BY day""",
        expect=[(d("2024-03-09"), 1), (d("2024-03-10"), 2), (d("2024-03-11"), 1)],
        source=DATE + "#date",
    ),
    # -- GENERATE_DATE_ARRAY -------------------------------------------------------
    Case(
        name="generate_date_array_days",
        sql="""SELECT
  GENERATE_DATE_ARRAY('2016-10-05', '2016-10-08') AS example,
  GENERATE_DATE_ARRAY('2016-10-05', '2016-10-09', INTERVAL 2 DAY) AS two_days,
  GENERATE_DATE_ARRAY('2016-10-05', '2016-10-05') AS one_day""",
        expect=[
            (
                [d("2016-10-05"), d("2016-10-06"), d("2016-10-07"), d("2016-10-08")],
                [d("2016-10-05"), d("2016-10-07"), d("2016-10-09")],
                [d("2016-10-05")],
            )
        ],
        source=ARRAY + "#generate_date_array",
    ),
    Case(
        name="generate_date_array_backward_and_empty",
        sql="""SELECT
  GENERATE_DATE_ARRAY('2016-10-05', '2016-10-01', INTERVAL -3 DAY) AS backward,
  GENERATE_DATE_ARRAY('2016-10-05', '2016-10-01') AS empty""",
        expect=[([d("2016-10-05"), d("2016-10-02")], [])],
        source=ARRAY + "#generate_date_array",
    ),
    Case(
        name="generate_date_array_months",
        sql="""SELECT
  GENERATE_DATE_ARRAY('2016-01-01', '2016-12-31', INTERVAL 2 MONTH) AS two_months""",
        expect=[
            (
                [
                    d("2016-01-01"),
                    d("2016-03-01"),
                    d("2016-05-01"),
                    d("2016-07-01"),
                    d("2016-09-01"),
                    d("2016-11-01"),
                ],
            )
        ],
        source=ARRAY + "#generate_date_array",
    ),
    Case(
        name="unnest_generate_date_array_is_a_date_spine",
        sql="""SELECT day
FROM UNNEST(GENERATE_DATE_ARRAY(DATE '2024-02-27', DATE '2024-03-01')) AS day
ORDER BY day""",
        expect=[
            (d("2024-02-27"),),
            (d("2024-02-28"),),
            (d("2024-02-29"),),
            (d("2024-03-01"),),
        ],
        source=ARRAY + "#generate_date_array",
    ),
]
