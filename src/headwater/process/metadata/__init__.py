"""Run history, intervals and leases, in a SQL database migrated by Alembic."""

from headwater.process.metadata.store import MetadataStore

__all__ = ["MetadataStore"]
