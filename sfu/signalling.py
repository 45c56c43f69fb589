"""The signalling WebSocket (``GET /ws?token=<sfu token>``): JSON messages, one per frame.

The protocol is specified in ``docs/signalling.md``. In short: the token authenticates the
connection (bad token: an ``error`` then close code 4001); ``join`` opens the session and
is answered by ``joined``; the client publishes on one peer connection (it offers:
``publish_offer`` / ``publish_answer``) and receives on another (the SFU offers:
``subscribe`` / ``subscribe_offer`` / ``subscribe_answer``); ``trickle`` carries ICE
candidates both ways; the server pushes room events, ``call_state``, ``goaway`` and a
final ``goodbye``. Every malformed or refused message is answered by ``error``; the
connection survives it (up to :data:`MAX_ERRORS` of them).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from typing import Any

from starlette.websockets import WebSocket, WebSocketDisconnect

from .errors import SfuError
from .node import SfuNode, check_publish_offer, sfu_error_dict
from .session import (
    CLOSE_CODES,
    CLOSE_GOING_AWAY,
    CLOSE_NORMAL,
    CLOSE_POLICY,
    Session,
    SessionError,
)

logger = logging.getLogger(__name__)

MAX_MESSAGE_CHARS = 64 * 1024
"""Longest accepted message (an SDP from a browser is 5-15 kB)."""
MAX_ERRORS = 50
"""Errors one connection may provoke before it is closed (1008)."""
JOIN_TIMEOUT = 30.0
"""Seconds a connection may stay open without joining."""
SEND_QUEUE_LIMIT = 1000
"""Messages waiting for a slow client before it is dropped."""

KINDS = ("audio", "video")
TARGETS = ("publisher", "subscriber")


class ProtocolError(Exception):
    def __init__(self, message: str, code: str = "invalid_request") -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class _Close:
    reason: str
    code: int


def _str_field(message: dict[str, Any], name: str, *, max_len: int = MAX_MESSAGE_CHARS) -> str:
    value = message.get(name)
    if not isinstance(value, str) or not value or len(value) > max_len:
        raise ProtocolError(f"'{name}' must be a non-empty string.")
    return value


def _kind_field(message: dict[str, Any], *, required: bool) -> str | None:
    value = message.get("kind")
    if value is None and not required:
        return None
    if value not in KINDS:
        raise ProtocolError("'kind' must be 'audio' or 'video'.")
    return str(value)


class SignallingConnection:
    """One client's WebSocket: a reader that handles messages in order and a writer that
    sends what the session is told (so room events never wait on a slow socket)."""

    def __init__(self, node: SfuNode, websocket: WebSocket) -> None:
        self.node = node
        self.ws = websocket
        self.session: Session | None = None
        self.out: asyncio.Queue[dict[str, Any] | _Close] = asyncio.Queue()
        self.errors = 0
        self.closing = False
        self.leave_reason = "disconnected"

    # -- outgoing ---------------------------------------------------------------------------

    def send(self, message: dict[str, Any]) -> None:
        if self.closing:
            return
        if self.out.qsize() >= SEND_QUEUE_LIMIT:
            logger.warning("signalling client too slow; disconnecting")
            self.close("protocol_error")
            return
        self.out.put_nowait(message)

    def close(self, reason: str, code: int | None = None) -> None:
        """Say ``goodbye`` (for a session) and close with the reason's close code."""
        if self.closing:
            return
        if self.session is not None:
            self.out.put_nowait({"type": "goodbye", "reason": reason})
        self.closing = True
        self.out.put_nowait(_Close(reason, code or CLOSE_CODES.get(reason, CLOSE_GOING_AWAY)))

    def error(
        self,
        code: str,
        message: str,
        *,
        ref: Any = None,
        request_id: Any = None,
        details: dict[str, Any] | None = None,
    ) -> None:
        out: dict[str, Any] = {"type": "error", "code": code, "message": message}
        if details:
            out["details"] = details
        if isinstance(ref, str) and len(ref) <= 64:
            out["ref"] = ref
        if request_id is not None:
            out["id"] = request_id
        self.send(out)

    async def _writer(self) -> None:
        while True:
            item = await self.out.get()
            if isinstance(item, _Close):
                with contextlib.suppress(Exception):
                    await self.ws.close(item.code, item.reason[:120])
                return
            await self.ws.send_text(json.dumps(item, separators=(",", ":")))

    # -- incoming ---------------------------------------------------------------------------

    async def run(self) -> None:
        await self.ws.accept()
        writer = asyncio.create_task(self._writer())
        reader = asyncio.create_task(self._read_after_auth())
        try:
            await asyncio.wait({reader, writer}, return_when=asyncio.FIRST_COMPLETED)
            if reader.done() and not writer.done():
                if not self.closing:
                    self.closing = True
                    self.out.put_nowait(_Close(self.leave_reason, CLOSE_NORMAL))
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(asyncio.shield(writer), 2)
        finally:
            for task in (reader, writer):
                task.cancel()
            await asyncio.gather(reader, writer, return_exceptions=True)
            session = self.session
            if session is not None and not session.participant.left:
                with contextlib.suppress(Exception):
                    await session.close(self.leave_reason)

    async def _read_after_auth(self) -> None:
        try:
            grant = self.node.authenticate(self.ws.query_params.get("token", ""))
        except SessionError as exc:
            self.error(exc.code, exc.message, details=exc.details)
            self.close(exc.code)
            return
        try:
            await asyncio.wait_for(self._read_until_joined(grant), JOIN_TIMEOUT)
        except TimeoutError:
            self.error("invalid_request", "No 'join' within the time allowed.")
            self.close("protocol_error")
            return
        if self.session is not None:
            await self._read_loop()

    async def _read_until_joined(self, grant: Any) -> None:
        while self.session is None and not self.closing:
            message = await self._receive()
            if message is None:
                continue
            if message.get("type") == "join":
                try:
                    self.session = await self.node.open_session(
                        grant, "ws", notify=self.send, disconnect=self.close
                    )
                except SessionError as exc:
                    self.error(exc.code, exc.message, ref="join", details=exc.details)
                    self.close(exc.code)
                    return
                self.send(self.node.joined_message(self.session))
            elif message.get("type") == "ping":
                self.send({"type": "pong", **_echo_id(message)})
            else:
                self._fail(
                    ProtocolError("Send 'join' first.", "conflict"), message.get("type"), message
                )

    async def _read_loop(self) -> None:
        while not self.closing:
            message = await self._receive()
            if message is None:
                continue
            kind = message.get("type")
            try:
                await self._handle(str(kind), message)
            except ProtocolError as exc:
                self._fail(exc, kind, message)
            except SessionError as exc:
                self.error(
                    exc.code,
                    exc.message,
                    ref=kind,
                    request_id=_echo_id(message).get("id"),
                    details=exc.details,
                )
            except SfuError as exc:
                error = sfu_error_dict(exc)
                self.error(
                    error["code"],
                    error["message"],
                    ref=kind,
                    request_id=_echo_id(message).get("id"),
                    details=error.get("details"),
                )
            except Exception:
                logger.exception("signalling message %r failed", kind)
                self.error(
                    "internal_error",
                    "The SFU failed to handle this message.",
                    ref=kind,
                    request_id=_echo_id(message).get("id"),
                )

    async def _receive(self) -> dict[str, Any] | None:
        """The next JSON object from the client; None after answering a bad frame. Raises
        :class:`WebSocketDisconnect` when the client is gone."""
        frame = await self.ws.receive()
        if frame["type"] == "websocket.disconnect":
            code = frame.get("code", 1005)
            self.leave_reason = (
                "left" if code in (CLOSE_NORMAL, CLOSE_GOING_AWAY) else ("disconnected")
            )
            raise WebSocketDisconnect(code)
        text = frame.get("text")
        if text is None:
            self._fail(ProtocolError("Binary frames are not part of the protocol."), None, {})
            return None
        if len(text) > MAX_MESSAGE_CHARS:
            self._fail(
                ProtocolError(f"Messages are limited to {MAX_MESSAGE_CHARS} characters."),
                None,
                {},
            )
            return None
        try:
            message = json.loads(text)
        except ValueError:
            self._fail(ProtocolError("Messages must be JSON."), None, {})
            return None
        if not isinstance(message, dict) or not isinstance(message.get("type"), str):
            self._fail(ProtocolError("Messages are JSON objects with a string 'type'."), None, {})
            return None
        return message

    def _fail(self, exc: ProtocolError, kind: Any, message: dict[str, Any]) -> None:
        self.errors += 1
        self.error(exc.code, exc.message, ref=kind, request_id=_echo_id(message).get("id"))
        if self.errors >= MAX_ERRORS:
            self.close("protocol_error", CLOSE_POLICY)

    # -- message handlers -------------------------------------------------------------------

    async def _handle(self, kind: str, message: dict[str, Any]) -> None:
        session = self.session
        assert session is not None
        participant = session.participant
        echo = _echo_id(message)
        if kind == "publish_offer":
            sdp = _str_field(message, "sdp")
            check_publish_offer(session.grant, sdp)
            answer = await participant.publish(sdp)
            self.send({"type": "publish_answer", "sdp": answer, **echo})
            self.send({"type": "trickle", "target": "publisher", "candidate": None})
        elif kind == "subscribe":
            offer = await participant.subscribe()
            self.send({"type": "subscribe_offer", "sdp": offer, **echo})
            self.send({"type": "trickle", "target": "subscriber", "candidate": None})
        elif kind == "subscribe_answer":
            await participant.set_subscriber_answer(_str_field(message, "sdp"))
            if echo:
                self.send({"type": "ack", "ref": kind, **echo})
        elif kind == "trickle":
            target = message.get("target")
            if target not in TARGETS:
                raise ProtocolError("'target' must be 'publisher' or 'subscriber'.")
            candidate = message.get("candidate")
            if candidate is not None and (not isinstance(candidate, str) or len(candidate) > 2048):
                raise ProtocolError("'candidate' must be a candidate string or null.")
            mid = message.get("sdp_mid")
            index = message.get("sdp_mline_index")
            if mid is not None and not isinstance(mid, str):
                raise ProtocolError("'sdp_mid' must be a string.")
            if index is not None and (not isinstance(index, int) or isinstance(index, bool)):
                raise ProtocolError("'sdp_mline_index' must be an integer.")
            await participant.add_ice_candidate(target, candidate, mid, index)
        elif kind == "unpublish":
            await participant.unpublish(_kind_field(message, required=False))  # type: ignore[arg-type]
            if echo:
                self.send({"type": "ack", "ref": kind, **echo})
        elif kind == "mute":
            muted = message.get("muted")
            if not isinstance(muted, bool):
                raise ProtocolError("'muted' must be true or false.")
            participant.set_muted(_kind_field(message, required=True), muted)  # type: ignore[arg-type]
            if echo:
                self.send({"type": "ack", "ref": kind, **echo})
        elif kind == "keyframe_request":
            participant.request_keyframe()
        elif kind == "ping":
            self.send({"type": "pong", **echo})
        elif kind == "leave":
            self.leave_reason = "left"
            await session.close("left")
        elif kind == "join":
            raise ProtocolError("Already joined.", "conflict")
        else:
            raise ProtocolError(f"Unknown message type {kind[:64]!r}.")


def _echo_id(message: dict[str, Any]) -> dict[str, Any]:
    value = message.get("id")
    if isinstance(value, str) and len(value) <= 128:
        return {"id": value}
    if isinstance(value, int) and not isinstance(value, bool):
        return {"id": value}
    return {}


async def signalling_endpoint(node: SfuNode, websocket: WebSocket) -> None:
    await SignallingConnection(node, websocket).run()
