"""The coordinator's durable records (SQLAlchemy 2). The schema changes only through Alembic
migrations in ``migrations/``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    DateTime,
    Float,
    ForeignKey,
    Index,
    String,
    TypeDecorator,
)
from sqlalchemy.engine import Dialect
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UtcDateTime(TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on every database (SQLite keeps no zone)."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    type_annotation_map: ClassVar[dict[Any, Any]] = {datetime: UtcDateTime, dict[str, Any]: JSON}


class User(Base):
    __tablename__ = "users"

    id: Mapped[str] = mapped_column(String(128), primary_key=True)
    name: Mapped[str] = mapped_column(String(256), default="")
    image: Mapped[str] = mapped_column(String(2048), default="")
    role: Mapped[str] = mapped_column(String(16), default="user")
    custom: Mapped[dict[str, Any]] = mapped_column(default=dict)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class CallType(Base):
    __tablename__ = "call_types"

    name: Mapped[str] = mapped_column(String(64), primary_key=True)
    settings: Mapped[dict[str, Any]]
    grants: Mapped[dict[str, Any]]
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class Call(Base):
    __tablename__ = "calls"

    cid: Mapped[str] = mapped_column(String(129), primary_key=True)
    type: Mapped[str] = mapped_column(String(64), ForeignKey("call_types.name"))
    id: Mapped[str] = mapped_column(String(64))
    created_by: Mapped[str] = mapped_column(String(128))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]
    starts_at: Mapped[datetime | None]
    live: Mapped[bool] = mapped_column(Boolean, default=False)
    live_started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    settings_override: Mapped[dict[str, Any]] = mapped_column(default=dict)
    custom: Mapped[dict[str, Any]] = mapped_column(default=dict)
    session_id: Mapped[str | None] = mapped_column(String(64))
    session_started_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_calls_type_created", "type", "created_at"),)


class CallMember(Base):
    __tablename__ = "call_members"

    cid: Mapped[str] = mapped_column(
        String(129), ForeignKey("calls.cid", ondelete="CASCADE"), primary_key=True
    )
    user_id: Mapped[str] = mapped_column(String(128), primary_key=True)
    role: Mapped[str] = mapped_column(String(16))
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class SessionParticipant(Base):
    """One connection to a call's live session, as the SFU reported it."""

    __tablename__ = "session_participants"

    participant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    cid: Mapped[str] = mapped_column(String(129), ForeignKey("calls.cid", ondelete="CASCADE"))
    session_id: Mapped[str] = mapped_column(String(64))
    user_id: Mapped[str] = mapped_column(String(128))
    role: Mapped[str] = mapped_column(String(16))
    node_id: Mapped[str] = mapped_column(String(128))
    hidden: Mapped[bool] = mapped_column(Boolean, default=False)
    joined_at: Mapped[datetime | None]
    left_at: Mapped[datetime | None]

    __table_args__ = (Index("ix_participants_cid_left", "cid", "left_at"),)


class Egress(Base):
    """One HLS broadcast or one recording of a call, as its egress job reports it.

    ``status``: ``starting`` (queued, or waiting for media), ``running``, ``stopping`` (stop
    asked, the worker has not confirmed), ``stopped``, ``ready`` (a recording's file is final),
    ``failed``.
    """

    __tablename__ = "egress"

    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    cid: Mapped[str] = mapped_column(String(129), ForeignKey("calls.cid", ondelete="CASCADE"))
    kind: Mapped[str] = mapped_column(String(16))  # "hls" | "recording"
    status: Mapped[str] = mapped_column(String(16))
    # HLS: the unguessable directory the playlist is served from; recordings: storage prefix.
    path_token: Mapped[str] = mapped_column(String(64), unique=True)
    filename: Mapped[str | None] = mapped_column(String(256))
    storage_key: Mapped[str | None] = mapped_column(String(512))
    created_at: Mapped[datetime]
    started_at: Mapped[datetime | None]
    ended_at: Mapped[datetime | None]
    duration_seconds: Mapped[float | None] = mapped_column(Float)
    size_bytes: Mapped[int | None] = mapped_column(BigInteger)
    error: Mapped[str | None] = mapped_column(String(1024))

    __table_args__ = (Index("ix_egress_cid_kind_status", "cid", "kind", "status"),)
