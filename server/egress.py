"""Egress on the coordinator's side: starting and stopping HLS and recordings, the reports of
egress workers, the recordings list and signed download URLs.

The coordinator owns the records (the ``egress`` table) and the decisions; workers only take
jobs from the bus and report (see :mod:`egress.worker`).
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import secrets
import time
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from server.context import Coordinator, after_commit, transaction
from server.errors import ApiError
from server.models import Call, Egress
from stagecast.bus import Message
from stagecast.protocol import (
    EGRESS_CONTROL,
    EGRESS_JOBS,
    EGRESS_REPORTS,
    EGRESS_STOP_TTL_SECONDS,
    egress_stop_key,
)
from stagecast.tokens import SfuGrant

log = logging.getLogger("stagecast.egress")

ACTIVE = ("starting", "running")
SEGMENT_SECONDS = 1.0
EGRESS_TOKEN_TTL_SECONDS = 24 * 3600
SIGNED_URL_TTL_SECONDS = 3600
REPORT_LEASE_SECONDS = 30.0
EGRESS_USER = "stagecast-egress"


def _iso(value: datetime | None) -> str | None:
    return None if value is None else value.isoformat().replace("+00:00", "Z")


def api_status(row: Egress | None) -> str:
    if row is None:
        return "stopped"
    return row.status if row.status in ACTIVE else "stopped"


def playlist_url(coordinator: Coordinator, row: Egress) -> str:
    return f"{coordinator.settings.base_url}/v1/hls/{row.path_token}/master.m3u8"


async def active(db: AsyncSession, cid: str, kind: str) -> Egress | None:
    return await db.scalar(
        select(Egress)
        .where(Egress.cid == cid, Egress.kind == kind, Egress.status.in_(ACTIVE))
        .order_by(Egress.created_at.desc())
        .limit(1)
    )


async def egress_state(coordinator: Coordinator, db: AsyncSession, cid: str) -> dict[str, Any]:
    """``call.egress`` as the API shows it."""
    rows = list(
        await db.scalars(select(Egress).where(Egress.cid == cid, Egress.status.in_(ACTIVE)))
    )
    hls = next((row for row in rows if row.kind == "hls"), None)
    recording = next((row for row in rows if row.kind == "recording"), None)
    return {
        "hls": {
            "status": api_status(hls),
            "playlist_url": None if hls is None else playlist_url(coordinator, hls),
        },
        "recording": {"status": api_status(recording)},
    }


async def start(
    coordinator: Coordinator, db: AsyncSession, call: Call, session_id: str, kind: str
) -> Egress:
    """Start HLS or a recording (or return the one already running): a row, and a job on the
    bus once committed."""
    existing = await active(db, call.cid, kind)
    if existing is not None:
        return existing
    if call.ended_at is not None:
        raise ApiError(409, "call_ended", "The call has ended.")
    now = coordinator.clock()
    egress_id = uuid.uuid4().hex
    token = secrets.token_urlsafe(24)
    filename = None
    if kind == "recording":
        filename = f"{call.type}_{call.id}_{now.strftime('%Y%m%dT%H%M%SZ')}.mp4"
    row = Egress(
        id=egress_id,
        cid=call.cid,
        kind=kind,
        status="starting",
        path_token=token,
        filename=filename,
        created_at=now,
    )
    db.add(row)
    await db.flush()
    grant = SfuGrant(
        cid=call.cid,
        user_id=EGRESS_USER,
        session_id=session_id,
        participant_id=f"egress-{egress_id}",
        role="admin",
        capabilities=frozenset({"join-ended-call"}),
        name="egress",
        hidden=True,
        backstage_allowed=True,
    )
    payload: Message = {
        "egress_id": egress_id,
        "kind": kind,
        "cid": call.cid,
        "token": coordinator.keyring.sfu_token(grant, EGRESS_TOKEN_TTL_SECONDS),
        "prefix": f"hls/{token}" if kind == "hls" else f"recordings/{egress_id}",
        "filename": filename,
        "segment_seconds": SEGMENT_SECONDS,
    }

    async def enqueue() -> None:
        await coordinator.bus.enqueue(EGRESS_JOBS, payload)

    after_commit(db, enqueue)
    return row


async def stop(coordinator: Coordinator, db: AsyncSession, cid: str, kind: str | None) -> None:
    """Stop the running HLS or recording (``kind=None``: both)."""
    query = select(Egress).where(Egress.cid == cid, Egress.status.in_(ACTIVE))
    if kind is not None:
        query = query.where(Egress.kind == kind)
    rows = list(await db.scalars(query))
    for row in rows:
        row.status = "stopping"
    await db.flush()
    ids = [row.id for row in rows]

    async def tell_workers() -> None:
        for egress_id in ids:
            await coordinator.bus.set_key(
                egress_stop_key(egress_id), {"stop": True}, EGRESS_STOP_TTL_SECONDS
            )
            await coordinator.bus.publish(EGRESS_CONTROL, {"type": "stop", "egress_id": egress_id})

    if ids:
        after_commit(db, tell_workers)


# Recordings


def sign(coordinator: Coordinator, recording_id: str, expires: int) -> str:
    secret = coordinator.keyring.signing_key.secret.encode()
    return hmac.new(secret, f"{recording_id}:{expires}".encode(), hashlib.sha256).hexdigest()


def signature_valid(coordinator: Coordinator, recording_id: str, expires: int, sig: str) -> bool:
    if expires < time.time():
        return False
    return hmac.compare_digest(sign(coordinator, recording_id, expires), sig)


def recording_url(coordinator: Coordinator, row: Egress) -> str:
    call_type, _, call_id = row.cid.partition(":")
    expires = int(time.time()) + SIGNED_URL_TTL_SECONDS
    return (
        f"{coordinator.settings.base_url}/v1/calls/{call_type}/{call_id}/recordings/{row.id}/"
        f"{row.filename}?expires={expires}&signature={sign(coordinator, row.id, expires)}"
    )


def recording_dict(coordinator: Coordinator, row: Egress) -> dict[str, Any]:
    return {
        "id": row.id,
        "filename": row.filename,
        "url": recording_url(coordinator, row),
        "started_at": _iso(row.started_at or row.created_at),
        "ended_at": _iso(row.ended_at),
        "duration_seconds": row.duration_seconds,
        "size_bytes": row.size_bytes,
    }


async def recordings(coordinator: Coordinator, db: AsyncSession, cid: str) -> list[dict[str, Any]]:
    rows = await db.scalars(
        select(Egress)
        .where(Egress.cid == cid, Egress.kind == "recording", Egress.status == "ready")
        .order_by(Egress.created_at)
    )
    return [recording_dict(coordinator, row) for row in rows]


# Reports from workers


def _at(value: Any, fallback: datetime) -> datetime:
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
        except ValueError:
            return fallback
        if parsed.tzinfo is not None:
            return parsed
    return fallback


EVENT_NAMES = {
    ("hls", "started"): "call.hls_started",
    ("hls", "stopped"): "call.hls_stopped",
    ("hls", "failed"): "call.hls_failed",
    ("recording", "started"): "call.recording_started",
    ("recording", "stopped"): "call.recording_stopped",
    ("recording", "ready"): "call.recording_ready",
    ("recording", "failed"): "call.recording_failed",
}


async def apply_report(coordinator: Coordinator, report: Message) -> None:
    kind, report_type = report.get("kind"), report.get("type")
    event_type = EVENT_NAMES.get((str(kind), str(report_type)))
    if event_type is None:
        log.warning("unknown egress report ignored", extra={"report_type": report_type})
        return
    at = _at(report.get("at"), coordinator.clock())
    async with transaction(coordinator) as db:
        row = await db.get(Egress, str(report.get("egress_id")), with_for_update=True)
        if row is None:
            log.warning("report for an unknown egress ignored")
            return
        if report_type == "started":
            if row.status == "starting":
                row.status = "running"
            if row.started_at is None:
                row.started_at = at
        elif report_type == "stopped":
            row.status = "stopped" if row.status != "failed" else row.status
            row.ended_at = at
        elif report_type == "ready":
            row.status = "ready"
            row.ended_at = row.ended_at or at
            row.storage_key = str(report.get("key"))
            row.duration_seconds = float(report.get("duration_seconds") or 0.0)
            row.size_bytes = int(report.get("size_bytes") or 0)
        elif report_type == "failed":
            if row.status != "ready":
                row.status = "failed"
            row.ended_at = row.ended_at or at
            row.error = str(report.get("error", ""))[:1024]
        payload: dict[str, Any] = {"egress_id": row.id, "attempt": report.get("attempt")}
        if kind == "hls":
            payload["hls"] = {"playlist_url": playlist_url(coordinator, row)}
        else:
            payload["recording"] = (
                recording_dict(coordinator, row)
                if report_type == "ready"
                else {"id": row.id, "filename": row.filename}
            )
        if report_type == "failed":
            payload["error"] = row.error
        cid = row.cid

        async def announce() -> None:
            coordinator.call_cache.discard(cid)
            await coordinator.hub.emit(event_type, cid, **payload)

        after_commit(db, announce)


async def run_report_consumer(coordinator: Coordinator) -> None:
    bus = coordinator.bus
    while True:
        job = await bus.claim(EGRESS_REPORTS, REPORT_LEASE_SECONDS, timeout=5.0)
        if job is None:
            continue
        try:
            await apply_report(coordinator, job.payload)
        except Exception:
            log.exception("an egress report could not be applied")
        await bus.complete(job)
