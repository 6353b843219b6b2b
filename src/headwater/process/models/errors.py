"""Errors of models: each names the model and, where known, its version and the first bad
row; none of them is retried, and the interval is not published."""

from __future__ import annotations

import functools
from collections.abc import Mapping

from headwater.process.errors import PipelineError


class ModelError(PipelineError):
    """A model that cannot be loaded, does not fit its features, or failed on a batch."""

    def __init__(
        self,
        model: str,
        message: str,
        *,
        version: str | None = None,
        row: Mapping[str, object] | None = None,
        pipeline: str | None = None,
        path: str | None = None,
        line: int | None = None,
        hint: str | None = None,
    ) -> None:
        self.model = model
        self.detail = message
        self.version = version
        self.row = dict(row) if row is not None else None
        named = f"model {model}" + (f" (version {version})" if version else "")
        shown = f"; first bad row: {_row(self.row)}" if self.row is not None else ""
        super().__init__(
            f"{named}: {message}{shown}",
            pipeline=pipeline,
            path=path,
            line=line,
            hint=hint or "fix the model or its features; nothing was published",
        )

    def __reduce__(self) -> tuple[object, ...]:
        # Pickled on a Spark executor, rebuilt on the driver (Exception's own pickling
        # would call ModelError with the message alone).
        rebuild = functools.partial(
            ModelError,
            version=self.version,
            row=self.row,
            pipeline=self.pipeline,
            path=self.path,
            line=self.line,
            hint=self.hint,
        )
        return (rebuild, (self.model, self.detail))

    def at(
        self, *, pipeline: str | None = None, path: str | None = None, line: int | None = None
    ) -> ModelError:
        """The same error, naming the pipeline (and its file and line) it happened in."""
        return ModelError(
            self.model,
            self.detail,
            version=self.version,
            row=self.row,
            pipeline=pipeline or self.pipeline,
            path=path or self.path,
            line=line or self.line,
            hint=self.hint,
        )


def _row(row: Mapping[str, object]) -> str:
    """A row as ``{name: value, ...}``, long values cut, at most twelve columns."""
    items = list(row.items())
    shown = ", ".join(f"{name}={_short(value)}" for name, value in items[:12])
    return "{" + shown + (", ..." if len(items) > 12 else "") + "}"


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
