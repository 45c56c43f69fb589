"""Calls: creation, settings, members, the livestream lifecycle and the join rules.

Plain functions over a database session; the routers only translate HTTP to these calls.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError
from sqlalchemy import JSON, and_, bindparam, delete, func, or_, select, update
from sqlalchemy import text as sql_text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm.attributes import set_committed_value

from server import egress
from server.call_types import CAPABILITIES, CallSettings, effective_settings, merge_settings
from server.context import Coordinator, after_commit
from server.errors import ApiError, forbidden, invalid_request, not_found
from server.models import Call, CallMember, CallType, SessionParticipant, User, UtcDateTime
from server.schemas import (
    CallCreate,
    CallUpdate,
    GoLiveIn,
    JoinIn,
    MemberIn,
    MembersChange,
)
from stagecast.nodes import NodeInfo, choose_node
from stagecast.protocol import CALL_STATE_TTL_SECONDS, CONTROL, call_state_key
from stagecast.tokens import CALL_CID, Principal, SfuGrant

MAX_LISTED_PARTICIPANTS = 100


@dataclass
class CallContext:
    """A call as one caller sees it: the call, its type, members and the caller's rights."""

    call: Call
    call_type: CallType
    settings: CallSettings
    members: list[CallMember]
    users: dict[str, User]  # the creator and the members, as far as they exist
    role: str
    capabilities: frozenset[str]

    def refreshed(self) -> CallContext:
        """The same caller's view after the call itself changed (not its members)."""
        return replace(
            self, settings=effective_settings(self.call_type.settings, self.call.settings_override)
        )

    def require(self, capability: str) -> None:
        if capability not in self.capabilities:
            raise forbidden(
                f"Your role '{self.role}' in this call lacks '{capability}'.", capability
            )

    @property
    def backstage(self) -> bool:
        return self.settings.backstage.enabled and not self.call.live


@dataclass(frozen=True)
class CallSnapshot:
    """A call as loaded for one caller, kept briefly for the next joiners (read-only)."""

    call: Call
    call_type: CallType
    members: list[CallMember]
    users: dict[str, User]


def make_cid(call_type: str, call_id: str) -> str:
    return f"{call_type}:{call_id}"


def iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


# Users


# Plain SQL that both databases speak: compiled once, where the ORM's INSERT ... ON CONFLICT
# would be built again for every new viewer who joins.
_CREATE_USER = sql_text(
    "INSERT INTO users (id, name, image, role, custom, created_at, updated_at) "
    "VALUES (:id, '', '', 'user', :custom, :now, :now) ON CONFLICT (id) DO NOTHING"
).bindparams(bindparam("custom", type_=JSON), bindparam("now", type_=UtcDateTime()))


async def ensure_user(coordinator: Coordinator, db: AsyncSession, user_id: str) -> None:
    """Users are created on first use of a valid token."""
    if coordinator.known_users.get(user_id):
        return
    await db.execute(_CREATE_USER, {"id": user_id, "custom": {}, "now": coordinator.clock()})
    coordinator.known_users.put(user_id, True)


def _dialect(db: AsyncSession) -> str:
    return db.get_bind().dialect.name


def _insert(db: AsyncSession, table: type[Any]) -> Any:
    """An INSERT that supports ``on_conflict_do_nothing`` on this database."""
    dialect = _dialect(db)
    if dialect == "postgresql":
        return postgresql.insert(table)
    if dialect == "sqlite":
        return sqlite.insert(table)
    raise RuntimeError(f"unsupported database dialect {dialect!r}")


async def users_by_id(db: AsyncSession, user_ids: set[str]) -> dict[str, User]:
    if not user_ids:
        return {}
    rows = await db.scalars(select(User).where(User.id.in_(user_ids)))
    return {user.id: user for user in rows}


# Call types


async def get_call_type(db: AsyncSession, name: str) -> CallType:
    call_type = await db.get(CallType, name)
    if call_type is None:
        raise not_found(f"There is no call type '{name}'.")
    return call_type


def role_in_call(principal: Principal, members: list[CallMember]) -> str:
    if principal.is_server or principal.app_role == "admin":
        return "admin"
    for member in members:
        if member.user_id == principal.user_id:
            return member.role
    return "user"


def capabilities_of(call_type: CallType, role: str, principal: Principal) -> frozenset[str]:
    if principal.is_server:
        return frozenset(CAPABILITIES)
    return frozenset(call_type.grants.get(role, []))


def check_scope(principal: Principal, cid: str) -> None:
    if not principal.may_access(cid):
        raise forbidden(f"This token is not valid for call '{cid}'.")


def validate_settings(type_settings: dict[str, Any], override: dict[str, Any]) -> CallSettings:
    try:
        return effective_settings(type_settings, override)
    except ValidationError as exc:
        problems = [
            {"location": ".".join(str(p) for p in err["loc"]), "problem": err["msg"]}
            for err in exc.errors()
        ]
        raise ApiError(
            422,
            "invalid_request",
            "settings_override is not valid: "
            + "; ".join(f"{p['location']}: {p['problem']}" for p in problems[:3]),
            {"errors": problems},
        ) from None


# Loading


async def load_call(
    db: AsyncSession, principal: Principal, call_type: str, call_id: str, *, lock: bool = False
) -> CallContext:
    cid = make_cid(call_type, call_id)
    check_scope(principal, cid)
    query = (
        select(Call, CallType, User)
        .join(CallType, Call.type == CallType.name)
        .outerjoin(User, User.id == Call.created_by)
        .where(Call.cid == cid)
    )
    if lock and _dialect(db) == "postgresql":
        query = query.with_for_update(of=Call)
    row = (await db.execute(query)).first()
    if row is None:
        await get_call_type(db, call_type)  # an unknown type is reported as such
        raise not_found(f"There is no call '{cid}'.")
    call, type_row, creator = row
    members, users = await _members_with_users(db, [cid])
    if creator is not None:
        users[creator.id] = creator
    return _context(principal, call, type_row, members[cid], users)


async def load_call_to_join(
    coordinator: Coordinator, db: AsyncSession, principal: Principal, call_type: str, call_id: str
) -> CallContext:
    """:func:`load_call` for the join path, which a popular livestream's viewers all take:
    served from the coordinator's cache, which every change to the call empties."""
    cid = make_cid(call_type, call_id)
    check_scope(principal, cid)
    snapshot = coordinator.call_cache.get(cid)
    if snapshot is None:
        context = await load_call(db, principal, call_type, call_id)
        snapshot = CallSnapshot(context.call, context.call_type, context.members, context.users)
        # Detached, so that no session's rollback or commit expires what the cache holds.
        for instance in (
            snapshot.call,
            snapshot.call_type,
            *snapshot.members,
            *snapshot.users.values(),
        ):
            db.expunge(instance)
        coordinator.call_cache.put(cid, snapshot)
        return context
    return _context(principal, snapshot.call, snapshot.call_type, snapshot.members, snapshot.users)


async def _members_with_users(
    db: AsyncSession, cids: list[str]
) -> tuple[dict[str, list[CallMember]], dict[str, User]]:
    """The members of these calls, by cid, and their users (one query)."""
    members: dict[str, list[CallMember]] = {cid: [] for cid in cids}
    users: dict[str, User] = {}
    rows = await db.execute(
        select(CallMember, User)
        .outerjoin(User, User.id == CallMember.user_id)
        .where(CallMember.cid.in_(cids))
    )
    for member, user in rows:
        members[member.cid].append(member)
        if user is not None:
            users[user.id] = user
    return members, users


def _context(
    principal: Principal,
    call: Call,
    call_type: CallType,
    members: list[CallMember],
    users: dict[str, User],
) -> CallContext:
    role = role_in_call(principal, members)
    return CallContext(
        call=call,
        call_type=call_type,
        settings=effective_settings(call_type.settings, call.settings_override),
        members=members,
        users=users,
        role=role,
        capabilities=capabilities_of(call_type, role, principal),
    )


async def readable_call(
    db: AsyncSession, principal: Principal, call_type: str, call_id: str
) -> CallContext:
    context = await load_call(db, principal, call_type, call_id)
    context.require("read-call")
    return context


# Serializing


async def session_state(db: AsyncSession, call: Call, backstage: bool) -> dict[str, Any] | None:
    if call.session_id is None:
        return None
    present = (
        (SessionParticipant.cid == call.cid)
        & (SessionParticipant.session_id == call.session_id)
        & SessionParticipant.left_at.is_(None)
        & SessionParticipant.joined_at.is_not(None)
        & SessionParticipant.hidden.is_(False)
    )
    counts = dict(
        (
            await db.execute(
                select(SessionParticipant.role, func.count())
                .where(present)
                .group_by(SessionParticipant.role)
            )
        ).all()
    )
    listed = await db.scalars(
        select(SessionParticipant)
        .where(present)
        .order_by(SessionParticipant.joined_at)
        .limit(MAX_LISTED_PARTICIPANTS)
    )
    total = sum(counts.values())
    hosts = counts.get("host", 0)
    return {
        "id": call.session_id,
        "started_at": call.session_started_at,
        "participants": [
            {
                "participant_id": p.participant_id,
                "user_id": p.user_id,
                "role": p.role,
                "joined_at": p.joined_at,
            }
            for p in listed
        ],
        "participant_count": total,
        "participant_count_by_role": counts,
        "anonymous_count": 0,
        "waiting_count": total - hosts if backstage else 0,
    }


def _user_dict(user: User | None, user_id: str, fallback_time: datetime) -> dict[str, Any]:
    if user is None:
        return {
            "id": user_id,
            "name": "",
            "image": "",
            "role": "user",
            "custom": {},
            "created_at": fallback_time,
            "updated_at": fallback_time,
        }
    return {
        "id": user.id,
        "name": user.name,
        "image": user.image,
        "role": user.role,
        "custom": user.custom,
        "created_at": user.created_at,
        "updated_at": user.updated_at,
    }


async def _egress_state(
    coordinator: Coordinator, db: AsyncSession, cid: str, hot: bool
) -> dict[str, Any]:
    """``call.egress``; on the join path shared among joiners like the session's counts."""
    state = coordinator.egress_cache.get(cid) if hot else None
    if state is None:
        state = await egress.egress_state(coordinator, db, cid)
        if hot:
            coordinator.egress_cache.put(cid, state)
    return state


async def call_response(
    coordinator: Coordinator, db: AsyncSession, context: CallContext, *, hot: bool = False
) -> dict[str, Any]:
    """``{call, members, own_capabilities}`` for the caller. ``hot`` (the join path) shares
    the live session's counts among joiners for up to half a second."""
    call = context.call
    session = coordinator.session_cache.get(call.cid) if hot else None
    if session is None:
        session = await session_state(db, call, context.backstage)
        if hot:
            coordinator.session_cache.put(call.cid, session)
    users = context.users
    base_url = coordinator.settings.base_url
    host = urlsplit(base_url).hostname or "127.0.0.1"
    path = f"/v1/calls/{call.type}/{call.id}"
    return {
        "call": {
            "cid": call.cid,
            "type": call.type,
            "id": call.id,
            "created_by": _user_dict(users.get(call.created_by), call.created_by, call.created_at),
            "created_at": call.created_at,
            "updated_at": call.updated_at,
            "starts_at": call.starts_at,
            "backstage": context.backstage,
            "live_started_at": call.live_started_at,
            "ended_at": call.ended_at,
            "settings": context.settings,
            "session": session,
            "egress": await _egress_state(coordinator, db, call.cid, hot),
            "ingress": {
                "rtmp": {"address": f"rtmp://{host}:{coordinator.settings.rtmp_port}/live"},
                "whip": {"url": f"{base_url}{path}/whip"},
            },
            "custom": call.custom,
        },
        "members": [
            {
                "user_id": member.user_id,
                "role": member.role,
                "user": _user_dict(users.get(member.user_id), member.user_id, member.created_at),
                "created_at": member.created_at,
                "updated_at": member.updated_at,
            }
            for member in context.members
        ],
        "own_capabilities": sorted(context.capabilities),
    }


# Creating and updating


async def get_or_create(
    coordinator: Coordinator,
    db: AsyncSession,
    principal: Principal,
    call_type: str,
    call_id: str,
    body: CallCreate,
) -> tuple[CallContext, bool]:
    cid = make_cid(call_type, call_id)
    check_scope(principal, cid)
    type_row = await get_call_type(db, call_type)
    existing = await db.get(Call, cid)
    if existing is not None:
        context = await load_call(db, principal, call_type, call_id)
        context.require("read-call")
        return context, False

    creator_caps = capabilities_of(type_row, role_in_call(principal, []), principal)
    if "create-call" not in creator_caps:
        raise forbidden("You may not create calls of this type.", "create-call")
    validate_settings(type_row.settings, body.settings_override)
    await ensure_user(coordinator, db, principal.user_id)

    now = coordinator.clock()
    inserted = await db.execute(
        _insert(db, Call)
        .values(
            cid=cid,
            type=call_type,
            id=call_id,
            created_by=principal.user_id,
            created_at=now,
            updated_at=now,
            starts_at=body.starts_at,
            live=False,
            settings_override=body.settings_override,
            custom=body.custom,
        )
        .on_conflict_do_nothing(index_elements=["cid"])
    )
    created = getattr(inserted, "rowcount", 0) == 1
    if created:
        members = body.members or [MemberIn(user_id=principal.user_id, role="host")]
        await _upsert_members(coordinator, db, cid, members)
    context = await load_call(db, principal, call_type, call_id)
    if created:
        created_call = _event_call(context)
        member_roles = [{"user_id": m.user_id, "role": m.role} for m in context.members]
        state = _call_state(context)

        async def announce() -> None:
            await _publish_call_state(coordinator, cid, state)
            await coordinator.hub.emit("call.created", cid, call=created_call, members=member_roles)

        after_commit(db, announce)
    else:
        context.require("read-call")
    return context, created


def _event_call(context: CallContext) -> dict[str, Any]:
    call = context.call
    return {
        "cid": call.cid,
        "type": call.type,
        "id": call.id,
        "created_by": call.created_by,
        "starts_at": iso(call.starts_at),
        "backstage": context.backstage,
        "live_started_at": iso(call.live_started_at),
        "ended_at": iso(call.ended_at),
        "custom": call.custom,
    }


async def _upsert_members(
    coordinator: Coordinator, db: AsyncSession, cid: str, members: list[MemberIn]
) -> list[tuple[str, str, str]]:
    """Insert or update members; returns ``(user_id, role, change)`` for each that changed."""
    now = coordinator.clock()
    wanted = {member.user_id: member.role for member in members}  # the last one wins
    existing = {
        member.user_id: member
        for member in await db.scalars(
            select(CallMember).where(CallMember.cid == cid, CallMember.user_id.in_(wanted))
        )
    }
    changes: list[tuple[str, str, str]] = []
    for user_id, role in wanted.items():
        await ensure_user(coordinator, db, user_id)
        member = existing.get(user_id)
        if member is None:
            db.add(CallMember(cid=cid, user_id=user_id, role=role, created_at=now, updated_at=now))
            changes.append((user_id, role, "call.member_added"))
        elif member.role != role:
            member.role = role
            member.updated_at = now
            changes.append((user_id, role, "call.member_updated"))
    await db.flush()
    return changes


async def update_call(
    coordinator: Coordinator,
    db: AsyncSession,
    principal: Principal,
    call_type: str,
    call_id: str,
    body: CallUpdate,
) -> CallContext:
    context = await load_call(db, principal, call_type, call_id, lock=True)
    context.require("update-call")
    call = context.call
    if body.settings_override is not None:
        context.require("update-call-settings")
        merged = merge_settings(call.settings_override, body.settings_override)
        validate_settings(context.call_type.settings, merged)
        call.settings_override = merged
    if "starts_at" in body.model_fields_set:
        call.starts_at = body.starts_at
    if body.custom is not None:
        call.custom = body.custom
    call.updated_at = coordinator.clock()
    await db.flush()
    context = context.refreshed()
    _announce(coordinator, db, context, "call.updated")
    return context


async def change_members(
    coordinator: Coordinator,
    db: AsyncSession,
    principal: Principal,
    call_type: str,
    call_id: str,
    body: MembersChange,
) -> CallContext:
    context = await load_call(db, principal, call_type, call_id, lock=True)
    context.require("update-call-members")
    cid = context.call.cid
    changes = await _upsert_members(coordinator, db, cid, body.upsert)
    removed: list[str] = []
    if body.remove:
        if "remove-call-member" not in context.capabilities:
            context.require("remove-call-member")
        result = await db.scalars(
            delete(CallMember)
            .where(CallMember.cid == cid, CallMember.user_id.in_(body.remove))
            .returning(CallMember.user_id)
        )
        removed = list(result)
    context = await load_call(db, principal, call_type, call_id)

    async def announce() -> None:
        for user_id, role, event_type in changes:
            await coordinator.hub.emit(event_type, cid, member={"user_id": user_id, "role": role})
        for user_id in removed:
            await coordinator.hub.emit("call.member_removed", cid, member={"user_id": user_id})

    after_commit(db, announce)
    return context


# The livestream lifecycle


def _call_state(context: CallContext) -> dict[str, bool]:
    """What SFU nodes need to know: does media flow to viewers (live, or a call without
    backstage), and has the call ended."""
    return {"live": not context.backstage, "ended": context.call.ended_at is not None}


async def _publish_call_state(coordinator: Coordinator, cid: str, state: dict[str, bool]) -> None:
    await coordinator.bus.set_key(call_state_key(cid), state, CALL_STATE_TTL_SECONDS)


def _announce(
    coordinator: Coordinator,
    db: AsyncSession,
    context: CallContext,
    event_type: str,
    control: str | None = None,
    ended_session: str | None = None,
) -> None:
    """After commit: update the call state for SFU nodes, send ``control`` to them, emit
    ``event_type`` with the call (and ``call.session_ended`` for ``ended_session``)."""
    cid = context.call.cid
    state = _call_state(context)
    event_call = _event_call(context)

    async def announce() -> None:
        await _publish_call_state(coordinator, cid, state)
        if control is not None:
            await coordinator.bus.publish(CONTROL, {"type": control, "cid": cid})
        await coordinator.hub.emit(event_type, cid, call=event_call)
        if ended_session is not None:
            await coordinator.hub.emit("call.session_ended", cid, session_id=ended_session)

    after_commit(db, announce)


async def go_live(
    coordinator: Coordinator,
    db: AsyncSession,
    principal: Principal,
    call_type: str,
    call_id: str,
    body: GoLiveIn,
) -> CallContext:
    context = await load_call(db, principal, call_type, call_id, lock=True)
    context.require("go-live")
    call = context.call
    if call.ended_at is not None:
        raise ApiError(409, "call_ended", "The call has ended; it cannot go live again.")
    settings = context.settings
    start_hls = body.start_hls or (
        settings.broadcasting.hls.enabled and settings.broadcasting.hls.auto_on
    )
    start_recording = body.start_recording or settings.recording.mode == "auto"
    if body.start_hls:
        require_egress_allowed(context, "hls")
    if body.start_recording:
        require_egress_allowed(context, "recording")
    for kind, wanted in (("hls", start_hls), ("recording", start_recording)):
        if wanted:
            await egress.start(
                coordinator, db, call, await _ensure_session(coordinator, db, call), kind
            )
    if call.live:
        return context
    now = coordinator.clock()
    call.live = True
    call.live_started_at = now
    call.updated_at = now
    await db.flush()
    context = context.refreshed()
    _announce(coordinator, db, context, "call.live_started", "live_started")
    return context


async def stop_live(
    coordinator: Coordinator,
    db: AsyncSession,
    principal: Principal,
    call_type: str,
    call_id: str,
) -> CallContext:
    context = await load_call(db, principal, call_type, call_id, lock=True)
    context.require("go-live")
    call = context.call
    if call.ended_at is not None:
        raise ApiError(409, "call_ended", "The call has ended.")
    if not call.live:
        return context
    call.live = False
    call.updated_at = coordinator.clock()
    await db.flush()
    context = context.refreshed()
    _announce(coordinator, db, context, "call.live_stopped", "live_stopped")
    return context


async def end_call(
    coordinator: Coordinator,
    db: AsyncSession,
    principal: Principal,
    call_type: str,
    call_id: str,
) -> CallContext:
    context = await load_call(db, principal, call_type, call_id, lock=True)
    context.require("end-call")
    call = context.call
    if call.ended_at is not None:
        return context
    now = coordinator.clock()
    call.live = False
    call.ended_at = now
    call.updated_at = now
    session_id = call.session_id
    await egress.stop(coordinator, db, call.cid, None)
    await db.execute(
        update(SessionParticipant)
        .where(SessionParticipant.cid == call.cid, SessionParticipant.left_at.is_(None))
        .values(left_at=now)
    )
    await db.flush()
    context = context.refreshed()
    _announce(coordinator, db, context, "call.ended", "ended", ended_session=session_id)
    return context


# Egress


def require_egress_allowed(context: CallContext, kind: str) -> None:
    """The caller may start ``kind`` (``hls`` or ``recording``) and the call type allows it."""
    if kind == "hls":
        context.require("start-broadcast-call")
        if not context.settings.broadcasting.hls.enabled:
            raise ApiError(409, "conflict", "HLS broadcasting is disabled for this call.")
    else:
        context.require("start-record-call")
        if context.settings.recording.mode == "disabled":
            raise ApiError(409, "conflict", "Recording is disabled for this call.")


async def start_egress(
    coordinator: Coordinator,
    db: AsyncSession,
    principal: Principal,
    call_type: str,
    call_id: str,
    kind: str,
) -> tuple[CallContext, Any]:
    context = await load_call(db, principal, call_type, call_id, lock=True)
    require_egress_allowed(context, kind)
    call = context.call
    if call.ended_at is not None:
        raise ApiError(409, "call_ended", "The call has ended.")
    session_id = await _ensure_session(coordinator, db, call)
    row = await egress.start(coordinator, db, call, session_id, kind)
    return context, row


async def stop_egress(
    coordinator: Coordinator,
    db: AsyncSession,
    principal: Principal,
    call_type: str,
    call_id: str,
    kind: str,
) -> None:
    context = await load_call(db, principal, call_type, call_id, lock=True)
    context.require("stop-broadcast-call" if kind == "hls" else "stop-record-call")
    await egress.stop(coordinator, db, context.call.cid, kind)


# Joining


async def join_call(
    coordinator: Coordinator,
    db: AsyncSession,
    principal: Principal,
    call_type: str,
    call_id: str,
    body: JoinIn,
) -> tuple[CallContext, dict[str, Any], bool]:
    created = False
    if body.create:
        context, created = await get_or_create(
            coordinator,
            db,
            principal,
            call_type,
            call_id,
            CallCreate(
                members=body.members,
                starts_at=body.starts_at,
                settings_override=body.settings_override,
            ),
        )
    else:
        context = await load_call_to_join(coordinator, db, principal, call_type, call_id)
    context.require("join-call")
    node, token = await admit_participant(coordinator, db, principal, context)
    credentials = {
        "sfu_url": node.url,
        "ws_url": node.ws_url,
        "token": token,
        "ice_servers": [],
    }
    return context, credentials, created


async def admit_participant(
    coordinator: Coordinator,
    db: AsyncSession,
    principal: Principal,
    context: CallContext,
    *,
    publishing: bool = False,
) -> tuple[NodeInfo, str]:
    """Apply the join rules and the limits; pick an SFU node and sign the SFU token.

    Every way into a call's media (join, WHIP, WHEP) comes through here. A publisher with
    ``send-audio``/``send-video`` may enter in backstage without ``join-backstage``.
    """
    if publishing and context.call.ended_at is not None:
        raise ApiError(409, "call_ended", "The call has ended.")
    backstage_allowed = True if publishing else admit(context, coordinator.clock())
    call = context.call
    limit = context.settings.limits.max_participants
    if limit is not None:
        present = await db.scalar(
            select(func.count()).where(
                SessionParticipant.cid == call.cid,
                SessionParticipant.left_at.is_(None),
                SessionParticipant.hidden.is_(False),
            )
        )
        if (present or 0) >= limit:
            raise ApiError(
                503,
                "capacity_exhausted",
                f"The call is full ({limit} participants).",
                {"reason": "max_participants", "max_participants": limit},
            )

    node = choose_node(await coordinator.sfu_nodes(), call.cid)
    if node is None:
        raise ApiError(
            503,
            "capacity_exhausted",
            "No media server has room for another participant right now.",
            {"reason": "no_sfu_capacity"},
        )
    await ensure_user(coordinator, db, principal.user_id)
    session_id = await _ensure_session(coordinator, db, call)
    grant = SfuGrant(
        cid=call.cid,
        user_id=principal.user_id,
        session_id=session_id,
        participant_id=uuid.uuid4().hex,
        role=context.role,
        capabilities=context.capabilities,
        backstage_allowed=backstage_allowed,
    )
    return node, coordinator.keyring.sfu_token(grant, coordinator.settings.sfu_token_ttl_seconds)


def admit(context: CallContext, now: datetime) -> bool:
    """Apply the join rules; returns whether the caller may receive media in backstage."""
    call = context.call
    if call.ended_at is not None:
        if "join-ended-call" not in context.capabilities:
            raise ApiError(409, "call_ended", "The call has ended.")
        return "join-backstage" in context.capabilities
    if "join-backstage" in context.capabilities:
        return True
    if not context.backstage:
        return False  # admitted while live: after a stop-live, no media until the next go-live
    join_ahead = context.settings.backstage.join_ahead_time_seconds
    if call.starts_at is not None and now >= call.starts_at - timedelta(seconds=join_ahead):
        return False  # admitted to wait: media flows from go-live on
    raise ApiError(
        403,
        "call_in_backstage",
        "The livestream has not started yet.",
        {"starts_at": iso(call.starts_at), "join_ahead_time_seconds": join_ahead},
    )


async def _ensure_session(coordinator: Coordinator, db: AsyncSession, call: Call) -> str:
    if call.session_id is not None:
        return call.session_id
    session_id = uuid.uuid4().hex
    # Two joins may race to start the session: the first write wins, the other reads it.
    await db.execute(
        update(Call)
        .where(Call.cid == call.cid, Call.session_id.is_(None))
        .values(session_id=session_id)
    )
    stored = await db.scalar(select(Call.session_id).where(Call.cid == call.cid))
    set_committed_value(call, "session_id", stored or session_id)
    return stored or session_id


# Querying


def _encode_cursor(call: Call) -> str:
    raw = json.dumps([call.created_at.isoformat(), call.cid]).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _decode_cursor(cursor: str) -> tuple[datetime, str]:
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        created_at, cid = json.loads(raw)
        when = datetime.fromisoformat(created_at)
        # Only what _encode_cursor writes: a UTC time and a cid (else the query would fail).
        if when.tzinfo is None or when.isoformat() != when.astimezone(UTC).isoformat():
            raise ValueError("not a UTC time")
        if not isinstance(cid, str) or not CALL_CID.fullmatch(cid):
            raise ValueError("not a cid")
        return when, cid
    except (binascii.Error, ValueError, TypeError, OverflowError):
        raise invalid_request("'next' is not a cursor this API returned.") from None


async def query_calls(
    db: AsyncSession,
    principal: Principal,
    call_type: str | None,
    live: bool | None,
    created_by: str | None,
    limit: int,
    cursor: str | None,
) -> tuple[list[CallContext], str | None]:
    query = select(Call, CallType).join(CallType, Call.type == CallType.name)
    if call_type is not None:
        query = query.where(Call.type == call_type)
    if live is not None:
        query = query.where(Call.live.is_(live))
    if created_by is not None:
        query = query.where(Call.created_by == created_by)
    if principal.call_cids is not None:
        query = query.where(Call.cid.in_(principal.call_cids))
    if cursor is not None:
        created_at, cid = _decode_cursor(cursor)
        query = query.where(
            or_(Call.created_at < created_at, and_(Call.created_at == created_at, Call.cid < cid))
        )
    query = query.order_by(Call.created_at.desc(), Call.cid.desc())

    contexts: list[CallContext] = []
    next_cursor: str | None = None
    # Calls the caller may not read are skipped, so read in batches until the page is full.
    while len(contexts) < limit:
        rows = (await db.execute(query.limit(limit * 2))).all()
        if not rows:
            break
        cids = [call.cid for call, _ in rows]
        members, users = await _members_with_users(db, cids)
        users.update(await users_by_id(db, {call.created_by for call, _ in rows} - set(users)))
        for call, type_row in rows:
            context = _context(principal, call, type_row, members[call.cid], users)
            if "read-call" in context.capabilities:
                contexts.append(context)
            if len(contexts) == limit:
                next_cursor = _encode_cursor(call)
                break
        else:
            last = rows[-1][0]
            query = query.where(
                or_(
                    Call.created_at < last.created_at,
                    and_(Call.created_at == last.created_at, Call.cid < last.cid),
                )
            )
            if len(rows) < limit * 2:
                break
    return contexts, next_cursor
