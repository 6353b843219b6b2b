"""Alembic environment: migrate the connection Headwater hands over, or, offline
(``headwater migrate --sql``), write the SQL for the dialect it names."""

from __future__ import annotations

from alembic import context

from headwater.state.tables import metadata

if context.is_offline_mode():
    dialect = context.config.attributes.get("dialect")
    if dialect is None:
        raise RuntimeError("Headwater writes offline SQL for a dialect; see state/database.py")
    context.configure(
        dialect_name=dialect,
        target_metadata=metadata,
        literal_binds=True,
        render_as_batch=dialect == "sqlite",
    )
else:
    connection = context.config.attributes.get("connection")
    if connection is None:
        raise RuntimeError("Headwater runs its migrations with a connection; see state/database.py")
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=connection.dialect.name == "sqlite",
    )
with context.begin_transaction():
    context.run_migrations()
