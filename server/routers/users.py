"""``/v1/users``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path

from server.calls import ensure_user
from server.context import AdminCaller, Caller, CoordinatorDep, DbSession
from server.errors import ERROR_RESPONSES, forbidden, not_found
from server.models import User
from server.schemas import USER_ID_PATTERN, UserIn, UserResponse

router = APIRouter(prefix="/v1/users", tags=["users"], responses=ERROR_RESPONSES)
UserIdPath = Annotated[str, Path(pattern=USER_ID_PATTERN)]


def _user(user: User) -> dict[str, Any]:
    return {
        "user": {
            "id": user.id,
            "name": user.name,
            "image": user.image,
            "role": user.role,
            "custom": user.custom,
            "created_at": user.created_at,
            "updated_at": user.updated_at,
        }
    }


@router.put("/{user_id}", response_model=UserResponse)
async def put_user(
    user_id: UserIdPath,
    body: UserIn,
    _caller: AdminCaller,
    coordinator: CoordinatorDep,
    db: DbSession,
) -> dict[str, Any]:
    """Create or replace a user's profile (server tokens and admins)."""
    await ensure_user(coordinator, db, user_id)
    user = await db.get(User, user_id, with_for_update=True)
    assert user is not None
    user.name, user.image, user.role, user.custom = body.name, body.image, body.role, body.custom
    user.updated_at = coordinator.clock()
    await db.flush()
    return _user(user)


@router.get("/{user_id}", response_model=UserResponse)
async def get_user(user_id: UserIdPath, caller: Caller, db: DbSession) -> dict[str, Any]:
    """A user's profile. Tokens scoped to calls (``call_cids``) may read only their own."""
    if caller.call_cids is not None and caller.user_id != user_id:
        raise forbidden("This token may read only its own user.")
    user = await db.get(User, user_id)
    if user is None:
        raise not_found(f"There is no user '{user_id}'.")
    return _user(user)
