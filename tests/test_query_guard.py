"""`headwater query`'s read-only check: the attacks it must refuse, the reads it must
allow, and a fuzz pass that runs whatever it accepts on a real DuckDB database and
checks that nothing changed."""

from __future__ import annotations

import contextlib
import doctest
import tempfile
from collections.abc import Iterator
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from headwater.store import readonly
from headwater.store.errors import QueryError, ReadOnlyQuery
from headwater.store.readonly import check_read_only

TABLES = frozenset({"events", "failed_events", "hourly_event_counts"})
ALL = ("duckdb", "postgres", "spark", "bigquery")
DUCKDB = ("duckdb",)
POSTGRES = ("postgres",)
SPARK = ("spark",)
NOT_BIGQUERY = ("duckdb", "postgres", "spark")

# (statement, dialects it must be refused in)
REFUSED = [
    # EXPLAIN, in every spelling: EXPLAIN ANALYZE runs the statement it explains.
    ("EXPLAIN ANALYZE DELETE FROM events", ALL),
    ("EXPLAIN (FORMAT json, ANALYZE) DELETE FROM events", ALL),
    ("EXPLAIN (ANALYZE, FORMAT json) CREATE TABLE x AS SELECT 1", ALL),
    ("EXPLAIN (ANALYZE true) UPDATE events SET source = 'x'", ALL),
    ("explain analyse delete from events", ALL),
    (";EXPLAIN ANALYZE DELETE FROM events", ALL),
    (";;  ;EXPLAIN ANALYZE DELETE FROM events;", ALL),
    ("/* c */ EXPLAIN ANALYZE DELETE FROM events", ALL),
    ("-- c\nEXPLAIN ANALYZE DELETE FROM events", ALL),
    ("/* a */ -- b\n /* c */ EXPLAIN ANALYZE INSERT INTO events SELECT * FROM events", ALL),
    ("EXPLAIN SELECT * FROM events", ALL),
    ("EXPLAIN ANALYZE SELECT * FROM events", ALL),
    # Statements that are not reads.
    ("COPY events TO '/tmp/x.csv'", ALL),
    ("COPY (SELECT 1) TO '/tmp/x'", ALL),
    ("COPY events FROM '/tmp/x.csv'", ALL),
    ("COPY events TO PROGRAM 'sh -c id'", POSTGRES),
    ("SET threads = 1", ALL),
    ("SET memory_limit = '1GB'", ALL),
    ("SET GLOBAL threads = 1", DUCKDB),
    ("RESET threads", DUCKDB),
    ("SET VARIABLE x = 1", DUCKDB),
    ("PRAGMA threads = 1", ALL),
    ("PRAGMA version", ALL),
    ("ATTACH '/tmp/x.db'", ALL),
    ("ATTACH '/tmp/x.db' AS other", DUCKDB),
    ("DETACH other", DUCKDB),
    ("INSTALL httpfs", ALL),
    ("LOAD httpfs", ALL),
    ("CALL pragma_version()", ALL),
    ("CALL checkpoint()", ALL),
    ("CREATE TABLE x (a INT)", ALL),
    ("CREATE TABLE x AS SELECT * FROM events", ALL),
    ("CREATE VIEW v AS SELECT * FROM events", ALL),
    ("CREATE MACRO m(a) AS a + 1", DUCKDB),
    ("CREATE SEQUENCE s", NOT_BIGQUERY),
    ("CREATE SECRET (TYPE s3, KEY_ID 'x')", DUCKDB),
    ("DROP TABLE events", ALL),
    ("ALTER TABLE events ADD COLUMN z INT", ALL),
    ("TRUNCATE events", ALL),
    ("INSERT INTO events VALUES (1)", ALL),
    ("INSERT INTO events SELECT * FROM events", ALL),
    ("UPDATE events SET source = 'x'", ALL),
    ("DELETE FROM events", ALL),
    ("DELETE FROM events WHERE source IN (SELECT source FROM failed_events)", ALL),
    ("MERGE INTO events USING failed_events ON 1 = 1 WHEN MATCHED THEN DELETE", ALL),
    ("WITH d AS (DELETE FROM events RETURNING *) SELECT * FROM d", ALL),
    ("WITH d AS (INSERT INTO events SELECT * FROM events RETURNING *) SELECT 1", ALL),
    ("WITH d AS (UPDATE events SET source = 'x' RETURNING *) SELECT * FROM d", ALL),
    ("SELECT * INTO t FROM events", ALL),
    ("SELECT * FROM events FOR UPDATE", NOT_BIGQUERY),
    ("SELECT * FROM events FOR SHARE", POSTGRES),
    ("SELECT nextval('s')", ALL),
    ("SELECT setval('s', 1)", ALL),
    ("BEGIN", ALL),
    ("BEGIN TRANSACTION", ALL),
    ("COMMIT", ALL),
    ("ROLLBACK", ALL),
    ("VACUUM", ALL),
    ("VACUUM ANALYZE events", ALL),
    ("ANALYZE", ALL),
    ("CHECKPOINT", ALL),
    ("FORCE CHECKPOINT", DUCKDB),
    ("EXPORT DATABASE '/tmp/x'", ALL),
    ("IMPORT DATABASE '/tmp/x'", ALL),
    ("USE other", ALL),
    ("SHOW TABLES", ALL),
    ("SUMMARIZE events", ALL),
    ("PIVOT events ON source USING count(*)", DUCKDB),
    ("DESCRIBE SELECT 1", DUCKDB),
    ("DESCRIBE secrets", ALL),
    ("SELECT * FROM (DESCRIBE events)", DUCKDB),
    ("SELECT * FROM (SUMMARIZE events)", DUCKDB),
    ("SELECT * FROM (SHOW TABLES)", DUCKDB),
    ("GRANT SELECT ON events TO public", NOT_BIGQUERY),
    ("LISTEN x", POSTGRES),
    ("NOTIFY x", POSTGRES),
    ("DO $$ BEGIN DELETE FROM events; END $$", POSTGRES),
    ("PREPARE p AS DELETE FROM events", POSTGRES),
    ("EXECUTE p", POSTGRES),
    ("LOCK TABLE events", POSTGRES),
    ("DISCARD ALL", POSTGRES),
    ("ADD JAR /tmp/x.jar", SPARK),
    ("CACHE TABLE events", SPARK),
    ("REFRESH TABLE events", SPARK),
    ("MSCK REPAIR TABLE events", SPARK),
    ("INSERT OVERWRITE DIRECTORY '/tmp/x' SELECT * FROM events", SPARK),
    ("EXPORT DATA OPTIONS (uri = 'gs://b/*.csv', format = 'CSV') AS SELECT 1", ("bigquery",)),
    ("EXECUTE IMMEDIATE 'DELETE FROM events'", ("bigquery",)),
    ("DECLARE x INT64", ("bigquery",)),
    # Several statements, however separated.
    ("SELECT 1; DELETE FROM events", ALL),
    ("SELECT 1;DELETE FROM events;", ALL),
    ("SELECT 1 -- x\n; DELETE FROM events", ALL),
    ("SELECT 1 /* x */; DELETE FROM events", ALL),
    ("SELECT 1 /* /* */ */ ; DELETE FROM events", ALL),
    ("BEGIN; DELETE FROM events", ALL),
    ("BEGIN; DELETE FROM events; COMMIT", ALL),
    ("COMMIT; DELETE FROM events", ALL),
    ("SELECT 1; SELECT 2", ALL),
    ("SELECT 'a\\'; DELETE FROM events; --'", ("duckdb", "postgres")),
    ("SELECT $$a$$; DELETE FROM events; --", NOT_BIGQUERY),
    # Reads of something other than the store's tables.
    ("SELECT * FROM secrets", ALL),
    ("SELECT * FROM events JOIN secrets USING (source)", ALL),
    ("SELECT * FROM events WHERE source IN (SELECT source FROM secrets)", ALL),
    ("WITH x AS (SELECT * FROM secrets) SELECT * FROM x", ALL),
    ("SELECT * FROM (WITH x AS (SELECT 1) SELECT * FROM x) AS t, x", ALL),
    ("WITH a AS (SELECT * FROM b), b AS (SELECT 1) SELECT * FROM a", ALL),
    ("WITH a AS (SELECT * FROM a) SELECT * FROM a", ALL),
    ("SELECT * FROM main.events", ALL),
    ("SELECT * FROM memory.main.events", ALL),
    ("SELECT * FROM other.events", ALL),
    ("SELECT * FROM information_schema.tables", ("spark", "bigquery")),
    ("SELECT * FROM information_schema.tables, read_csv('x')", ALL),
    ('SELECT * FROM information_schema."x.csv"', ALL),
    ("SELECT * FROM information_schema.secrets", ALL),
    ("SELECT ts_stat('SELECT to_tsvector(word) FROM other.secrets')", ALL),
    ("SELECT ts_rewrite('a'::tsquery, 'SELECT t, s FROM other.aliases')", ("postgres",)),
    ("SELECT * FROM events, pg_stat_get_activity(NULL)", ALL),
    ("SELECT pg_stat_get_backend_activity(1)", ALL),
    ("SELECT * FROM other.information_schema.tables", ALL),
    ("SELECT * FROM 'information_schema.tables'", ("duckdb",)),
    ("SELECT * FROM pg_catalog.pg_authid", ALL),
    ('SELECT * FROM "EVENTS"', ("duckdb", "postgres")),
    ("SELECT * FROM EVENTS", ("bigquery",)),
    ("SELECT * FROM read_csv('/etc/passwd')", ALL),
    ("SELECT * FROM read_csv_auto('/etc/passwd')", ALL),
    ("SELECT * FROM read_parquet('/tmp/x.parquet')", ALL),
    ("SELECT * FROM read_json('/tmp/x.json')", ALL),
    ("SELECT * FROM read_text('/etc/passwd')", ALL),
    ("SELECT * FROM read_blob('/etc/passwd')", ALL),
    ("SELECT * FROM glob('/etc/*')", ALL),
    ("SELECT * FROM sniff_csv('/etc/passwd')", ALL),
    ("SELECT * FROM parquet_metadata('/tmp/x.parquet')", ALL),
    ("SELECT * FROM parquet_schema('/tmp/x.parquet')", ALL),
    ("SELECT * FROM query('DELETE FROM events')", ALL),
    ("SELECT * FROM query_table('secrets')", ALL),
    ("SELECT * FROM duckdb_settings()", ALL),
    ("SELECT * FROM duckdb_secrets()", ALL),
    ("SELECT * FROM duckdb_tables()", ALL),
    ("SELECT * FROM pragma_table_info('secrets')", ALL),
    ("SELECT * FROM checkpoint()", ALL),
    ("SELECT * FROM json_execute_serialized_sql('x')", ALL),
    ("SELECT * FROM events, LATERAL read_csv('/etc/passwd')", DUCKDB),
    ("SELECT * FROM events e JOIN read_csv('/etc/passwd') p ON true", ALL),
    ("SELECT (SELECT count(*) FROM read_csv('/etc/passwd'))", ALL),
    ("SELECT * FROM '/etc/passwd'", ALL),
    ("SELECT * FROM 'events.csv'", ALL),
    ("SELECT * FROM 'events'", ALL),
    ('SELECT * FROM "/etc/passwd"', ("duckdb", "postgres")),
    ('SELECT * FROM "data.csv"', ("duckdb", "postgres")),
    ("SELECT * FROM events.csv", ALL),
    ("SELECT * FROM pg_ls_dir('.')", ALL),
    ("SELECT * FROM ROWS FROM (pg_ls_dir('.'))", POSTGRES),
    ("SELECT * FROM parquet.`/tmp/x`", ("spark", "bigquery")),
    ("SELECT * FROM csv.`/etc/passwd`", ("spark", "bigquery")),
    ("SELECT * FROM json.`/tmp/x`", ("spark", "bigquery")),
    ("SELECT * FROM read_files('/tmp/x')", ALL),
    ("SELECT * FROM EXTERNAL_QUERY('conn', 'SELECT 1')", ALL),
    ("SELECT * FROM `project.dataset.events`", ("bigquery",)),
    ("SELECT * FROM ?", DUCKDB),
    # Functions that reach files, settings, the server or other systems.
    ("SELECT getenv('HOME')", ALL),
    ("SELECT 'HOME'.getenv()", DUCKDB),
    ("SELECT upper(getenv('HOME')) FROM events", ALL),
    ("SELECT * FROM events WHERE source = getenv('HOME')", ALL),
    ("SELECT current_setting('threads')", ALL),
    ("SELECT pg_read_file('/etc/passwd')", ALL),
    ("SELECT pg_catalog.pg_read_file('/etc/passwd')", POSTGRES),
    ("SELECT \"pg_read_file\"('/etc/passwd')", POSTGRES),
    ("SELECT PG_READ_FILE('/etc/passwd')", ALL),
    ("SELECT pg_read_binary_file('/etc/passwd')", ALL),
    ("SELECT pg_ls_dir('.')", ALL),
    ("SELECT pg_stat_file('/etc/passwd')", ALL),
    ("SELECT lo_import('/etc/passwd')", ALL),
    ("SELECT lo_export(1, '/tmp/x')", ALL),
    ("SELECT dblink('host=x', 'DELETE FROM events')", ALL),
    ("SELECT dblink_exec('host=x', 'DELETE FROM events')", ALL),
    ("SELECT set_config('search_path', 'x', false)", ALL),
    ("SELECT pg_terminate_backend(1)", ALL),
    ("SELECT pg_cancel_backend(1)", ALL),
    ("SELECT pg_reload_conf()", ALL),
    ("SELECT pg_sleep(10)", ALL),
    ("SELECT pg_sleep_for('1 hour')", ALL),
    ("SELECT pg_advisory_lock(1)", ALL),
    ("SELECT pg_notify('c', 'x')", ALL),
    ("SELECT query_to_xml('DELETE FROM events', true, true, '')", ALL),
    ("SELECT database_to_xml(true, true, '')", ALL),
    ("SELECT reflect('java.lang.System', 'exit', 0)", ALL),
    ("SELECT java_method('java.lang.System', 'exit', 0)", ALL),
    ("SELECT try_reflect('java.lang.System', 'exit', 0)", ALL),
    ("SELECT sleep_ms(100000)", ALL),
    ("SELECT write_log('x')", ALL),
    # Nothing to run.
    ("", ALL),
    ("   ", ALL),
    (";", ALL),
    ("-- only a comment", ALL),
    ("/* only a comment */", ALL),
    # Text that does not parse.
    ("SELECT 'unterminated", ALL),
    ("SELECT 1 /* unterminated", ALL),
    ("SELEC 1", ALL),
    ("(" * 3000 + "SELECT 1" + ")" * 3000, ALL),
]

# (statement, dialects it must be allowed in)
ALLOWED = [
    ("SELECT tag, memory_usage_bytes FROM duckdb_memory()", ("duckdb",)),
    # The standard catalog views list the store's tables and columns.
    ("SELECT table_name FROM information_schema.tables", ("duckdb", "postgres")),
    ("SELECT column_name FROM INFORMATION_SCHEMA.columns", ("duckdb", "postgres")),
    ("SELECT * FROM events", ALL),
    ("SELECT event, count(*) FROM events GROUP BY 1", ALL),
    ("SELECT count(*) FROM events GROUP BY 1", ALL),
    ("select * from events limit 10", ALL),
    ("SELECT * FROM EVENTS", NOT_BIGQUERY),
    ('SELECT * FROM "events"', ("duckdb", "postgres")),
    ("SELECT * FROM `events`", ("spark", "bigquery")),
    ("SELECT * FROM events AS e WHERE e.source = 'web'", ALL),
    ("SELECT * FROM events WHERE source = ?", ("duckdb", "spark")),
    ("SELECT * FROM events WHERE source = $1", ("duckdb", "postgres")),
    ("WITH recent AS (SELECT * FROM events) SELECT count(*) FROM recent", ALL),
    ("WITH a AS (SELECT 1 AS n), b AS (SELECT * FROM a) SELECT * FROM b", ALL),
    ("WITH events AS (SELECT * FROM events) SELECT * FROM events", ALL),
    (
        "WITH RECURSIVE t(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM t WHERE n < 3) "
        "SELECT * FROM t",
        NOT_BIGQUERY,
    ),
    ("SELECT source FROM events UNION SELECT source FROM failed_events", NOT_BIGQUERY),
    ("SELECT source FROM events UNION ALL SELECT source FROM failed_events", ALL),
    ("SELECT source FROM events INTERSECT DISTINCT SELECT source FROM failed_events", ALL),
    ("SELECT source FROM events EXCEPT DISTINCT SELECT source FROM failed_events", ALL),
    ("SELECT * FROM events e JOIN failed_events f ON e.source = f.source", ALL),
    ("SELECT * FROM events LEFT JOIN failed_events USING (source)", ALL),
    ("SELECT * FROM events, failed_events", ALL),
    ("SELECT * FROM hourly_event_counts", ALL),
    ("SELECT * FROM (SELECT * FROM events) AS s", ALL),
    ("SELECT * FROM events WHERE source IN (SELECT source FROM failed_events)", ALL),
    ("SELECT (SELECT count(*) FROM failed_events) AS n", ALL),
    ("SELECT * FROM events WHERE EXISTS (SELECT 1 FROM failed_events)", ALL),
    ("(SELECT 1)", ALL),
    ("SELECT 1", ALL),
    ("SELECT 1;", ALL),
    ("SELECT 1 ;  ", ALL),
    ("SELECT 1;;", ALL),
    ("  \n SELECT 1 \n", ALL),
    ("-- a comment\nSELECT 1", ALL),
    ("/* a comment */ SELECT 1 /* another */", ALL),
    ("SELECT 1 -- trailing comment", ALL),
    ("SELECT 1; -- trailing comment", ALL),
    ("SELECT '; DELETE FROM events' AS s", ALL),
    ("SELECT 'EXPLAIN ANALYZE DELETE FROM events' AS s", ALL),
    ("VALUES (1), (2)", NOT_BIGQUERY),
    ("SELECT * FROM (VALUES (1), (2)) AS t(n)", NOT_BIGQUERY),
    ("DESCRIBE events", ALL),
    ("DESCRIBE failed_events", ALL),
    ("DESCRIBE TABLE events", DUCKDB),
    ("DESCRIBE EXTENDED events", SPARK),
    ("FROM events", DUCKDB),
    ("FROM events SELECT source", DUCKDB),
    ("SELECT * FROM range(10)", ("duckdb", "postgres", "spark")),
    ("SELECT * FROM generate_series(1, 3)", ALL),
    ("SELECT * FROM events, generate_series(1, 3) AS g", ALL),
    ("SELECT unnest([1, 2])", DUCKDB),
    ("SELECT * FROM unnest([1, 2])", DUCKDB),
    ("SELECT * FROM UNNEST([1, 2])", ("bigquery",)),
    ("SELECT * FROM events, UNNEST([1, 2]) AS x", ("bigquery",)),
    ("SELECT * FROM events LATERAL VIEW explode(array(1, 2)) t AS x", SPARK),
    ("SELECT * FROM events, LATERAL (SELECT 1)", DUCKDB),
    ("SELECT json_extract(properties, '$.a') FROM events", ALL),
    ("SELECT properties->>'$.a' FROM events", DUCKDB),
    ("SELECT properties::json->>'a' FROM events", POSTGRES),
    ("SELECT json_extract_string(properties, '$.plan') FROM events", DUCKDB),
    ("SELECT get_json_object(properties, '$.a') FROM events", SPARK),
    ("SELECT JSON_VALUE(properties, '$.a') FROM events", ("bigquery",)),
    ("SELECT row_number() OVER (PARTITION BY source ORDER BY timestamp) FROM events", ALL),
    ("SELECT source, sum(count(*)) OVER () FROM events GROUP BY source", ALL),
    ("SELECT date_trunc('hour', received_at), count(*) FROM events GROUP BY 1 ORDER BY 1", ALL),
    ("SELECT CASE WHEN source = 'a' THEN 1 ELSE 0 END FROM events", ALL),
    ("SELECT [x + 1 for x in [1, 2]]", DUCKDB),
    ("SELECT list_transform([1], x -> x + 1)", DUCKDB),
    ("SELECT * FROM events PIVOT (count(*) FOR source IN ('a', 'b'))", DUCKDB),
    ("SELECT * FROM events TABLESAMPLE 10%", DUCKDB),
    ("SELECT now(), current_date, random(), version()", DUCKDB),
    ("SELECT * FROM events WHERE message_id = 'x' ORDER BY 1 LIMIT 5 OFFSET 1", ALL),
]


def _cases(table: list[tuple[str, tuple[str, ...]]]) -> list[object]:
    return [
        pytest.param(sql, dialect, id=f"{dialect}:{sql[:60]!r}")
        for sql, dialects in table
        for dialect in dialects
    ]


@pytest.mark.parametrize(("sql", "dialect"), _cases(REFUSED))
def test_refused(sql: str, dialect: str) -> None:
    with pytest.raises(QueryError) as caught:
        check_read_only(sql, dialect, TABLES)
    error = caught.value
    assert "\n" not in error.message
    assert error.hint
    assert "`headwater query`" in error.hint or "events" in error.hint


@pytest.mark.parametrize(("sql", "dialect"), _cases(ALLOWED))
def test_allowed(sql: str, dialect: str) -> None:
    check_read_only(sql, dialect, TABLES)


@pytest.mark.parametrize(
    ("sql", "kind"),
    [
        ("EXPLAIN ANALYZE DELETE FROM events", "EXPLAIN"),
        ("EXPLAIN (FORMAT json, ANALYZE) DELETE FROM events", "EXPLAIN"),
        (";EXPLAIN ANALYZE DELETE FROM events", "EXPLAIN"),
        ("/* c */ EXPLAIN ANALYZE DELETE FROM events", "EXPLAIN"),
        ("COPY events TO '/tmp/x.csv'", "COPY"),
        ("SET threads = 1", "SET"),
        ("ATTACH '/tmp/x.db'", "ATTACH"),
        ("INSTALL httpfs", "INSTALL"),
        ("LOAD httpfs", "LOAD"),
        ("CALL pragma_version()", "CALL"),
        ("CHECKPOINT", "CHECKPOINT"),
        ("VACUUM", "VACUUM"),
        ("BEGIN", "BEGIN"),
        ("DROP TABLE events", "DROP"),
        ("WITH d AS (DELETE FROM events RETURNING *) SELECT * FROM d", "DELETE"),
        ("SELECT * INTO t FROM events", "SELECT … INTO"),
    ],
)
def test_statements_that_are_not_reads_name_their_kind(sql: str, kind: str) -> None:
    with pytest.raises(ReadOnlyQuery) as caught:
        check_read_only(sql, "duckdb", TABLES)
    assert caught.value.message == f"query failed: {kind} statements are not allowed here"
    hint = caught.value.hint or ""
    assert "failed_events" in hint
    assert "SUMMARIZE and EXPLAIN" not in hint  # the class's own hint offers EXPLAIN


@pytest.mark.parametrize(
    ("sql", "fragment"),
    [
        ("SELECT 1; DELETE FROM events", "2 statements"),
        ("SELECT * FROM read_csv('/etc/passwd')", "read_csv()"),
        ("SELECT * FROM '/etc/passwd'", "the file '/etc/passwd'"),
        ("SELECT * FROM query('DELETE FROM events')", "query()"),
        ("SELECT * FROM duckdb_settings()", "duckdb_settings()"),
        ("SELECT getenv('HOME')", "getenv()"),
        ("SELECT * FROM secrets", "'secrets'"),
        ("SELECT * FROM main.events", "main.events"),
        ("SELEC 1", "does not parse"),
    ],
)
def test_other_refusals_say_what_is_wrong(sql: str, fragment: str) -> None:
    with pytest.raises(QueryError) as caught:
        check_read_only(sql, "duckdb", TABLES)
    assert not isinstance(caught.value, ReadOnlyQuery)
    assert fragment in caught.value.message


@pytest.mark.parametrize("dialect", ALL)
@pytest.mark.parametrize("name", sorted(readonly._REFUSED_NAMES))
def test_every_refused_function_is_refused_anywhere(name: str, dialect: str) -> None:
    for sql in (
        f"SELECT {name}('x')",
        f"SELECT * FROM events WHERE source = {name}('x')",
        f"SELECT * FROM {name}('x')",
    ):
        with pytest.raises(QueryError) as caught:
            check_read_only(sql, dialect, TABLES)
        message = caught.value.message
        assert f"{name}()" in message or "does not parse" in message


def test_an_unknown_dialect_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="dialect"):
        check_read_only("SELECT 1", "mysql", TABLES)


def test_the_docstring_examples_run() -> None:
    result = doctest.testmod(readonly, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0
    assert result.failed == 0


# -- fuzz --------------------------------------------------------------------------

# Each piece of a statement comes in two lists: those a read can hold, and the
# rest. Statements made of the first only are mostly accepted, so the run on DuckDB
# sees many; statements made of any pieces probe the refusals.
READ_PREFIXES = [
    "",
    " ",
    "\n\t",
    ";",
    "; ;",
    "-- c\n",
    "/* c */ ",
    "/* ; DELETE FROM events; */ ",
    "/* /* */ */ ",
]
OTHER_PREFIXES = [
    "EXPLAIN ",
    "EXPLAIN ANALYZE ",
    "EXPLAIN (FORMAT json, ANALYZE) ",
    "EXPLAIN (ANALYZE, FORMAT json) ",
    "explain analyse ",
    "(",
    "((",
    "BEGIN; ",
    "COMMIT; ",
    "SELECT 1; ",
    "WITH w AS (SELECT 1) ",
    "WITH d AS (DELETE FROM events RETURNING *) ",
]
READ_BODIES = [
    "SELECT * FROM {t}",
    "SELECT count(*) FROM {t}",
    "SELECT count(*) FROM {t} GROUP BY 1",
    "FROM {t}",
    "TABLE {t}",
    "SELECT * FROM {t} UNION ALL SELECT * FROM {t}",
    "SELECT * FROM events WHERE source IN (SELECT 'x' FROM {t})",
    "WITH c AS (SELECT * FROM {t}) SELECT * FROM c",
    "VALUES (1), (2)",
    "DESCRIBE {t}",
    "SELECT * FROM {t} PIVOT (count(*) FOR source IN ('a', 'b'))",
]
OTHER_BODIES = [
    "WITH d AS (DELETE FROM events RETURNING *) SELECT * FROM d",
    "SELECT * INTO t2 FROM {t}",
    "SELECT * FROM {t} FOR UPDATE",
    "SELECT nextval('seq')",
    "SELECT setval('seq', 5)",
    "SELECT current_setting('threads')",
    "SELECT getenv('HOME')",
    "SELECT getvariable('v')",
    "PIVOT {t} ON source USING count(*)",
    "INSERT INTO events SELECT * FROM {t}",
    "INSERT INTO events (message_id) VALUES ('x')",
    "DELETE FROM events",
    "DELETE FROM {t}",
    "UPDATE events SET source = 'x'",
    "CREATE TABLE x AS SELECT * FROM {t}",
    "CREATE TEMP TABLE x AS SELECT 1",
    "CREATE VIEW v AS SELECT * FROM {t}",
    "CREATE MACRO m(a) AS a",
    "CREATE SEQUENCE s2",
    "COPY {t} TO 'out.csv'",
    "COPY (SELECT * FROM {t}) TO 'out.parquet' (FORMAT parquet)",
    "SET threads = 1",
    "SET memory_limit = '123MB'",
    "SET TimeZone = 'Asia/Tokyo'",
    "SET VARIABLE v = 1",
    "RESET threads",
    "PRAGMA threads = 1",
    "PRAGMA disable_optimizer",
    "ATTACH 'other.db' AS other",
    "DETACH other",
    "CALL pragma_version()",
    "CALL checkpoint()",
    "EXPORT DATABASE 'exported'",
    "IMPORT DATABASE 'exported'",
    "INSTALL httpfs",
    "LOAD httpfs",
    "DROP TABLE events",
    "DROP TABLE {t}",
    "ALTER TABLE events ADD COLUMN z INT",
    "ALTER TABLE events RENAME TO e2",
    "VACUUM",
    "CHECKPOINT",
    "FORCE CHECKPOINT",
    "SHOW TABLES",
    "SHOW {t}",
    "SUMMARIZE {t}",
    "USE memory",
    "BEGIN",
    "BEGIN TRANSACTION",
    "COMMIT",
    "ABORT",
]
READ_TABLES = [
    "events",
    "failed_events",
    "EVENTS",
    '"events"',
    "range(3)",
    "generate_series(1, 3)",
    "unnest([1, 2])",
    "(SELECT 1)",
]
OTHER_TABLES = [
    "'events'",
    "e2",
    "secrets",
    "main.events",
    "memory.main.events",
    "'data.csv'",
    '"data.csv"',
    "data.csv",
    "'/etc/passwd'",
    "read_csv('data.csv')",
    "read_csv_auto('data.csv')",
    "read_text('data.csv')",
    "read_blob('data.csv')",
    "glob('*')",
    "query('DELETE FROM events')",
    "query_table('secrets')",
    "duckdb_settings()",
    "duckdb_tables()",
    "(DELETE FROM events RETURNING *)",
    "(SUMMARIZE events)",
]
READ_SUFFIXES = [
    "",
    ";",
    "; ",
    " ;;",
    " -- c",
    " --",
    "\n-- c\n",
    " /* c */",
    " /* ; DELETE FROM events */",
    " LIMIT 1",
]
OTHER_SUFFIXES = [
    "; DELETE FROM events",
    ";DROP TABLE events",
    "; SET threads = 1",
    "; SELECT 1",
    " /*",
    ")",
    " WHERE source = 'a\\'; DELETE FROM events; --'",
    " WHERE source = $$; DELETE FROM events; $$",
    " WHERE source = E'a\\''; DELETE FROM events; --'",
]
PREFIXES = READ_PREFIXES + OTHER_PREFIXES
BODIES = READ_BODIES + OTHER_BODIES
TABLE_REFS = READ_TABLES + OTHER_TABLES
SUFFIXES = READ_SUFFIXES + OTHER_SUFFIXES


def _statements(
    prefixes: list[str], bodies: list[str], tables: list[str], suffixes: list[str]
) -> st.SearchStrategy[str]:
    return st.builds(
        lambda prefix, body, table, suffix: prefix + body.format(t=table) + suffix,
        st.sampled_from(prefixes),
        st.sampled_from(bodies),
        st.sampled_from(tables),
        st.sampled_from(suffixes),
    )


statements = _statements(READ_PREFIXES, READ_BODIES, READ_TABLES, READ_SUFFIXES) | _statements(
    PREFIXES, BODIES, TABLE_REFS, SUFFIXES
)
# Pieces joined in any order, to reach shapes no template above spells.
pieces = st.lists(
    st.sampled_from([*PREFIXES, *SUFFIXES, *BODIES, *TABLE_REFS, " ", ",", "(", ")", "'", '"']),
    min_size=1,
    max_size=6,
).map(lambda parts: "".join(parts).replace("{t}", "events"))

SNAPSHOT_SETTINGS = ("threads", "memory_limit", "TimeZone", "enable_external_access")


class Database:
    """One database for every run: each run checks that it changed nothing, so the
    next starts from the same state (and after a run that did change it, a new one)."""

    def __init__(self) -> None:
        self.con = self._create()

    @staticmethod
    def _create() -> duckdb.DuckDBPyConnection:
        con = duckdb.connect()
        con.execute(
            """
            CREATE TABLE events (message_id VARCHAR, source VARCHAR, properties VARCHAR,
                                 received_at TIMESTAMP DEFAULT now());
            INSERT INTO events (message_id, source, properties)
                VALUES ('m1', 'a', '{"a": 1}'), ('m2', 'b', '{"a": 2}'), ('m3', 'a', NULL);
            CREATE TABLE failed_events (id VARCHAR, source VARCHAR, payload VARCHAR);
            INSERT INTO failed_events VALUES ('f1', 'a', '{}'), ('f2', 'c', 'x');
            CREATE TABLE secrets (k VARCHAR, v VARCHAR);
            INSERT INTO secrets VALUES ('token', 'hunter2');
            CREATE SEQUENCE seq;
            """
        )
        return con

    def replace(self) -> None:
        self.con.close()
        self.con = self._create()


@pytest.fixture(scope="module")
def database() -> Iterator[Database]:
    db = Database()
    yield db
    db.con.close()


def _state(con: duckdb.DuckDBPyConnection, folder: Path) -> dict[str, object]:
    def rows(sql: str) -> list[str]:
        return sorted(repr(row) for row in con.execute(sql).fetchall())

    try:
        con.execute("BEGIN TRANSACTION")
    except duckdb.Error:
        in_transaction = True  # a statement left one open
        con.execute("ROLLBACK")
    else:
        in_transaction = False
        con.execute("ROLLBACK")
    tables = con.execute(
        "SELECT database_name, schema_name, table_name FROM duckdb_tables()"
    ).fetchall()
    counts = {
        f"{db}.{schema}.{name}": con.execute(
            f'SELECT count(*) FROM "{db}"."{schema}"."{name}"'
        ).fetchone()
        for db, schema, name in tables
    }
    return {
        "in_transaction": in_transaction,
        "tables": sorted(tables),
        "rows": counts,
        "settings": rows("SELECT name, value FROM duckdb_settings()"),
        "databases": rows("SELECT database_name, path FROM duckdb_databases()"),
        "schemas": rows("SELECT database_name, schema_name FROM duckdb_schemas()"),
        "relations": rows("SELECT table_schema, table_name FROM information_schema.tables"),
        "sequences": rows("SELECT sequence_name, last_value FROM duckdb_sequences()"),
        "variables": rows("SELECT name, value FROM duckdb_variables()"),
        "types": rows("SELECT type_name FROM duckdb_types() WHERE NOT internal"),
        "secrets": rows("SELECT name FROM duckdb_secrets()"),
        "macros": rows("SELECT function_name FROM duckdb_functions() WHERE NOT internal"),
        "files": sorted(str(p.relative_to(folder)) for p in folder.rglob("*")),
    }


def _run(con: duckdb.DuckDBPyConnection, sql: str) -> None:
    with contextlib.suppress(duckdb.Error):
        con.execute(sql).fetchall()


def _assert_harmless(db: Database, sql: str) -> None:
    """Run an accepted statement on a real database, inside a read-only transaction
    and then on its own, and check that nothing it could change has changed."""
    con = db.con
    with tempfile.TemporaryDirectory() as name, contextlib.chdir(name):
        folder = Path(name)
        (folder / "data.csv").write_text("a,b\n1,2\n")
        before = _state(con, folder)
        con.execute("BEGIN TRANSACTION READ ONLY")
        _run(con, sql)
        with contextlib.suppress(duckdb.Error):
            con.execute("ROLLBACK")
        in_read_only = _state(con, folder)
        _run(con, sql)
        alone = _state(con, folder)
    if before != in_read_only or before != alone:
        db.replace()  # so that shrinking starts each run from the same state
    assert in_read_only == before, f"{sql!r} changed the database in a read-only transaction"
    assert alone == before, f"{sql!r} changed the database"


def _accepted(sql: str) -> bool:
    try:
        check_read_only(sql, "duckdb", TABLES)
    except QueryError:
        return False
    return True


def _agrees_with_duckdb(sql: str) -> None:
    """What the check accepts, DuckDB's own parser reads as one SELECT."""
    try:
        parsed = duckdb.extract_statements(sql)
    except duckdb.Error:
        return
    assert [s.type for s in parsed] == [duckdb.StatementType.SELECT], sql


FUZZ = settings(
    max_examples=300,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


@FUZZ
@given(sql=statements | pieces)
def test_fuzz_the_guard_accepts_only_harmless_statements(database: Database, sql: str) -> None:
    if _accepted(sql):
        _agrees_with_duckdb(sql)
        _assert_harmless(database, sql)


def test_every_body_with_every_table_reference(database: Database) -> None:
    accepted = {
        sql for sql in (body.format(t=t) for body in BODIES for t in TABLE_REFS) if _accepted(sql)
    }
    assert len(accepted) > 50  # the grammar above reaches the accepting side too
    for sql in sorted(accepted):
        _agrees_with_duckdb(sql)
        _assert_harmless(database, sql)


@FUZZ
@given(
    sql=st.text(max_size=200)
    | st.text(alphabet="SELECT FROM events;'\"`$/*-()\n\\EXPLAIN ANALYZE", max_size=120),
    dialect=st.sampled_from(ALL),
)
def test_fuzz_the_guard_raises_only_query_errors(sql: str, dialect: str) -> None:
    with contextlib.suppress(QueryError):
        check_read_only(sql, dialect, TABLES)


@pytest.mark.parametrize("dialect", ALL)
def test_deep_nesting_is_refused_not_crashed(dialect: str) -> None:
    for sql in (
        "SELECT " + "(" * 20000 + "1" + ")" * 20000,
        "SELECT * FROM " + "(SELECT * FROM " * 2000 + "events" + ") AS t" * 2000,
        "SELECT " + "-" * 5000 + "1",
        "SELECT " + " + ".join(["1"] * 5000),
    ):
        with contextlib.suppress(QueryError):
            check_read_only(sql, dialect, TABLES)
