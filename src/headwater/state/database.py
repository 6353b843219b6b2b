"""The metadata database: where runs, intervals, leases and deliveries are kept.

SQLite in the data folder by default (WAL mode, so ``headwater status`` reads
it while the server writes), any SQLAlchemy URL when shared, or a schema of
the PostgreSQL store's own database. The schema is migrated by Alembic when
the database opens (processes started together migrate one at a time), except
where migrating is said explicitly (a protected environment, ``headwater
migrate``): there a schema that is behind is refused with :class:`SchemaBehind`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import sqlalchemy as sa

from headwater.core.errors import TerminalError
from headwater.state.admin_actions import AdminLog, SessionSecret
from headwater.state.applies import ApplyLog
from headwater.state.deliveries import DeliveryLog
from headwater.state.erasures import ErasureLog
from headwater.state.leases import Leases
from headwater.state.models import ModelRegistry
from headwater.state.offload import OffloadLog
from headwater.state.retention import RetentionLog
from headwater.state.runs import RunLog

_MIGRATIONS = Path(__file__).parent / "migrations"
#: The newest migration in ``migrations/versions``; a test checks it is Alembic's head.
SCHEMA_REVISION = "0010"


class StateStore:
    """The shared run state: ``runs`` (runs, intervals, watermarks), ``leases``,
    ``deliveries``, ``offloads``, ``applies``, ``models``, ``retention``,
    ``admin_actions``, ``session_secret`` and ``erasures``, over one SQLAlchemy engine."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.runs = RunLog(engine)
        self.leases = Leases(engine)
        self.deliveries = DeliveryLog(engine)
        self.offloads = OffloadLog(engine)
        self.applies = ApplyLog(engine)
        self.models = ModelRegistry(engine)
        self.retention = RetentionLog(engine)
        self.admin_actions = AdminLog(engine)
        self.session_secret = SessionSecret(engine)
        self.erasures = ErasureLog(engine)

    @classmethod
    def open(cls, url: str, *, migrate: bool = True) -> StateStore:
        """Connect and migrate to the newest schema (``migrate=False``: refuse a schema
        that is behind, :class:`SchemaBehind`)."""
        return MetadataDatabase.at_url(url).open(migrate=migrate)

    @classmethod
    def in_folder(cls, folder: Path, *, migrate: bool = True) -> StateStore:
        """SQLite in ``folder`` (the project's data folder)."""
        return MetadataDatabase.in_folder(folder).open(migrate=migrate)

    @classmethod
    def beside_postgres(cls, conninfo: str, schema: str, *, migrate: bool = True) -> StateStore:
        """The metadata in its own schema of a PostgreSQL database (the store's, by default).

        Processes started together migrate one at a time (an advisory lock), so
        the first migration of a new schema is made once.
        """
        return MetadataDatabase.beside_postgres(conninfo, schema).open(migrate=migrate)

    def close(self) -> None:
        self.engine.dispose()


class MetadataDatabase:
    """A metadata database before it is opened: its revision, its migration, and the SQL
    that migration would run."""

    def __init__(self, engine: sa.Engine, *, schema: str | None = None) -> None:
        """``schema``: the PostgreSQL schema the metadata lives in, made by the first
        migration."""
        self.engine = engine
        self.schema = schema

    @classmethod
    def at_url(cls, url: str) -> MetadataDatabase:
        if url.startswith("sqlite"):
            engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
            sa.event.listen(engine, "connect", _sqlite_pragmas)
        else:
            engine = sa.create_engine(url, pool_pre_ping=True)
        return cls(engine)

    @classmethod
    def in_folder(cls, folder: Path) -> MetadataDatabase:
        folder.mkdir(parents=True, exist_ok=True)
        return cls.at_url(f"sqlite:///{folder / 'metadata.sqlite'}")

    @classmethod
    def beside_postgres(cls, conninfo: str, schema: str) -> MetadataDatabase:
        import psycopg
        from psycopg import sql

        def connect() -> Any:
            con = psycopg.connect(conninfo)
            con.execute(sql.SQL("SET search_path TO {}").format(sql.Identifier(schema)))
            con.commit()
            return con

        engine = sa.create_engine("postgresql+psycopg://", creator=connect, pool_pre_ping=True)
        return cls(engine, schema=schema)

    def revision(self) -> str | None:
        """The schema's Alembic revision, or ``None`` for a new database."""
        return _revision(self.engine)

    def open(self, *, migrate: bool = True, as_is: bool = False) -> StateStore:
        """The run state, migrated first when behind; ``migrate=False`` refuses a schema
        that is behind or new instead (:class:`SchemaBehind`); ``as_is`` opens it at its
        revision, for reading what that revision holds (``headwater plan``)."""
        try:
            found = self.revision()
            if found != SCHEMA_REVISION and not as_is:
                if not migrate:
                    raise SchemaBehind(found, SCHEMA_REVISION)
                self.migrate()
        except BaseException:
            self.engine.dispose()
            raise
        return StateStore(self.engine)

    def migrate(self) -> None:
        """Upgrade to :data:`SCHEMA_REVISION`; with PostgreSQL, one process at a time: the
        others wait and find it done."""
        if self.engine.dialect.name != "postgresql":
            if self.revision() != SCHEMA_REVISION:
                _migrate(self.engine)
            return
        with self.engine.connect() as lock:
            lock.execute(sa.text("SELECT pg_advisory_lock(hashtext('headwater-migrate'))"))
            try:
                if self.schema is not None:
                    quoted = self.engine.dialect.identifier_preparer.quote_identifier(self.schema)
                    lock.execute(sa.text(f"CREATE SCHEMA IF NOT EXISTS {quoted}"))
                    lock.commit()
                if self.revision() != SCHEMA_REVISION:
                    _migrate(self.engine)
            finally:
                lock.execute(sa.text("SELECT pg_advisory_unlock(hashtext('headwater-migrate'))"))
                lock.commit()

    def pending(self) -> list[str]:
        """The migrations :meth:`migrate` would apply, oldest first: each revision and what
        it does (the first line of its description)."""
        from alembic.script import ScriptDirectory

        found = self.revision()
        if found == SCHEMA_REVISION:
            return []
        scripts = ScriptDirectory.from_config(_config())
        steps = list(scripts.iterate_revisions("head", found or "base"))
        return [
            f"{step.revision} {(step.doc or '').splitlines()[0] if step.doc else ''}".strip()
            for step in reversed(steps)
        ]

    def upgrade_sql(self) -> str:
        """The SQL :meth:`migrate` would run from the current revision (from the start for
        a new database), in this database's dialect; nothing is changed."""
        import io

        from alembic import command

        found = self.revision()
        if found == SCHEMA_REVISION:
            return ""
        buffer = io.StringIO()
        config = _config(buffer)
        config.attributes["dialect"] = self.engine.dialect.name
        command.upgrade(config, f"{found}:head" if found else "head", sql=True)
        return buffer.getvalue()

    def close(self) -> None:
        self.engine.dispose()


class SchemaBehind(TerminalError):
    """The metadata database is behind this version's schema (or new) and may not be
    migrated as it opens: in a protected environment, migrating is said with
    ``headwater migrate``."""

    def __init__(self, found: str | None, needed: str, environment: str | None = None) -> None:
        self.found = found
        self.needed = needed
        self.environment = environment
        where = f"environment {environment!r}" if environment else "this environment"
        state = f"is at revision {found}" if found else "is new (no revision yet)"
        command = f"headwater --env {environment} migrate" if environment else "headwater migrate"
        super().__init__(
            f"the metadata database {state} and this version of Headwater needs {needed}; "
            f"{where} is protected, so it is not migrated when opened",
            hint=f"run `{command}` (add --sql to review the SQL first)",
        )


def _revision(engine: sa.Engine) -> str | None:
    """The schema's Alembic revision, or ``None`` for a new database."""
    with engine.connect() as db:
        try:
            value = db.execute(sa.text("SELECT version_num FROM alembic_version")).scalar()
        except sa.exc.DBAPIError:
            return None
    return str(value) if value is not None else None


def _config(output: Any = None) -> Any:
    from alembic.config import Config

    config = Config(output_buffer=output)
    config.set_main_option("script_location", str(_MIGRATIONS))
    return config


def _migrate(engine: sa.Engine) -> None:
    # Alembic is imported only when a migration is due: it costs ~100 ms to import.
    from alembic import command

    config = _config()
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "head")


def _sqlite_pragmas(connection: Any, _record: object) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # A commit is not flushed to disk (a crash of the process loses nothing; a power cut
    # may lose the last commits): what the metadata records follows what the engine
    # committed, and a lost record only makes a run or a delivery happen again.
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    # What is deleted or overwritten is zeroed, not left in free space: an erasure's raw
    # ids, once forgotten, are not in the file (the log is checkpointed after it).
    cursor.execute("PRAGMA secure_delete=ON")
    cursor.close()
