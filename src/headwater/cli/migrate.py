"""``headwater migrate``: upgrade the metadata database's schema when it is said to.

Every environment migrates its metadata database as it opens, except a protected one
(``protected = true``), where this command is the only way: ``--sql`` shows first what
it would run.
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from headwater.cli.context import options
from headwater.cli.output import console


def migrate(
    sql: Annotated[
        bool,
        typer.Option("--sql", help="Print the SQL the upgrade would run; change nothing."),
    ] = False,
) -> None:
    """Upgrade the metadata database (runs, leases, deliveries) to this version's schema.

    Environments migrate it as they open, except protected ones: there this is the way.
    With a server running, the upgrade is made beside it: SQLite in WAL mode and
    PostgreSQL take it while the server reads and writes; restart the server after.

    Example: headwater --env prod migrate --sql
    """
    from headwater.runtime.client import find_server
    from headwater.runtime.workspace import metadata_for
    from headwater.state.database import SCHEMA_REVISION

    project = options.project()
    metadata = metadata_for(project)
    try:
        before = metadata.revision()
        if before == SCHEMA_REVISION:
            console.print(f"The metadata database is already at {SCHEMA_REVISION}.")
            return
        start = before or "nothing (a new database)"
        if sql:
            sys.stdout.write(
                f"-- The SQL that migrates the metadata database from {start} to "
                f"{SCHEMA_REVISION} ({metadata.engine.dialect.name}); nothing was changed.\n"
                + metadata.upgrade_sql()
            )
            return
        server = find_server(project.data_dir)
        if server is not None:
            server.close()
            console.print(
                "A server is running on this project: it opened the metadata database "
                "behind, so it is an older version. The upgrade is made beside it (it waits "
                "for the server's writes, up to 30 s); restart the server with this version "
                "to use the new schema.",
                highlight=False,
            )
        metadata.migrate()
        console.print(
            f"Migrated the metadata database from {start} to {metadata.revision()}.",
            highlight=False,
        )
    finally:
        metadata.close()
