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

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import pyarrow as pa

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
    """What a Python pipeline gets for one run."""

    pipeline: str
    start: datetime
    """Start of the interval (UTC, inclusive); for full pipelines, the run's scheduled time."""
    end: datetime
    """End of the interval (UTC, exclusive)."""
    reader: Reader = field(repr=False)

    def sql(self, query: str) -> pa.Table:
        """Run ``query`` (project dialect; ``@start``/``@end`` bound) on the engine."""
        return self.reader.sql(query)

    def table(self, name: str) -> pa.Table:
        """The whole of an input table (``events`` or a pipeline named in ``inputs``)."""
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

    def __call__(self, ctx: Context) -> pa.Table:
        return self.function(ctx)


def pipeline(
    *, inputs: Sequence[str] = ("events",), schema: pa.Schema | None = None, **header: Any
) -> Callable[[Callable[[Context], pa.Table]], PythonPipeline]:
    """Make a function a pipeline. ``header`` takes the keys of a SQL pipeline's header.

    The pipeline's name is the file's name; ``inputs`` are the tables it reads,
    which place it in the graph; ``schema``, when given, is its output's columns.
    """
    from headwater.process.header import from_mapping

    parsed = from_mapping(dict(header), path="<decorator>")

    def wrap(function: Callable[[Context], pa.Table]) -> PythonPipeline:
        return PythonPipeline(function, parsed, tuple(inputs), schema)

    return wrap
