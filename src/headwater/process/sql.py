"""SQL pipelines through sqlglot: what a query reads, and the SQL an engine runs.

Pipelines are written in the project's dialect (BigQuery's or DuckDB's) and
transpiled to the engine's. ``@start`` and ``@end`` are the interval's bounds,
BigQuery's own query-parameter syntax; they stay parameters in every dialect,
so values are bound, never pasted. Table names may carry a BigQuery project
and dataset (``proj.analytics.events``): only the last part names the table,
so the SQL that runs in production also runs here.

>>> q = parse("SELECT COUNT(*) FROM p.ds.events WHERE received_at >= @start", "bigquery", "x")
>>> sorted(q.references), render(q, "duckdb")
(['events'], 'SELECT COUNT(*) FROM events WHERE received_at >= $start')
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass

import sqlglot
from sqlglot import exp
from sqlglot.errors import ErrorLevel, ParseError, UnsupportedError

from headwater.process.errors import PipelineError

PARAMETERS = frozenset({"start", "end"})
_TOKEN = re.compile(r"<Token token_type: [^,]+, text: ([^,]*),[^>]*>")


@dataclass(frozen=True)
class Query:
    """A parsed pipeline query and what it reads."""

    expression: exp.Query
    references: frozenset[str]
    parameters: frozenset[str]
    source: str
    path: str


def parse(sql: str, dialect: str, path: str) -> Query:
    """Parse one SELECT; errors name the file and line."""
    try:
        statements = [s for s in sqlglot.parse(sql, read=dialect) if s is not None]
    except ParseError as exc:
        first = exc.errors[0] if exc.errors else {}
        description = _TOKEN.sub(r"'\1'", str(first.get("description", exc)))
        raise PipelineError(
            f"the SQL does not parse: {description}",
            path=path,
            line=first.get("line"),
        ) from None
    if len(statements) != 1:
        raise PipelineError(
            f"a pipeline holds exactly one query, found {len(statements)}", path=path
        )
    expression = statements[0]
    if not isinstance(expression, exp.Query):
        raise PipelineError(
            f"a pipeline is one SELECT (or WITH … SELECT), not {expression.key.upper()}",
            path=path,
            line=_line(sql, expression.key),
        )
    ctes = {cte.alias_or_name for cte in expression.find_all(exp.CTE)}
    references = frozenset(
        table.name for table in expression.find_all(exp.Table) if table.name not in ctes
    )
    parameters = set()
    for parameter in expression.find_all(exp.Parameter, exp.Placeholder):
        name = parameter.name
        if name not in PARAMETERS:
            raise PipelineError(
                f"unknown parameter @{name}",
                path=path,
                line=_line(sql, f"@{name}"),
                hint="pipelines take @start and @end, the interval's bounds",
            )
        parameters.add(name)
    return Query(expression, references, frozenset(parameters), sql, path)


def render(query: Query, engine_dialect: str, *, pretty: bool = False) -> str:
    """The SQL the engine runs: unqualified table names, ``@start``/``@end`` as parameters."""
    expression = query.expression.copy()
    for table in expression.find_all(exp.Table):
        table.set("db", None)
        table.set("catalog", None)
    try:
        return expression.sql(
            dialect=engine_dialect, pretty=pretty, unsupported_level=ErrorLevel.RAISE
        )
    except UnsupportedError as exc:
        construct = str(exc).split(":")[0].strip()
        raise PipelineError(
            f"cannot translate to {engine_dialect}: {exc}",
            path=query.path,
            line=_line(query.source, _words(construct)),
            hint="rewrite that construct, or set dialect to the engine's own in headwater.toml",
        ) from None


def version(text: str) -> str:
    """A short stable hash of what a pipeline runs."""
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def locate(source: str, message: str) -> int | None:
    """The first line of ``source`` that holds a name quoted in an engine's error message."""
    for name in re.findall(r'"([^"]+)"|\'([^\']+)\'', message):
        found = _line(source, name[0] or name[1])
        if found is not None:
            return found
    return None


def _line(source: str, needle: str) -> int | None:
    if not needle:
        return None
    lowered = needle.lower()
    for number, line in enumerate(source.splitlines(), start=1):
        code = line.split("--", 1)[0]
        if lowered in code.lower():
            return number
    return None


def _words(construct: str) -> str:
    # "Unsupported ML.PREDICT" -> "ML.PREDICT"; keep the most specific word.
    words = [w for w in re.split(r"[\s()]+", construct) if w and w.lower() != "unsupported"]
    return max(words, key=len) if words else ""
