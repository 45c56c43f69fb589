"""WHIP (RFC 9725) and WHEP: ``/v1/calls/{type}/{id}/whip`` and ``/whep``."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response

from server import media
from server.calls import make_cid
from server.context import Caller, CoordinatorDep
from server.errors import ERROR_RESPONSES
from server.routers.calls import IdPath, TypePath

router = APIRouter(prefix="/v1/calls", tags=["media"], responses=ERROR_RESPONSES)
ResourcePath = Annotated[str, Path(pattern=r"^[a-f0-9]{32}$")]

_OFFER_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/sdp": {"schema": {"type": "string"}}},
    }
}
_ANSWER: dict[int | str, dict[str, Any]] = {
    201: {
        "description": "The SDP answer; `Location` names the session",
        "content": {"application/sdp": {"schema": {"type": "string"}}},
    }
}
_TRICKLE_BODY: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "content": {"application/trickle-ice-sdpfrag": {"schema": {"type": "string"}}},
    }
}


async def _offer(
    direction: media.Direction,
    type: str,
    id: str,
    request: Request,
    caller: Caller,
    coordinator: CoordinatorDep,
) -> Response:
    offer = media.check_offer(request.headers.get("content-type"), await request.body())
    resource, answer = await media.open_session(coordinator, caller, type, id, direction, offer)
    location = f"/v1/calls/{type}/{id}/{direction}/{resource.participant_id}"
    return Response(
        answer,
        status_code=201,
        media_type="application/sdp",
        headers={"location": location},
    )


@router.post(
    "/{type}/{id}/whip",
    status_code=201,
    response_class=Response,
    responses=_ANSWER,
    openapi_extra=_OFFER_BODY,
)
async def whip_publish(
    type: TypePath,
    id: IdPath,
    request: Request,
    caller: Caller,
    coordinator: CoordinatorDep,
) -> Response:
    """Publish into the call (WHIP): the body is the SDP offer; needs send-audio/send-video."""
    return await _offer("whip", type, id, request, caller, coordinator)


@router.post(
    "/{type}/{id}/whep",
    status_code=201,
    response_class=Response,
    responses=_ANSWER,
    openapi_extra=_OFFER_BODY,
)
async def whep_play(
    type: TypePath,
    id: IdPath,
    request: Request,
    caller: Caller,
    coordinator: CoordinatorDep,
) -> Response:
    """Watch the call (WHEP) under the same rules as join."""
    return await _offer("whep", type, id, request, caller, coordinator)


@router.delete("/{type}/{id}/{direction}/{resource}", status_code=204, response_class=Response)
async def end_media_session(
    type: TypePath,
    id: IdPath,
    direction: media.Direction,
    resource: ResourcePath,
    caller: Caller,
    coordinator: CoordinatorDep,
) -> Response:
    """End a WHIP or WHEP session (its owner or a server token)."""
    found = await media.owned_resource(coordinator, caller, make_cid(type, id), direction, resource)
    await media.close_session(coordinator, found)
    return Response(status_code=204)


@router.patch(
    "/{type}/{id}/{direction}/{resource}",
    status_code=204,
    response_class=Response,
    openapi_extra=_TRICKLE_BODY,
)
async def trickle_ice(
    type: TypePath,
    id: IdPath,
    direction: media.Direction,
    resource: ResourcePath,
    request: Request,
    caller: Caller,
    coordinator: CoordinatorDep,
) -> Response:
    """Trickle ICE candidates into a WHIP or WHEP session (RFC 8840 fragment)."""
    found = await media.owned_resource(coordinator, caller, make_cid(type, id), direction, resource)
    await media.trickle(
        coordinator, found, request.headers.get("content-type"), await request.body()
    )
    return Response(status_code=204)
