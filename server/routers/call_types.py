"""``/v1/call-types``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path
from sqlalchemy import select

from server.calls import get_call_type
from server.context import AdminCaller, Caller, CoordinatorDep, DbSession
from server.errors import ERROR_RESPONSES
from server.models import CallType
from server.schemas import TYPE_NAME_PATTERN, CallTypeIn, CallTypeOut, CallTypesResponse

router = APIRouter(prefix="/v1/call-types", tags=["call types"], responses=ERROR_RESPONSES)
TypeNamePath = Annotated[str, Path(pattern=TYPE_NAME_PATTERN)]


def _call_type(row: CallType) -> dict[str, Any]:
    return {
        "name": row.name,
        "settings": row.settings,
        "grants": row.grants,
        "created_at": row.created_at,
        "updated_at": row.updated_at,
    }


@router.get("", response_model=CallTypesResponse)
async def list_call_types(_caller: Caller, db: DbSession) -> dict[str, Any]:
    rows = await db.scalars(select(CallType).order_by(CallType.name))
    return {"call_types": [_call_type(row) for row in rows]}


@router.get("/{name}", response_model=CallTypeOut)
async def read_call_type(name: TypeNamePath, _caller: Caller, db: DbSession) -> dict[str, Any]:
    return _call_type(await get_call_type(db, name))


@router.put("/{name}", response_model=CallTypeOut)
async def put_call_type(
    name: TypeNamePath,
    body: CallTypeIn,
    _caller: AdminCaller,
    coordinator: CoordinatorDep,
    db: DbSession,
) -> dict[str, Any]:
    """Create or replace a call type (server tokens and admins). Existing calls of the type
    take the new settings and grants at once, under their own overrides."""
    now = coordinator.clock()
    settings = body.settings.model_dump(mode="json")
    grants: dict[str, Any] = {role: list(dict.fromkeys(caps)) for role, caps in body.grants.items()}
    row = await db.get(CallType, name, with_for_update=True)
    if row is None:
        row = CallType(name=name, settings=settings, grants=grants, created_at=now, updated_at=now)
        db.add(row)
    else:
        row.settings, row.grants, row.updated_at = settings, grants, now
    await db.flush()
    return _call_type(row)
