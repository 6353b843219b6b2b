"""Applies: what ``headwater apply`` did and what each environment has applied.

Revision ID: 0005
Revises: 0004
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0004"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "applies",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("commit", sa.String(64)),
        sa.Column("dirty", sa.Integer, nullable=False),
        sa.Column("applied_by", sa.String(200), nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("plan", sa.Text, nullable=False),
        sa.Column("error", sa.Text),
    )
    op.create_table(
        "applied",
        sa.Column("kind", sa.String(16), primary_key=True),
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("version", sa.String(32)),
        sa.Column("spec", sa.Text, nullable=False),
        sa.Column("apply_id", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("applied")
    op.drop_table("applies")
