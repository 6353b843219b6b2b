"""Aggregates over empty and NULL input, and their types: COUNT is 0 where SUM is NULL."""

from __future__ import annotations

from tests.conformance.case import Case

DOC = "https://cloud.google.com/bigquery/docs/reference/standard-sql/aggregate_functions"
APPROX = (
    "https://cloud.google.com/bigquery/docs/reference/standard-sql/approximate_aggregate_functions"
)

EMPTY = "WITH t AS (SELECT x FROM UNNEST(CAST([] AS ARRAY<INT64>)) AS x) "
NULLS = "WITH t AS (SELECT CAST(NULL AS INT64) AS x UNION ALL SELECT CAST(NULL AS INT64)) "
ROWS = (
    "WITH t AS (SELECT 1 AS g, 2 AS x, 'b' AS s, TRUE AS f UNION ALL SELECT 1, NULL, 'a', NULL "
    "UNION ALL SELECT 1, 5, NULL, FALSE UNION ALL SELECT 2, 4, 'c', TRUE) "
)

#: Two columns, the second spelled like the first in other cases and NULL where it is set.
NAMES = (
    "WITH t AS (SELECT 'Ann' AS u, CAST(NULL AS STRING) AS v UNION ALL SELECT 'ann', 'x' "
    "UNION ALL SELECT NULL, 'Bob' UNION ALL SELECT NULL, 'x') "
)
GROUP_BY = (
    "https://cloud.google.com/bigquery/docs/reference/standard-sql/query-syntax#group_by_clause"
)

CASES: list[Case] = [
    Case(
        # "If a query contains aliases in the SELECT clause, those aliases override names
        # in the corresponding FROM clause": grouped by LOWER(u), not by u.
        "group_by_an_alias_that_names_a_column_groups_by_the_alias",
        NAMES + "SELECT LOWER(u) AS u, COUNT(*) AS n FROM t GROUP BY u ORDER BY u",
        [(None, 2), ("ann", 2)],
        GROUP_BY,
    ),
    Case(
        "group_by_an_alias_of_coalesce_that_names_a_column",
        NAMES + "SELECT COALESCE(u, v) AS u, COUNT(*) AS n FROM t GROUP BY u ORDER BY u",
        [("Ann", 1), ("Bob", 1), ("ann", 1), ("x", 1)],
        GROUP_BY,
    ),
    Case(
        # HAVING and QUALIFY see the alias too, outside their aggregates.
        "having_and_qualify_read_an_alias_that_names_a_column",
        NAMES + "SELECT LOWER(u) AS u, COUNT(*) AS n FROM t GROUP BY u "
        "HAVING u IS NOT NULL AND COUNT(*) > 1 "
        "QUALIFY ROW_NUMBER() OVER (PARTITION BY u ORDER BY COUNT(u)) = 1",
        [("ann", 2)],
        GROUP_BY,
    ),
    Case(
        # HAVING may name an alias, of an aggregate too (PostgreSQL knows none there).
        "having_names_an_alias_of_an_aggregate",
        NAMES + "SELECT v AS w, COUNT(*) AS n FROM t GROUP BY w HAVING n > 1 AND w IS NOT NULL",
        [("x", 2)],
        GROUP_BY,
    ),
    Case(
        "rollup_of_an_alias_that_names_a_column",
        NAMES + "SELECT LOWER(u) AS u, GROUPING(u) AS g, COUNT(*) AS n FROM t "
        "GROUP BY ROLLUP(u) ORDER BY u, g, n",
        [(None, 0, 2), (None, 1, 4), ("ann", 0, 2)],
        GROUP_BY,
    ),
    Case(
        "group_by_an_alias_that_names_another_column",
        NAMES + "SELECT v AS u, COUNT(*) AS n FROM t GROUP BY u ORDER BY u",
        [(None, 1), ("Bob", 1), ("x", 2)],
        GROUP_BY,
    ),
    Case(
        # Minimum, median and maximum of three values: exact, however approximate.
        "approx_quantiles_of_a_small_set",
        "SELECT APPROX_QUANTILES(x, 2) FROM UNNEST([3, 1, 2]) AS x",
        [([1, 2, 3],)],
        f"{APPROX}#approx_quantiles",
        refused=frozenset({"postgres", "spark"}),
    ),
    Case(
        "countif_over_a_window",
        ROWS + "SELECT g, x, COUNTIF(f) OVER (PARTITION BY g) AS c FROM t ORDER BY g, x",
        [(1, None, 1), (1, 2, 1), (1, 5, 1), (2, 4, 1)],
        f"{DOC}#countif",
    ),
    Case(
        "empty_input_counts_zero_others_null",
        EMPTY + "SELECT COUNT(*), COUNT(x), COUNTIF(x > 0), SUM(x), AVG(x), MIN(x), MAX(x) FROM t",
        [(0, 0, 0, None, None, None, None)],
        f"{DOC}#count",
    ),
    Case(
        "all_null_input",
        NULLS + "SELECT COUNT(*), COUNT(x), COUNTIF(x > 0), SUM(x), AVG(x), MIN(x), MAX(x), "
        "COUNT(DISTINCT x) FROM t",
        [(2, 0, 0, None, None, None, None, 0)],
        f"{DOC}#sum",
    ),
    Case(
        "empty_input_grouped_has_no_rows",
        EMPTY + "SELECT x, COUNT(*) FROM t GROUP BY x",
        [],
        f"{DOC}#count",
    ),
    Case(
        "nulls_ignored",
        ROWS + "SELECT COUNT(*), COUNT(x), SUM(x), MIN(x), MAX(x), MIN(s), MAX(s) FROM t",
        [(4, 3, 11, 2, 5, "a", "c")],
        f"{DOC}#count",
    ),
    Case(
        "avg_of_int64_is_float64",
        ROWS + "SELECT AVG(x), AVG(CASE WHEN g = 2 THEN x END) FROM t",
        [(11 / 3, 4.0)],
        f"{DOC}#avg",
    ),
    Case(
        "sum_of_int64_is_int64",
        ROWS + "SELECT g, SUM(x), COUNT(x), COUNTIF(f) FROM t GROUP BY g ORDER BY g",
        [(1, 7, 2, 1), (2, 4, 1, 1)],
        f"{DOC}#sum",
    ),
    Case(
        "sum_of_float64_is_float64",
        "SELECT SUM(x), AVG(x) FROM UNNEST([CAST(0.5 AS FLOAT64), CAST(1.25 AS FLOAT64)]) AS x",
        [(1.75, 0.875)],
        f"{DOC}#sum",
    ),
    Case(
        "countif_over_nulls",
        ROWS + "SELECT COUNTIF(f), COUNTIF(NOT f), COUNTIF(x > 100) FROM t",
        [(2, 1, 0)],
        f"{DOC}#countif",
    ),
    Case(
        "countif_on_the_empty_side_of_a_left_join_is_zero",
        "WITH users AS (SELECT 'u1' AS user_id UNION ALL SELECT 'u2'), "
        "events AS (SELECT 'u1' AS user_id, 'buy' AS kind UNION ALL SELECT 'u1', 'view') "
        "SELECT u.user_id, COUNTIF(e.kind = 'buy') AS buys, COUNT(e.kind) AS n, "
        "SUM(IF(e.kind = 'buy', 1, 0)) AS s "
        "FROM users AS u LEFT JOIN events AS e ON e.user_id = u.user_id "
        "GROUP BY u.user_id ORDER BY u.user_id",
        [("u1", 1, 2, 1), ("u2", 0, 0, 0)],
        f"{DOC}#countif",
    ),
    Case(
        "logical_and_or",
        ROWS + "SELECT LOGICAL_AND(f), LOGICAL_OR(f), LOGICAL_AND(g = 2 AND f), "
        "LOGICAL_AND(IF(g = 2, f, NULL)) FROM t",
        [(False, True, False, True)],
        f"{DOC}#logical_and",
    ),
    Case(
        "logical_and_of_empty_is_null",
        EMPTY + "SELECT LOGICAL_AND(x > 0), LOGICAL_OR(x > 0) FROM t",
        [(None, None)],
        f"{DOC}#logical_and",
    ),
    Case(
        "string_agg_separator_and_order",
        ROWS + "SELECT STRING_AGG(s, ', ' ORDER BY s), STRING_AGG(s ORDER BY s DESC), "
        "STRING_AGG(s, '' ORDER BY x) FROM t",
        [("a, b, c", "c,b,a", "abc")],
        f"{DOC}#string_agg",
    ),
    Case(
        "string_agg_of_empty_is_null",
        EMPTY + "SELECT STRING_AGG(CAST(x AS STRING), ',') FROM t",
        [(None,)],
        f"{DOC}#string_agg",
    ),
    Case(
        "string_agg_distinct",
        "SELECT STRING_AGG(DISTINCT s, '|' ORDER BY s) FROM UNNEST(['b', 'a', 'b', '한']) AS s",
        [("a|b|한",)],
        f"{DOC}#string_agg",
    ),
    Case(
        # Beside another DISTINCT aggregate, descending, NULLs left out, and over no values.
        "string_agg_distinct_beside_count_distinct",
        "SELECT g, STRING_AGG(DISTINCT s, '|' ORDER BY s) AS up, "
        "STRING_AGG(DISTINCT s ORDER BY s DESC) AS down, COUNT(DISTINCT n) AS ns "
        "FROM (SELECT 1 AS g, 'b' AS s, 1 AS n UNION ALL SELECT 1, 'a', 2 "
        "UNION ALL SELECT 1, 'b', 2 UNION ALL SELECT 1, NULL, 3 UNION ALL SELECT 2, NULL, 1) "
        "GROUP BY g ORDER BY g",
        [(1, "a|b", "b,a", 3), (2, None, None, 1)],
        f"{DOC}#string_agg",
    ),
    Case(
        "any_value_ignores_nulls",
        "WITH t AS (SELECT 1 AS g, CAST(NULL AS STRING) AS v UNION ALL SELECT 1, 'x' "
        "UNION ALL SELECT 1, 'x' UNION ALL SELECT 2, NULL) "
        "SELECT g, ANY_VALUE(v) FROM t GROUP BY g ORDER BY g",
        [(1, "x"), (2, None)],
        f"{DOC}#any_value",
    ),
    Case(
        "count_distinct",
        "SELECT COUNT(DISTINCT x), COUNT(x) FROM UNNEST(['a', 'b', 'a', NULL, '한']) AS x",
        [(3, 4)],
        f"{DOC}#count",
    ),
    Case(
        "approx_count_distinct_small_is_exact",
        "SELECT APPROX_COUNT_DISTINCT(x) FROM UNNEST(['a', 'b', 'a', 'c']) AS x",
        [(3,)],
        f"{APPROX}#approx_count_distinct",
    ),
    Case(
        "count_distinct_per_group_having",
        "WITH t AS (SELECT 'a' AS u, 1 AS d UNION ALL SELECT 'a', 2 UNION ALL SELECT 'b', 1 "
        "UNION ALL SELECT 'a', 2) "
        "SELECT u, COUNT(DISTINCT d) AS days FROM t GROUP BY u HAVING COUNT(*) > 1 ORDER BY u",
        [("a", 2)],
        f"{DOC}#count",
    ),
    Case(
        "count_star_of_left_join_counts_the_null_row",
        "WITH a AS (SELECT 1 AS k), b AS (SELECT 2 AS k) "
        "SELECT COUNT(*), COUNT(b.k) FROM a LEFT JOIN b ON a.k = b.k",
        [(1, 0)],
        f"{DOC}#count",
    ),
]
