"""SELECT * EXCEPT and * REPLACE, alone and on a table alias; subqueries in FROM."""

from __future__ import annotations

from tests.conformance.case import Case

DOC = "https://cloud.google.com/bigquery/docs/reference/standard-sql/query-syntax"

EVENTS = (
    "WITH events AS (SELECT 'u1' AS user_id, 'buy' AS kind, 3 AS n "
    "UNION ALL SELECT 'u2', 'view', 1), "
    "users AS (SELECT 'u1' AS user_id, 'Kim' AS name UNION ALL SELECT 'u2', 'Lee') "
)

CASES: list[Case] = [
    Case(
        "star_except",
        EVENTS + "SELECT * EXCEPT (kind) FROM events ORDER BY user_id",
        [("u1", 3), ("u2", 1)],
        f"{DOC}#select_except",
        refused=frozenset({"postgres"}),
    ),
    Case(
        "star_replace",
        EVENTS + "SELECT * REPLACE (n * 10 AS n, UPPER(kind) AS kind) FROM events ORDER BY user_id",
        [("u1", "BUY", 30), ("u2", "VIEW", 10)],
        f"{DOC}#select_replace",
        refused=frozenset({"postgres", "spark"}),
    ),
    Case(
        "alias_star_except_in_a_join",
        EVENTS + "SELECT u.name, e.* EXCEPT (user_id) FROM events AS e "
        "JOIN users AS u ON u.user_id = e.user_id ORDER BY u.name",
        [("Kim", "buy", 3), ("Lee", "view", 1)],
        f"{DOC}#select_except",
        refused=frozenset({"postgres"}),
    ),
    Case(
        "alias_star_replace_in_a_join",
        EVENTS + "SELECT e.* REPLACE (e.n + 1 AS n), u.name FROM events AS e "
        "JOIN users AS u USING (user_id) ORDER BY e.user_id",
        [("u1", "buy", 4, "Kim"), ("u2", "view", 2, "Lee")],
        f"{DOC}#select_replace",
        refused=frozenset({"postgres", "spark"}),
    ),
    Case(
        "alias_star_except_several",
        EVENTS + "SELECT e.* EXCEPT (user_id, kind) FROM events AS e ORDER BY e.n",
        [(1,), (3,)],
        f"{DOC}#select_except",
        refused=frozenset({"postgres"}),
    ),
    Case(
        "subqueries_in_from_without_a_name",
        EVENTS + "SELECT COUNT(*) AS n, MAX(t) AS t FROM (SELECT DISTINCT user_id FROM events) "
        "CROSS JOIN (SELECT SUM(n) AS t FROM events)",
        [(2, 4)],
        f"{DOC}#from_clause",
    ),
    Case(
        "star_except_from_a_subquery",
        EVENTS + "SELECT * EXCEPT (rn) FROM (SELECT *, ROW_NUMBER() OVER (ORDER BY n) AS rn "
        "FROM events) WHERE rn = 1",
        [("u2", "view", 1)],
        f"{DOC}#select_except",
        refused=frozenset({"postgres"}),
    ),
]
