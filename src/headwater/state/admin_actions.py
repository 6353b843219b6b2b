"""What admins did from the dashboard, one row per action, and the secret their sessions
are signed with, both kept in the metadata.

An action is recorded once it has ended, with its outcome, so the log says what
happened rather than what was asked; a refused action (a bad argument) is logged too.
The secret lives beside the run state so that every process serving the dashboard
(``serve api`` behind a load balancer) signs and checks sessions alike.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

import sqlalchemy as sa

from headwater.core.clock import utc_now
from headwater.state.tables import admin_actions, dashboard_secret

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


class SessionSecret:
    """Reads, makes and replaces the dashboard's signing secret (``dashboard_secret``)."""

    def __init__(self, engine: sa.Engine) -> None:
        self.engine = engine

    def get(self) -> bytes:
        """The secret, made now if there is none yet (two processes at once: one wins)."""
        found = self._read()
        if found is not None:
            return found
        try:
            with self.engine.begin() as db:
                db.execute(dashboard_secret.insert().values(id=1, **_fresh()))
        except sa.exc.IntegrityError:
            pass  # another process made it first
        made = self._read()
        assert made is not None
        return made

    def replace(self) -> None:
        """A new secret: every session signed with the old one ends."""
        with self.engine.begin() as db:
            db.execute(dashboard_secret.delete())
            db.execute(dashboard_secret.insert().values(id=1, **_fresh()))

    def _read(self) -> bytes | None:
        with self.engine.connect() as db:
            value = db.execute(sa.select(dashboard_secret.c.secret)).scalar()
        return None if value is None else bytes.fromhex(value)


def _fresh() -> dict[str, Any]:
    return {"secret": secrets.token_hex(32), "created_at": utc_now()}
