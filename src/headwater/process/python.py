"""Python pipelines: a decorated function that takes a :class:`Context` and returns Arrow.

For what SQL cannot say. The function reads its inputs through the context
(SQL in the project's dialect, or a whole upstream table) and returns a
``pyarrow.Table``; Headwater audits and publishes it like a SQL pipeline's
output::

    from headwater.process import Context, pipeline

    @pipeline(schedule="@daily", kind="incremental", time_column="day",
              inputs=["daily_active_users"])
    def activity_streaks(ctx: Context) -> pa.Table:
        dau = ctx.sql("SELECT day, user_id FROM daily_active_users "
                      "WHERE day >= @start AND day < @end")
        ...

Row-by-row work over many rows goes through :meth:`Context.map_batches`, which
on Spark runs the function on the executors instead of bringing the rows here.
"""

from __future__ import annotations

import traceback
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

import pyarrow as pa

from headwater.core.clock import utc_now
from headwater.process.errors import PipelineError
from headwater.process.models import Model
from headwater.process.settings import PipelineHeader


class Reader(Protocol):
    """What a context reads through; the runner provides it."""

    def sql(self, query: str) -> pa.Table: ...

    def table(self, name: str) -> pa.Table: ...

    def map_batches(
        self, query: str, fn: Callable[[pa.RecordBatch], pa.RecordBatch], schema: pa.Schema
    ) -> pa.Table: ...


@dataclass(frozen=True)
class Context:
    """What a Python pipeline's function gets for one run: the interval to compute, and the
    ways to read its inputs.

    An incremental pipeline computes the rows of ``[start, end)``; a full pipeline
    recomputes its whole output, and ``[start, end)`` is the schedule's last whole
    interval (``end`` is the schedule time this run stands for). Both are
    ``datetime`` in UTC. Output that depends only on the interval and the inputs
    is the same every time the interval runs again: prefer them to the clock.

    >>> from datetime import UTC, datetime
    >>> ctx = Context("daily", datetime(2026, 11, 1, tzinfo=UTC),
    ...               datetime(2026, 11, 2, tzinfo=UTC), reader=None)  # type: ignore[arg-type]
    >>> ctx.end - ctx.start
    datetime.timedelta(days=1)
    """

    pipeline: str
    """The pipeline's name (its file's name): the output table it writes."""

    start: datetime
    """Start of the interval (UTC, inclusive): ``@start`` in :meth:`sql`."""

    end: datetime
    """End of the interval (UTC, exclusive): ``@end`` in :meth:`sql`."""

    reader: Reader = field(repr=False)
    """What :meth:`sql`, :meth:`table` and :meth:`map_batches` read through (the runner's)."""

    run_at: datetime = field(default_factory=utc_now)
    """When this attempt started (UTC, the wall clock): differs each time the interval runs
    again, so it belongs in logs, not in the output (but for ``scored_at``)."""

    models: Mapping[str, Model] = field(default_factory=dict, repr=False)
    """The models named in ``@pipeline(models=[...])``, at the versions this run scores with."""

    def sql(self, query: str) -> pa.Table:
        """Run ``query`` on the engine and return its rows.

        ``query`` is written in the project's dialect (``[project] dialect``) and
        may read ``events``, ``failed_events`` and the pipelines named in
        ``inputs``; ``@start`` and ``@end`` are bound to the interval as query
        parameters. Reading a table not named in ``inputs`` is an error. For
        example ``ctx.sql("SELECT user_id FROM events WHERE received_at >= @start
        AND received_at < @end")``.
        """
        return self.reader.sql(query)

    def table(self, name: str) -> pa.Table:
        """The whole of an input table (``events``, ``failed_events`` or a pipeline named in
        ``inputs``), every row, whatever the interval: for small tables such as lookups."""
        return self.reader.table(name)

    def map_batches(
        self, query: str, fn: Callable[[pa.RecordBatch], pa.RecordBatch], schema: pa.Schema
    ) -> pa.Table:
        """``fn`` over the rows of ``query`` (as :meth:`sql` takes it), one Arrow batch at
        a time; the output batches, as ``schema``, make the returned table.

        On Spark ``fn`` runs on the executors, so the query's rows never come to
        this process; ``fn`` is pickled there with the pipeline's module, and any
        other module it uses must be installed on them. Other engines run it here.
        """
        return self.reader.map_batches(query, fn, schema)

    def model(self, name: str) -> Model:
        """The model ``name`` (``[models.NAME]`` of ``headwater.toml``, named in
        ``@pipeline(models=[...])``): ``.version`` is the hash of its artifact, and
        ``.score(table, ctx.run_at)`` appends its outputs and tags to a table's rows."""
        found = self.models.get(name)
        if found is None:
            raise PipelineError(
                f"uses model {name!r} without naming it in models",
                pipeline=self.pipeline,
                hint=f'add it to @pipeline(models=["{name}"]), so its version is the '
                "pipeline's too",
            )
        return found

    def score(self, query: str, model: str) -> pa.Table:
        """The rows of ``query`` (as :meth:`sql` takes it) scored by ``model``: the
        query's columns, the model's outputs, then ``model``, ``model_version``,
        ``shadow`` and ``scored_at``; a shadow version's rows follow the live ones.

        Scored in Arrow batches through :meth:`map_batches`: on Spark, on the executors."""
        found = self.model(model)
        # The pipeline's own query, wrapped whole: no value is pasted into it.
        probe = f"SELECT * FROM ({query}) AS _hw_features LIMIT 0"  # noqa: S608
        columns = self.reader.sql(probe).schema
        scorer = found.scorer(columns, self.run_at)
        return self.reader.map_batches(query, scorer, scorer.schema)


@dataclass(frozen=True)
class PythonPipeline:
    """A function made into a pipeline by :func:`pipeline`."""

    function: Callable[[Context], pa.Table]
    header: PipelineHeader
    inputs: tuple[str, ...]
    schema: pa.Schema | None = None
    """The output's columns, when declared: a run's table is cast to them (a column
    missing or extra fails the run), and ``headwater validate`` checks the pipelines that
    read this one against them."""
    models: tuple[str, ...] = ()
    """The models it scores with (``[models.NAME]``): their versions are part of its own."""

    def __call__(self, ctx: Context) -> pa.Table:
        return self.function(ctx)


def pipeline(
    *,
    inputs: Sequence[str] = ("events",),
    schema: pa.Schema | None = None,
    models: Sequence[str] = (),
    **header: Any,
) -> Callable[[Callable[[Context], pa.Table]], PythonPipeline]:
    """Make a function a pipeline: it takes a :class:`Context` and returns a
    ``pyarrow.Table``. The pipeline's name is the file's name.

    ``inputs`` are the tables the function reads (``events``, ``failed_events``,
    other pipelines by name); they place it in the graph, after the pipelines it
    reads. ``schema``, when given, is its output's columns (a run is cast to it,
    and ``headwater validate`` checks its readers against it). The other arguments
    are the keys of a SQL pipeline's header, with the same defaults:

    - ``schedule``: a cron expression (UTC) or ``@hourly``, ``@daily``, ``@weekly``,
      ``@monthly`` (default ``"@daily"``); consecutive run times are the interval bounds.
    - ``kind``: ``"full"`` (default) recomputes the whole output each run;
      ``"incremental"`` computes one interval.
    - ``time``: incremental, intervals by arrival (``"received_at"``, default) or
      by event time (``"timestamp"``, late events re-open their interval).
    - ``time_column``: incremental, the output column holding each row's time;
      every row must fall inside the interval.
    - ``start``: the first interval (ISO date or time, UTC); default the earliest event.
    - ``key``: the output's key columns: how the read API orders pages and looks
      a row up, and how a PostgreSQL sink upserts (which needs one).
    - ``sinks``: names of ``[sinks.NAME]`` tables each published interval is also
      delivered to (files, a PostgreSQL table, a webhook).
    - ``audits``: checks run before publication, e.g. ``[{"not_null": ["day"]}]``.
    - ``retries``: attempts after a transient failure (default 3).
    - ``batch_size``: consecutive intervals a backfill runs as one call (default 1).
    - ``retain``: incremental, how long the output keeps its rows (``"90d"``); metadata,
      as in a SQL header: it does not change the pipeline's version.
    - ``description``: shown by ``headwater pipelines``.

    An unknown argument is an error naming the file, the decorator's line and the
    allowed keys. For example, ``pipelines/plan_changes.py``::

        @pipeline(schedule="@hourly", kind="incremental", time_column="hour",
                  inputs=["events"], key=["hour", "plan"], sinks=["crm"],
                  audits=[{"not_null": ["plan"]}, {"unique": ["hour", "plan"]}])
        def plan_changes(ctx: Context) -> pa.Table:
            return ctx.sql("SELECT TIMESTAMP_TRUNC(received_at, HOUR) AS hour, "
                           "COALESCE(JSON_VALUE(properties, '$.plan'), 'none') AS plan, "
                           "COUNT(*) AS changes FROM events "
                           "WHERE event = 'Plan Changed' "
                           "AND received_at >= @start AND received_at < @end "
                           "GROUP BY hour, plan")

    A function that raises fails its run: the error shows the function's own
    lines (file, line, source) and the exception. It is not retried, unless it
    is a :class:`~headwater.core.errors.TransientError`.
    """
    from headwater.process.header import from_mapping

    parsed = from_mapping(dict(header), path="<decorator>")

    def wrap(function: Callable[[Context], pa.Table]) -> PythonPipeline:
        return PythonPipeline(function, parsed, tuple(inputs), schema, tuple(models))

    return wrap


def raised(name: str, path: Path, exc: Exception) -> PipelineError:
    """The error of a run whose function raised ``exc``: the pipeline file's own frames
    (file, line, source line), innermost last, then the exception's type and message.

    Headwater's frames and the libraries' are left out: what the author can change is
    in the file. An error Headwater raised on purpose inside a call (``ctx.sql`` of a
    table not in ``inputs``, SQL the engine refused) keeps its words and fix, and
    gains the line that made the call.
    """
    frames = [f for f in traceback.extract_tb(exc.__traceback__) if _same(f.filename, path)]
    line = frames[-1].lineno if frames else None
    lines = "".join(traceback.format_list(frames)).rstrip("\n")
    trace = f"\nTraceback (the pipeline's lines, most recent call last):\n{lines}" if lines else ""
    if isinstance(exc, PipelineError):
        where = f"{exc.path}:{exc.line}: " if exc.path and exc.line else f"{exc.path}: "
        words = exc.message.removeprefix(where) if exc.path else exc.message
        return PipelineError(
            words + trace,
            pipeline=name,
            path=str(path),
            line=line if line is not None else exc.line,
            hint=exc.hint,
        )
    what = "".join(traceback.format_exception_only(exc)).strip()
    return PipelineError(
        f"the pipeline raised {what}{trace}",
        pipeline=name,
        path=str(path),
        line=line,
        hint=f"fix the pipeline or its input, then `headwater run {name}` again; nothing was "
        "published",
    )


def _same(filename: str, path: Path) -> bool:
    try:
        return filename == str(path) or Path(filename).resolve() == path.resolve()
    except OSError:
        return False
