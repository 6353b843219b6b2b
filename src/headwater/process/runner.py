"""Run one interval of one pipeline: compute, audit, publish, record.

Publication is one engine transaction that replaces exactly the interval (or,
for a full pipeline, the whole table), so no reader sees half an interval and a
re-run gives the same table. The interval is recorded as done in the metadata
only after that transaction commits: a run killed in between leaves the old
output and a missing interval, which the next run fills.

Both writes are fenced by the pipeline's lease: the engine refuses the
publication, and the metadata the record, of a run whose lease was taken over
while it stalled (see :mod:`headwater.state.leases`). At most one run wins.
"""

from __future__ import annotations

import bisect
import functools
import logging
import time
from collections.abc import Callable, Mapping, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import pyarrow as pa
import pyarrow.compute as pc
import sqlalchemy as sa
from sqlglot import exp

from headwater.core.errors import HeadwaterError, TransientError
from headwater.core.logs import fields
from headwater.core.types import Interval
from headwater.process import python, sql
from headwater.process.audits import Also, check_staged, run_audits
from headwater.process.definition import Pipeline
from headwater.process.errors import PipelineError
from headwater.process.graph import Graph
from headwater.process.models.query import score_query, seen
from headwater.process.python import Context
from headwater.state import StateStore
from headwater.state.errors import LeaseLost
from headwater.state.leases import TTL, Lease
from headwater.state.models import used_in
from headwater.state.runs import RUN_OUTCOMES, RunLog, Trigger, error_kind
from headwater.store.engine import Engine, Probes, Staged, Stages
from headwater.store.errors import Fenced, QueryError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class RunResult:
    pipeline: str
    interval: Interval
    rows_written: int
    rows_read: int | None
    seconds: float
    #: False for an interval that had not ended: published as a preview, not recorded done
    #: (so not delivered), run again once it is whole.
    recorded: bool = True
    #: A batch's intervals (``interval`` is their span), each recorded done; empty for one.
    each: tuple[Interval, ...] = ()
    #: A batch's rows written per interval of ``each``.
    rows_each: tuple[int, ...] = ()

    def split(self) -> list[RunResult]:
        """One result per interval of a batch (itself for one interval): the rows each
        holds, and an even share of the time; what the batch read is told by the first."""
        if not self.each:
            return [self]
        share = self.seconds / len(self.each)
        return [
            RunResult(
                self.pipeline,
                interval,
                rows,
                self.rows_read if index == 0 else None,
                share,
                self.recorded,
            )
            for index, (interval, rows) in enumerate(zip(self.each, self.rows_each, strict=True))
        ]


class Runner:
    """Runs pipelines of one project on one engine, recording in one metadata store."""

    def __init__(
        self,
        graph: Graph,
        engine: Engine,
        state: StateStore,
        dialect: str,
        *,
        backoff_seconds: float = 2.0,
        lease_ttl: timedelta = TTL,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.graph = graph
        self.engine = engine
        self.state = state
        self.runs = state.runs
        self.dialect = dialect
        self._backoff = backoff_seconds
        self._lease_ttl = lease_ttl
        self._sleep = sleep

    def run(
        self,
        pipeline: Pipeline,
        interval: Interval,
        trigger: Trigger,
        *,
        record: bool = True,
        each: Sequence[Interval] = (),
    ) -> RunResult:
        """Run with the pipeline's lease held, retrying transient failures with backoff.

        With ``record=False`` the output is published but the interval is not
        marked done (an interval that has not ended yet), so it runs again later.
        ``each``: consecutive intervals run as one batch (``interval`` is their span):
        one query over the span, one publication of it, each interval recorded done.
        A run whose lease was taken over raises :class:`LeaseLost` at once: the
        new holder does the work.

        The metadata is written in one transaction as the run starts (the lease taken,
        runs of dead processes marked, the run recorded) and one as it ends (the run
        succeeded, its intervals done, the lease released).
        """
        first: list[int] = []

        def begin(db: sa.Connection) -> None:
            # Holding the lease, any run still marked running died with its process.
            RunLog.interrupted_in(db, [pipeline.name])
            first.append(
                RunLog.start_run_in(db, pipeline.name, pipeline.version, interval, trigger, 1)
            )

        with Lease(self.state.leases, pipeline.name, self._lease_ttl, then=begin) as lease:
            attempt = 1
            while True:
                run_id = first.pop() if first else None
                try:
                    return self._attempt(
                        pipeline, interval, trigger, attempt, record, lease, run_id, tuple(each)
                    )
                except LeaseLost:
                    raise
                except TransientError:
                    if attempt > pipeline.header.retries:
                        raise
                    self._sleep(self._delay(attempt))  # the attempt's log line says so
                    attempt += 1

    def _delay(self, attempt: int) -> float:
        """Seconds before the attempt after ``attempt``: exponential."""
        return float(self._backoff * 2 ** (attempt - 1))

    def _attempt(
        self,
        pipeline: Pipeline,
        interval: Interval,
        trigger: Trigger,
        attempt: int,
        record: bool,
        lease: Lease,
        run_id: int | None,
        each: tuple[Interval, ...],
    ) -> RunResult:
        started = time.perf_counter()
        if run_id is None:
            run_id = self.runs.start_run(
                pipeline.name, pipeline.version, interval, trigger, attempt
            )
        try:
            rows_each: tuple[int, ...] = ()
            # A scoring pipeline's model runs here, on Arrow: its output leaves the engine.
            in_engine = pipeline.query is not None and pipeline.header.model is None
            if in_engine and isinstance(self.engine, Stages):
                rows_written, rows_read, rows_each = self._in_engine(
                    self.engine, pipeline, interval, lease, each
                )
            else:
                output, rows_read = self._compute(pipeline, interval)
                self._check_times(pipeline, interval, output.schema, _outside_arrow(output))
                if each:
                    rows_each = _per_interval(_times_arrow(output, pipeline), each)
                run_audits(
                    pipeline.name, str(pipeline.path), pipeline.header.audits, output, self.dialect
                )
                lease.check()
                self._publish(pipeline, interval, output, lease)
                rows_written = output.num_rows
            lease.stop_renewing()
            self.runs.succeed(
                run_id,
                pipeline.name,
                pipeline.version,
                interval,
                rows_read=rows_read,
                rows_written=rows_written,
                record_interval=record,
                holder=lease.holder,
                sinks=pipeline.header.sinks,
                whole_table=not pipeline.incremental,
                each=each,
                release=True,
                then=_model_uses(pipeline),
            )
            lease.released = True
        except HeadwaterError as exc:
            self.runs.fail(run_id, str(exc), error_kind(exc))
            retry = (
                isinstance(exc, TransientError)
                and not isinstance(exc, LeaseLost)
                and attempt <= pipeline.header.retries
            )
            _log_run(pipeline, interval, trigger, attempt, run_id, started, error=exc, retry=retry)
            raise
        except Exception as exc:  # a Python pipeline may raise anything
            self.runs.fail(run_id, f"{type(exc).__name__}: {exc}", "terminal")
            error = PipelineError(
                f"the pipeline raised {type(exc).__name__}: {exc}",
                pipeline=pipeline.name,
                path=str(pipeline.path),
            )
            _log_run(pipeline, interval, trigger, attempt, run_id, started, error=error)
            raise error from exc
        result = RunResult(
            pipeline.name,
            interval,
            rows_written,
            rows_read,
            time.perf_counter() - started,
            recorded=record,
            each=each,
            rows_each=rows_each,
        )
        _log_run(pipeline, interval, trigger, attempt, run_id, started, result=result)
        return result

    # -- steps ----------------------------------------------------------------

    def _in_engine(
        self,
        engine: Stages,
        pipeline: Pipeline,
        interval: Interval,
        lease: Lease,
        each: tuple[Interval, ...],
    ) -> tuple[int, int | None, tuple[int, ...]]:
        """Compute, check times, audit and publish inside the engine, in one of its
        transactions: the rows never leave it, and nothing is visible before the checks
        pass. Returns the rows written and read, and a batch's rows per interval."""
        assert pipeline.query is not None
        rendered = _rendered(pipeline, engine.dialect)
        params = {"start": interval.start, "end": interval.end}
        used = {name: params[name] for name in pipeline.query.parameters}
        with ExitStack() as transaction:
            try:
                staged = transaction.enter_context(engine.stage(rendered, used))
            except QueryError as exc:
                raise self._sql_error(pipeline, exc) from None
            # Every row's time inside the interval, counted with the audits' offenders.
            found = _time_column(pipeline, staged.schema)
            also = None
            if found is not None and staged.rows:
                column, kind = found
                query, bounds = _outside_staged(
                    staged.table, column, kind, interval, engine.dialect
                )
                also = Also(query, bounds, functools.partial(_judge, pipeline, interval, column))
            check_staged(
                pipeline.name,
                str(pipeline.path),
                pipeline.header.audits,
                staged,
                self.dialect,
                engine.dialect,
                also=also,
            )
            rows_each: tuple[int, ...] = ()
            if each:
                rows_each = _per_interval(_times_staged(staged, pipeline, engine.dialect), each)
            lease.check()
            self._publish(pipeline, interval, staged, lease)
        return staged.rows, staged.rows_scanned, rows_each

    def _compute(self, pipeline: Pipeline, interval: Interval) -> tuple[pa.Table, int | None]:
        params = {"start": interval.start, "end": interval.end}
        if pipeline.query is not None:
            rendered = _rendered(pipeline, self.engine.dialect)
            used = {name: params[name] for name in pipeline.query.parameters}
            try:
                if pipeline.header.model is not None:
                    return score_query(self.engine, rendered, used, pipeline), None
                selected = self.engine.select(rendered, used)
            except QueryError as exc:
                raise self._sql_error(pipeline, exc) from None
            return selected.table, selected.rows_scanned
        assert pipeline.function is not None
        reader = _Reader(self, pipeline, interval)
        try:
            context = Context(
                pipeline.name, interval.start, interval.end, reader, models=pipeline.models
            )
            result = pipeline.function(context)
        except TransientError:
            raise  # retried, as the error's type says
        except Exception as exc:  # the author's code may raise anything: terminal
            raise python.raised(pipeline.name, pipeline.path, exc) from exc
        if isinstance(result, pa.RecordBatchReader):
            result = result.read_all()
        if not isinstance(result, pa.Table):
            raise PipelineError(
                f"a Python pipeline returns a pyarrow.Table, got {type(result).__name__}",
                pipeline=pipeline.name,
                path=str(pipeline.path),
                hint="return pa.Table.from_pandas(df, preserve_index=False) for a pandas "
                "DataFrame, pa.Table.from_pylist(rows) for a list of dicts",
            )
        if pipeline.function.schema is not None:
            result = _as_declared(pipeline, result, pipeline.function.schema)
        return result, reader.rows_scanned

    def _check_times(
        self,
        pipeline: Pipeline,
        interval: Interval,
        schema: pa.Schema,
        outside: Callable[[str, pa.DataType, Interval], int],
    ) -> None:
        """Every row's time inside the interval; ``outside`` counts the rows whose
        ``time_column`` is outside it or NULL."""
        found = _time_column(pipeline, schema)
        if found is not None:
            column, kind = found
            _judge(pipeline, interval, column, outside(column, kind, interval))

    def _publish(
        self, pipeline: Pipeline, interval: Interval, output: pa.Table | Staged, lease: Lease
    ) -> None:
        try:
            if isinstance(output, pa.Table):
                if pipeline.incremental and pipeline.header.time_column:
                    self.engine.replace_interval(
                        pipeline.name, pipeline.header.time_column, interval, output, lease.fence
                    )
                else:
                    self.engine.replace_table(pipeline.name, output, lease.fence)
            elif pipeline.incremental and pipeline.header.time_column:
                output.replace_interval(
                    pipeline.name, pipeline.header.time_column, interval, lease.fence
                )
            else:
                output.replace_table(pipeline.name, lease.fence)
        except Fenced:
            raise LeaseLost(lease.name, lease.token) from None
        except QueryError as exc:
            raise self._publish_error(pipeline, output.schema, exc) from None

    def _publish_error(
        self, pipeline: Pipeline, columns: pa.Schema, exc: QueryError
    ) -> PipelineError:
        """Why publishing failed; when the table's columns are not the output's (the file
        changed since the table was made), which ones, and how to rebuild it."""
        live = self._live_columns(pipeline.name)
        if live is None or live == columns.names:
            return PipelineError(
                f"publishing failed: {exc.reason}",
                pipeline=pipeline.name,
                path=str(pipeline.path),
                hint="if the output's column types changed since its table was made, "
                "`headwater apply` rebuilds the table",
            )
        added = [c for c in columns.names if c not in live]
        gone = [c for c in live if c not in columns.names]
        said = [
            f"{', '.join(added)} added" if added else "",
            f"{', '.join(gone)} removed" if gone else "",
        ]
        change = "; ".join(s for s in said if s) or "its columns are in another order"
        return PipelineError(
            f"the output's columns are not those of its table, made by an older version of "
            f"the pipeline ({change}), so this interval cannot be published into it",
            pipeline=pipeline.name,
            path=str(pipeline.path),
            hint="`headwater plan` shows the change; `headwater apply` rebuilds the table "
            "beside the live one and swaps it in, in the default environment too",
        )

    def _live_columns(self, table: str) -> list[str] | None:
        """The columns of ``table`` as stored (None: it cannot be read)."""
        query = exp.select("*").from_(exp.table_(table, quoted=True)).limit(0)
        try:
            if isinstance(self.engine, Probes):  # a dry run: free where a query is billed
                found = self.engine.result_schema(query.sql(self.engine.dialect), {})
            else:
                found = self.engine.query(query.sql(self.engine.dialect)).schema
        except HeadwaterError:
            return None
        return list(found.names)

    def _sql_error(self, pipeline: Pipeline, exc: QueryError) -> PipelineError:
        source = pipeline.query.source if pipeline.query is not None else ""
        return PipelineError(
            f"the engine refused the SQL: {exc.reason}",
            pipeline=pipeline.name,
            path=str(pipeline.path),
            line=sql.locate(source, exc.reason),
            hint=exc.hint,
        )


def _model_uses(pipeline: Pipeline) -> Callable[[sa.Connection], None] | None:
    """The registry's record of the model versions ``pipeline``'s version scored with,
    written with the run's success: a run that fails is no use of a version."""
    if not pipeline.models:
        return None
    return functools.partial(
        used_in,
        pipeline=pipeline.name,
        pipeline_version=pipeline.version,
        seen=seen(pipeline.models.values()),
    )


def _log_run(
    pipeline: Pipeline,
    interval: Interval,
    trigger: Trigger,
    attempt: int,
    run_id: int,
    started: float,
    *,
    result: RunResult | None = None,
    error: HeadwaterError | None = None,
    retry: bool = False,
) -> None:
    """One line per attempt: ``succeeded``, ``transient`` (retrying can help; the runner or
    the next scheduler pass does) or ``failed`` (the pipeline or its data must change)."""
    outcome = "succeeded" if error is None else RUN_OUTCOMES[error_kind(error)]
    duration_ms = round((time.perf_counter() - started) * 1000, 1)
    values = fields(
        pipeline=pipeline.name,
        interval_start=interval.start,
        interval_end=interval.end,
        outcome=outcome,
        rows=result.rows_written if result is not None else None,
        rows_read=result.rows_read if result is not None else None,
        duration_ms=duration_ms,
        trigger=trigger,
        attempt=attempt,
        run_id=run_id,
        recorded=result.recorded if result is not None else None,
        error=str(error) if error is not None else None,
        retrying=retry,
    )
    if result is not None:
        log.info("run %s %s succeeded: %d rows in %.0f ms", pipeline.name, interval,
                 result.rows_written, duration_ms, extra=values)  # fmt: skip
    elif outcome == "transient":
        then = "; retrying" if retry else ""
        log.warning("run %s %s failed (transient%s): %s", pipeline.name, interval, then, error,
                    extra=values)  # fmt: skip
    else:
        log.error("run %s %s failed: %s", pipeline.name, interval, error, extra=values)


def _per_interval(times: pa.Table, each: tuple[Interval, ...]) -> tuple[int, ...]:
    """Rows per interval of ``each`` from ``times`` (a time ``t`` and its rows ``n``)."""
    counts = [0] * len(each)
    starts = [i.start for i in each]
    for moment, rows in zip(times["t"].to_pylist(), times["n"].to_pylist(), strict=True):
        if isinstance(moment, datetime):
            moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        elif isinstance(moment, date):
            moment = datetime(moment.year, moment.month, moment.day, tzinfo=UTC)
        else:
            continue
        counts[max(bisect.bisect_right(starts, moment) - 1, 0)] += int(rows)
    return tuple(counts)


def _times_arrow(output: pa.Table, pipeline: Pipeline) -> pa.Table:
    """Rows per value of the time column of ``output``."""
    column = pipeline.header.time_column or ""
    counted = output.group_by(column).aggregate([([], "count_all")])
    return pa.table({"t": counted[column], "n": counted["count_all"]})


def _times_staged(staged: Staged, pipeline: Pipeline, dialect: str) -> pa.Table:
    """Rows per value of the time column of a staged output, counted in the engine."""
    column = exp.column(pipeline.header.time_column or "", quoted=True)
    query = (
        exp.select(exp.alias_(column, "t"), exp.alias_(exp.Count(this=exp.Star()), "n"))
        .from_(exp.table_(staged.table))
        .group_by(column.copy())
    )
    return staged.query(sql.internal(query.sql("duckdb"), dialect))


def _outside_arrow(output: pa.Table) -> Callable[[str, pa.DataType, Interval], int]:
    """Counts rows of ``output`` outside an interval (or NULL), in Arrow."""

    def count(column: str, kind: pa.DataType, interval: Interval) -> int:
        times = output[column]
        if output.num_rows == 0:
            return 0
        if pa.types.is_date(kind):
            times = pc.cast(times, pa.timestamp("us"))
        if pa.types.is_timestamp(times.type) and times.type.tz is None:
            times = pc.assume_timezone(times, "UTC")
        start = pa.scalar(interval.start, pa.timestamp("us", "UTC"))
        end = pa.scalar(interval.end, pa.timestamp("us", "UTC"))
        outside = pc.sum(pc.or_kleene(pc.less(times, start), pc.greater_equal(times, end)))
        return int(str(outside.as_py() or 0)) + int(times.null_count)

    return count


def _time_column(pipeline: Pipeline, schema: pa.Schema) -> tuple[str, pa.DataType] | None:
    """The output's ``time_column`` and its type, when its rows' times are to be checked
    (an incremental pipeline's); a clear error when the column is missing or not a time."""
    column = pipeline.header.time_column
    if not pipeline.incremental or column is None:
        return None
    if column not in schema.names:
        raise PipelineError(
            f"time_column {column!r} is not a column of the output",
            pipeline=pipeline.name,
            path=str(pipeline.path),
            hint=f"columns: {', '.join(schema.names)}",
        )
    kind = schema.field(column).type
    if not (pa.types.is_timestamp(kind) or pa.types.is_date(kind)):
        raise PipelineError(
            f"time_column {column!r} holds {kind}, not a date or timestamp",
            pipeline=pipeline.name,
            path=str(pipeline.path),
            hint=f"select the interval's time in {column}, e.g. TIMESTAMP_TRUNC(...)",
        )
    return column, kind


def _judge(pipeline: Pipeline, interval: Interval, column: str, count: int) -> None:
    """Refuse an output with ``count`` rows whose ``column`` is outside ``interval``."""
    if count:
        raise PipelineError(
            f"{count} output rows have {column} outside the interval "
            f"[{interval.start:%Y-%m-%d %H:%M}, {interval.end:%Y-%m-%d %H:%M}) or NULL",
            pipeline=pipeline.name,
            path=str(pipeline.path),
            hint="every row of an interval's output must fall inside it; filter on @start/@end",
        )


def _outside_staged(
    table: str, column: str, kind: pa.DataType, interval: Interval, dialect: str
) -> tuple[str, dict[str, object]]:
    """The engine's query (``dialect``) counting rows of a staged output outside an
    interval (or NULL), and its parameters. A date, or a timestamp without a zone, is
    taken as UTC, as in Arrow."""
    start, end = interval.start, interval.end
    if not (pa.types.is_timestamp(kind) and kind.tz is not None):
        start, end = (b.astimezone(UTC).replace(tzinfo=None) for b in (start, end))
    query = _outside_query(table, column, pa.types.is_date(kind), dialect)
    return query, {"start": start, "end": end}


@functools.lru_cache(maxsize=256)
def _outside_query(table: str, column: str, is_date: bool, dialect: str) -> str:
    """The engine's SQL counting rows of ``table`` whose ``column`` is outside
    ``[$start, $end)`` or NULL (made once per column: sqlglot takes a millisecond)."""
    name: exp.Expression = exp.column(column, quoted=True)
    if is_date:
        name = exp.cast(name, "TIMESTAMP")
    value = name.sql("duckdb")
    outside = exp.condition(
        f"{value} IS NULL OR {value} < $start OR {value} >= $end", dialect="duckdb"
    )
    query = exp.select(exp.alias_(exp.Count(this=exp.Star()), "n"))
    return sql.internal(query.from_(exp.table_(table)).where(outside).sql("duckdb"), dialect)


#: Rendered SQL by (pipeline, version, engine dialect, renamed inputs).
_RENDERED: dict[tuple[str, str, str, tuple[tuple[str, str], ...]], str] = {}


def _rendered(pipeline: Pipeline, dialect: str) -> str:
    """The pipeline's SQL in the engine's dialect, rendered once per version: rendering
    takes milliseconds, as long as a small interval's whole run on DuckDB."""
    assert pipeline.query is not None
    key = (pipeline.name, pipeline.version, dialect, tuple(sorted(pipeline.tables.items())))
    text = _RENDERED.get(key)
    if text is None:
        if len(_RENDERED) >= 1024:
            _RENDERED.clear()
        text = sql.render(pipeline.query, dialect, tables=pipeline.tables)
        _RENDERED[key] = text
    return text


class _Reader:
    """What a Python pipeline's context reads through."""

    def __init__(self, runner: Runner, pipeline: Pipeline, interval: Interval) -> None:
        self._runner = runner
        self._pipeline = pipeline
        self._interval = interval
        self.rows_scanned: int | None = None

    def sql(self, query: str) -> pa.Table:
        rendered, params = self._render(query)
        try:
            selected = self._runner.engine.select(rendered, params)
        except QueryError as exc:
            raise self._runner._sql_error(self._pipeline, exc) from None
        if selected.rows_scanned is not None:
            self.rows_scanned = (self.rows_scanned or 0) + selected.rows_scanned
        return selected.table

    def map_batches(
        self, query: str, fn: Callable[[pa.RecordBatch], pa.RecordBatch], schema: pa.Schema
    ) -> pa.Table:
        rendered, params = self._render(query)
        try:
            return self._runner.engine.map_batches(rendered, params, fn, schema)
        except QueryError as exc:
            raise self._runner._sql_error(self._pipeline, exc) from None

    def _render(self, query: str) -> tuple[str, Mapping[str, object]]:
        """``query`` in the engine's dialect and the bounds it uses; it may read only
        the pipeline's inputs."""
        parsed = sql.parse(query, self._runner.dialect, str(self._pipeline.path))
        undeclared = parsed.references - set(self._pipeline.inputs) - set(self._pipeline.tables)
        if undeclared:
            raise PipelineError(
                f"reads {', '.join(sorted(undeclared))} without naming it in inputs",
                pipeline=self._pipeline.name,
                path=str(self._pipeline.path),
                hint="add it to @pipeline(inputs=[...]) so the graph orders the runs",
            )
        params = {"start": self._interval.start, "end": self._interval.end}
        rendered = sql.render(parsed, self._runner.engine.dialect, tables=self._pipeline.tables)
        return rendered, {k: params[k] for k in parsed.parameters}

    def table(self, name: str) -> pa.Table:
        query = exp.select("*").from_(exp.table_(name, quoted=True))
        return self.sql(query.sql(self._runner.dialect))


def _as_declared(pipeline: Pipeline, table: pa.Table, schema: pa.Schema) -> pa.Table:
    """A Python pipeline's output as its ``schema=`` declares: the same columns, cast."""
    missing = [name for name in schema.names if name not in table.column_names]
    extra = [name for name in table.column_names if name not in schema.names]
    if missing or extra:
        wrong = "; ".join(
            [*([f"{', '.join(missing)} missing"] if missing else []),
             *([f"{', '.join(extra)} not declared"] if extra else [])]
        )  # fmt: skip
        raise PipelineError(
            f"the output's columns are not the declared schema ({wrong})",
            pipeline=pipeline.name,
            path=str(pipeline.path),
            hint="return the declared columns, or change schema= in @pipeline(...)",
        )
    try:
        return table.select(schema.names).cast(schema)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
        raise PipelineError(
            f"the output does not cast to the declared schema: {exc}",
            pipeline=pipeline.name,
            path=str(pipeline.path),
            hint="return the declared types, or change schema= in @pipeline(...)",
        ) from None
