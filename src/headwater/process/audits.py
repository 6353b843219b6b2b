"""Audits: checks of a run's output before it is published.

Each audit is a query for offending rows over the output. An output held as
Arrow is queried in an in-memory DuckDB; the common audits are first checked in
Arrow, which costs microseconds, and only an audit that fails there (or a
custom one) runs its query. An output staged in the engine (DuckDB,
PostgreSQL) is queried there, in the engine's SQL, before it is published; a
custom audit, written for DuckDB over ``output``, runs on the rows fetched
into the in-memory DuckDB when the engine is not DuckDB, so it answers the
same everywhere.
Queries are sqlglot expressions, so column names and accepted values are
quoted, never pasted. A failing audit reports how many rows offend and a
sample of them.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import cast

import duckdb
import msgspec
import pyarrow as pa
import pyarrow.compute as pc
import sqlglot
from sqlglot import exp

from headwater.process.errors import AuditFailed, PipelineError
from headwater.process.settings import Audit
from headwater.store.engine import Staged

SAMPLE = 5
_lock = threading.Lock()
_database: duckdb.DuckDBPyConnection | None = None


def _scratch() -> duckdb.DuckDBPyConnection:
    """One in-memory DuckDB for all audits of the process; each run takes a cursor of it
    (opening a database costs ~10 ms, a cursor ~0.1 ms)."""
    global _database
    with _lock:
        if _database is None:
            _database = duckdb.connect()
        return _database


def run_audits(
    pipeline: str, path: str, audits: Sequence[Audit], output: pa.Table, dialect: str
) -> None:
    """Raise :class:`AuditFailed` on the first audit that finds offending rows."""
    remaining = [a for a in audits if not _passes(a, output)]
    if not remaining:
        return
    con = _scratch().cursor()
    try:
        con.execute("SET TimeZone = 'UTC'")
        con.register("output", output)

        def fetch(query: exp.Query) -> list[dict[str, object]]:
            found = con.execute(query.sql("duckdb"))
            columns = [d[0] for d in found.description or []]
            return [dict(zip(columns, row, strict=True)) for row in found.fetchall()]

        target = _Target("output", output.column_names, output.num_rows, fetch)
        for audit in remaining:
            _check(audit, target, pipeline, path, dialect)
    finally:
        con.close()


@dataclass(frozen=True)
class Also:
    """A count asked in the statement that counts the audits' offenders, and judged before
    them (the runner's rows outside the interval): one round trip for every check."""

    #: A one-row query of one column over the staged table, in the engine's SQL.
    query: str
    params: Mapping[str, object]
    #: Raises when the count is wrong.
    judge: Callable[[int], None]


def check_staged(
    pipeline: str,
    path: str,
    audits: Sequence[Audit],
    staged: Staged,
    dialect: str,
    engine: str,
    *,
    also: Also | None = None,
) -> None:
    """:func:`run_audits` on an output staged in the engine (``engine``: its dialect), as
    SQL there: one statement counts the offending rows of every audit (and ``also``'s),
    and a failing one is asked for its sample. A custom audit is written for DuckDB's
    semantics over ``output``: on another engine it runs on the staged rows fetched into
    the audits' DuckDB."""
    if not audits and also is None:
        return
    custom = [a for a in audits if a.sql is not None]
    if custom and engine != "duckdb":
        if also is not None:  # judged first, as everywhere
            also.judge(int(str(staged.query(also.query, also.params).column(0)[0].as_py())))
            also = None
        rows = staged.query(exp.select("*").from_(exp.table_(staged.table)).sql(engine))
        run_audits(pipeline, path, custom, rows, dialect)
    checked = [a for a in audits if a.sql is None or engine == "duckdb"]
    counting, samples = _staged_queries(
        pipeline,
        path,
        msgspec.json.encode(checked),
        staged.table,
        tuple(staged.schema.names),
        dialect,
        engine,
    )
    params: Mapping[str, object] | None = None
    if also is not None:
        # Both are Headwater's own generated SQL, over the staged table only.
        rest = f", q.* FROM ({counting}) AS q" if counting else ""
        counting, params = f"SELECT ({also.query}) AS extra{rest}", also.params
    counts = staged.row(counting, params) if counting else {}
    if also is not None:
        also.judge(int(str(counts["extra"])))
    for index, audit in enumerate(checked):
        name, sample = samples[index]
        if audit.row_count is not None:
            low, high = audit.row_count.min, audit.row_count.max
            if (low is not None and staged.rows < low) or (high is not None and staged.rows > high):
                row: dict[str, object] = {"row_count": staged.rows, "min": low, "max": high}
                raise AuditFailed(pipeline, name, 1, [row])
            continue
        count = int(str(counts[f"a{index}"]))
        if count:
            raise AuditFailed(pipeline, name, count, staged.query(sample).to_pylist())


@functools.lru_cache(maxsize=256)
def _staged_queries(
    pipeline: str,
    path: str,
    audits: bytes,
    table: str,
    columns: tuple[str, ...],
    dialect: str,
    engine: str,
) -> tuple[str, list[tuple[str, str]]]:
    """For :func:`check_staged`, made once per pipeline's audits and output columns (sqlglot
    takes milliseconds): one statement counting the offending rows of each audit (``a0``,
    ``a1``, ... by position; none for ``row_count``, told by the staged count), and per audit
    its name and the query for a sample of them."""
    target = _Target(table, list(columns), 0, lambda _: [])
    counted = []
    samples = []
    for index, audit in enumerate(msgspec.json.decode(audits, type=list[Audit])):
        name, query = _offenders(audit, target, pipeline, path, dialect)
        samples.append((name, query.limit(SAMPLE).sql(engine)))
        if audit.row_count is None:
            count = exp.select(exp.Count(this=exp.Star())).from_(query.subquery("o"))
            counted.append(exp.alias_(count.subquery(), f"a{index}"))
    return (exp.select(*counted).sql(engine) if counted else ""), samples


@dataclass(frozen=True)
class _Target:
    """What audits read: a table's name, its columns and rows, and how to run a query."""

    table: str
    columns: list[str]
    rows: int
    fetch: Callable[[exp.Query], list[dict[str, object]]]


def _check(audit: Audit, target: _Target, pipeline: str, path: str, dialect: str) -> None:
    name, offenders = _offenders(audit, target, pipeline, path, dialect)
    count_query = exp.select(exp.alias_(exp.Count(this=exp.Star()), "n")).from_(
        offenders.subquery("o")
    )
    count = int(str(target.fetch(count_query)[0]["n"]))
    if count:
        raise AuditFailed(pipeline, name, count, target.fetch(offenders.limit(SAMPLE)))


def _passes(audit: Audit, output: pa.Table) -> bool:
    """A quick check in Arrow for the common audits; ``False`` means "ask SQL", which
    then finds (and reports) the offending rows, or names a missing column."""
    names = set(output.column_names)
    if audit.not_null is not None and names.issuperset(audit.not_null):
        return all(output[column].null_count == 0 for column in audit.not_null)
    if audit.unique is not None and names.issuperset(audit.unique):
        if output.num_rows < 2:
            return True
        copies = output.group_by(audit.unique).aggregate([([], "count_all")])["count_all"]
        return bool(pc.max(copies).as_py() == 1)
    if audit.row_count is not None:
        low, high = audit.row_count.min, audit.row_count.max
        return (low is None or output.num_rows >= low) and (high is None or output.num_rows <= high)
    return False


def _offenders(
    audit: Audit, target: _Target, pipeline: str, path: str, dialect: str
) -> tuple[str, exp.Select]:
    """The audit's name and a query returning the offending rows of ``target``."""

    def columns(names: list[str]) -> list[exp.Column]:
        for column in names:
            if column not in target.columns:
                raise PipelineError(
                    f"audit names column {column!r}, which the output does not have",
                    pipeline=pipeline,
                    path=path,
                    hint=f"columns: {', '.join(target.columns)}",
                )
        return [exp.column(name, quoted=True) for name in names]

    table = exp.table_(target.table)
    rows = exp.select("*").from_(table.copy())
    if audit.not_null is not None:
        nulls = [exp.Is(this=c, expression=exp.null()) for c in columns(audit.not_null)]
        return f"not_null({', '.join(audit.not_null)})", rows.where(exp.or_(*nulls))
    if audit.unique is not None:
        keys = columns(audit.unique)
        copies = exp.Count(this=exp.Star())
        query = (
            exp.select(*keys, exp.alias_(copies, "copies"))
            .from_(table)
            .group_by(*keys)
            .having(exp.GT(this=copies.copy(), expression=exp.Literal.number(1)))
        )
        return f"unique({', '.join(audit.unique)})", query
    if audit.accepted_values is not None:
        (column,) = columns([audit.accepted_values.column])
        allowed = [
            exp.Literal.string(str(v).lower() if isinstance(v, bool) else str(v))
            for v in audit.accepted_values.values
        ]
        as_text = exp.cast(column.copy(), "VARCHAR")
        condition = exp.and_(
            exp.Not(this=exp.Is(this=column, expression=exp.null())),
            exp.Not(this=exp.In(this=as_text, expressions=allowed)),
        )
        return f"accepted_values({audit.accepted_values.column})", rows.where(condition)
    if audit.row_count is not None:
        low, high = audit.row_count.min, audit.row_count.max
        count = target.rows
        bad = (low is not None and count < low) or (high is not None and count > high)
        summary = exp.select(
            exp.alias_(exp.Literal.number(count), "row_count"),
            exp.alias_(exp.Literal.number(low) if low is not None else exp.null(), "min"),
            exp.alias_(exp.Literal.number(high) if high is not None else exp.null(), "max"),
        ).where(exp.true() if bad else exp.false())
        return f"row_count({low}..{high})", summary
    if audit.sql is not None:
        try:
            parsed = sqlglot.parse_one(audit.sql, read=dialect)
        except sqlglot.errors.SqlglotError as exc:
            raise PipelineError(
                f"audit SQL does not parse: {exc}", pipeline=pipeline, path=path
            ) from None
        if not isinstance(parsed, exp.Query):
            raise PipelineError("an audit's sql is one SELECT", pipeline=pipeline, path=path)
        if target.table != "output":
            parsed = cast(exp.Query, parsed.transform(_renamed("output", target.table)))
        return f"sql({audit.sql.strip()[:60]})", exp.select("*").from_(parsed.subquery("a"))
    raise PipelineError(
        "an audit sets none of not_null, unique, accepted_values, row_count, sql",
        pipeline=pipeline,
        path=path,
    )


def _renamed(old: str, new: str) -> Callable[[exp.Expression], exp.Expression]:
    """A transform naming table ``old`` ``new`` (kept under its old name as an alias)."""

    def rename(node: exp.Expression) -> exp.Expression:
        if isinstance(node, exp.Table) and not node.db and node.name == old:
            return exp.table_(new, alias=node.alias or old)
        return node

    return rename
