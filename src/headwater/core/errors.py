"""The root of every error Headwater raises on purpose.

Each concrete error says whether retrying can help by mixing in
:class:`TransientError` or :class:`TerminalError`, so a caller can write
``except TransientError`` without knowing every concrete type. Errors carry the
ids they concern as attributes and build the sentence a person reads from them;
``hint`` is the fix, printed by the CLI after the message.
"""

from __future__ import annotations


class HeadwaterError(Exception):
    """Base of all Headwater errors: a message, and optionally the fix."""

    hint: str | None = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        if hint is not None:
            self.hint = hint

    def __str__(self) -> str:
        return self.message


class TransientError(HeadwaterError):
    """The same call may succeed later (a full queue, a store that is down)."""


class TerminalError(HeadwaterError):
    """Retrying the same call cannot help; the input or the setup must change."""


class ConfigError(TerminalError):
    """``headwater.toml`` (or the project folder) is missing or wrong."""

    def __init__(self, message: str, *, path: str | None = None, hint: str | None = None) -> None:
        self.path = path
        super().__init__(f"{path}: {message}" if path else message, hint=hint)
