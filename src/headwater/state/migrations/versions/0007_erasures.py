"""Erasures: each erasure and the places it deletes from, and the ids suppressed at ingest.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None

TS = sa.DateTime(timezone=True)


def upgrade() -> None:
    op.create_table(
        "erasures",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
        sa.Column("requested_by", sa.String(200), nullable=False),
        sa.Column("requested_at", TS, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("ids", sa.Text),
        sa.Column("hashes", sa.Text, nullable=False),
        sa.Column("finished_at", TS),
    )
    op.create_table(
        "erasure_places",
        sa.Column("erasure_id", sa.Integer, primary_key=True),
        sa.Column("place", sa.String(400), primary_key=True),
        sa.Column("seq", sa.Integer, nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("rows", sa.BigInteger),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("next_attempt_at", TS, nullable=False),
        sa.Column("last_error", sa.Text),
        sa.Column("done_at", TS),
    )
    op.create_index("erasure_places_open", "erasure_places", ["status", "next_attempt_at"])
    op.create_table(
        "suppressions",
        sa.Column("hash", sa.String(64), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("erasure_id", sa.Integer),
        sa.Column("added_by", sa.String(200), nullable=False),
        sa.Column("added_at", TS, nullable=False),
        sa.Column("lifted_at", TS),
        sa.Column("lifted_by", sa.String(200)),
        sa.Column("dropped", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("last_dropped_at", TS),
    )


def downgrade() -> None:
    op.drop_table("suppressions")
    op.drop_index("erasure_places_open", table_name="erasure_places")
    op.drop_table("erasure_places")
    op.drop_table("erasures")
