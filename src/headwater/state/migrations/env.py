"""Alembic environment: migrate the connection Headwater hands over."""

from __future__ import annotations

from alembic import context

from headwater.state.tables import metadata

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
