"""Window functions: numbering with ties, offsets with defaults, frames, QUALIFY, percentiles."""

from __future__ import annotations

from tests.conformance.case import Case

NUM = "https://cloud.google.com/bigquery/docs/reference/standard-sql/numbering_functions"
NAV = "https://cloud.google.com/bigquery/docs/reference/standard-sql/navigation_functions"
CALLS = "https://cloud.google.com/bigquery/docs/reference/standard-sql/window-function-calls"
QS = "https://cloud.google.com/bigquery/docs/reference/standard-sql/query-syntax"

T = (
    "WITH t AS (SELECT 'a' AS u, 1 AS k, 10 AS v UNION ALL SELECT 'a', 2, 20 "
    "UNION ALL SELECT 'a', 2, 30 UNION ALL SELECT 'a', 4, NULL UNION ALL SELECT 'b', 1, 5) "
)

CASES: list[Case] = [
    Case(
        "row_number_rank_dense_rank",
        T + "SELECT u, k, v, ROW_NUMBER() OVER (PARTITION BY u ORDER BY k, v), "
        "RANK() OVER (PARTITION BY u ORDER BY k), DENSE_RANK() OVER (PARTITION BY u ORDER BY k) "
        "FROM t ORDER BY u, k, v",
        [
            ("a", 1, 10, 1, 1, 1),
            ("a", 2, 20, 2, 2, 2),
            ("a", 2, 30, 3, 2, 2),
            ("a", 4, None, 4, 4, 3),
            ("b", 1, 5, 1, 1, 1),
        ],
        f"{NUM}#rank",
    ),
    Case(
        # Without ORDER BY the rows are numbered 1 to n in any order (Spark needs an order).
        "row_number_without_order_by",
        T + "SELECT u, MAX(r) AS top, COUNT(DISTINCT r) AS numbers, "
        "(SELECT COUNT(DISTINCT n) FROM (SELECT ROW_NUMBER() OVER () AS n FROM t)) AS whole "
        "FROM (SELECT u, ROW_NUMBER() OVER (PARTITION BY u) AS r FROM t) GROUP BY u ORDER BY u",
        [("a", 4, 4, 5), ("b", 1, 1, 5)],
        f"{NUM}#row_number",
    ),
    Case(
        "lag_lead_with_default",
        T + "SELECT u, k, LAG(k) OVER w, LAG(k, 1, 0) OVER w, LEAD(k, 2, -1) OVER w "
        "FROM t WHERE v IS NOT NULL OR k = 4 WINDOW w AS (PARTITION BY u ORDER BY k, v) "
        "ORDER BY u, k, v",
        [
            ("a", 1, None, 0, 2),
            ("a", 2, 1, 1, 4),
            ("a", 2, 2, 2, -1),
            ("a", 4, 2, 2, -1),
            ("b", 1, None, 0, -1),
        ],
        f"{NAV}#lag",
    ),
    Case(
        "first_value_last_value_default_frame",
        T + "SELECT u, k, v, FIRST_VALUE(v) OVER (PARTITION BY u ORDER BY k), "
        "LAST_VALUE(k) OVER (PARTITION BY u ORDER BY k) FROM t ORDER BY u, k, v",
        [
            ("a", 1, 10, 10, 1),
            ("a", 2, 20, 10, 2),
            ("a", 2, 30, 10, 2),
            ("a", 4, None, 10, 4),
            ("b", 1, 5, 5, 1),
        ],
        f"{NAV}#last_value",
    ),
    Case(
        "last_value_whole_partition",
        T + "SELECT u, k, v, LAST_VALUE(v) OVER (PARTITION BY u ORDER BY k, v "
        "ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING), "
        "LAST_VALUE(v IGNORE NULLS) OVER (PARTITION BY u ORDER BY k, v "
        "ROWS BETWEEN UNBOUNDED PRECEDING AND UNBOUNDED FOLLOWING) FROM t ORDER BY u, k, v",
        [
            ("a", 1, 10, None, 30),
            ("a", 2, 20, None, 30),
            ("a", 2, 30, None, 30),
            ("a", 4, None, None, 30),
            ("b", 1, 5, 5, 5),
        ],
        f"{NAV}#last_value",
        refused=frozenset({"postgres"}),
    ),
    Case(
        "sum_over_rows_frame",
        T + "SELECT u, k, v, SUM(v) OVER (PARTITION BY u ORDER BY k, v "
        "ROWS BETWEEN 1 PRECEDING AND CURRENT ROW) FROM t ORDER BY u, k, v",
        [("a", 1, 10, 10), ("a", 2, 20, 30), ("a", 2, 30, 50), ("a", 4, None, 30), ("b", 1, 5, 5)],
        f"{CALLS}#def_window_frame",
    ),
    Case(
        "avg_and_sum_over_a_partition",
        T + "SELECT u, k, v, AVG(v) OVER (PARTITION BY u), SUM(v) OVER (PARTITION BY u) "
        "FROM t ORDER BY u, k, v",
        [
            ("a", 1, 10, 20.0, 60),
            ("a", 2, 20, 20.0, 60),
            ("a", 2, 30, 20.0, 60),
            ("a", 4, None, 20.0, 60),
            ("b", 1, 5, 5.0, 5),
        ],
        "https://cloud.google.com/bigquery/docs/reference/standard-sql/aggregate_functions#avg",
    ),
    Case(
        "sum_over_default_frame_includes_peers",
        T + "SELECT u, k, v, SUM(v) OVER (PARTITION BY u ORDER BY k), "
        "COUNT(*) OVER (PARTITION BY u) FROM t ORDER BY u, k, v",
        [
            ("a", 1, 10, 10, 4),
            ("a", 2, 20, 60, 4),
            ("a", 2, 30, 60, 4),
            ("a", 4, None, 60, 4),
            ("b", 1, 5, 5, 1),
        ],
        f"{CALLS}#def_window_frame",
    ),
    Case(
        "sum_over_range_frame",
        T + "SELECT u, k, v, SUM(v) OVER (PARTITION BY u ORDER BY k "
        "RANGE BETWEEN 1 PRECEDING AND CURRENT ROW) FROM t ORDER BY u, k, v",
        [
            ("a", 1, 10, 10),
            ("a", 2, 20, 60),
            ("a", 2, 30, 60),
            ("a", 4, None, None),
            ("b", 1, 5, 5),
        ],
        f"{CALLS}#def_window_frame",
    ),
    Case(
        "running_total_unbounded",
        "SELECT x, SUM(x) OVER (ORDER BY x ROWS UNBOUNDED PRECEDING) "
        "FROM UNNEST([3, 1, 2]) AS x ORDER BY x",
        [(1, 1), (2, 3), (3, 6)],
        f"{CALLS}#def_window_frame",
    ),
    Case(
        "qualify_latest_per_user",
        T + "SELECT u, k, v FROM t WHERE TRUE "
        "QUALIFY ROW_NUMBER() OVER (PARTITION BY u ORDER BY k DESC, v DESC) = 1 ORDER BY u",
        [("a", 4, None), ("b", 1, 5)],
        f"{QS}#qualify_clause",
    ),
    Case(
        "percentile_cont",
        "SELECT PERCENTILE_CONT(x, 0.5) OVER (), PERCENTILE_CONT(x, 0.25) OVER (), "
        "PERCENTILE_CONT(x, 0) OVER (), PERCENTILE_CONT(x, 1) OVER () "
        "FROM UNNEST([1, 2, 3, 4]) AS x LIMIT 1",
        [(2.5, 1.75, 1.0, 4.0)],
        "https://cloud.google.com/bigquery/docs/reference/standard-sql/navigation_functions#percentile_cont",
        refused=frozenset({"postgres"}),
    ),
    Case(
        "percentile_cont_per_partition_ignores_nulls",
        T + "SELECT DISTINCT u, PERCENTILE_CONT(v, 0.5) OVER (PARTITION BY u) FROM t ORDER BY u",
        [("a", 20.0), ("b", 5.0)],
        f"{NAV}#percentile_cont",
        refused=frozenset({"postgres"}),
    ),
    Case(
        "ntile_percent_rank_cume_dist",
        "SELECT x, NTILE(2) OVER (ORDER BY x), PERCENT_RANK() OVER (ORDER BY x), "
        "CUME_DIST() OVER (ORDER BY x) FROM UNNEST([1, 2, 3]) AS x ORDER BY x",
        [(1, 1, 0.0, 1 / 3), (2, 1, 0.5, 2 / 3), (3, 2, 1.0, 1.0)],
        f"{NUM}#ntile",
    ),
]
