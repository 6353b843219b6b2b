"""``headwater query``: one statement in the project's dialect, as the engine runs it.

A query (SELECT, WITH … SELECT, a set operation) goes through the same
translation as a pipeline's (:func:`headwater.process.sql.render`), so the
BigQuery SQL a pipeline holds can be tried as it is. Any other statement
(``DESCRIBE``, ``EXPLAIN``, ``VALUES``, and every write) goes to the engine as
written: the engine's read-only guard checks the text it is given to run,
whatever it was translated from, and refuses writes in its own words.

>>> to_engine("SELECT SAFE_DIVIDE(1, 0) AS r FROM p.ds.events", "bigquery", "duckdb")
'SELECT CASE WHEN 0 <> 0 THEN 1 / 0 ELSE NULL END AS r FROM events'
"""

from __future__ import annotations

import sqlglot
from sqlglot import exp
from sqlglot.errors import ParseError

from headwater.process import sql
from headwater.process.errors import PipelineError
from headwater.store.errors import QueryError

_NAMES = {"bigquery": "BigQuery", "duckdb": "DuckDB", "postgres": "PostgreSQL", "spark": "Spark"}


def to_engine(text: str, dialect: str, engine_dialect: str) -> str:
    """``text``, written in ``dialect``, as the engine of ``engine_dialect`` runs it."""
    if (line := sql.foreign_cast(text, dialect)) is not None:
        raise QueryError(
            f"the query is not {_NAMES.get(dialect, dialect)} SQL (line {line}): `::` is "
            "DuckDB's and PostgreSQL's cast",
            hint=sql.CAST_HINT,
        )
    if dialect == engine_dialect:
        return text
    try:
        statements = [s for s in sqlglot.parse(text, read=dialect) if s is not None]
    except ParseError as exc:
        first = exc.errors[0] if exc.errors else {}
        where = f" (line {first['line']})" if first.get("line") else ""
        description = str(first.get("description", exc))
        raise QueryError(
            f"the query is not {_NAMES.get(dialect, dialect)} SQL{where}: {description}",
            hint=f"`headwater query` takes the project's dialect, [project] dialect = "
            f'"{dialect}" in headwater.toml, as pipelines do',
        ) from None
    if len(statements) != 1 or not isinstance(statements[0], exp.Query):
        return text
    tree = statements[0].transform(_catalog_views)
    assert isinstance(tree, exp.Query)  # only tables were replaced
    query = sql.Query(tree, frozenset(), frozenset(), text, "", dialect)
    try:
        return sql.render(query, engine_dialect)
    except PipelineError as exc:
        raise QueryError(exc.message, hint=exc.hint) from None


def _catalog_views(node: exp.Expression) -> exp.Expression:
    """BigQuery's ``dataset.INFORMATION_SCHEMA.TABLES`` is the catalog view
    ``information_schema.tables`` of the engine (the dataset is the store's own)."""
    if not isinstance(node, exp.Table) or not isinstance(node.this, exp.Identifier):
        return node
    schema, _, view = node.name.partition(".")
    if schema.lower() != "information_schema" or not view:
        return node
    name = exp.Dot(
        this=exp.to_identifier(schema.lower()), expression=exp.to_identifier(view.lower())
    )
    return exp.Table(this=name, alias=node.args.get("alias"))
