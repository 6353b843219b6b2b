"""Errors of pipelines: each names the pipeline, and where it can, the file and line."""

from __future__ import annotations

from typing import TYPE_CHECKING

from headwater.core.errors import TerminalError

if TYPE_CHECKING:
    from sqlglot import exp


class PipelineError(TerminalError):
    """A pipeline that cannot be loaded, rendered or run as written."""

    def __init__(
        self,
        message: str,
        *,
        pipeline: str | None = None,
        path: str | None = None,
        line: int | None = None,
        hint: str | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.path = path
        self.line = line
        where = f"{path}:{line}: " if path and line else f"{path}: " if path else ""
        super().__init__(f"{where}{message}", hint=hint)


class Untranslatable(PipelineError):
    """A construct an engine cannot answer as BigQuery does, raised by that engine's
    rewrites (process/duckdb_sql.py, ...); ``render`` refuses the pipeline with the file
    and the line of ``node``."""

    def __init__(self, construct: str, node: exp.Expression, reason: str, hint: str) -> None:
        self.construct = construct
        self.node = node
        self.reason = reason
        super().__init__(f"{construct}: {reason}", hint=hint)


class GraphError(PipelineError):
    """The pipelines' references do not form a graph: a cycle or an unknown name."""


class AuditFailed(PipelineError):
    """An audit found offending rows; the interval was not published."""

    def __init__(
        self, pipeline: str, audit: str, count: int, sample: list[dict[str, object]]
    ) -> None:
        self.audit = audit
        self.count = count
        self.sample = sample
        shown = "; ".join(str(row) for row in sample[:5])
        super().__init__(
            f"audit {audit} failed on {count} row{'s' if count != 1 else ''}: {shown}",
            pipeline=pipeline,
            hint="fix the pipeline or its input, then run it again; nothing was published",
        )
