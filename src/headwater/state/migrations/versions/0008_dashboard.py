"""Dashboard: every admin action taken from the dashboard, who, what, when and how it went.

Revision ID: 0008
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0006"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "admin_actions",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("admin", sa.String(200), nullable=False),
        sa.Column("action", sa.String(100), nullable=False),
        sa.Column("arguments", sa.Text, nullable=False),
        sa.Column("at", TS, nullable=False),
        sa.Column("outcome", sa.String(20), nullable=False),
        sa.Column("detail", sa.Text),
    )
    op.create_index("admin_actions_at", "admin_actions", ["at"])


def downgrade() -> None:
    op.drop_index("admin_actions_at", "admin_actions")
    op.drop_table("admin_actions")
