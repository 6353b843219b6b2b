"""Runs, intervals, versions, watermarks and leases.

Revision ID: 0001
Revises:
Create Date: 2026-11-25
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "pipeline_versions",
        sa.Column("pipeline", sa.String(200), primary_key=True),
        sa.Column("version", sa.String(32), primary_key=True),
        sa.Column("first_seen", TS, nullable=False),
    )
    op.create_table(
        "intervals",
        sa.Column("pipeline", sa.String(200), primary_key=True),
        sa.Column("start", TS, primary_key=True),
        sa.Column("end", TS, nullable=False),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("run_id", sa.Integer, nullable=False),
        sa.Column("done_at", TS, nullable=False),
        sa.Column("reason", sa.Text),
    )
    op.create_table(
        "runs",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("pipeline", sa.String(200), nullable=False, index=True),
        sa.Column("version", sa.String(32), nullable=False),
        sa.Column("interval_start", TS, nullable=False),
        sa.Column("interval_end", TS, nullable=False),
        sa.Column("trigger", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("attempt", sa.Integer, nullable=False),
        sa.Column("started_at", TS, nullable=False),
        sa.Column("finished_at", TS),
        sa.Column("rows_read", sa.BigInteger),
        sa.Column("rows_written", sa.BigInteger),
        sa.Column("error", sa.Text),
        sa.Column("error_kind", sa.String(16)),
    )
    op.create_table(
        "watermarks",
        sa.Column("pipeline", sa.String(200), primary_key=True),
        sa.Column("arrival_mark", TS, nullable=False),
    )
    op.create_table(
        "leases",
        sa.Column("pipeline", sa.String(200), primary_key=True),
        sa.Column("owner", sa.String(100), nullable=False),
        sa.Column("expires_at", TS, nullable=False),
    )


def downgrade() -> None:
    for table in ("leases", "watermarks", "runs", "intervals", "pipeline_versions"):
        op.drop_table(table)
