"""``/v1/dev``: conveniences that exist only in dev mode (the embedded default)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from server.context import CoordinatorDep
from server.errors import ERROR_RESPONSES
from server.schemas import DevTokenIn, DevTokenResponse

router = APIRouter(prefix="/v1/dev", tags=["dev"], responses=ERROR_RESPONSES)


@router.post("/tokens", response_model=DevTokenResponse)
async def dev_token(body: DevTokenIn, coordinator: CoordinatorDep) -> dict[str, Any]:
    """Mint a user token without a secret, so the web app can log demo users in.
    Mounted only when ``STAGECAST_DEV_MODE`` is on; never enable it on a public server."""
    token = coordinator.keyring.user_token(body.user_id, ttl_seconds=body.ttl_seconds)
    return {"token": token, "user_id": body.user_id, "api_key": coordinator.keyring.signing_key.key}
