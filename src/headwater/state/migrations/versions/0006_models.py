"""Models: each model version seen, and the model versions each pipeline version scores with.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "model_versions",
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("version", sa.String(32), primary_key=True),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size", sa.BigInteger, nullable=False),
        sa.Column("source", sa.Text, nullable=False),
        sa.Column("first_used", TS, nullable=False),
    )
    op.create_table(
        "model_uses",
        sa.Column("pipeline", sa.String(200), primary_key=True),
        sa.Column("pipeline_version", sa.String(32), primary_key=True),
        sa.Column("model", sa.String(200), primary_key=True),
        sa.Column("model_version", sa.String(32), primary_key=True),
        sa.Column("shadow", sa.Integer, nullable=False),
    )


def downgrade() -> None:
    op.drop_table("model_uses")
    op.drop_table("model_versions")
