"""Whether a statement sent through ``headwater query`` only reads the store's tables.

Parsing decides, not patterns over the text. A regex sees characters, and SQL
hides a statement's meaning from characters in many ways: comments before the
keyword, a leading semicolon, option lists (``EXPLAIN (FORMAT json, ANALYZE)``),
a data-modifying CTE inside a SELECT, a file read disguised as a table name. A
parser (sqlglot, in the engine's dialect) gives the statement as a tree, and
every node of that tree is checked: what cannot be read as a typed tree is
refused. This check is one of two locks: the engines also run the query on a
connection that cannot write.

Allowed, as exactly one statement:

- a query: ``SELECT``, ``WITH … SELECT``, ``UNION``/``INTERSECT``/``EXCEPT``,
  ``VALUES``, a parenthesised query; subqueries anywhere inside it;
- ``DESCRIBE <table>`` of one of the store's tables.

Each table a query reads must be one of the store's tables or a CTE in scope,
written without a schema or catalog (but for the ``information_schema`` views of
DuckDB and PostgreSQL, which list tables and columns); in ``FROM`` the only functions allowed are
the generators ``range``, ``generate_series`` and ``unnest`` (and Spark's
``explode``/``posexplode``, which ``LATERAL VIEW`` needs). Functions that reach
files, settings, the server or other systems are refused wherever they appear;
other functions are allowed, so a user-defined function that writes is left to
the connection that cannot write.

Names of tables are matched as the engines resolve them: DuckDB, PostgreSQL and
Spark fold unquoted names to lower case, so there ``EVENTS`` reads ``events``; a
quoted name, and any name on BigQuery, must match exactly.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from typing import Final

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError, TokenError

from headwater.store.errors import QueryError, ReadOnlyQuery

__all__ = ["DIALECTS", "check_read_only"]

#: The sqlglot dialects of the engines ``headwater query`` runs on.
DIALECTS: Final = frozenset({"duckdb", "postgres", "spark", "bigquery"})

# Unquoted names fold to lower case in these engines; BigQuery's table names are
# case-sensitive.
_FOLDING: Final = frozenset({"duckdb", "postgres", "spark"})

_QUERIES: Final = (exp.Select, exp.SetOperation, exp.Values, exp.Subquery)

# The standard catalog views (the names of tables and columns): the one schema a query
# may name, where the engine has it as views over its own catalog.
_CATALOG: Final = "information_schema"
#: Its views that describe tables and columns (any other name there, DuckDB would read as a
#: file: information_schema."x.csv").
_CATALOG_VIEWS: Final = frozenset(
    {"tables", "columns", "schemata", "views", "table_constraints", "key_column_usage"}
)
_CATALOG_DIALECTS: Final = frozenset({"duckdb", "postgres"})

# Statement nodes, wherever they sit in the tree: a DELETE inside a CTE runs as
# surely as one on its own. Looked up by name so that a node missing from an
# older sqlglot does not break the import.
_STATEMENT_NAMES: Final = (
    "DML",
    "DDL",
    "Insert",
    "Update",
    "Delete",
    "Merge",
    "Copy",
    "Create",
    "Command",  # what sqlglot could not parse: EXPLAIN, CALL, LOAD, VACUUM, …
    "Alter",
    "AlterSession",
    "Analyze",
    "Attach",
    "Block",
    "Cache",
    "Comment",
    "Commit",
    "ConditionalInsert",
    "ConnectTo",
    "Declare",
    "Describe",
    "Detach",
    "Directory",
    "Disconnect",
    "Drop",
    "Execute",
    "ExecuteSql",
    "Export",
    "Get",
    "Grant",
    "IfBlock",
    "Install",
    "Into",
    "Kill",
    "LoadData",
    "Lock",
    "LockingStatement",
    "LoopBlock",
    "MultitableInserts",
    "NextValueFor",
    "Pragma",
    "Put",
    "Refresh",
    "RepeatBlock",
    "Return",
    "Returning",
    "Revoke",
    "Rollback",
    "Set",
    "Show",
    "StoredProcedure",
    "Summarize",
    "SwapTable",
    "Transaction",
    "TruncateTable",
    "Uncache",
    "Undrop",
    "Use",
    "WhileBlock",
)
_STATEMENTS: Final[tuple[type, ...]] = tuple(
    node
    for node in (getattr(exp, name, None) for name in _STATEMENT_NAMES)
    if isinstance(node, type)
)

#: Functions allowed where a table goes: they generate rows from their arguments.
_GENERATORS: Final = frozenset(
    {
        # DuckDB's memory use by component: how much of a server's memory is the store's.
        "duckdb_memory",
        "range",
        "generate_series",
        "unnest",
        "explode",
        "explode_outer",
        "posexplode",
        "posexplode_outer",
    }
)

# Functions that read files or the environment, run SQL given as text, change a
# setting or a sequence, or act on the server or other systems. Each is listed
# under the engine that has it, and all are refused in every dialect: a name
# harmless in one engine is never needed in a read of another's tables.
# ``current_setting`` is refused too: the server's configuration is not the
# store's data, and can hold paths and credentials. ``pg_sleep``/``sleep_ms``
# are refused because they hold a pooled connection for as long as asked.
_REFUSED_FUNCTIONS: Final = {
    "duckdb": {
        "getenv",
        "current_setting",
        "read_text",
        "read_blob",
        "query",
        "query_table",
        "json_execute_serialized_sql",
        "nextval",
        "setval",
        "sleep_ms",
        "write_log",
        "checkpoint",
        "force_checkpoint",
        "enable_logging",
        "disable_logging",
        "truncate_duckdb_logs",
        "enable_profiling",
        "disable_profiling",
        "which_secret",
        "glob",
        "sniff_csv",
    },
    "postgres": {
        "pg_read_file",
        "pg_read_binary_file",
        "pg_ls_dir",
        "pg_stat_file",
        "current_setting",
        "set_config",
        "pg_terminate_backend",
        "pg_cancel_backend",
        "pg_reload_conf",
        "pg_rotate_logfile",
        "pg_promote",
        "pg_notify",
        "pg_switch_wal",
        "pg_import_system_collations",
        "nextval",
        "setval",
        "txid_current",
        "pg_current_xact_id",
        "lo_import",
        "lo_export",
        # Full-text statistics and rewriting run the SQL they are given as text.
        "ts_stat",
        "ts_rewrite",
    },
    "spark": {"reflect", "java_method", "try_reflect"},
    "bigquery": {"external_query"},
}
_REFUSED_NAMES: Final = frozenset().union(*_REFUSED_FUNCTIONS.values())
# Families refused by the start of their name: every member reads files,
# catalogs or other databases, or changes the server's state.
_REFUSED_PREFIXES: Final = (
    "read_",  # DuckDB's and Databricks' file readers
    "parquet_",
    "duckdb_",
    "pragma_",
    "__internal",
    "dblink",
    "lo_",
    "pg_ls_",
    "pg_read_",
    "pg_stat_",  # other sessions' activity and SQL, and resets
    "pg_sleep",
    "pg_advisory",
    "pg_try_advisory",
    "pg_create_",
    "pg_drop_",
    "pg_replication_",
    "pg_logical_",
    "pg_file_",
    "pg_backup_",
    "pg_log_",
    "pg_wal_replay_",
)
# PostgreSQL's query_to_xml, table_to_xml, database_to_xml and the like run SQL
# given as text or dump whole schemas.
_REFUSED_INFIXES: Final = ("_to_xml",)


def check_read_only(sql: str, dialect: str, tables: Collection[str]) -> None:
    """Raise ReadOnlyQuery / QueryError unless ``sql`` is one plain read of the store's tables.

    >>> check_read_only("SELECT event, count(*) FROM events GROUP BY 1", "duckdb", {"events"})
    >>> check_read_only("EXPLAIN ANALYZE DELETE FROM events", "duckdb", {"events"})
    Traceback (most recent call last):
    ...
    headwater.store.errors.ReadOnlyQuery: query failed: EXPLAIN statements are not allowed here
    """
    if dialect not in DIALECTS:
        raise ValueError(f"unknown dialect {dialect!r}; expected one of {sorted(DIALECTS)}")
    try:
        _Guard(sql, dialect, tables).check()
    except QueryError:
        raise
    except RecursionError:
        raise QueryError(
            "the statement is nested too deeply to be checked",
            hint=_usage(tables),
        ) from None
    except Exception as exc:  # the check refuses what it cannot read, whatever the cause
        raise QueryError(
            f"the statement could not be checked ({type(exc).__name__})",
            hint=_usage(tables),
        ) from None


class _Guard:
    def __init__(self, sql: str, dialect: str, tables: Collection[str]) -> None:
        self.sql = sql
        self.dialect = dialect
        self.tables = tables
        self.known = frozenset(tables)

    def check(self) -> None:
        statements = self._parse()
        if not statements:
            raise QueryError("the text holds no SQL statement", hint=_usage(self.tables))
        if len(statements) > 1:
            raise QueryError(
                f"the text holds {len(statements)} statements where one is expected",
                hint="send one statement, with nothing after its semicolon; " + _usage(self.tables),
            )
        statement = statements[0]
        if isinstance(statement, exp.Describe):
            self._check_describe(statement)
        elif not isinstance(statement, _QUERIES):
            # The first word names the statement as its author wrote it; sqlglot reads
            # some statements it does not know as expressions (CHECKPOINT is a column).
            word = self._leading_word()
            if word in (None, "WITH") and isinstance(statement, _STATEMENTS):
                word = _kind(statement)
            if word is None:
                raise QueryError(
                    "the text is an expression, not a SQL statement", hint=_usage(self.tables)
                )
            raise self._not_a_read(word)
        for node in statement.walk():
            if node is statement:
                continue
            if isinstance(node, _STATEMENTS):
                raise self._not_a_read(_kind(node))
            if isinstance(node, exp.Table):
                self._check_table(node)
            elif isinstance(node, exp.Func):
                self._check_function(node)
            elif isinstance(node, exp.From | exp.Join | exp.Lateral):
                self._check_source(node)

    def _parse(self) -> list[exp.Expr]:
        try:
            parsed = sqlglot.parse(self.sql, read=self.dialect)
        except (ParseError, TokenError) as exc:
            raise QueryError(_first_line(exc), hint=_usage(self.tables)) from None
        # ``None`` stands for an empty statement (``;;``), Semicolon for one holding
        # only a comment: neither runs anything.
        return [s for s in parsed if s is not None and not isinstance(s, exp.Semicolon)]

    def _check_describe(self, statement: exp.Describe) -> None:
        target = statement.this
        kind = str(statement.args.get("kind") or "TABLE").upper()
        if not isinstance(target, exp.Table) or kind != "TABLE":
            raise QueryError(
                "DESCRIBE is allowed only of one of the store's tables",
                hint=f"write DESCRIBE followed by a table: {_names(self.tables)}",
            )
        self._check_table(target)

    def _check_source(self, node: exp.From | exp.Join | exp.Lateral) -> None:
        source = node.this
        if isinstance(source, exp.Table | exp.Subquery | exp.Values | exp.Unnest | exp.Lateral):
            return
        if isinstance(source, exp.Func) and _is_generator(source):
            return
        if isinstance(node, exp.Lateral) and isinstance(source, exp.Select):
            return
        what = _call(source) if isinstance(source, exp.Func) else source.sql(self.dialect)
        raise QueryError(
            f"the query reads from {what}, which is not one of the store's tables",
            hint=_usage(self.tables),
        )

    def _check_table(self, table: exp.Table) -> None:
        name = table.this
        if name is None and table.args.get("rows_from"):
            return  # ROWS FROM (…): each function inside is a Table of its own
        if table.args.get("db") or table.args.get("catalog"):
            if self._is_catalog_view(table):
                return
            raise QueryError(
                f"the query reads {table.sql(self.dialect)}, a name with a schema, "
                "catalog or file format before it",
                hint=f"name the store's tables on their own: {_names(self.tables)}",
            )
        if isinstance(name, exp.Func):
            if not _is_generator(name):
                raise QueryError(
                    f"{_call(name)} reads from outside the store's tables",
                    hint=f"{_usage(self.tables)}; in FROM, the only functions allowed are "
                    "range(), generate_series() and unnest()",
                )
            return
        if not isinstance(name, exp.Identifier):
            raise QueryError(
                f"the query reads from {table.sql(self.dialect)}, which is not a table name",
                hint=_usage(self.tables),
            )
        if self._is_string(name):
            # DuckDB reads a string in FROM as a file to scan.
            raise QueryError(
                f"the query reads the file {name.name!r}",
                hint=_usage(self.tables),
            )
        folded = self._fold(name)
        if folded in self.known or folded in self._ctes_in_scope(table):
            return
        raise QueryError(
            f"the query reads {name.name!r}, which is not one of the store's tables",
            hint=_usage(self.tables),
        )

    def _is_catalog_view(self, table: exp.Table) -> bool:
        db = table.args.get("db")
        return (
            self.dialect in _CATALOG_DIALECTS
            and not table.args.get("catalog")
            and isinstance(db, exp.Identifier)
            and self._fold(db) == _CATALOG
            and isinstance(table.this, exp.Identifier)
            and not self._is_string(table.this)
            and self._fold(table.this) in _CATALOG_VIEWS
        )

    def _check_function(self, node: exp.Func) -> None:
        names = _function_names(node)
        if any(_refused(name) for name in names):
            raise QueryError(
                f"{_call(node)} reaches outside the store's tables "
                "(files, settings, the server or other systems)",
                hint=f"remove {_call(node)}; {_usage(self.tables)}",
            )

    def _ctes_in_scope(self, table: exp.Table) -> set[str]:
        """The CTE names ``table`` can refer to: the engine resolves any other name
        to a table, so a CTE out of scope must not excuse a name."""
        chain: list[exp.Expr] = [table]
        while (parent := chain[-1].parent) is not None:
            chain.append(parent)
        names: set[str] = set()
        for i in range(1, len(chain)):
            with_ = chain[i].args.get("with_") or chain[i].args.get("with")
            if not isinstance(with_, exp.With):
                continue
            ctes = [e for e in with_.expressions if isinstance(e, exp.CTE)]
            if chain[i - 1] is with_:
                # Inside a CTE's body: a plain WITH sees only the CTEs before it (a
                # later name, or its own, is a table); WITH RECURSIVE sees them all.
                inner = chain[i - 2] if i >= 2 else None
                if not with_.args.get("recursive"):
                    ctes = ctes[: next((k for k, c in enumerate(ctes) if c is inner), 0)]
            for cte in ctes:
                alias = cte.args.get("alias")
                if isinstance(alias, exp.TableAlias) and isinstance(alias.this, exp.Identifier):
                    names.add(self._fold(alias.this))
        return names

    def _fold(self, identifier: exp.Identifier) -> str:
        if self.dialect in _FOLDING and not identifier.quoted:
            return identifier.name.lower()
        return identifier.name

    def _is_string(self, identifier: exp.Identifier) -> bool:
        start = identifier.meta.get("start")
        return isinstance(start, int) and self.sql[start : start + 1] == "'"

    def _leading_word(self) -> str | None:
        try:
            tokens = sqlglot.tokenize(self.sql, read=self.dialect)
        except (ParseError, TokenError):
            return None
        words = (t.text for t in tokens if t.text != ";")
        first = next(words, "")
        return first.upper() if first.replace("_", "").isalpha() else None

    def _not_a_read(self, kind: str) -> ReadOnlyQuery:
        error = ReadOnlyQuery(kind)
        # The class's own hint lists EXPLAIN, which runs what it explains.
        if kind.startswith("EXPLAIN"):
            error.hint = "EXPLAIN is refused in every form, as EXPLAIN ANALYZE runs the "
            error.hint += f"statement it explains; {_usage(self.tables)}"
        else:
            error.hint = _usage(self.tables)
        return error


def _kind(node: exp.Expr) -> str:
    if isinstance(node, exp.Command):
        return str(node.this).upper()
    if isinstance(node, exp.Into):
        return "SELECT … INTO"
    if isinstance(node, exp.Lock):
        return "SELECT … FOR UPDATE/SHARE"
    if isinstance(node, exp.Transaction):
        return "BEGIN"
    if isinstance(node, exp.TruncateTable):
        return "TRUNCATE"
    return node.key.upper()


def _function_names(node: exp.Func) -> set[str]:
    """The names a call goes by: as written for a function sqlglot does not know,
    else every SQL name of its typed node."""
    if isinstance(node, exp.Anonymous | exp.AnonymousAggFunc):
        return {node.name.lower()}
    return {name.lower() for name in type(node).sql_names()} | {node.key}


def _is_generator(node: exp.Func) -> bool:
    # A dialect may parse a generator into a subclass of its own name
    # (PostgreSQL's generate_series is ExplodingGenerateSeries).
    if isinstance(node, exp.Anonymous | exp.AnonymousAggFunc):
        return node.name.lower() in _GENERATORS
    return any(
        name.lower() in _GENERATORS
        for cls in type(node).__mro__
        if isinstance(cls, type) and issubclass(cls, exp.Func) and cls is not exp.Func
        for name in cls.sql_names()
    )


def _refused(name: str) -> bool:
    if name in _GENERATORS:
        return False
    return (
        name in _REFUSED_NAMES
        or name.startswith(_REFUSED_PREFIXES)
        or any(infix in name for infix in _REFUSED_INFIXES)
    )


def _call(node: exp.Func) -> str:
    if isinstance(node, exp.Anonymous | exp.AnonymousAggFunc):
        return f"{node.name}()"
    return f"{type(node).sql_names()[0].lower()}()"


def _names(tables: Iterable[str]) -> str:
    return ", ".join(sorted(tables)) or "(none)"


def _usage(tables: Collection[str]) -> str:
    return (
        "`headwater query` runs one SELECT (or WITH … SELECT, VALUES, or DESCRIBE of a "
        f"table) over the store's tables: {_names(tables)}"
    )


def _first_line(exc: Exception) -> str:
    text = str(exc).strip()
    line = text.splitlines()[0] if text else ""
    return f"the statement does not parse: {line}" if line else "the statement does not parse"
