"""Arrays: lengths, subscripts (OFFSET, ORDINAL, SAFE_), UNNEST, ARRAY_AGG and friends."""

from __future__ import annotations

from tests.conformance.case import Case

DOC = "https://cloud.google.com/bigquery/docs/reference/standard-sql/array_functions"
OPS = "https://cloud.google.com/bigquery/docs/reference/standard-sql/operators"
AGG = "https://cloud.google.com/bigquery/docs/reference/standard-sql/aggregate_functions"
QS = "https://cloud.google.com/bigquery/docs/reference/standard-sql/query-syntax"

CASES: list[Case] = [
    Case(
        "array_length",
        "SELECT ARRAY_LENGTH([1, 2, 3]), ARRAY_LENGTH(['한', '국']), "
        "ARRAY_LENGTH(CAST([] AS ARRAY<INT64>))",
        [(3, 2, 0)],
        f"{DOC}#array_length",
    ),
    Case(
        "array_length_of_null_is_null",
        "SELECT ARRAY_LENGTH(CAST(NULL AS ARRAY<INT64>))",
        [(None,)],
        f"{DOC}#array_length",
    ),
    Case(
        "offset_and_ordinal",
        "SELECT [10, 20, 30][OFFSET(1)], [10, 20, 30][ORDINAL(1)], ['a', 'b'][OFFSET(0)], "
        "[10, 20, 30][1]",
        [(20, 10, "a", 20)],
        f"{OPS}#array_subscript_operator",
    ),
    Case(
        "safe_offset_out_of_range_is_null",
        "SELECT [10, 20, 30][SAFE_OFFSET(5)], [10, 20, 30][SAFE_ORDINAL(0)], "
        "[10, 20, 30][SAFE_OFFSET(-1)], [10, 20, 30][SAFE_ORDINAL(3)]",
        [(None, None, None, 30)],
        f"{OPS}#array_subscript_operator",
    ),
    Case(
        "offset_of_a_column",
        "WITH t AS (SELECT 1 AS id, ['a', 'b', 'c'] AS xs UNION ALL SELECT 2, ['d']) "
        "SELECT id, xs[OFFSET(0)], xs[SAFE_OFFSET(1)], ARRAY_LENGTH(xs) FROM t ORDER BY id",
        [(1, "a", "b", 3), (2, "d", None, 1)],
        f"{OPS}#array_subscript_operator",
    ),
    Case(
        "unnest_rows",
        "SELECT x FROM UNNEST([3, 1, 2]) AS x ORDER BY x",
        [(1,), (2,), (3,)],
        f"{QS}#unnest_operator",
    ),
    Case(
        "unnest_with_offset",
        "SELECT x, o FROM UNNEST(['a', 'b', 'c']) AS x WITH OFFSET AS o ORDER BY o",
        [("a", 0), ("b", 1), ("c", 2)],
        f"{QS}#unnest_operator",
    ),
    Case(
        "unnest_of_a_column_cross_join",
        "WITH t AS (SELECT 1 AS id, ['a', 'b'] AS xs UNION ALL "
        "SELECT 2, CAST([] AS ARRAY<STRING>)) "
        "SELECT id, x FROM t CROSS JOIN UNNEST(t.xs) AS x ORDER BY id, x",
        [(1, "a"), (1, "b")],
        f"{QS}#unnest_operator",
    ),
    Case(
        "unnest_of_a_column_with_offset",
        "WITH t AS (SELECT 1 AS id, ['x', 'y'] AS xs) "
        "SELECT id, x, pos FROM t, UNNEST(xs) AS x WITH OFFSET pos ORDER BY pos",
        [(1, "x", 0), (1, "y", 1)],
        f"{QS}#unnest_operator",
    ),
    Case(
        "in_unnest",
        "SELECT 2 IN UNNEST([1, 2, 3]), 5 IN UNNEST([1, 2, 3]), 'b' IN UNNEST(['a', 'b'])",
        [(True, False, True)],
        f"{OPS}#in_operators",
    ),
    Case(
        "array_agg_order_by",
        "WITH t AS (SELECT 'b' AS x, 2 AS k UNION ALL SELECT 'a', 3 UNION ALL SELECT 'c', 1) "
        "SELECT ARRAY_AGG(x ORDER BY k), ARRAY_AGG(x ORDER BY x DESC) FROM t",
        [(["c", "b", "a"], ["c", "b", "a"])],
        f"{AGG}#array_agg",
    ),
    Case(
        "array_agg_ignore_nulls",
        "WITH t AS (SELECT 1 AS x UNION ALL SELECT NULL UNION ALL SELECT 3) "
        "SELECT ARRAY_AGG(x IGNORE NULLS ORDER BY x) FROM t",
        [([1, 3],)],
        f"{AGG}#array_agg",
    ),
    Case(
        "array_agg_limit",
        "WITH t AS (SELECT 5 AS x UNION ALL SELECT 2 UNION ALL SELECT 9 UNION ALL SELECT 1) "
        "SELECT ARRAY_AGG(x ORDER BY x DESC LIMIT 2) FROM t",
        [([9, 5],)],
        f"{AGG}#array_agg",
        refused=frozenset({"duckdb", "postgres", "spark"}),
    ),
    Case(
        "array_agg_distinct",
        "WITH t AS (SELECT 'a' AS x UNION ALL SELECT 'b' UNION ALL SELECT 'a') "
        "SELECT ARRAY_AGG(DISTINCT x ORDER BY x) FROM t",
        [(["a", "b"],)],
        f"{AGG}#array_agg",
        refused=frozenset({"spark"}),
    ),
    Case(
        "array_agg_per_group",
        "WITH t AS (SELECT 1 AS g, 'x' AS v, 2 AS k UNION ALL SELECT 1, 'y', 1 "
        "UNION ALL SELECT 2, 'z', 1) "
        "SELECT g, ARRAY_AGG(v ORDER BY k) FROM t GROUP BY g ORDER BY g",
        [(1, ["y", "x"]), (2, ["z"])],
        f"{AGG}#array_agg",
    ),
    Case(
        "array_to_string_skips_nulls",
        "SELECT ARRAY_TO_STRING(['a', 'b', NULL, 'c'], '-'), "
        "ARRAY_TO_STRING(['a', NULL], '-', 'N'), ARRAY_TO_STRING(['한', '국'], '')",
        [("a-b-c", "a-N", "한국")],
        f"{DOC}#array_to_string",
    ),
    Case(
        "array_concat",
        "SELECT ARRAY_CONCAT([1, 2], [3], [4, 5]), ARRAY_CONCAT(['a'], CAST([] AS ARRAY<STRING>))",
        [([1, 2, 3, 4, 5], ["a"])],
        f"{DOC}#array_concat",
    ),
    Case(
        "array_concat_with_null_is_null",
        "SELECT ARRAY_CONCAT([1, 2], CAST(NULL AS ARRAY<INT64>))",
        [(None,)],
        f"{DOC}#array_concat",
    ),
    Case(
        "generate_array",
        "SELECT GENERATE_ARRAY(1, 5), GENERATE_ARRAY(0, 10, 5), GENERATE_ARRAY(3, 1)",
        [([1, 2, 3, 4, 5], [0, 5, 10], [])],
        f"{DOC}#generate_array",
    ),
    Case(
        "array_reverse",
        "SELECT ARRAY_REVERSE([1, 2, 3])",
        [([3, 2, 1],)],
        f"{DOC}#array_reverse",
    ),
    Case(
        "array_subquery",
        "SELECT ARRAY(SELECT x * 2 FROM UNNEST([1, 2, 3]) AS x ORDER BY x)",
        [([2, 4, 6],)],
        f"{DOC}#array",
        refused=frozenset({"spark"}),
    ),
]
