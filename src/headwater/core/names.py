"""The names Headwater accepts, in one place.

Sources, consumers, sinks and environments are named by the people who run
the project and appear in URLs, logs, metric labels and idempotency keys:
lower-case letters, digits, ``-`` and ``_``, starting with a letter. Datasets
are tables: names SQL takes without quoting.

>>> check_name("source", "web")
'web'
>>> is_identifier("daily_active_users"), is_identifier("drop table")
(True, False)
"""

from __future__ import annotations

import re

from headwater.core.errors import ConfigError

NAME = re.compile(r"^[a-z][a-z0-9_-]{0,62}$")
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


def check_name(kind: str, name: str, *, path: str | None = None) -> str:
    """``name`` if it is a valid name for a ``kind`` (source, consumer, sink, environment)."""
    if not NAME.match(name):
        raise ConfigError(
            f"{kind} name {name!r} is not allowed",
            path=path,
            hint="use lower-case letters, digits, '-' and '_', starting with a letter",
        )
    return name


def is_identifier(name: str) -> bool:
    """Whether ``name`` is a table or column name that SQL takes without quoting."""
    return IDENTIFIER.match(name) is not None
