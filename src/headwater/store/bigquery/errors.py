"""BigQuery's errors as Headwater's: transient when trying again can help.

Google's client raises ``GoogleAPICallError`` subclasses that carry the HTTP
status. 429 and 5xx are transient, and so is a 403 whose reason is a rate or
quota limit (BigQuery answers ``rateLimitExceeded`` with 403), as are
connection failures and timeouts that never reached an answer. A bad query
(400), a missing table (404), permissions (403), a conflict (409) and schema
mismatches are terminal.
"""

from __future__ import annotations

from headwater.store.errors import QueryError, StoreUnavailable, first_line

#: The ``reason`` of a 403 that is a limit, not a permission: it lifts by itself.
_LIMITS = frozenset({"rateLimitExceeded", "quotaExceeded", "backendError", "jobRateLimitExceeded"})


def transient(exc: BaseException) -> bool:
    """Whether ``exc`` may go away by itself.

    >>> class TooMany(Exception):
    ...     code = 429
    >>> transient(TooMany("slow down")), transient(ValueError("no"))
    (True, False)
    """
    code = getattr(exc, "code", None)
    if isinstance(code, int):
        if code == 429 or code >= 500:
            return True
        if code == 403:
            reasons = {e.get("reason") for e in getattr(exc, "errors", None) or []}
            return bool(reasons & _LIMITS)
        return False
    # No HTTP answer at all: a lost connection, a timeout, a retry budget spent.
    return isinstance(exc, ConnectionError | TimeoutError) or type(exc).__name__ in (
        "RetryError",
        "TransportError",
        "ConnectionError",
        "Timeout",
        "ReadTimeout",
    )


def classify(exc: BaseException) -> StoreUnavailable | QueryError:
    """``exc`` as :class:`StoreUnavailable` (transient) or :class:`QueryError` (terminal)."""
    if transient(exc):
        return StoreUnavailable("bigquery", first_line(exc))
    return QueryError(first_line(exc))
