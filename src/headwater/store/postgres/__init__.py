"""The PostgreSQL engine: a store several collector processes share, and a reader of
PostgreSQL tables for the read API."""

from headwater.store.postgres.engine import PostgresEngine

__all__ = ["PostgresEngine"]
