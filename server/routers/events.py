"""``/v1/events``: the events WebSocket."""

from __future__ import annotations

import asyncio
import contextlib
import json
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Response, WebSocket, WebSocketDisconnect

from server import calls
from server.context import (
    Coordinator,
    bearer_token,
    get_ws_coordinator,
    principal_from_token,
    transaction,
)
from server.errors import ApiError, ErrorResponse, error_response
from server.events import Watcher
from server.metrics import EVENT_WEBSOCKETS
from stagecast.tokens import Principal

router = APIRouter(tags=["events"])

HEALTH_CHECK_SECONDS = 10.0
MAX_MESSAGE_BYTES = 64 * 1024
MAX_WATCHED = 1000


def _error(code: str, message: str, **details: Any) -> dict[str, Any]:
    return {"type": "error", "error": {"code": code, "message": message, "details": details}}


async def _watch(
    coordinator: Coordinator, principal: Principal, watcher: Watcher, cids: list[str]
) -> list[dict[str, Any]]:
    """Watch the calls the principal may read; an error message for each refused one."""
    errors = []
    for cid in cids:
        if cid == "*" and watcher.may_watch_all:
            watcher.watch_all = True
            continue
        call_type, sep, call_id = cid.partition(":")
        try:
            if not sep:
                raise ApiError(400, "invalid_request", f"'{cid}' is not a call cid.")
            async with transaction(coordinator) as db:
                await calls.readable_call(db, principal, call_type, call_id)
        except ApiError as exc:
            errors.append(_error(exc.code, exc.message, cid=cid))
            continue
        if len(watcher.cids) >= MAX_WATCHED:
            errors.append(_error("invalid_request", f"At most {MAX_WATCHED} calls.", cid=cid))
            continue
        watcher.cids.add(cid)
    return errors


@router.get(
    "/v1/events",
    summary="The events WebSocket",
    status_code=101,
    response_class=Response,
    responses={
        101: {"description": "Switching Protocols: the events WebSocket (see the API contract)."},
        426: {"model": ErrorResponse, "description": "Not a WebSocket upgrade request."},
    },
)
async def events_socket_http() -> Response:
    """The events WebSocket: connect with a WebSocket client, the token in
    ``Authorization: Bearer`` or ``?token=``. The server sends ``connection.ok`` first and
    ``health.check`` every 10 s; send ``{"type": "watch"|"unwatch", "cids": [...]}`` to follow
    calls. Events look like ``{type, cid, created_at, ...}``; errors like
    ``{"type": "error", "error": {code, message, details}}``. A plain HTTP request gets 426."""
    response = error_response(
        426, "invalid_request", "GET /v1/events is a WebSocket: connect with a WebSocket client."
    )
    response.headers["upgrade"] = "websocket"
    return response


@router.websocket("/v1/events")
async def events_socket(
    websocket: WebSocket, coordinator: Annotated[Coordinator, Depends(get_ws_coordinator)]
) -> None:
    """Events of the calls the client watches. See the API contract's Events section."""
    await websocket.accept()
    try:
        token = bearer_token(
            websocket.headers.get("authorization"), websocket.query_params.get("token")
        )
        principal = principal_from_token(coordinator, token)
    except ApiError as exc:
        await websocket.send_json(_error(exc.code, exc.message))
        await websocket.close(code=4401 if exc.status == 401 else 4403)
        return

    watcher = Watcher(may_watch_all=principal.is_server)
    coordinator.hub.add_watcher(watcher)
    EVENT_WEBSOCKETS.inc()
    await websocket.send_json({"type": "connection.ok", "connection_id": watcher.id})

    async def send_loop() -> None:
        while True:
            try:
                event = await asyncio.wait_for(watcher.outbox.get(), HEALTH_CHECK_SECONDS)
            except TimeoutError:
                event = {"type": "health.check", "connection_id": watcher.id}
            await websocket.send_json(event)

    sender = asyncio.create_task(send_loop())
    try:
        while True:
            received = await websocket.receive()
            if received["type"] == "websocket.disconnect":
                raise WebSocketDisconnect(received.get("code", 1000))
            text = received.get("text")
            if text is None:
                watcher.offer(_error("invalid_request", "Send JSON text messages, not binary."))
                continue
            if len(text) > MAX_MESSAGE_BYTES:
                watcher.offer(_error("invalid_request", "Message too large."))
                continue
            try:
                message = json.loads(text)
                kind = message["type"]
                cids = message.get("cids", [])
                if not isinstance(cids, list) or not all(isinstance(c, str) for c in cids):
                    raise TypeError
            except (ValueError, KeyError, TypeError, AttributeError):
                watcher.offer(
                    _error("invalid_request", "Send {'type': 'watch'|'unwatch', 'cids': [...]}.")
                )
                continue
            if kind == "watch":
                for error in await _watch(coordinator, principal, watcher, cids):
                    watcher.offer(error)
                watcher.offer({"type": "watch.ok", "cids": sorted(watcher.cids)})
            elif kind == "unwatch":
                watcher.cids.difference_update(cids)
                if "*" in cids:
                    watcher.watch_all = False
                watcher.offer({"type": "unwatch.ok", "cids": sorted(watcher.cids)})
            elif kind != "health.check":
                watcher.offer(_error("invalid_request", f"Unknown message type {kind!r}."))
    except WebSocketDisconnect:
        pass
    finally:
        sender.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await sender
        coordinator.hub.remove_watcher(watcher)
        EVENT_WEBSOCKETS.dec()
