"""``/v1/calls``: creation, settings, members, the lifecycle, join and participants."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Query, Response

from server import calls, egress
from server.context import Caller, CoordinatorDep, DbSession
from server.errors import ERROR_RESPONSES
from server.metrics import JOINS
from server.schemas import (
    CALL_ID_PATTERN,
    TYPE_NAME_PATTERN,
    USER_ID_PATTERN,
    CallCreate,
    CallCreatedResponse,
    CallResponse,
    CallsResponse,
    CallUpdate,
    EgressStatusResponse,
    GoLiveIn,
    HlsResponse,
    JoinIn,
    JoinResponse,
    MembersChange,
    MembersResponse,
    ParticipantsResponse,
    RecordingsResponse,
)

router = APIRouter(prefix="/v1/calls", tags=["calls"], responses=ERROR_RESPONSES)
TypePath = Annotated[str, Path(pattern=TYPE_NAME_PATTERN, description="Call type")]
IdPath = Annotated[str, Path(pattern=CALL_ID_PATTERN, description="Call id")]


@router.get("", response_model=CallsResponse)
async def query_calls(
    caller: Caller,
    coordinator: CoordinatorDep,
    db: DbSession,
    type: Annotated[str | None, Query(pattern=TYPE_NAME_PATTERN)] = None,
    live: bool | None = None,
    created_by: Annotated[str | None, Query(pattern=USER_ID_PATTERN)] = None,
    limit: Annotated[int, Query(ge=1, le=100)] = 25,
    next: Annotated[str | None, Query(max_length=512)] = None,
) -> dict[str, Any]:
    """Calls the caller may read, newest first."""
    contexts, cursor = await calls.query_calls(db, caller, type, live, created_by, limit, next)
    return {
        "calls": [await calls.call_response(coordinator, db, context) for context in contexts],
        "next": cursor,
    }


@router.post(
    "/{type}/{id}",
    response_model=CallCreatedResponse,
    status_code=201,
    responses={200: {"model": CallCreatedResponse, "description": "The call existed"}},
)
async def get_or_create_call(
    type: TypePath,
    id: IdPath,
    caller: Caller,
    coordinator: CoordinatorDep,
    db: DbSession,
    response: Response,
    body: CallCreate | None = None,
) -> dict[str, Any]:
    """Create the call (``201``), or return it unchanged if it exists (``200``)."""
    context, created = await calls.get_or_create(
        coordinator, db, caller, type, id, body or CallCreate()
    )
    if not created:
        response.status_code = 200
    return {**await calls.call_response(coordinator, db, context), "created": created}


@router.get("/{type}/{id}", response_model=CallResponse)
async def get_call(
    type: TypePath, id: IdPath, caller: Caller, coordinator: CoordinatorDep, db: DbSession
) -> dict[str, Any]:
    context = await calls.readable_call(db, caller, type, id)
    return await calls.call_response(coordinator, db, context)


@router.patch("/{type}/{id}", response_model=CallResponse)
async def update_call(
    type: TypePath,
    id: IdPath,
    body: CallUpdate,
    caller: Caller,
    coordinator: CoordinatorDep,
    db: DbSession,
) -> dict[str, Any]:
    """Change ``starts_at``, ``custom`` or (with ``update-call-settings``) settings."""
    context = await calls.update_call(coordinator, db, caller, type, id, body)
    return await calls.call_response(coordinator, db, context)


@router.post("/{type}/{id}/members", response_model=CallResponse)
async def change_members(
    type: TypePath,
    id: IdPath,
    body: MembersChange,
    caller: Caller,
    coordinator: CoordinatorDep,
    db: DbSession,
) -> dict[str, Any]:
    context = await calls.change_members(coordinator, db, caller, type, id, body)
    return await calls.call_response(coordinator, db, context)


@router.get("/{type}/{id}/members", response_model=MembersResponse)
async def list_members(
    type: TypePath, id: IdPath, caller: Caller, coordinator: CoordinatorDep, db: DbSession
) -> dict[str, Any]:
    context = await calls.readable_call(db, caller, type, id)
    answer = await calls.call_response(coordinator, db, context)
    return {"members": answer["members"], "next": None}


@router.post("/{type}/{id}/go-live", response_model=CallResponse)
async def go_live(
    type: TypePath,
    id: IdPath,
    caller: Caller,
    coordinator: CoordinatorDep,
    db: DbSession,
    body: GoLiveIn | None = None,
) -> dict[str, Any]:
    """End backstage: viewers receive media. Going live before ``starts_at`` is allowed."""
    context = await calls.go_live(coordinator, db, caller, type, id, body or GoLiveIn())
    return await calls.call_response(coordinator, db, context)


@router.post("/{type}/{id}/stop-live", response_model=CallResponse)
async def stop_live(
    type: TypePath, id: IdPath, caller: Caller, coordinator: CoordinatorDep, db: DbSession
) -> dict[str, Any]:
    """Back to backstage: viewers stay connected but receive nothing until the next go-live."""
    context = await calls.stop_live(coordinator, db, caller, type, id)
    return await calls.call_response(coordinator, db, context)


@router.post("/{type}/{id}/end", response_model=CallResponse)
async def end_call(
    type: TypePath, id: IdPath, caller: Caller, coordinator: CoordinatorDep, db: DbSession
) -> dict[str, Any]:
    """End the call for good: the session ends and everyone is disconnected."""
    context = await calls.end_call(coordinator, db, caller, type, id)
    return await calls.call_response(coordinator, db, context)


@router.post("/{type}/{id}/join", response_model=JoinResponse)
async def join_call(
    type: TypePath,
    id: IdPath,
    caller: Caller,
    coordinator: CoordinatorDep,
    db: DbSession,
    body: JoinIn | None = None,
) -> dict[str, Any]:
    """Admit the caller under the join rules and hand out SFU credentials."""
    context, credentials, created = await calls.join_call(
        coordinator, db, caller, type, id, body or JoinIn()
    )
    JOINS.inc()
    answer = await calls.call_response(coordinator, db, context, hot=True)
    return {**answer, "credentials": credentials, "created": created}


@router.get("/{type}/{id}/participants", response_model=ParticipantsResponse)
async def participants(
    type: TypePath, id: IdPath, caller: Caller, coordinator: CoordinatorDep, db: DbSession
) -> dict[str, Any]:
    context = await calls.readable_call(db, caller, type, id)
    return {"session": await calls.session_state(db, context.call, context.backstage)}


@router.post("/{type}/{id}/recordings/start", response_model=EgressStatusResponse)
async def start_recording(
    type: TypePath, id: IdPath, caller: Caller, coordinator: CoordinatorDep, db: DbSession
) -> dict[str, Any]:
    """Start recording the call (an MP4 listed by ``GET .../recordings`` once stopped)."""
    _, row = await calls.start_egress(coordinator, db, caller, type, id, "recording")
    return {"recording": {"status": egress.api_status(row)}}


@router.post("/{type}/{id}/recordings/stop", response_model=EgressStatusResponse)
async def stop_recording(
    type: TypePath, id: IdPath, caller: Caller, coordinator: CoordinatorDep, db: DbSession
) -> dict[str, Any]:
    await calls.stop_egress(coordinator, db, caller, type, id, "recording")
    return {"recording": {"status": "stopped"}}


@router.get("/{type}/{id}/recordings", response_model=RecordingsResponse)
async def list_recordings(
    type: TypePath, id: IdPath, caller: Caller, coordinator: CoordinatorDep, db: DbSession
) -> dict[str, Any]:
    """Finished recordings; each ``url`` is signed and expires (no token needed)."""
    context = await calls.load_call(db, caller, type, id)
    context.require("list-recordings")
    return {"recordings": await egress.recordings(coordinator, db, context.call.cid), "next": None}


@router.post("/{type}/{id}/hls/start", response_model=HlsResponse)
async def start_hls(
    type: TypePath, id: IdPath, caller: Caller, coordinator: CoordinatorDep, db: DbSession
) -> dict[str, Any]:
    """Start HLS; the playlist is served without a token at ``playlist_url``."""
    _, row = await calls.start_egress(coordinator, db, caller, type, id, "hls")
    return {"playlist_url": egress.playlist_url(coordinator, row), "status": egress.api_status(row)}


@router.post("/{type}/{id}/hls/stop", response_model=HlsResponse)
async def stop_hls(
    type: TypePath, id: IdPath, caller: Caller, coordinator: CoordinatorDep, db: DbSession
) -> dict[str, Any]:
    await calls.stop_egress(coordinator, db, caller, type, id, "hls")
    return {"playlist_url": None, "status": "stopped"}
