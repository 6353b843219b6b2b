"""The model registry: every model version seen, and the intervals each one scored.

A run that scores records its model versions in the transaction that records it
succeeded (the first such run of a version stamps ``first_used``), and which of them its
pipeline version scores with;
the intervals a model version scored are then those its pipeline versions made.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa

from headwater.core.clock import parse_utc, utc_now
from headwater.state.tables import intervals, model_uses, model_versions


@dataclass(frozen=True)
class SeenVersion:
    """A model version a run scores with."""

    model: str
    version: str
    sha256: str
    size: int
    source: str
    shadow: bool


@dataclass(frozen=True)
class Scored:
    """What one pipeline scored with one model version."""

    pipeline: str
    shadow: bool
    intervals: int
    first: datetime | None
    last: datetime | None


@dataclass(frozen=True)
class ModelVersion:
    """One version of a model, and the intervals it scored (done, by its pipelines)."""

    model: str
    version: str
    sha256: str
    size: int
    source: str
    first_used: datetime
    scored: tuple[Scored, ...]

    @property
    def intervals(self) -> int:
        return sum(s.intervals for s in self.scored)


class ModelRegistry:
    """Reads and writes ``model_versions`` and ``model_uses``."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def used(self, pipeline: str, pipeline_version: str, seen: Iterable[SeenVersion]) -> None:
        """Record that ``pipeline_version`` of ``pipeline`` scores with ``seen``."""
        with self.engine.begin() as db:
            used_in(db, pipeline, pipeline_version, seen)

    def uses(self, pipeline: str) -> dict[str, list[tuple[str, str, bool]]]:
        """The model versions each version of ``pipeline`` scored with: pipeline version ->
        ``(model, model version, shadow)``."""
        query = sa.select(
            model_uses.c.pipeline_version,
            model_uses.c.model,
            model_uses.c.model_version,
            model_uses.c.shadow,
        ).where(model_uses.c.pipeline == pipeline)
        found: dict[str, list[tuple[str, str, bool]]] = {}
        with self.engine.connect() as db:
            for row in db.execute(query):
                found.setdefault(row[0], []).append((row[1], row[2], bool(row[3])))
        return found

    def versions(self, model: str | None = None) -> list[ModelVersion]:
        """Every version seen (of ``model``), oldest first, with the intervals it scored."""
        query = sa.select(model_versions).order_by(
            model_versions.c.model, model_versions.c.first_used, model_versions.c.version
        )
        if model is not None:
            query = query.where(model_versions.c.model == model)
        scored = (
            sa.select(
                model_uses.c.model,
                model_uses.c.model_version,
                model_uses.c.pipeline,
                model_uses.c.shadow,
                sa.func.count(intervals.c.start).label("count"),
                sa.func.min(intervals.c.start).label("first"),
                sa.func.max(intervals.c.end).label("last"),
            )
            .select_from(model_uses)
            .join(
                intervals,
                sa.and_(
                    intervals.c.pipeline == model_uses.c.pipeline,
                    intervals.c.version == model_uses.c.pipeline_version,
                    intervals.c.status == "done",
                ),
            )
            .group_by(
                model_uses.c.model,
                model_uses.c.model_version,
                model_uses.c.pipeline,
                model_uses.c.shadow,
            )
        )
        with self.engine.connect() as db:
            rows = db.execute(query).mappings().all()
            uses = db.execute(scored).mappings().all()
        by_version: dict[tuple[str, str], list[Scored]] = {}
        for use in uses:
            by_version.setdefault((use["model"], use["model_version"]), []).append(
                Scored(
                    use["pipeline"],
                    bool(use["shadow"]),
                    int(use["count"]),
                    _utc(use["first"]),
                    _utc(use["last"]),
                )
            )
        return [
            ModelVersion(
                row["model"],
                row["version"],
                row["sha256"],
                int(row["size"]),
                row["source"],
                row["first_used"],
                tuple(
                    sorted(
                        by_version.get((row["model"], row["version"]), []),
                        key=lambda s: (s.pipeline, s.shadow),
                    )
                ),
            )
            for row in rows
        ]


def move_uses(db: sa.Connection, build: str, live: str) -> None:
    """Give a build's model uses to the live pipeline, as ``headwater apply`` swaps the build
    in (in its transaction): the intervals the build scored are the live pipeline's now."""
    moving = db.execute(sa.select(model_uses).where(model_uses.c.pipeline == build)).mappings()
    rows = list(moving)
    db.execute(model_uses.delete().where(model_uses.c.pipeline == build))
    for row in rows:
        key = {name: row[name] for name in ("pipeline_version", "model", "model_version")}
        _insert_new(db, model_uses, {"pipeline": live, **key}, shadow=row["shadow"])


def used_in(
    db: sa.Connection, pipeline: str, pipeline_version: str, seen: Iterable[SeenVersion]
) -> None:
    """:meth:`ModelRegistry.used` in the transaction ``db``: the run's own record, so a
    run that fails (or whose publication is fenced off) leaves no use and no first use."""
    for item in seen:
        _insert_new(
            db,
            model_versions,
            {"model": item.model, "version": item.version},
            sha256=item.sha256,
            size=item.size,
            source=item.source,
            first_used=utc_now(),
        )
        key = {"model": item.model, "model_version": item.version}
        _insert_new(
            db,
            model_uses,
            {"pipeline": pipeline, "pipeline_version": pipeline_version, **key},
            shadow=int(item.shadow),
        )


def _insert_new(
    db: sa.Connection, table: sa.Table, key: dict[str, object], **values: object
) -> None:
    """Insert the row ``key`` with ``values`` into ``table``, unless it is there already
    (two pipelines of one model may record its version at once: the second does nothing,
    rather than fail the run it records)."""
    row = {**key, **values}
    index = [c.name for c in table.primary_key.columns]
    if db.dialect.name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        db.execute(pg_insert(table).values(**row).on_conflict_do_nothing(index_elements=index))
    elif db.dialect.name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        db.execute(sqlite_insert(table).values(**row).on_conflict_do_nothing(index_elements=index))
    else:
        where = [table.c[name] == value for name, value in key.items()]
        if db.execute(sa.select(*table.primary_key.columns).where(*where)).first() is None:
            db.execute(table.insert().values(**row))


def _utc(value: object) -> datetime | None:
    """An aggregate's time: SQLite gives it back as text, without the column's type."""
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return parse_utc(str(value))
