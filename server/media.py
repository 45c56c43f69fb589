"""WHIP publishing and WHEP playback: the coordinator authorizes, then relays the offer to an
SFU node over the bus and returns the node's answer itself (no redirect, so ``Authorization``
and CORS keep working)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

from server.calls import admit_participant, load_call
from server.context import Coordinator, transaction
from server.errors import ApiError, forbidden, invalid_request, not_found
from stagecast.bus import BusTimeout
from stagecast.protocol import node_channel
from stagecast.tokens import Principal

Direction = Literal["whip", "whep"]

MAX_SDP_BYTES = 128 * 1024
RELAY_TIMEOUT_SECONDS = 15.0
RESOURCE_TTL_SECONDS = 24 * 3600

# What an SFU node's error codes mean over HTTP.
_NODE_ERROR_STATUS = {
    "invalid_request": 400,
    "unauthenticated": 401,
    "forbidden": 403,
    "call_in_backstage": 403,
    "not_found": 404,
    "call_ended": 409,
    "no_compatible_codec": 422,
    "capacity_exhausted": 503,
}


@dataclass(frozen=True)
class MediaResource:
    """A WHIP or WHEP session, addressed by its ``Location``."""

    participant_id: str
    node_id: str
    cid: str
    user_id: str
    direction: Direction


def _resource_key(participant_id: str) -> str:
    return f"media-resource/{participant_id}"


def check_offer(content_type: str | None, body: bytes) -> str:
    if (content_type or "").split(";")[0].strip().lower() != "application/sdp":
        raise ApiError(415, "invalid_request", "The offer must be sent as application/sdp.")
    if len(body) > MAX_SDP_BYTES:
        raise invalid_request(f"The SDP offer is larger than {MAX_SDP_BYTES} bytes.")
    try:
        sdp = body.decode()
    except UnicodeDecodeError:
        raise invalid_request("The SDP offer is not UTF-8 text.") from None
    if not sdp.lstrip().startswith("v=0"):
        raise invalid_request("The body is not an SDP offer (it must start with 'v=0').")
    return sdp


async def relay(coordinator: Coordinator, node_id: str, message: dict[str, Any]) -> dict[str, Any]:
    try:
        answer = await coordinator.bus.request(
            node_channel(node_id), message, timeout=RELAY_TIMEOUT_SECONDS
        )
    except BusTimeout:
        raise ApiError(
            503,
            "capacity_exhausted",
            "The media server did not answer in time.",
            {"reason": "sfu_node_unresponsive"},
        ) from None
    error = answer.get("error")
    if isinstance(error, dict):
        code = str(error.get("code", "invalid_request"))
        details = error.get("details")
        raise ApiError(
            _NODE_ERROR_STATUS.get(code, 502),
            code if code in _NODE_ERROR_STATUS else "media_server_error",
            str(error.get("message", "The media server refused the request.")),
            details if isinstance(details, dict) else None,
        )
    return answer


async def open_session(
    coordinator: Coordinator,
    principal: Principal,
    call_type: str,
    call_id: str,
    direction: Direction,
    offer: str,
) -> tuple[MediaResource, str]:
    """Admit the caller like a join, relay the offer; the resource and the SDP answer."""
    # Admission commits before the relay: no transaction stays open while the node works,
    # and the session exists when the node reports the participant.
    async with transaction(coordinator) as db:
        context = await load_call(db, principal, call_type, call_id)
        context.require("join-call")
        if direction == "whip" and not {"send-audio", "send-video"} & context.capabilities:
            context.require("send-video")
        node, token = await admit_participant(
            coordinator, db, principal, context, publishing=direction == "whip"
        )
    answer = await relay(coordinator, node.id, {"type": direction, "token": token, "sdp": offer})
    sdp = answer.get("sdp")
    if not isinstance(sdp, str):
        raise ApiError(502, "media_server_error", "The media server sent no SDP answer.")
    grant = coordinator.keyring.sfu_grant(token)
    resource = MediaResource(grant.participant_id, node.id, grant.cid, grant.user_id, direction)
    await coordinator.bus.set_key(
        _resource_key(resource.participant_id),
        {"node_id": node.id, "cid": grant.cid, "user_id": grant.user_id, "direction": direction},
        RESOURCE_TTL_SECONDS,
    )
    return resource, sdp


async def owned_resource(
    coordinator: Coordinator,
    principal: Principal,
    cid: str,
    direction: Direction,
    participant_id: str,
) -> MediaResource:
    stored = await coordinator.bus.get_key(_resource_key(participant_id))
    if stored is None or stored.get("cid") != cid or stored.get("direction") != direction:
        raise not_found("There is no such WHIP/WHEP session.")
    if not principal.is_server and principal.user_id != stored.get("user_id"):
        raise forbidden("Only the session's owner or a server token may change it.")
    return MediaResource(
        participant_id, str(stored["node_id"]), cid, str(stored["user_id"]), direction
    )


async def close_session(coordinator: Coordinator, resource: MediaResource) -> None:
    try:
        await relay(
            coordinator,
            resource.node_id,
            {"type": "delete", "participant_id": resource.participant_id, "cid": resource.cid},
        )
    except ApiError as exc:
        if exc.code != "not_found":  # already gone on the node: deleting is done
            raise
    await coordinator.bus.delete_key(_resource_key(resource.participant_id))


async def trickle(
    coordinator: Coordinator, resource: MediaResource, content_type: str | None, body: bytes
) -> None:
    if (content_type or "").split(";")[0].strip().lower() != "application/trickle-ice-sdpfrag":
        raise ApiError(
            415, "invalid_request", "Trickle ICE must be sent as application/trickle-ice-sdpfrag."
        )
    if len(body) > MAX_SDP_BYTES:
        raise invalid_request("The SDP fragment is too large.")
    await relay(
        coordinator,
        resource.node_id,
        {
            "type": "trickle",
            "participant_id": resource.participant_id,
            "cid": resource.cid,
            "sdpfrag": body.decode(errors="replace"),
        },
    )
