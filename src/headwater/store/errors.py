"""Errors of the store."""

from __future__ import annotations

from headwater.core.errors import TerminalError, TransientError


class StoreUnavailable(TransientError):
    """The store could not commit; the caller may retry later."""

    def __init__(self, engine: str, reason: str) -> None:
        self.engine = engine
        self.reason = reason
        super().__init__(f"the {engine} store could not commit: {reason}")


class StoreLocked(TerminalError):
    """Another process holds the embedded store's file."""

    def __init__(self, path: str, reason: str) -> None:
        self.path = path
        super().__init__(
            f"the store {path} is open in another process ({reason})",
            hint="stop that process, or run the command while `headwater up` is running "
            "so that it is sent to the server",
        )


class QueryError(TerminalError):
    """A query the engine refused; ``reason`` quotes the engine."""

    def __init__(self, reason: str, *, hint: str | None = None) -> None:
        self.reason = reason
        super().__init__(f"query failed: {reason}", hint=hint)


class ReadOnlyQuery(QueryError):
    """A statement that would change data was sent through ``headwater query``."""

    def __init__(self, kind: str) -> None:
        super().__init__(
            f"{kind} statements are not allowed here",
            hint="`headwater query` runs SELECT, DESCRIBE, SHOW, SUMMARIZE and EXPLAIN only",
        )


def first_line(exc: BaseException) -> str:
    """An engine's error message, first line only (their later lines repeat the query)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
