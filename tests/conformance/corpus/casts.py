"""Casts and SAFE_CAST, and NUMERIC (38 digits, 9 after the point) and BIGNUMERIC."""

from __future__ import annotations

from datetime import date
from decimal import Decimal

from tests.conformance.case import Case, ts

DOCS = "https://cloud.google.com/bigquery/docs/reference/standard-sql/"
CONVERSION = DOCS + "conversion_functions"
RULES = DOCS + "conversion_rules"
TYPES = DOCS + "data-types"
INF = float("inf")
NAN = float("nan")

CASES: list[Case] = [
    Case(
        name="cast_float_to_int64_rounds_half_away_from_zero",
        sql="""SELECT x, CAST(x AS INT64) AS i
FROM UNNEST([2.5, -2.5, 1.5, 0.5, 2.4, -1.6]) AS x
ORDER BY x""",
        expect=[(-2.5, -3), (-1.6, -2), (0.5, 1), (1.5, 2), (2.4, 2), (2.5, 3)],
        source=CONVERSION + "#cast_as_integer",
    ),
    Case(
        name="safe_cast_text_to_int64",
        sql="""SELECT s, SAFE_CAST(s AS INT64) AS i
FROM UNNEST(['123', '-7', 'apple', '1.5', '1e3', '']) AS s
ORDER BY s""",
        expect=[
            ("", None),
            ("-7", -7),
            ("1.5", None),
            ("123", 123),
            ("1e3", None),
            ("apple", None),
        ],
        source=CONVERSION + "#safe_casting",
    ),
    Case(
        name="safe_cast_hex_text_to_int64",
        sql="""SELECT SAFE_CAST('0x1F' AS INT64) AS pos, SAFE_CAST('-0x123' AS INT64) AS neg""",
        expect=[(31, -291)],
        source=CONVERSION + "#cast_as_integer",
    ),
    Case(
        name="safe_cast_text_to_float64",
        sql="""SELECT s, SAFE_CAST(s AS FLOAT64) AS f
FROM UNNEST(['2.5', '1e3', '-.5', 'abc']) AS s
ORDER BY s""",
        expect=[("-.5", -0.5), ("1e3", 1000.0), ("2.5", 2.5), ("abc", None)],
        source=CONVERSION + "#cast_as_floating_point",
    ),
    Case(
        name="safe_cast_text_to_float64_infinity_and_nan",
        sql="""SELECT
  SAFE_CAST('inf' AS FLOAT64) AS inf,
  SAFE_CAST('-Infinity' AS FLOAT64) AS minus_inf,
  SAFE_CAST('NaN' AS FLOAT64) AS nan""",
        expect=[(INF, -INF, NAN)],
        source=CONVERSION + "#cast_as_floating_point",
    ),
    Case(
        name="safe_cast_text_to_numeric_keeps_nine_decimals",
        sql="""SELECT s, SAFE_CAST(s AS NUMERIC) AS n
FROM UNNEST(['0.0001', '123.456', '0.000000001', 'abc']) AS s
ORDER BY s""",
        expect=[
            ("0.000000001", Decimal("0.000000001")),
            ("0.0001", Decimal("0.0001")),
            ("123.456", Decimal("123.456")),
            ("abc", None),
        ],
        source=CONVERSION + "#cast_as_numeric",
    ),
    Case(
        name="cast_text_to_numeric_rounds_at_nine_decimals",
        sql="""SELECT
  CAST('1.0000000005' AS NUMERIC) AS half_up,
  CAST('-1.0000000005' AS NUMERIC) AS half_down,
  CAST('1.0000000004' AS NUMERIC) AS down""",
        expect=[(Decimal("1.000000001"), Decimal("-1.000000001"), Decimal("1"))],
        source=CONVERSION + "#cast_as_numeric",
    ),
    Case(
        name="safe_cast_to_numeric_out_of_range_is_null",
        sql="SELECT SAFE_CAST('1e40' AS NUMERIC) AS too_big",
        expect=[(None,)],
        source=CONVERSION + "#cast_as_numeric",
    ),
    Case(
        name="numeric_literal_and_arithmetic",
        sql="""WITH t AS (SELECT NUMERIC '0.1' AS a, NUMERIC '0.2' AS b, NUMERIC '3' AS c)
SELECT a + b AS sum, a * b AS product, c - a AS difference FROM t""",
        expect=[(Decimal("0.3"), Decimal("0.02"), Decimal("2.9"))],
        source=TYPES + "#decimal_types",
    ),
    Case(
        name="numeric_division_keeps_nine_decimals",
        sql="""WITH t AS (SELECT NUMERIC '1' AS a, NUMERIC '3' AS b, 3 AS i)
SELECT a / b AS third, a / i AS by_integer, 2 / b AS integer_by, a / 8 AS eighth FROM t""",
        expect=[
            (
                Decimal("0.333333333"),
                Decimal("0.333333333"),
                Decimal("0.666666667"),
                Decimal("0.125"),
            )
        ],
        source=TYPES + "#decimal_types",
    ),
    Case(
        name="cast_float_to_numeric",
        sql="WITH t AS (SELECT 1.5 AS f) SELECT CAST(f AS NUMERIC) AS n FROM t",
        expect=[(Decimal("1.5"),)],
        source=CONVERSION + "#cast_as_numeric",
    ),
    Case(
        name="bignumeric_keeps_38_decimals",
        sql="""SELECT
  SAFE_CAST('0.00000000000000000000000000000000000001' AS BIGNUMERIC) AS tiny""",
        expect=[(Decimal("1E-38"),)],
        source=TYPES + "#decimal_types",
        refused=frozenset({"duckdb", "postgres", "spark"}),
    ),
    Case(
        name="bignumeric_holds_large_values",
        sql="SELECT CAST('123456789012345678901234567890123456789.5' AS BIGNUMERIC) AS big",
        expect=[(Decimal("123456789012345678901234567890123456789.5"),)],
        source=TYPES + "#decimal_types",
        refused=frozenset({"duckdb", "postgres", "spark"}),
    ),
    Case(
        name="safe_cast_text_to_bool",
        sql="""SELECT s, SAFE_CAST(s AS BOOL) AS b
FROM UNNEST(['true', 'FALSE', 'True', 'yes', '1', 't', 'no']) AS s
ORDER BY s""",
        expect=[
            ("1", None),
            ("FALSE", False),
            ("True", True),
            ("no", None),
            ("t", None),
            ("true", True),
            ("yes", None),
        ],
        source=CONVERSION + "#cast_as_bool",
    ),
    Case(
        name="cast_between_int64_and_bool",
        sql="""WITH t AS (SELECT 1 AS one, 0 AS zero, -2 AS other, TRUE AS yes)
SELECT
  CAST(one AS BOOL) AS a,
  CAST(zero AS BOOL) AS b,
  CAST(other AS BOOL) AS c,
  CAST(yes AS INT64) AS d
FROM t""",
        expect=[(True, False, True, 1)],
        source=CONVERSION + "#cast_as_bool",
    ),
    Case(
        name="safe_cast_text_to_date",
        sql="""SELECT
  SAFE_CAST('2008-12-25' AS DATE) AS good,
  SAFE_CAST('2008-13-25' AS DATE) AS bad_month,
  SAFE_CAST('not a date' AS DATE) AS bad""",
        expect=[(date(2008, 12, 25), None, None)],
        source=CONVERSION + "#cast_as_date",
        refused=frozenset({"postgres"}),
    ),
    Case(
        name="safe_cast_text_to_timestamp",
        sql="""SELECT
  SAFE_CAST('2008-12-25 15:30:00' AS TIMESTAMP) AS utc,
  SAFE_CAST('2008-12-25 15:30:00+09' AS TIMESTAMP) AS offset,
  SAFE_CAST('2008-12-25' AS TIMESTAMP) AS midnight,
  SAFE_CAST('2008-12-25T15:30:00Z' AS TIMESTAMP) AS t_and_z,
  SAFE_CAST('not a time' AS TIMESTAMP) AS bad""",
        expect=[
            (
                ts("2008-12-25 15:30:00"),
                ts("2008-12-25 06:30:00"),
                ts("2008-12-25 00:00:00"),
                ts("2008-12-25 15:30:00"),
                None,
            )
        ],
        source=CONVERSION + "#cast_as_timestamp",
        refused=frozenset({"postgres"}),
    ),
    Case(
        name="cast_to_string",
        sql="""WITH t AS (SELECT 123 AS i, DATE '2008-12-25' AS d, TRUE AS b, 'x' AS s)
SELECT
  CAST(i AS STRING) AS i,
  CAST(d AS STRING) AS d,
  CAST(b AS STRING) AS b,
  SAFE_CAST(s AS STRING) AS s
FROM t""",
        expect=[("123", "2008-12-25", "true", "x")],
        source=CONVERSION + "#cast_as_string",
    ),
    Case(
        name="cast_timestamp_to_string_is_utc",
        sql="""WITH t AS (SELECT TIMESTAMP '2008-12-25 15:30:00+00' AS ts)
SELECT CAST(ts AS STRING) AS s FROM t""",
        expect=[("2008-12-25 15:30:00+00",)],
        source=CONVERSION + "#cast_as_string",
    ),
    Case(
        name="cast_numeric_to_string",
        sql="WITH t AS (SELECT NUMERIC '1.50' AS n) SELECT CAST(n AS STRING) AS s FROM t",
        expect=[("1.5",)],
        source=CONVERSION + "#cast_as_string",
    ),
]
