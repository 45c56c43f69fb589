"""Egress: HLS broadcasts and recordings.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from server.models import UtcDateTime

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "egress",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column(
            "cid",
            sa.String(129),
            sa.ForeignKey("calls.cid", ondelete="CASCADE"),
            nullable=False,
        ),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("path_token", sa.String(64), nullable=False, unique=True),
        sa.Column("filename", sa.String(256), nullable=True),
        sa.Column("storage_key", sa.String(512), nullable=True),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("started_at", UtcDateTime(), nullable=True),
        sa.Column("ended_at", UtcDateTime(), nullable=True),
        sa.Column("duration_seconds", sa.Float(), nullable=True),
        sa.Column("size_bytes", sa.BigInteger(), nullable=True),
        sa.Column("error", sa.String(1024), nullable=True),
    )
    op.create_index("ix_egress_cid_kind_status", "egress", ["cid", "kind", "status"])


def downgrade() -> None:
    op.drop_index("ix_egress_cid_kind_status", table_name="egress")
    op.drop_table("egress")
