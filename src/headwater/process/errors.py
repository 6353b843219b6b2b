"""Errors of pipelines: each names the pipeline, and where it can, the file and line."""

from __future__ import annotations

from datetime import date, datetime, time
from decimal import Decimal
from pathlib import Path
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
        column: int | None = None,
        hint: str | None = None,
    ) -> None:
        self.pipeline = pipeline
        self.path = path
        self.line = line
        #: 1-based column where the parser stopped, when it says.
        self.column = column if line else None
        self.problem = message
        where = f"{path}:{line}: " if path and line else f"{path}: " if path else ""
        super().__init__(f"{where}{message}", hint=hint)

    def where(self) -> str | None:
        """``path:line:column``, as far as known."""
        parts = [str(p) for p in (self.path, self.line, self.column) if p]
        return ":".join(parts) if self.path else None

    def excerpt(self) -> str | None:
        """The file's line the error is on, numbered, and a caret under the column::

        3 | SELEC COUNT(*) FROM events
          | ^
        """
        if not (self.path and self.line):
            return None
        try:
            lines = Path(self.path).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            return None
        if not 0 < self.line <= len(lines):
            return None
        text = lines[self.line - 1].expandtabs(4)
        gutter = f"{self.line:>4} | "
        shown = f"{gutter}{text}"
        if self.column:
            pad = " " * (len(gutter) - 2)
            shown += f"\n{pad}| {' ' * (min(self.column, len(text) + 1) - 1)}^"
        return shown


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
        shown = "; ".join(str(_readable(row)) for row in sample[:5])
        super().__init__(
            f"audit {audit} failed on {count} row{'s' if count != 1 else ''}: {shown}",
            pipeline=pipeline,
            hint="fix the pipeline or its input, then run it again; nothing was published",
        )


def _readable(row: dict[str, object]) -> dict[str, object]:
    """A sample row as a person reads it: times in ISO 8601, decimals as their digits (not
    ``datetime.datetime(2026, 12, 3, 0, 0, tzinfo=...)``)."""
    return {
        key: value.isoformat()
        if isinstance(value, datetime | date | time)
        else str(value)
        if isinstance(value, Decimal)
        else value
        for key, value in row.items()
    }
