"""Offloads from the hot store into the warehouse.

Revision ID: 0004
Revises: 0003
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "offloads",
        sa.Column("interval_start", TS, primary_key=True),
        sa.Column("interval_end", TS, nullable=False),
        sa.Column("events", sa.BigInteger, nullable=False),
        sa.Column("failed_events", sa.BigInteger, nullable=False),
        sa.Column("bytes", sa.BigInteger, nullable=False),
        sa.Column("done_at", TS, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("offloads")
