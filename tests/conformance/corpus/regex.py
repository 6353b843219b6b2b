"""Regular expressions (RE2): matches, groups, every match, and replacements with \\1."""

from __future__ import annotations

from tests.conformance.case import Case

DOC = "https://cloud.google.com/bigquery/docs/reference/standard-sql/string_functions"

CASES: list[Case] = [
    Case(
        "regexp_contains",
        r"SELECT REGEXP_CONTAINS('foo@example.com', r'@[a-z]+\.com$'), "
        r"REGEXP_CONTAINS('foo@example.org', r'\.com$'), REGEXP_CONTAINS('abc', r'B'), "
        r"REGEXP_CONTAINS('abc', r'(?i)B')",
        [(True, False, False, True)],
        f"{DOC}#regexp_contains",
    ),
    Case(
        "regexp_contains_partial_match",
        r"SELECT REGEXP_CONTAINS('xx123yy', r'[0-9]+'), REGEXP_CONTAINS('', r'a*'), "
        r"REGEXP_CONTAINS(CAST(NULL AS STRING), r'a')",
        [(True, True, None)],
        f"{DOC}#regexp_contains",
    ),
    Case(
        "regexp_contains_counts_characters",
        r"SELECT REGEXP_CONTAINS('한국어', r'^.{3}$'), REGEXP_CONTAINS('한국어', r'국')",
        [(True, True)],
        f"{DOC}#regexp_contains",
    ),
    Case(
        "regexp_extract_whole_match",
        r"SELECT REGEXP_EXTRACT('abc123def456', r'[0-9]+'), REGEXP_EXTRACT('abc', r'[0-9]+')",
        [("123", None)],
        f"{DOC}#regexp_extract",
    ),
    Case(
        "regexp_extract_group",
        r"SELECT REGEXP_EXTRACT('foo@example.com', r'^([^@]+)@'), "
        r"REGEXP_EXTRACT('utm_source=news&x=1', r'utm_source=([^&]*)'), "
        r"REGEXP_EXTRACT('id: 한국', r'id: (.+)$')",
        [("foo", "news", "한국")],
        f"{DOC}#regexp_extract",
    ),
    Case(
        "regexp_extract_position_and_occurrence",
        r"SELECT REGEXP_EXTRACT('a1b22c333', r'[0-9]+', 1, 2), "
        r"REGEXP_EXTRACT('a1b22c333', r'[0-9]+', 4)",
        [("22", "22")],
        f"{DOC}#regexp_extract",
        refused=frozenset({"postgres", "spark"}),
    ),
    Case(
        "regexp_extract_all",
        r"SELECT REGEXP_EXTRACT_ALL('a1b22c333', r'[0-9]+'), "
        r"REGEXP_EXTRACT_ALL('k1=v1;k2=v2', r'(\w+)='), REGEXP_EXTRACT_ALL('abc', r'[0-9]')",
        [(["1", "22", "333"], ["k1", "k2"], [])],
        f"{DOC}#regexp_extract_all",
    ),
    Case(
        "regexp_replace_all_matches",
        r"SELECT REGEXP_REPLACE('a.b.c', r'\.', '-'), REGEXP_REPLACE('aaa', r'a', 'b'), "
        r"REGEXP_REPLACE('abc', r'x', 'y')",
        [("a-b-c", "bbb", "abc")],
        f"{DOC}#regexp_replace",
    ),
    Case(
        "regexp_replace_backreferences",
        r"SELECT REGEXP_REPLACE('2024-01-05', r'(\d+)-(\d+)-(\d+)', r'\3/\2/\1'), "
        r"REGEXP_REPLACE('abc', r'b', r'[\0]'), "
        r"REGEXP_REPLACE('Hello World', r'(\w+) (\w+)', '\\2 \\1')",
        [("05/01/2024", "a[b]c", "World Hello")],
        f"{DOC}#regexp_replace",
    ),
    Case(
        "regexp_replace_korean",
        r"SELECT REGEXP_REPLACE('한국어 한국', r'한(.)', r'<\1>')",
        [("<국>어 <국>",)],
        f"{DOC}#regexp_replace",
    ),
    Case(
        "regexp_over_rows",
        r"WITH t AS (SELECT 1 AS id, '/p/12?x' AS url UNION ALL SELECT 2, '/home' "
        r"UNION ALL SELECT 3, NULL) "
        r"SELECT id, REGEXP_EXTRACT(url, r'^/p/(\d+)'), "
        r"REGEXP_CONTAINS(url, r'\?') FROM t ORDER BY id",
        [(1, "12", True), (2, None, False), (3, None, None)],
        f"{DOC}#regexp_extract",
    ),
]
