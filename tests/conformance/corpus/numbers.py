"""Division, modulo and rounding: ``/`` is FLOAT64, DIV and MOD truncate toward zero,
ROUND rounds half away from zero, CEIL/FLOOR/ROUND/TRUNC of a FLOAT64 or INT64 are FLOAT64."""

from __future__ import annotations

from decimal import Decimal

from tests.conformance.case import Case

DOCS = "https://cloud.google.com/bigquery/docs/reference/standard-sql/"
MATH = DOCS + "mathematical_functions"
OPERATORS = DOCS + "operators#arithmetic_operators"
INF = float("inf")
NAN = float("nan")

CASES: list[Case] = [
    Case(
        name="greatest_and_least_are_null_when_an_argument_is",
        sql="""WITH t AS (SELECT 1 AS a, CAST(NULL AS INT64) AS n, 3 AS c)
SELECT GREATEST(a, n) AS g, LEAST(c, n, a) AS l, GREATEST(a, c) AS k, LEAST(a, c) AS m FROM t""",
        expect=[(None, None, 3, 1)],
        source=MATH + "#greatest",
    ),
    Case(
        name="slash_on_integers_is_float64",
        sql="""WITH t AS (SELECT 20 AS a, 4 AS b, 7 AS c, 2 AS d, 1 AS e, 3 AS f)
SELECT a / b AS whole, c / d AS half, -c / d AS negative, e / f AS third FROM t""",
        expect=[(5.0, 3.5, -3.5, 1 / 3)],
        source=OPERATORS,
    ),
    Case(
        name="slash_on_literals_is_float64",
        sql="SELECT 20 / 4 AS whole, 1 / 4 AS quarter",
        expect=[(5.0, 0.25)],
        source=OPERATORS,
    ),
    Case(
        name="div_truncates_toward_zero",
        sql="""WITH t AS (SELECT 20 AS a, 12 AS b, 7 AS c)
SELECT DIV(a, 4) AS x, DIV(b, -7) AS y, DIV(a, 3) AS z, DIV(0, a) AS zero, DIV(-c, 2) AS neg
FROM t""",
        expect=[(5, -1, 6, 0, -3)],
        source=MATH + "#div",
    ),
    Case(
        # Each argument is one value, however it is written: the engines' DIV operators
        # bind tighter than - and +, so an operand that is an operation needs grouping.
        name="div_of_operations_divides_the_whole_operands",
        sql="""WITH t AS (SELECT 29 AS a, 20 AS b, 1 AS c)
SELECT DIV(a - b, 3) AS difference, DIV(10, c + 1) AS by_sum, DIV(a + b, c + 6) AS both,
  DIV(DIV(a, 2), c + 2) AS nested, 2 * DIV(a, 2) AS scaled, DIV(-a, 2) AS negated
FROM t""",
        expect=[(3, 5, 7, 4, 28, -14)],
        source=MATH + "#div",
    ),
    Case(
        name="safe_divide",
        sql="""WITH t AS (SELECT 20 AS a, 4 AS b, 0 AS z)
SELECT
  SAFE_DIVIDE(a, b) AS x,
  SAFE_DIVIDE(z, a) AS zero,
  SAFE_DIVIDE(a, z) AS by_zero,
  SAFE_DIVIDE(z, z) AS zero_by_zero,
  SAFE_DIVIDE(NULL, a) AS null_input
FROM t""",
        expect=[(5.0, 0.0, None, None, None)],
        source=MATH + "#safe_divide",
    ),
    Case(
        name="ieee_divide",
        sql="""WITH t AS (SELECT 20.0 AS a, 4.0 AS b, 25.0 AS c, 0.0 AS z)
SELECT
  IEEE_DIVIDE(a, b) AS x,
  IEEE_DIVIDE(z, c) AS zero,
  IEEE_DIVIDE(c, z) AS inf,
  IEEE_DIVIDE(-c, z) AS minus_inf,
  IEEE_DIVIDE(z, z) AS nan
FROM t""",
        expect=[(5.0, 0.0, INF, -INF, NAN)],
        source=MATH + "#ieee_divide",
    ),
    Case(
        name="mod_takes_the_sign_of_the_dividend",
        sql="""WITH t AS (SELECT 25 AS a, 12 AS b)
SELECT MOD(a, b) AS pp, MOD(-a, b) AS np, MOD(a, -b) AS pn, MOD(-a, -b) AS nn FROM t""",
        expect=[(1, -1, 1, -1)],
        source=MATH + "#mod",
    ),
    Case(
        name="round_half_away_from_zero",
        sql="""SELECT x, ROUND(x) AS r
FROM UNNEST([2.0, 2.3, 2.8, 2.5, -2.3, -2.8, -2.5, 0.5, -0.5]) AS x
ORDER BY x""",
        expect=[
            (-2.8, -3.0),
            (-2.5, -3.0),
            (-2.3, -2.0),
            (-0.5, -1.0),
            (0.5, 1.0),
            (2.0, 2.0),
            (2.3, 2.0),
            (2.5, 3.0),
            (2.8, 3.0),
        ],
        source=MATH + "#round",
    ),
    Case(
        name="round_to_places",
        sql="""WITH t AS (SELECT 123.7 AS a, 1.235 AS b, 2.25 AS c, -2.25 AS e)
SELECT ROUND(a, -1) AS tens, ROUND(b, 2) AS hundredths, ROUND(c, 1) AS c1, ROUND(e, 1) AS e1
FROM t""",
        expect=[(120.0, 1.24, 2.3, -2.3)],
        source=MATH + "#round",
    ),
    Case(
        # The doubles nearest 1.005, 2.675 and 0.285 are just below them: rounded as the
        # exact values they are (PostgreSQL's and Spark's ROUND took the decimal written).
        name="round_of_a_double_just_below_a_half",
        sql="""SELECT ROUND(1.005, 2), ROUND(2.675, 2), ROUND(0.285, 2), ROUND(-2.675, 2),
  ROUND(1.015, 2), ROUND(125.0, -1), ROUND(-135.0, -1), ROUND(0.49999999999999994),
  ROUND(CAST('inf' AS FLOAT64), 2)""",
        expect=[(1.0, 2.67, 0.28, -2.67, 1.01, 130.0, -140.0, 0.0, float("inf"))],
        source=MATH + "#round",
    ),
    Case(
        # A ROUND inside a ROUND, and at the end of a double's digits (the scaled value
        # past 2^52, an exact half there): rounded as the exact values they are.
        name="round_nested_and_at_the_end_of_the_digits",
        sql="""SELECT ROUND(ROUND(2.675, 2) * 2, 3),
  ROUND(SUM(ROUND(x, 2)), 2), ROUND(54467427321615.055, 2), ROUND(521018326488587.25, 1)
FROM UNNEST([1.005, 1.005, 2.675]) AS x""",
        expect=[(5.34, 4.67, 54467427321615.05, 521018326488587.3)],
        source=MATH + "#round",
    ),
    Case(
        name="round_of_an_integer_is_float64",
        sql="WITH t AS (SELECT 5 AS i) SELECT ROUND(i) AS r, ROUND(i, -1) AS tens FROM t",
        expect=[(5.0, 10.0)],
        source=MATH + "#round",
    ),
    Case(
        name="round_of_infinity_and_nan",
        sql="""WITH t AS (SELECT CAST('inf' AS FLOAT64) AS i, CAST('nan' AS FLOAT64) AS n)
SELECT ROUND(i) AS i, ROUND(-i) AS minus_i, ROUND(n) AS n FROM t""",
        expect=[(INF, -INF, NAN)],
        source=MATH + "#round",
    ),
    Case(
        name="round_numeric_keeps_numeric",
        sql="""WITH t AS (SELECT NUMERIC '2.25' AS a, NUMERIC '-2.25' AS b, NUMERIC '2.5' AS c)
SELECT ROUND(a, 1) AS a1, ROUND(b, 1) AS b1, ROUND(c) AS c0 FROM t""",
        expect=[(Decimal("2.3"), Decimal("-2.3"), Decimal("3"))],
        source=MATH + "#round",
    ),
    Case(
        name="trunc_toward_zero",
        sql="""WITH t AS (SELECT 2.8 AS a, -2.8 AS b, 123.456 AS c)
SELECT TRUNC(a) AS a, TRUNC(b) AS b, TRUNC(c, 2) AS c2, TRUNC(c, -1) AS tens FROM t""",
        expect=[(2.0, -2.0, 123.45, 120.0)],
        source=MATH + "#trunc",
        refused=frozenset({"spark"}),
    ),
    Case(
        name="ceil_and_floor_are_float64",
        sql="""SELECT x, CEIL(x) AS c, CEILING(x) AS c2, FLOOR(x) AS f
FROM UNNEST([2.0, 2.3, 2.8, 2.5, -2.3, -2.8, -2.5]) AS x
ORDER BY x""",
        expect=[
            (-2.8, -2.0, -2.0, -3.0),
            (-2.5, -2.0, -2.0, -3.0),
            (-2.3, -2.0, -2.0, -3.0),
            (2.0, 2.0, 2.0, 2.0),
            (2.3, 3.0, 3.0, 2.0),
            (2.5, 3.0, 3.0, 2.0),
            (2.8, 3.0, 3.0, 2.0),
        ],
        source=MATH + "#ceil",
    ),
    Case(
        name="ceil_and_floor_of_an_integer_are_float64",
        sql="WITH t AS (SELECT 5 AS i) SELECT CEIL(i) AS c, FLOOR(i) AS f FROM t",
        expect=[(5.0, 5.0)],
        source=MATH + "#ceil",
    ),
    Case(
        name="abs_and_sign",
        sql="""WITH t AS (SELECT -5 AS i, -2.5 AS f)
SELECT ABS(i) AS ai, SIGN(i) AS si, ABS(f) AS af, SIGN(f) AS sf FROM t""",
        expect=[(5, -1, 2.5, -1.0)],
        source=MATH + "#abs",
    ),
]
