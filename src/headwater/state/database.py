"""The metadata database: where runs, intervals, leases and deliveries are kept.

SQLite in the data folder by default (WAL mode, so ``headwater status`` reads
it while the server writes), any SQLAlchemy URL when shared, or a schema of
the PostgreSQL store's own database. The schema is migrated by Alembic when
the database opens; processes started together migrate one at a time.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa

from headwater.state.deliveries import DeliveryLog
from headwater.state.leases import Leases
from headwater.state.offload import OffloadLog
from headwater.state.runs import RunLog

_MIGRATIONS = Path(__file__).parent / "migrations"
#: The newest migration in ``migrations/versions``; a test checks it is Alembic's head.
SCHEMA_REVISION = "0004"


class StateStore:
    """The shared run state: ``runs`` (runs, intervals, watermarks), ``leases``,
    ``deliveries`` and ``offloads``, over one SQLAlchemy engine."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.runs = RunLog(engine)
        self.leases = Leases(engine)
        self.deliveries = DeliveryLog(engine)
        self.offloads = OffloadLog(engine)

    @classmethod
    def open(cls, url: str) -> StateStore:
        """Connect and migrate to the newest schema."""
        if url.startswith("sqlite"):
            engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
            sa.event.listen(engine, "connect", _sqlite_pragmas)
        else:
            engine = sa.create_engine(url, pool_pre_ping=True)
        return cls._migrated(engine)

    @classmethod
    def in_folder(cls, folder: Path) -> StateStore:
        """SQLite in ``folder`` (the project's data folder)."""
        folder.mkdir(parents=True, exist_ok=True)
        return cls.open(f"sqlite:///{folder / 'metadata.sqlite'}")

    @classmethod
    def beside_postgres(cls, conninfo: str, schema: str) -> StateStore:
        """The metadata in its own schema of a PostgreSQL database (the store's, by default).

        Processes started together migrate one at a time (an advisory lock), so
        the first migration of a new schema is made once.
        """
        import psycopg
        from psycopg import sql

        def connect() -> Any:
            con = psycopg.connect(conninfo)
            con.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
            con.commit()
            return con

        engine = sa.create_engine("postgresql+psycopg://", creator=connect, pool_pre_ping=True)
        with psycopg.connect(conninfo, autocommit=True) as con:
            con.execute("SELECT pg_advisory_lock(hashtext('headwater-metadata'))")
            try:
                con.execute(
                    sql.SQL("CREATE SCHEMA IF NOT EXISTS {}").format(sql.Identifier(schema))
                )
                return cls._migrated(engine)
            finally:
                con.execute("SELECT pg_advisory_unlock(hashtext('headwater-metadata'))")

    @classmethod
    def _migrated(cls, engine: sa.Engine) -> StateStore:
        if _revision(engine) == SCHEMA_REVISION:
            return cls(engine)
        if engine.dialect.name != "postgresql":
            _migrate(engine)
            return cls(engine)
        # Processes started together: one migrates, the others wait and find it done.
        with engine.connect() as lock:
            lock.execute(sa.text("SELECT pg_advisory_lock(hashtext('headwater-migrate'))"))
            try:
                if _revision(engine) != SCHEMA_REVISION:
                    _migrate(engine)
            finally:
                lock.execute(sa.text("SELECT pg_advisory_unlock(hashtext('headwater-migrate'))"))
                lock.commit()
        return cls(engine)

    def close(self) -> None:
        self.engine.dispose()


def _revision(engine: sa.Engine) -> str | None:
    """The schema's Alembic revision, or ``None`` for a new database."""
    with engine.connect() as db:
        try:
            value = db.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
        except sa.exc.DBAPIError:
            return None
    return str(value) if value is not None else None


def _migrate(engine: sa.Engine) -> None:
    # Alembic is imported only when a migration is due: it costs ~100 ms to import.
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(_MIGRATIONS))
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def _sqlite_pragmas(connection: Any, _record: object) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
