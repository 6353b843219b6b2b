"""Whether a PostgreSQL database compares text byte by byte, as BigQuery and DuckDB do:
read by the PostgreSQL store (a warning) and by the read API (``COLLATE "C"`` where not),
which names no engine."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

#: The row of ``pg_database`` for the connection's database, as JSON text.
DATABASE_ROW = "SELECT to_jsonb(d)::text AS d FROM pg_database d WHERE datname = current_database()"


def collation(database: Mapping[str, Any]) -> tuple[str, bool]:
    """A database's collation (from its ``pg_database`` row) and whether it compares text
    byte by byte, as BigQuery and DuckDB do (``C``, ``POSIX``, ``C.UTF-8``).

    >>> collation({"datcollate": "C.UTF-8", "datlocprovider": "c"})
    ('C.UTF-8', True)
    >>> collation({"datcollate": "C", "datlocprovider": "i", "daticulocale": "en-US"})
    ('en-US', False)
    """
    provider = database.get("datlocprovider", "c")  # PostgreSQL 15 on; before it, libc
    name = str(database.get("daticulocale") or database.get("datlocale") or "")
    if provider != "i":
        name = str(database.get("datcollate", ""))
    return name, provider != "i" and (name in ("C", "POSIX") or name.startswith("C."))
