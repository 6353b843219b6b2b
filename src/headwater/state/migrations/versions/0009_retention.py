"""Retention: per table, the last pass that dropped its old rows.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "retention",
        sa.Column("table_name", sa.String(200), primary_key=True),
        sa.Column("horizon", TS, nullable=False),
        sa.Column("last_pass_at", TS, nullable=False),
        sa.Column("last_dropped", sa.BigInteger, nullable=False),
        sa.Column("dropped_total", sa.BigInteger, nullable=False),
        sa.Column("caught_up", sa.Boolean, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("retention")
