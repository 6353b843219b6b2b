"""Errors of the store."""

from __future__ import annotations

from collections.abc import Iterable

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


class UnsupportedColumn(TerminalError):
    """A column of a type the engine cannot hold."""

    def __init__(self, engine: str, column_type: str, hint: str) -> None:
        self.engine = engine
        self.column_type = column_type
        super().__init__(f"{engine} cannot hold a column of type {column_type} here", hint=hint)


class QueryError(TerminalError):
    """A query the engine refused; ``reason`` quotes the engine."""

    def __init__(self, reason: str, *, hint: str | None = None) -> None:
        self.reason = reason
        super().__init__(f"query failed: {reason}", hint=hint)


class MissingColumn(QueryError):
    """A delete by a column the table lacks: an erasure must not report done while every
    row survives (a ``person`` column misspelt in a pipeline's header)."""

    def __init__(self, table: str, column: str, present: Iterable[str]) -> None:
        self.table = table
        self.column = column
        has = ", ".join(sorted(present)) or "none"
        super().__init__(
            f"{table} has no column {column} to erase by (its columns: {has})",
            hint=f"fix `person = [...]` in {table}'s header to name its person columns",
        )


class Fenced(TerminalError):
    """A fenced write refused: a newer holder of the same name has published since."""

    def __init__(self, name: str, token: int) -> None:
        self.name = name
        self.token = token
        super().__init__(
            f"{name}: a newer holder has published since (this writer's token {token} is "
            "older); the write was refused"
        )


class ReadOnlyQuery(QueryError):
    """A statement that would change data was sent through ``headwater query``."""

    def __init__(self, kind: str) -> None:
        super().__init__(
            f"{kind} statements are not allowed here",
            hint="`headwater query` runs one SELECT (or WITH … SELECT, VALUES, or DESCRIBE of "
            "a table) over the store's tables",
        )


def first_line(exc: BaseException) -> str:
    """An engine's error message, first line only (their later lines repeat the query)."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
