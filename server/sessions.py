"""Live session state, kept from what the SFU nodes report on the bus.

Each report is taken from a queue by exactly one coordinator and written to the database,
where every coordinator reads it. Reports are idempotent and may arrive out of order (a
``participant_left`` before its ``participant_joined``): a participant who has left stays left.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from server.call_types import effective_settings
from server.calls import session_state
from server.context import Coordinator, transaction
from server.models import Call, CallType, SessionParticipant
from stagecast.bus import Message
from stagecast.nodes import live_nodes
from stagecast.protocol import SFU_EVENTS

log = logging.getLogger("stagecast.sessions")

REPORT_LEASE_SECONDS = 30.0
SWEEP_INTERVAL_SECONDS = 5.0


def _timestamp(value: Any, fallback: datetime) -> datetime:
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return fallback
        if parsed.tzinfo is not None:
            return parsed
    return fallback


async def _participant(db: AsyncSession, report: Message) -> SessionParticipant:
    participant_id = str(report["participant_id"])
    row = await db.get(SessionParticipant, participant_id, with_for_update=True)
    if row is None:
        row = SessionParticipant(
            participant_id=participant_id,
            cid=str(report["cid"]),
            session_id=str(report["session_id"]),
            user_id=str(report["user_id"]),
            role=str(report.get("role", "user")),
            node_id=str(report.get("node_id", "")),
            hidden=bool(report.get("hidden", False)),
            joined_at=None,
            left_at=None,
        )
        db.add(row)
    return row


async def apply_report(coordinator: Coordinator, report: Message) -> None:
    """Record one SFU report and emit the events it causes."""
    kind = report.get("type")
    cid = report.get("cid")
    if kind not in ("participant_joined", "participant_left") or not isinstance(cid, str):
        if kind in ("track_published", "track_unpublished", "mute_changed"):
            return  # not persisted; the SFU tells connected clients itself
        log.warning("unknown SFU report ignored", extra={"report_type": kind})
        return
    hub = coordinator.hub
    now = coordinator.clock()
    at = _timestamp(report.get("at"), now)
    async with transaction(coordinator) as db:
        call = await db.get(Call, cid)
        if call is None:
            log.warning("report for an unknown call ignored", extra={"cid": cid})
            return
        row = await _participant(db, report)
        session_started = False
        if kind == "participant_joined":
            if row.joined_at is not None or row.left_at is not None:
                return  # a repeated or late report
            row.joined_at = at
            if call.session_id == row.session_id and call.session_started_at is None:
                # Conditional, so that of two coordinators applying joins at once only one
                # starts the session (and emits call.session_started).
                started = await db.execute(
                    update(Call)
                    .where(
                        Call.cid == cid,
                        Call.session_id == row.session_id,
                        Call.session_started_at.is_(None),
                    )
                    .values(session_started_at=at)
                )
                session_started = getattr(started, "rowcount", 0) == 1
        else:
            if row.left_at is not None:
                return
            row.left_at = at
        hidden = row.hidden
        payload = {
            "session_id": row.session_id,
            "participant": {
                "participant_id": row.participant_id,
                "user_id": row.user_id,
                "role": row.role,
            },
        }
        if kind == "participant_left":
            payload["reason"] = str(report.get("reason", "left"))
    if session_started:
        await hub.emit("call.session_started", cid, session_id=row.session_id)
    if hidden:
        return
    event_type = (
        "call.session_participant_joined"
        if kind == "participant_joined"
        else "call.session_participant_left"
    )
    await hub.emit(event_type, cid, **payload)
    hub.count_changed(cid, lambda: participant_counts(coordinator, cid))


async def participant_counts(coordinator: Coordinator, cid: str) -> dict[str, Any]:
    async with transaction(coordinator) as db:
        row = (
            await db.execute(
                select(Call, CallType)
                .join(CallType, Call.type == CallType.name)
                .where(Call.cid == cid)
            )
        ).first()
        if row is None:
            return {}
        call, call_type = row
        settings = effective_settings(call_type.settings, call.settings_override)
        state = await session_state(db, call, settings.backstage.enabled and not call.live)
    if state is None:
        return {"participant_count": 0, "participant_count_by_role": {}, "anonymous_count": 0}
    return {
        key: state[key]
        for key in (
            "participant_count",
            "participant_count_by_role",
            "anonymous_count",
            "waiting_count",
        )
    }


async def run_report_consumer(coordinator: Coordinator) -> None:
    while True:
        job = await coordinator.bus.claim(SFU_EVENTS, REPORT_LEASE_SECONDS, timeout=5.0)
        if job is None:
            continue
        try:
            await apply_report(coordinator, job.payload)
        except (KeyError, TypeError, ValueError):
            log.warning("malformed SFU report dropped", extra={"report": job.payload})
        except Exception:
            # Left unacknowledged, the report is retried when its lease expires.
            log.exception("SFU report failed; it will be retried")
            continue
        await coordinator.bus.complete(job)


async def sweep_departed_nodes(coordinator: Coordinator) -> int:
    """Mark as left every participant whose SFU node stopped sending heartbeats."""
    alive = {node.id for node in await live_nodes(coordinator.bus)}
    query = select(SessionParticipant.participant_id, SessionParticipant.cid).where(
        SessionParticipant.left_at.is_(None), SessionParticipant.joined_at.is_not(None)
    )
    if alive:
        query = query.where(SessionParticipant.node_id.not_in(alive))
    async with transaction(coordinator) as db:
        orphans = (await db.execute(query)).all()
    for participant_id, cid in orphans:
        row_report = {"type": "participant_left", "cid": cid, "reason": "node_lost"}
        async with transaction(coordinator) as db:
            row = await db.get(SessionParticipant, participant_id)
            if row is None:
                continue
            row_report.update(
                participant_id=participant_id,
                session_id=row.session_id,
                user_id=row.user_id,
                role=row.role,
            )
        await apply_report(coordinator, row_report)
    return len(orphans)


async def run_sweeper(coordinator: Coordinator) -> None:
    while True:
        await asyncio.sleep(SWEEP_INTERVAL_SECONDS)
        try:
            await sweep_departed_nodes(coordinator)
        except Exception:
            log.exception("participant sweep failed")
