# ruff: noqa: E501  (Korean text is two columns wide per character)
"""JSON functions on JSON text: scalars, JSON text, arrays, paths with indexes and quoted
keys, missing paths, and objects where a scalar is asked."""

from __future__ import annotations

from tests.conformance.case import Case

DOC = "https://cloud.google.com/bigquery/docs/reference/standard-sql/json_functions"

DOCUMENT = """'{"a": {"b": 1, "c": "x"}, "list": [10, "y", {"z": true}], "s": "한국", "n": null, "t": true}'"""

CASES: list[Case] = [
    Case(
        "json_value_scalars",
        f"SELECT JSON_VALUE({DOCUMENT}, '$.a.b'), JSON_VALUE({DOCUMENT}, '$.a.c'), "
        f"JSON_VALUE({DOCUMENT}, '$.s'), JSON_VALUE({DOCUMENT}, '$.t')",
        [("1", "x", "한국", "true")],
        f"{DOC}#json_value",
    ),
    Case(
        "json_value_of_object_or_array_is_null",
        f"SELECT JSON_VALUE({DOCUMENT}, '$.a'), JSON_VALUE({DOCUMENT}, '$.list')",
        [(None, None)],
        f"{DOC}#json_value",
    ),
    Case(
        "json_value_missing_and_null_are_null",
        f"SELECT JSON_VALUE({DOCUMENT}, '$.nope'), JSON_VALUE({DOCUMENT}, '$.a.nope.deeper'), "
        f"JSON_VALUE({DOCUMENT}, '$.n')",
        [(None, None, None)],
        f"{DOC}#json_value",
    ),
    Case(
        "json_value_array_index",
        f"SELECT JSON_VALUE({DOCUMENT}, '$.list[0]'), JSON_VALUE({DOCUMENT}, '$.list[1]'), "
        f"JSON_VALUE({DOCUMENT}, '$.list[2].z'), JSON_VALUE({DOCUMENT}, '$.list[7]')",
        [("10", "y", "true", None)],
        f"{DOC}#json_value",
    ),
    Case(
        "json_value_quoted_key",
        """SELECT JSON_VALUE('{"a.b": 1, "c d": "e"}', '$."a.b"'), """
        """JSON_VALUE('{"a.b": 1, "c d": "e"}', '$."c d"')""",
        [("1", "e")],
        f"{DOC}#JSONPath_format",
    ),
    Case(
        "json_extract_scalar_bracket_key",
        """SELECT JSON_EXTRACT_SCALAR('{"a.b": 1}', "$['a.b']"), """
        """JSON_EXTRACT_SCALAR('{"a": {"b": 2}}', '$.a.b'), """
        """JSON_EXTRACT_SCALAR('{"a": {"b": 2}}', '$.a')""",
        [("1", "2", None)],
        f"{DOC}#json_extract_scalar",
    ),
    Case(
        "json_query_keeps_json",
        f"SELECT JSON_QUERY({DOCUMENT}, '$.a.c'), JSON_QUERY({DOCUMENT}, '$.a.b'), "
        f"JSON_QUERY({DOCUMENT}, '$.nope')",
        [('"x"', "1", None)],
        f"{DOC}#json_query",
        refused=frozenset({"postgres"}),
    ),
    Case(
        "json_query_object_and_array",
        """SELECT JSON_QUERY('{"a": {"b": 1}}', '$.a'), JSON_QUERY('{"a": [1, 2]}', '$.a'), """
        """JSON_EXTRACT('{"a": [1, 2]}', '$.a')""",
        [('{"b":1}', "[1,2]", "[1,2]")],
        f"{DOC}#json_query",
        refused=frozenset({"postgres"}),
    ),
    Case(
        "json_extract_array",
        """SELECT JSON_EXTRACT_ARRAY('{"a": [1, "x", {"b": 2}]}', '$.a'), """
        """JSON_EXTRACT_ARRAY('[1, 2]'), JSON_EXTRACT_ARRAY('{"a": 1}', '$.a'), """
        """JSON_EXTRACT_ARRAY('{"a": 1}', '$.nope')""",
        [(["1", '"x"', '{"b":2}'], ["1", "2"], None, None)],
        f"{DOC}#json_extract_array",
        refused=frozenset({"postgres"}),
    ),
    Case(
        "json_value_array",
        """SELECT JSON_VALUE_ARRAY('{"a": ["x", 1, true]}', '$.a'), """
        """JSON_VALUE_ARRAY('{"a": 1}', '$.a'), JSON_VALUE_ARRAY('{"a": [[1]]}', '$.a')""",
        [(["x", "1", "true"], None, None)],
        f"{DOC}#json_value_array",
        refused=frozenset({"duckdb", "postgres", "spark"}),
    ),
    Case(
        "unnest_json_extract_array",
        """SELECT JSON_VALUE(item, '$.id') AS id FROM UNNEST(JSON_EXTRACT_ARRAY("""
        """'{"items": [{"id": "p1"}, {"id": "p2"}]}', '$.items')) AS item ORDER BY id""",
        [("p1",), ("p2",)],
        f"{DOC}#json_extract_array",
    ),
    Case(
        "unnest_json_extract_array_from_the_root_with_offset",
        """SELECT JSON_VALUE(item, '$.id') AS id, pos FROM UNNEST(JSON_EXTRACT_ARRAY("""
        """'[{"id": "p1"}, {"id": "p2"}, {"id": "p3"}]', '$')) AS item WITH OFFSET AS pos """
        """WHERE pos > 0 ORDER BY pos""",
        [("p2", 1), ("p3", 2)],
        f"{DOC}#json_extract_array",
    ),
    Case(
        "json_over_rows",
        """WITH t AS (SELECT 1 AS id, '{"plan": "pro", "seats": 3}' AS p """
        """UNION ALL SELECT 2, '{"plan": {"tier": "gold"}}' UNION ALL SELECT 3, NULL """
        """UNION ALL SELECT 4, '{}') """
        """SELECT id, JSON_VALUE(p, '$.plan'), SAFE_CAST(JSON_VALUE(p, '$.seats') AS INT64) """
        """FROM t ORDER BY id""",
        [(1, "pro", 3), (2, None, None), (3, None, None), (4, None, None)],
        f"{DOC}#json_value",
    ),
    Case(
        "to_json_string_scalars_and_arrays",
        """SELECT TO_JSON_STRING(1), TO_JSON_STRING('a"b'), TO_JSON_STRING([1, 2]), """
        """TO_JSON_STRING(CAST(NULL AS STRING)), TO_JSON_STRING(TRUE)""",
        [("1", '"a\\"b"', "[1,2]", "null", "true")],
        f"{DOC}#to_json_string",
    ),
    Case(
        "to_json_string_struct",
        "SELECT TO_JSON_STRING(STRUCT(1 AS a, 'x' AS b))",
        [('{"a":1,"b":"x"}',)],
        f"{DOC}#to_json_string",
        refused=frozenset({"postgres"}),
    ),
]
