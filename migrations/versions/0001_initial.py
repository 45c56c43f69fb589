"""Users, call types (with the built-in ones), calls, members and session participants.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from server.call_types import BUILT_IN_TYPES
from server.models import UtcDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "users",
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("name", sa.String(256), nullable=False),
        sa.Column("image", sa.String(2048), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("custom", sa.JSON(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    call_types = op.create_table(
        "call_types",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("settings", sa.JSON(), nullable=False),
        sa.Column("grants", sa.JSON(), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "calls",
        sa.Column("cid", sa.String(129), primary_key=True),
        sa.Column("type", sa.String(64), sa.ForeignKey("call_types.name"), nullable=False),
        sa.Column("id", sa.String(64), nullable=False),
        sa.Column("created_by", sa.String(128), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
        sa.Column("starts_at", UtcDateTime(), nullable=True),
        sa.Column("live", sa.Boolean(), nullable=False),
        sa.Column("live_started_at", UtcDateTime(), nullable=True),
        sa.Column("ended_at", UtcDateTime(), nullable=True),
        sa.Column("settings_override", sa.JSON(), nullable=False),
        sa.Column("custom", sa.JSON(), nullable=False),
        sa.Column("session_id", sa.String(64), nullable=True),
        sa.Column("session_started_at", UtcDateTime(), nullable=True),
    )
    op.create_index("ix_calls_type_created", "calls", ["type", "created_at"])
    op.create_table(
        "call_members",
        sa.Column(
            "cid",
            sa.String(129),
            sa.ForeignKey("calls.cid", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("user_id", sa.String(128), primary_key=True),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("created_at", UtcDateTime(), nullable=False),
        sa.Column("updated_at", UtcDateTime(), nullable=False),
    )
    op.create_table(
        "session_participants",
        sa.Column("participant_id", sa.String(64), primary_key=True),
        sa.Column(
            "cid", sa.String(129), sa.ForeignKey("calls.cid", ondelete="CASCADE"), nullable=False
        ),
        sa.Column("session_id", sa.String(64), nullable=False),
        sa.Column("user_id", sa.String(128), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("node_id", sa.String(128), nullable=False),
        sa.Column("hidden", sa.Boolean(), nullable=False),
        sa.Column("joined_at", UtcDateTime(), nullable=True),
        sa.Column("left_at", UtcDateTime(), nullable=True),
    )
    op.create_index("ix_participants_cid_left", "session_participants", ["cid", "left_at"])

    now = datetime.now(UTC)
    op.bulk_insert(
        call_types,
        [
            {
                "name": name,
                "settings": settings.model_dump(mode="json"),
                "grants": grants,
                "created_at": now,
                "updated_at": now,
            }
            for name, (settings, grants) in BUILT_IN_TYPES.items()
        ],
    )


def downgrade() -> None:
    op.drop_table("session_participants")
    op.drop_table("call_members")
    op.drop_table("calls")
    op.drop_table("call_types")
    op.drop_table("users")
