# ruff: noqa: E501  (Korean text is two columns wide per character)
"""Strings and bytes in UTF-8 (Korean text included): BigQuery counts characters, not bytes."""

from __future__ import annotations

from tests.conformance.case import Case

DOC = "https://cloud.google.com/bigquery/docs/reference/standard-sql/string_functions"
CONV = "https://cloud.google.com/bigquery/docs/reference/standard-sql/conversion_functions"
HASH = "https://cloud.google.com/bigquery/docs/reference/standard-sql/hash_functions"
OPS = "https://cloud.google.com/bigquery/docs/reference/standard-sql/operators"

CASES: list[Case] = [
    Case(
        "length_counts_characters",
        "SELECT LENGTH('한국어'), CHAR_LENGTH('héllo'), BYTE_LENGTH('한국어'), BYTE_LENGTH('abc')",
        [(3, 5, 9, 3)],
        f"{DOC}#length",
    ),
    Case(
        "length_of_bytes_counts_bytes",
        "SELECT LENGTH(CAST('한' AS BYTES)), BYTE_LENGTH(b'abc')",
        [(3, 3)],
        f"{DOC}#length",
    ),
    Case(
        "length_of_null_is_null",
        "SELECT LENGTH(CAST(NULL AS STRING))",
        [(None,)],
        f"{DOC}#length",
    ),
    Case(
        "substr_positive_and_negative",
        "SELECT SUBSTR('apple', 2), SUBSTR('apple', 2, 2), SUBSTR('apple', -3), "
        "SUBSTR('apple', -3, 2), SUBSTR('apple', 0, 2), SUBSTR('apple', -10, 3), "
        "SUBSTR('apple', 10)",
        [("pple", "pp", "ple", "pl", "ap", "app", "")],
        f"{DOC}#substr",
    ),
    Case(
        "substr_korean_by_character",
        "SELECT SUBSTR('한국어입니다', 2, 2), SUBSTRING('한국어', -1), LEFT('한국어', 2), "
        "RIGHT('한국어', 2)",
        [("국어", "어", "한국", "국어")],
        f"{DOC}#substr",
    ),
    Case(
        "upper_lower_unicode",
        "SELECT UPPER('héllo 한국'), LOWER('ÀBC'), UPPER(CAST(NULL AS STRING))",
        [("HÉLLO 한국", "àbc", None)],
        f"{DOC}#upper",
    ),
    Case(
        "concat_with_null_is_null",
        "SELECT CONCAT('a', 'b', 'c'), CONCAT('a', NULL), 'x' || 'y', 'x' || NULL",
        [("abc", None, "xy", None)],
        f"{DOC}#concat",
    ),
    Case(
        "strpos_counts_characters",
        "SELECT STRPOS('foo@example.com', '@'), STRPOS('한국어', '어'), STRPOS('abc', 'z'), "
        "INSTR('banana', 'an')",
        [(4, 3, 0, 2)],
        f"{DOC}#strpos",
    ),
    Case(
        "split_keeps_empty_parts",
        "SELECT SPLIT('a,b,,c', ','), SPLIT('a b', ' '), SPLIT('한,국'), SPLIT('x', ',')",
        [(["a", "b", "", "c"], ["a", "b"], ["한", "국"], ["x"])],
        f"{DOC}#split",
    ),
    Case(
        "split_empty_string_is_one_empty_part",
        "SELECT SPLIT('', ',')",
        [([""],)],
        f"{DOC}#split",
    ),
    Case(
        "split_then_offset",
        "SELECT SPLIT('a/b/c', '/')[OFFSET(1)], ARRAY_LENGTH(SPLIT('a/b/c', '/'))",
        [("b", 3)],
        f"{DOC}#split",
    ),
    Case(
        "replace_all_occurrences",
        "SELECT REPLACE('banana', 'an', 'AN'), REPLACE('한국어 한국', '한국', 'K'), "
        "REPLACE('abc', '', 'x')",
        [("bANANa", "K어 K", "abc")],
        f"{DOC}#replace",
    ),
    Case(
        "trim_spaces_and_characters",
        "SELECT TRIM('  x y  '), TRIM('xxabcxx', 'x'), LTRIM('  a '), RTRIM(' a  '), "
        "LTRIM('xxa', 'x'), RTRIM('a**', '*')",
        [("x y", "abc", "a ", " a", "a", "a")],
        f"{DOC}#trim",
    ),
    Case(
        "pad_to_characters",
        "SELECT LPAD('abc', 5, '*'), LPAD('abc', 2), RPAD('abc', 6, 'xy'), LPAD('한', 3), "
        "RPAD('한국', 3, '어')",
        [("**abc", "ab", "abcxyx", "  한", "한국어")],
        f"{DOC}#lpad",
    ),
    Case(
        "reverse_characters",
        "SELECT REVERSE('abc한국'), REVERSE('')",
        [("국한cba", "")],
        f"{DOC}#reverse",
    ),
    Case(
        "starts_and_ends_with",
        "SELECT STARTS_WITH('foobar', 'foo'), STARTS_WITH('foobar', 'bar'), "
        "ENDS_WITH('한국어', '어'), STARTS_WITH(CAST(NULL AS STRING), 'a')",
        [(True, False, True, None)],
        f"{DOC}#starts_with",
    ),
    Case(
        "repeat_and_initcap",
        "SELECT REPEAT('ab', 3), REPEAT('한', 2)",
        [("ababab", "한한")],
        f"{DOC}#repeat",
    ),
    Case(
        "initcap_at_bigquerys_word_boundaries",
        "SELECT INITCAP('Hello World-everyone!'), INITCAP('tHe dOg  ATE a_bone')",
        [("Hello World-Everyone!", "The Dog  Ate A_Bone")],
        f"{DOC}#initcap",
        refused=frozenset({"postgres", "spark"}),
    ),
    Case(
        "format_integers_and_strings",
        "SELECT FORMAT('%d', 10), FORMAT('%d-%s', 3, 'x'), FORMAT('%s!', '한국')",
        [("10", "3-x", "한국!")],
        f"{DOC}#format_string",
    ),
    Case(
        "format_of_a_null_is_null",
        "SELECT FORMAT('%s|%s', 'é', CAST(NULL AS STRING)), FORMAT('%d', CAST(NULL AS INT64)), "
        "FORMAT('%s', 'a')",
        [(None, None, "a")],
        f"{DOC}#format_string",
    ),
    Case(
        "to_hex_and_from_hex",
        "SELECT TO_HEX(b'abc'), FROM_HEX('616263'), TO_HEX(CAST('한' AS BYTES))",
        [("616263", b"abc", "ed959c")],
        f"{DOC}#to_hex",
    ),
    Case(
        "sha256_and_md5",
        "SELECT TO_HEX(SHA256('abc')), TO_HEX(MD5('abc'))",
        [
            (
                "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
                "900150983cd24fb0d6963f7d28e17f72",
            )
        ],
        f"{HASH}#sha256",
    ),
    Case(
        "sha256_is_bytes",
        "SELECT SHA256('') = FROM_HEX("
        "'e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855')",
        [(True,)],
        f"{HASH}#sha256",
    ),
    Case(
        "base64",
        "SELECT TO_BASE64(b'abc'), FROM_BASE64('YWJj'), TO_BASE64(CAST('한국' AS BYTES))",
        [("YWJj", b"abc", "7ZWc6rWt")],
        f"{DOC}#to_base64",
    ),
    Case(
        "cast_between_string_and_bytes",
        "SELECT CAST('abc' AS BYTES), CAST(b'abc' AS STRING), CAST(CAST('한국' AS BYTES) AS STRING)",
        [(b"abc", "abc", "한국")],
        f"{CONV}#cast_as_bytes",
    ),
    Case(
        "string_comparison_is_by_code_point",
        "SELECT 'a' < 'b', 'B' < 'a', '가' > 'z'",
        [(True, True, True)],
        f"{OPS}#comparison_operators",
    ),
    Case(
        "like_patterns",
        "SELECT 'foobar' LIKE 'foo%', 'foobar' LIKE '_oo%', 'Foo' LIKE 'foo', '한국어' LIKE '한_어'",
        [(True, True, False, True)],
        f"{OPS}#like_operator",
    ),
    Case(
        "instr_from_a_position",
        "SELECT INSTR('banana', 'an'), INSTR('banana', 'an', 3), INSTR('banana', 'x', 2)",
        [(2, 4, 0)],
        f"{DOC}#instr",
    ),
    Case(
        # The second occurrence is 4; PostgreSQL's rewrite answered the first.
        "instr_with_an_occurrence",
        "SELECT INSTR('banana', 'an', 1, 2)",
        [(4,)],
        f"{DOC}#instr",
        refused=frozenset({"duckdb", "postgres", "spark"}),
    ),
    Case(
        # A negative position searches backwards from the end.
        "instr_from_a_negative_position",
        "SELECT INSTR('banana', 'an', -1)",
        [(4,)],
        f"{DOC}#instr",
        refused=frozenset({"duckdb", "postgres", "spark"}),
    ),
    Case(
        # A backslash escapes: '\\%' in BigQuery's SQL is a percent sign.
        "like_with_escapes",
        r"SELECT '100%' LIKE '100\\%', '1000' LIKE '100\\%', 'a_b' LIKE 'a\\_b', "
        r"'axb' LIKE 'a\\_b', 'x\\y' LIKE 'x\\\\y', 'a_b' NOT LIKE 'a\\_b'",
        [(True, False, True, False, True, False)],
        f"{OPS}#like_operator",
    ),
    Case(
        "strings_from_a_table",
        "WITH t AS (SELECT 1 AS id, '한국어' AS s UNION ALL SELECT 2, NULL UNION ALL SELECT 3, 'ab') "
        "SELECT id, LENGTH(s), UPPER(s), CONCAT(s, '!') FROM t ORDER BY id",
        [(1, 3, "한국어", "한국어!"), (2, None, None, None), (3, 2, "AB", "ab!")],
        f"{DOC}#length",
    ),
]
