"""What the collector answers when a request or an event is refused.

A :class:`RequestRefused` fails the whole request with an HTTP status; a
:class:`Rejection` fails one event and travels in the ``rejected`` list of a
200 answer. Both carry a stable ``code`` that clients and ``failed_events``
use, the ``field`` concerned, and a message that says how to fix it.
"""

from __future__ import annotations

from dataclasses import dataclass

from headwater.core.errors import TerminalError, TransientError


def refusal(code: str, message: str) -> dict[str, object]:
    """The body of a refused request. ``error`` holds its code and message, and they are
    at the top level too, where Segment's and RudderStack's SDKs read them: the
    RudderStack SDK takes an answer without them for a network failure and retries a
    refused batch for many minutes, blocking its flush."""
    return {
        "success": False,
        "code": code,
        "message": message,
        "error": {"code": code, "message": message},
    }


@dataclass(frozen=True, slots=True)
class Rejection:
    """Why one event was refused; ``index`` is its position in the batch."""

    index: int
    code: str
    field: str | None
    message: str


class RequestRefused(TerminalError):
    """The whole request is refused with ``status``; retrying it unchanged cannot help."""

    def __init__(
        self, status: int, code: str, message: str, *, keep: bool = True, field: str | None = None
    ) -> None:
        self.status = status
        self.code = code
        self.field = field
        #: whether an authenticated caller's refused body goes to ``failed_events``
        self.keep = keep
        super().__init__(message)


class Unavailable(TransientError):
    """The collector cannot take the request now (503); the client should retry."""

    code = "unavailable"

    def __init__(self, message: str, *, retry_after: int) -> None:
        self.retry_after = retry_after
        super().__init__(message)


class Overloaded(Unavailable):
    code = "overloaded"


class ShuttingDown(Unavailable):
    code = "shutting_down"


class CommitFailed(Unavailable):
    code = "store_unavailable"
