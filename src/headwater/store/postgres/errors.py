"""PostgreSQL's errors as Headwater's: transient when trying again can help.

PostgreSQL names every error with a five-character SQLSTATE whose first two
characters are its class. Lost and refused connections (08), serialization
failures and deadlocks (40), exhausted resources such as connections or disk
(53), operator intervention such as a shutdown or a cancelled statement (57)
and system errors (58) are transient: the same statement may succeed later.
Everything else (bad SQL, a missing table or column, a type mismatch,
permissions, a violated constraint) is terminal: the statement or the setup
must change.
"""

from __future__ import annotations

import psycopg

from headwater.store.errors import QueryError, StoreUnavailable, first_line

#: SQLSTATE classes whose errors may go away if the same work is tried again.
TRANSIENT_CLASSES = frozenset({"08", "40", "53", "57", "58"})


def transient(exc: psycopg.Error) -> bool:
    """Whether ``exc`` may go away by itself.

    >>> transient(psycopg.errors.SerializationFailure("could not serialize access"))
    True
    >>> transient(psycopg.errors.UndefinedTable('relation "x" does not exist'))
    False
    """
    state = exc.sqlstate
    if state is None:
        # No answer from the server at all: the connection failed or was lost.
        return isinstance(exc, psycopg.OperationalError | psycopg.InterfaceError)
    return state[:2] in TRANSIENT_CLASSES


def classify(exc: psycopg.Error, where: str = "postgres") -> StoreUnavailable | QueryError:
    """``exc`` as :class:`StoreUnavailable` (transient) or :class:`QueryError` (terminal)."""
    if transient(exc):
        return StoreUnavailable(where, first_line(exc))
    return QueryError(first_line(exc))
