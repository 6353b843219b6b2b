"""The metadata database: what ran, what is done, what is stale, who holds a pipeline.

SQLite in the data folder by default (WAL mode, so ``headwater status`` reads
it while the server writes), any SQLAlchemy URL when shared. The schema is
migrated by Alembic when the store opens.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa

from headwater.core.clock import utc_now
from headwater.core.secrets import environment_value
from headwater.core.types import Interval
from headwater.process.metadata import deliveries
from headwater.process.metadata.deliveries import DeliveryLog
from headwater.process.metadata.tables import intervals, leases, runs, versions, watermarks

if TYPE_CHECKING:
    from headwater.config.project import Project

_MIGRATIONS = Path(__file__).parent / "migrations"
#: The newest migration in ``migrations/versions``; a test checks it is Alembic's head.
SCHEMA_REVISION = "0002"


@dataclass(frozen=True)
class IntervalState:
    """A published interval."""

    interval: Interval
    version: str
    status: str
    done_at: datetime
    reason: str | None


@dataclass(frozen=True)
class RunRecord:
    id: int
    pipeline: str
    interval: Interval
    trigger: str
    status: str
    attempt: int
    started_at: datetime
    finished_at: datetime | None
    rows_read: int | None
    rows_written: int | None
    error: str | None
    error_kind: str | None


_now = utc_now


class MetadataStore:
    """Typed access to the metadata tables."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine
        self.deliveries = DeliveryLog(engine)

    @classmethod
    def open(cls, url: str) -> MetadataStore:
        """Connect and migrate to the newest schema."""
        if url.startswith("sqlite"):
            engine = sa.create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})
            sa.event.listen(engine, "connect", _sqlite_pragmas)
        else:
            engine = sa.create_engine(url, pool_pre_ping=True)
        return cls._migrated(engine)

    @classmethod
    def _migrated(cls, engine: sa.Engine) -> MetadataStore:
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

    @classmethod
    def beside_postgres(cls, conninfo: str, schema: str) -> MetadataStore:
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
    def for_project(cls, project: Project) -> MetadataStore:
        """The project's metadata in its environment: ``metadata_url`` when set, else beside
        the store (SQLite in the data folder, or the PostgreSQL store's database)."""
        url = project.settings.pipelines.metadata_url
        if url:
            return cls.open(environment_value(url, where="metadata_url"))
        store = project.settings.store
        if store.engine == "postgres":
            conninfo = environment_value(store.url or "", where="[store] url")
            return cls.beside_postgres(conninfo, f"{store.schema}_metadata")
        return cls.for_data_dir(project.data_dir)

    @classmethod
    def for_data_dir(cls, data_dir: Path, url: str | None = None) -> MetadataStore:
        data_dir.mkdir(parents=True, exist_ok=True)
        return cls.open(url or f"sqlite:///{data_dir / 'metadata.sqlite'}")

    def close(self) -> None:
        self.engine.dispose()

    # -- runs and intervals ---------------------------------------------------

    def start_run(
        self, pipeline: str, version: str, interval: Interval, trigger: str, attempt: int
    ) -> int:
        """Record a run as running (and the pipeline's version when it is new)."""
        with self.engine.begin() as db:
            known = db.execute(
                sa.select(versions.c.version).where(
                    versions.c.pipeline == pipeline, versions.c.version == version
                )
            ).first()
            if known is None:
                db.execute(
                    versions.insert().values(pipeline=pipeline, version=version, first_seen=_now())
                )
            result = db.execute(
                runs.insert().values(
                    pipeline=pipeline,
                    version=version,
                    interval_start=interval.start,
                    interval_end=interval.end,
                    trigger=trigger,
                    status="running",
                    attempt=attempt,
                    started_at=_now(),
                )
            )
            key = result.inserted_primary_key
            return int(key[0]) if key else 0

    def succeed(
        self,
        run_id: int,
        pipeline: str,
        version: str,
        interval: Interval,
        *,
        rows_read: int | None,
        rows_written: int,
        record_interval: bool,
        sinks: Sequence[str] = (),
    ) -> None:
        """Record a published run, its interval as done and its deliveries as owed, in one
        transaction.

        The interval's ``done_at`` is when the run *started*: an input published
        after that may not be in its output, so readers compare against it.
        """
        now = _now()
        with self.engine.begin() as db:
            started = db.execute(sa.select(runs.c.started_at).where(runs.c.id == run_id)).scalar()
            db.execute(
                runs.update()
                .where(runs.c.id == run_id)
                .values(
                    status="succeeded",
                    finished_at=now,
                    rows_read=rows_read,
                    rows_written=rows_written,
                )
            )
            if record_interval:
                db.execute(
                    intervals.delete().where(
                        intervals.c.pipeline == pipeline, intervals.c.start == interval.start
                    )
                )
                db.execute(
                    intervals.insert().values(
                        pipeline=pipeline,
                        start=interval.start,
                        end=interval.end,
                        version=version,
                        status="done",
                        run_id=run_id,
                        done_at=started or now,
                        reason=None,
                    )
                )
                deliveries.schedule(db, pipeline, sinks, interval, run_id)

    def fail(self, run_id: int, error: str, kind: str) -> None:
        with self.engine.begin() as db:
            db.execute(
                runs.update()
                .where(runs.c.id == run_id)
                .values(status="failed", finished_at=_now(), error=error, error_kind=kind)
            )

    def interrupted(self, pipelines: Iterable[str]) -> int:
        """Mark runs left ``running`` by a process that died; call while holding their leases."""
        names = list(pipelines)
        with self.engine.begin() as db:
            result = db.execute(
                runs.update()
                .where(runs.c.status == "running", runs.c.pipeline.in_(names))
                .values(
                    status="failed",
                    finished_at=_now(),
                    error="interrupted: the process running it stopped",
                    error_kind="transient",
                )
            )
            return int(result.rowcount or 0)

    def intervals(self, pipeline: str) -> dict[datetime, IntervalState]:
        with self.engine.connect() as db:
            rows = db.execute(
                sa.select(intervals).where(intervals.c.pipeline == pipeline)
            ).mappings()
            return {
                row["start"]: IntervalState(
                    Interval(row["start"], row["end"]),
                    row["version"],
                    row["status"],
                    row["done_at"],
                    row["reason"],
                )
                for row in rows
            }

    def mark_stale(self, pipeline: str, starts: Iterable[datetime], reason: str) -> int:
        starts = list(starts)
        if not starts:
            return 0
        with self.engine.begin() as db:
            result = db.execute(
                intervals.update()
                .where(
                    intervals.c.pipeline == pipeline,
                    intervals.c.start.in_(starts),
                    intervals.c.status == "done",
                )
                .values(status="stale", reason=reason)
            )
            return int(result.rowcount or 0)

    def runs(self, pipeline: str, limit: int = 20) -> list[RunRecord]:
        with self.engine.connect() as db:
            rows = db.execute(
                sa.select(runs)
                .where(runs.c.pipeline == pipeline)
                .order_by(runs.c.id.desc())
                .limit(limit)
            ).mappings()
            return [_run(row) for row in rows]

    def terminal_failures(self, pipeline: str, version: str) -> set[datetime]:
        """Interval starts whose latest run of ``version`` failed for good: not retried by the
        scheduler (a backfill or a manual run tries again)."""
        with self.engine.connect() as db:
            latest = (
                sa.select(runs.c.interval_start, sa.func.max(runs.c.id).label("id"))
                .where(runs.c.pipeline == pipeline)
                .group_by(runs.c.interval_start)
                .subquery()
            )
            rows = db.execute(
                sa.select(runs.c.interval_start)
                .join(latest, runs.c.id == latest.c.id)
                .where(
                    runs.c.status == "failed",
                    runs.c.error_kind == "terminal",
                    runs.c.version == version,
                )
            ).scalars()
            return set(rows)

    # -- watermarks --------------------------------------------------------

    def watermark(self, pipeline: str) -> datetime | None:
        with self.engine.connect() as db:
            value = db.execute(
                sa.select(watermarks.c.arrival_mark).where(watermarks.c.pipeline == pipeline)
            ).scalar()
            return value if isinstance(value, datetime) else None

    def set_watermark(self, pipeline: str, mark: datetime) -> None:
        with self.engine.begin() as db:
            db.execute(watermarks.delete().where(watermarks.c.pipeline == pipeline))
            db.execute(watermarks.insert().values(pipeline=pipeline, arrival_mark=mark))

    # -- leases ------------------------------------------------------------

    def acquire(
        self,
        pipeline: str,
        owner: str,
        ttl: timedelta,
        dead: Callable[[str], bool] = lambda _owner: False,
    ) -> bool:
        """Take the pipeline's lease if it is free, expired, or held by a ``dead`` owner."""
        now = _now()
        with self.engine.begin() as db:
            holder = db.execute(
                sa.select(leases.c.owner, leases.c.expires_at).where(leases.c.pipeline == pipeline)
            ).first()
            if holder is None:
                try:
                    with db.begin_nested():
                        db.execute(
                            leases.insert().values(
                                pipeline=pipeline, owner=owner, expires_at=now + ttl
                            )
                        )
                except sa.exc.IntegrityError:
                    return False
                return True
            if holder.expires_at >= now and not dead(holder.owner):
                return False
            # Compare and set: only if the holder is still the one we judged.
            taken = db.execute(
                leases.update()
                .where(leases.c.pipeline == pipeline, leases.c.owner == holder.owner)
                .values(owner=owner, expires_at=now + ttl)
            )
            return bool(taken.rowcount)

    def renew(self, pipeline: str, owner: str, ttl: timedelta) -> bool:
        """Extend a lease this owner holds; ``False`` if it was lost."""
        with self.engine.begin() as db:
            renewed = db.execute(
                leases.update()
                .where(leases.c.pipeline == pipeline, leases.c.owner == owner)
                .values(expires_at=_now() + ttl)
            )
            return bool(renewed.rowcount)

    def release(self, pipeline: str, owner: str) -> None:
        with self.engine.begin() as db:
            db.execute(
                leases.delete().where(leases.c.pipeline == pipeline, leases.c.owner == owner)
            )


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


def _run(row: Any) -> RunRecord:
    return RunRecord(
        id=row["id"],
        pipeline=row["pipeline"],
        interval=Interval(row["interval_start"], row["interval_end"]),
        trigger=row["trigger"],
        status=row["status"],
        attempt=row["attempt"],
        started_at=row["started_at"],
        finished_at=row["finished_at"],
        rows_read=row["rows_read"],
        rows_written=row["rows_written"],
        error=row["error"],
        error_kind=row["error_kind"],
    )


def _sqlite_pragmas(connection: Any, _record: object) -> None:
    cursor = connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()
