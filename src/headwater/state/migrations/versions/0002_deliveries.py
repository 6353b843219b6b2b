"""Deliveries to sinks and their dead letters.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "deliveries",
        sa.Column("pipeline", sa.String(200), primary_key=True),
        sa.Column("sink", sa.String(200), primary_key=True),
        sa.Column("interval_start", TS, primary_key=True),
        sa.Column("interval_end", TS, nullable=False),
        sa.Column("run_id", sa.Integer, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("batches_done", sa.Integer, nullable=False),
        sa.Column("rows_delivered", sa.BigInteger, nullable=False),
        sa.Column("next_attempt_at", TS, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("updated_at", TS, nullable=False),
    )
    op.create_index("deliveries_due", "deliveries", ["status", "next_attempt_at"])
    op.create_table(
        "dead_letters",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("pipeline", sa.String(200), nullable=False),
        sa.Column("sink", sa.String(200), nullable=False),
        sa.Column("interval_start", TS, nullable=False),
        sa.Column("interval_end", TS, nullable=False),
        sa.Column("run_id", sa.Integer, nullable=False),
        sa.Column("batch", sa.Integer),
        sa.Column("idempotency_key", sa.String(80)),
        sa.Column("body", sa.LargeBinary),
        sa.Column("rows", sa.Integer, nullable=False),
        sa.Column("reason", sa.Text, nullable=False),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("created_at", TS, nullable=False),
        sa.Column("replayed_at", TS),
    )
    op.create_index("dead_letters_open", "dead_letters", ["replayed_at", "pipeline", "sink"])


def downgrade() -> None:
    op.drop_table("dead_letters")
    op.drop_table("deliveries")
