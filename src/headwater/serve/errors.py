"""What the read API answers when it refuses a request."""

from __future__ import annotations

from headwater.core.errors import TerminalError


class ApiError(TerminalError):
    """Refuse the request with ``status``; ``code`` is stable for clients."""

    def __init__(self, status: int, code: str, message: str) -> None:
        self.status = status
        self.code = code
        super().__init__(message)
