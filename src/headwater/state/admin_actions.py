"""What admins did from the dashboard: one row per action, kept in the metadata.

An action is recorded once it has ended, with its outcome, so the log says what
happened rather than what was asked; a refused action (a bad argument) is logged too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa

from headwater.core.clock import utc_now
from headwater.state.tables import admin_actions

Outcome = Literal["ok", "failed", "refused"]


@dataclass(frozen=True)
class AdminAction:
    id: int
    admin: str
    action: str
    arguments: dict[str, Any]
    at: datetime
    outcome: Outcome
    detail: str | None


class AdminLog:
    """Reads and writes ``admin_actions``."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def record(
        self,
        admin: str,
        action: str,
        arguments: dict[str, Any],
        outcome: Outcome,
        detail: str | None = None,
    ) -> int:
        """Keep one action; its id."""
        with self.engine.begin() as db:
            result = db.execute(
                admin_actions.insert().values(
                    admin=admin,
                    action=action,
                    arguments=json.dumps(arguments, sort_keys=True, default=str),
                    at=utc_now(),
                    outcome=outcome,
                    detail=detail,
                )
            )
            key = result.inserted_primary_key
            return int(key[0]) if key else 0

    def recent(self, limit: int = 50) -> list[AdminAction]:
        """The newest actions first."""
        query = admin_actions.select().order_by(admin_actions.c.id.desc()).limit(limit)
        with self.engine.connect() as db:
            rows = db.execute(query).mappings().all()
        return [
            AdminAction(
                id=row["id"],
                admin=row["admin"],
                action=row["action"],
                arguments=json.loads(row["arguments"]),
                at=row["at"],
                outcome=row["outcome"],
                detail=row["detail"],
            )
            for row in rows
        ]
