"""The retention passes, per table, in the metadata database: what ``headwater status``
shows without looking at the tables themselves."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

import sqlalchemy as sa

from headwater.state.tables import record, retention


@dataclass(frozen=True, slots=True)
class RetentionPass:
    """A table's last retention pass: rows before ``horizon`` were being dropped."""

    table_name: str
    horizon: datetime
    last_pass_at: datetime
    last_dropped: int
    dropped_total: int
    #: Whether the pass left no row before the horizon (else the next one goes on).
    caught_up: bool


class RetentionLog:
    """The last retention pass of each table."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def record(
        self, table: str, horizon: datetime, at: datetime, dropped: int, caught_up: bool
    ) -> None:
        with self.engine.begin() as db:
            total = db.execute(
                sa.select(retention.c.dropped_total).where(retention.c.table_name == table)
            ).scalar()
            db.execute(retention.delete().where(retention.c.table_name == table))
            db.execute(
                retention.insert().values(
                    table_name=table,
                    horizon=horizon,
                    last_pass_at=at,
                    last_dropped=dropped,
                    dropped_total=int(total or 0) + dropped,
                    caught_up=caught_up,
                )
            )

    def passes(self) -> dict[str, RetentionPass]:
        with self.engine.connect() as db:
            rows = db.execute(sa.select(retention)).mappings()
            return {row["table_name"]: record(RetentionPass, row) for row in rows}
