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

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import timedelta

import pyarrow as pa
import pyarrow.compute as pc
from sqlglot import exp

from headwater.core.errors import HeadwaterError, TransientError
from headwater.core.logs import fields
from headwater.core.types import Interval
from headwater.process import python, sql
from headwater.process.audits import run_audits
from headwater.process.definition import Pipeline
from headwater.process.errors import PipelineError
from headwater.process.graph import Graph
from headwater.process.models.query import score_query, seen
from headwater.process.python import Context
from headwater.state import StateStore
from headwater.state.errors import LeaseLost
from headwater.state.leases import TTL, Lease
from headwater.state.runs import RUN_OUTCOMES, Trigger, error_kind
from headwater.store.engine import Engine
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
        self, pipeline: Pipeline, interval: Interval, trigger: Trigger, *, record: bool = True
    ) -> RunResult:
        """Run with the pipeline's lease held, retrying transient failures with backoff.

        With ``record=False`` the output is published but the interval is not
        marked done (an interval that has not ended yet), so it runs again later.
        A run whose lease was taken over raises :class:`LeaseLost` at once: the
        new holder does the work.
        """
        with Lease(self.state.leases, pipeline.name, self._lease_ttl) as lease:
            # Holding the lease, any run still marked running died with its process.
            self.runs.interrupted([pipeline.name])
            attempt = 1
            while True:
                try:
                    return self._attempt(pipeline, interval, trigger, attempt, record, lease)
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
    ) -> RunResult:
        started = time.perf_counter()
        run_id = self.runs.start_run(pipeline.name, pipeline.version, interval, trigger, attempt)
        try:
            output, rows_read = self._compute(pipeline, interval)
            self._check_times(pipeline, interval, output)
            run_audits(
                pipeline.name, str(pipeline.path), pipeline.header.audits, output, self.dialect
            )
            lease.check()
            self._publish(pipeline, interval, output, lease)
            self.runs.succeed(
                run_id,
                pipeline.name,
                pipeline.version,
                interval,
                rows_read=rows_read,
                rows_written=output.num_rows,
                record_interval=record,
                holder=lease.holder,
                sinks=pipeline.header.sinks,
                whole_table=not pipeline.incremental,
            )
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
            output.num_rows,
            rows_read,
            time.perf_counter() - started,
            recorded=record,
        )
        _log_run(pipeline, interval, trigger, attempt, run_id, started, result=result)
        return result

    # -- steps ----------------------------------------------------------------

    def _compute(self, pipeline: Pipeline, interval: Interval) -> tuple[pa.Table, int | None]:
        params = {"start": interval.start, "end": interval.end}
        if pipeline.models:  # the registry: which model versions this version scores with
            self.state.models.used(pipeline.name, pipeline.version, seen(pipeline.models.values()))
        if pipeline.query is not None:
            rendered = sql.render(pipeline.query, self.engine.dialect, tables=pipeline.tables)
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
            )
        if pipeline.function.schema is not None:
            result = _as_declared(pipeline, result, pipeline.function.schema)
        return result, reader.rows_scanned

    def _check_times(self, pipeline: Pipeline, interval: Interval, output: pa.Table) -> None:
        column = pipeline.header.time_column
        if not pipeline.incremental or column is None:
            return
        if column not in output.column_names:
            raise PipelineError(
                f"time_column {column!r} is not a column of the output",
                pipeline=pipeline.name,
                path=str(pipeline.path),
                hint=f"columns: {', '.join(output.column_names)}",
            )
        times = output[column]
        if not (pa.types.is_timestamp(times.type) or pa.types.is_date(times.type)):
            raise PipelineError(
                f"time_column {column!r} holds {times.type}, not a date or timestamp",
                pipeline=pipeline.name,
                path=str(pipeline.path),
                hint=f"select the interval's time in {column}, e.g. TIMESTAMP_TRUNC(...)",
            )
        if output.num_rows == 0:
            return
        if pa.types.is_date(times.type):
            times = pc.cast(times, pa.timestamp("us"))
        if pa.types.is_timestamp(times.type) and times.type.tz is None:
            times = pc.assume_timezone(times, "UTC")
        start = pa.scalar(interval.start, pa.timestamp("us", "UTC"))
        end = pa.scalar(interval.end, pa.timestamp("us", "UTC"))
        outside = pc.sum(pc.or_kleene(pc.less(times, start), pc.greater_equal(times, end))).as_py()
        nulls = times.null_count
        if outside or nulls:
            raise PipelineError(
                f"{(outside or 0) + nulls} output rows have {column} outside the interval "
                f"[{interval.start:%Y-%m-%d %H:%M}, {interval.end:%Y-%m-%d %H:%M}) or NULL",
                pipeline=pipeline.name,
                path=str(pipeline.path),
                hint="every row of an interval's output must fall inside it; filter on @start/@end",
            )

    def _publish(
        self, pipeline: Pipeline, interval: Interval, output: pa.Table, lease: Lease
    ) -> None:
        try:
            if pipeline.incremental and pipeline.header.time_column:
                self.engine.replace_interval(
                    pipeline.name, pipeline.header.time_column, interval, output, lease.fence
                )
            else:
                self.engine.replace_table(pipeline.name, output, lease.fence)
        except Fenced:
            raise LeaseLost(lease.name, lease.token) from None
        except QueryError as exc:
            raise PipelineError(
                f"publishing failed: {exc.reason}",
                pipeline=pipeline.name,
                path=str(pipeline.path),
                hint="a changed output schema needs the old table dropped or a full backfill",
            ) from None

    def _sql_error(self, pipeline: Pipeline, exc: QueryError) -> PipelineError:
        source = pipeline.query.source if pipeline.query is not None else ""
        return PipelineError(
            f"the engine refused the SQL: {exc.reason}",
            pipeline=pipeline.name,
            path=str(pipeline.path),
            line=sql.locate(source, exc.reason),
            hint=exc.hint,
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
