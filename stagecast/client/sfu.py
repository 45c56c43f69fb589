"""The signalling WebSocket client (protocol in ``docs/signalling.md``).

    conn = await SfuConnection.connect(credentials.ws_url, credentials.token)
    await conn.publish(ToneAudioTrack(), SyntheticVideoTrack(640, 360, 30))
    viewer = await conn.subscribe(mode="thin")
    ...
    await conn.close()

ICE: no STUN/TURN unless ``ice_servers`` are given (the SFU answers with its own host
candidates). On a machine whose only address is loopback, call
``sfu.ice.configure_host_candidates(include_loopback=True)`` first (process-wide).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import logging
from collections.abc import Callable, Sequence
from typing import Any

import websockets
from aiortc import MediaStreamTrack, RTCIceServer, RTCPeerConnection, RTCRtpSender
from aiortc import RTCSessionDescription as Description
from websockets.asyncio.client import ClientConnection

from sfu.ice import rtc_configuration

from .api import IceServer
from .viewer import Viewer, ViewerMode

logger = logging.getLogger(__name__)


class SignallingError(Exception):
    """An ``error`` message from the SFU (or the connection closing)."""

    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
        self.details = details or {}


def ice_configuration(ice_servers: Sequence[IceServer | dict[str, Any]] = ()) -> Any:
    servers = []
    for server in ice_servers:
        if isinstance(server, dict):
            server = IceServer(
                urls=list(server.get("urls") or []),
                username=server.get("username"),
                credential=server.get("credential"),
            )
        servers.append(
            RTCIceServer(urls=server.urls, username=server.username, credential=server.credential)
        )
    return rtc_configuration(servers)


class SfuConnection:
    """One participant's signalling connection to an SFU node."""

    def __init__(
        self,
        ws: ClientConnection,
        ice_servers: Sequence[IceServer | dict[str, Any]] = (),
    ) -> None:
        self.ws = ws
        self.rtc_config = ice_configuration(ice_servers)
        self.messages: list[dict[str, Any]] = []
        self.joined: dict[str, Any] = {}
        self.publisher_pc: RTCPeerConnection | None = None
        self.viewer: Viewer | None = None
        self.close_code: int | None = None
        self.close_reason: str = ""
        self.goodbye: dict[str, Any] | None = None
        self.closed = asyncio.Event()
        self._ids = itertools.count(1)
        self._waiters: dict[str | int, asyncio.Future[dict[str, Any]]] = {}
        self._new_message = asyncio.Condition()
        self._reader: asyncio.Task[None] | None = None
        self._listeners: list[Callable[[dict[str, Any]], None]] = []

    # -- connecting ---------------------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        ws_url: str,
        token: str,
        *,
        ice_servers: Sequence[IceServer | dict[str, Any]] = (),
        join: bool = True,
        timeout: float = 10.0,
    ) -> SfuConnection:
        """Open the WebSocket (``?token=``) and, unless ``join=False``, join; raises
        :class:`SignallingError` when the SFU refuses."""
        sep = "&" if "?" in ws_url else "?"
        ws = await asyncio.wait_for(
            websockets.connect(f"{ws_url}{sep}token={token}", max_size=2**22), timeout
        )
        conn = cls(ws, ice_servers)
        conn._reader = asyncio.create_task(conn._read())
        if join:
            try:
                await conn.join(timeout=timeout)
            except BaseException:
                await conn.close()
                raise
        return conn

    async def __aenter__(self) -> SfuConnection:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def on_message(self, listener: Callable[[dict[str, Any]], None]) -> None:
        self._listeners.append(listener)

    async def join(self, timeout: float = 10.0) -> dict[str, Any]:
        await self.send({"type": "join"})
        self.joined = await self.wait_for(
            "joined", timeout=timeout, raise_errors=lambda m: m.get("ref") == "join"
        )
        return self.joined

    # -- media ----------------------------------------------------------------------------------

    async def publish(
        self,
        audio: MediaStreamTrack | None = None,
        video: MediaStreamTrack | None = None,
        *,
        video_codec: str | None = None,
        timeout: float = 10.0,
    ) -> str:
        """Publish on a new peer connection (the client offers). Returns the SFU's answer."""
        if audio is None and video is None:
            raise ValueError("publish needs an audio or a video track")
        pc = RTCPeerConnection(self.rtc_config)
        self.publisher_pc = pc
        if audio is not None:
            pc.addTransceiver(audio, direction="sendonly")
        if video is not None:
            transceiver = pc.addTransceiver(video, direction="sendonly")
            if video_codec is not None:
                caps = RTCRtpSender.getCapabilities("video").codecs
                transceiver.setCodecPreferences(
                    [c for c in caps if c.mimeType.lower() == f"video/{video_codec.lower()}"]
                    + [c for c in caps if c.mimeType.lower() == "video/rtx"]
                )
        try:
            await pc.setLocalDescription(await pc.createOffer())
            reply = await self.request(
                {"type": "publish_offer", "sdp": pc.localDescription.sdp},
                "publish_answer",
                timeout,
            )
            await pc.setRemoteDescription(Description(reply["sdp"], "answer"))
        except BaseException:
            self.publisher_pc = None
            await asyncio.shield(pc.close())
            raise
        return str(reply["sdp"])

    async def subscribe(self, mode: ViewerMode = "decode", timeout: float = 10.0) -> Viewer:
        """Receive on a new peer connection (the SFU offers)."""
        viewer = Viewer(RTCPeerConnection(self.rtc_config), mode)
        self.viewer = viewer
        offer = await self.request({"type": "subscribe"}, "subscribe_offer", timeout)
        answer = await viewer.accept_offer(offer["sdp"])
        await self.request({"type": "subscribe_answer", "sdp": answer}, "ack", timeout)
        return viewer

    async def mute(self, kind: str, muted: bool, timeout: float = 5.0) -> None:
        await self.request({"type": "mute", "kind": kind, "muted": muted}, "ack", timeout)

    async def unpublish(self, kind: str | None = None, timeout: float = 5.0) -> None:
        message: dict[str, Any] = {"type": "unpublish"}
        if kind is not None:
            message["kind"] = kind
        await self.request(message, "ack", timeout)

    async def request_keyframe(self) -> None:
        await self.send({"type": "keyframe_request"})

    async def leave(self, timeout: float = 5.0) -> None:
        """Leave the call; the SFU answers ``goodbye`` and closes the socket."""
        with contextlib.suppress(Exception):
            await self.send({"type": "leave"})
            await asyncio.wait_for(self.closed.wait(), timeout)
        await self.close()

    async def close(self) -> None:
        """Close the socket and both peer connections."""
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 3)
        if self._reader is not None:
            self._reader.cancel()
            await asyncio.gather(self._reader, return_exceptions=True)
        self.closed.set()
        if self.viewer is not None:
            await self.viewer.close()
        if self.publisher_pc is not None:
            await asyncio.shield(self.publisher_pc.close())

    # -- messages ---------------------------------------------------------------------------

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(message))

    async def request(
        self, message: dict[str, Any], reply_type: str, timeout: float = 10.0
    ) -> dict[str, Any]:
        """Send ``message`` with an ``id`` and wait for the reply (or an error) with it."""
        request_id = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiters[request_id] = future
        try:
            await self.send({**message, "id": request_id})
            reply = await asyncio.wait_for(future, timeout)
        finally:
            self._waiters.pop(request_id, None)
        if reply.get("type") == "error":
            raise SignallingError(reply["code"], reply.get("message", ""), reply.get("details"))
        if reply.get("type") != reply_type:
            raise SignallingError("unexpected_reply", f"expected {reply_type}, got {reply}")
        return reply

    def received(self, message_type: str) -> list[dict[str, Any]]:
        return [m for m in self.messages if m.get("type") == message_type]

    async def wait_for(
        self,
        message_type: str,
        predicate: Callable[[dict[str, Any]], bool] | None = None,
        *,
        timeout: float = 10.0,
        raise_errors: Callable[[dict[str, Any]], bool] | None = None,
    ) -> dict[str, Any]:
        """The first message received so far (or later) of ``message_type`` that matches.
        Errors matching ``raise_errors`` are raised as :class:`SignallingError`."""

        def find() -> dict[str, Any] | None:
            for message in self.messages:
                kind = message.get("type")
                if kind == "error" and raise_errors is not None and raise_errors(message):
                    raise SignallingError(
                        message["code"], message.get("message", ""), message.get("details")
                    )
                if kind == message_type and (predicate is None or predicate(message)):
                    return message
            return None

        async def wait() -> dict[str, Any]:
            async with self._new_message:
                while True:
                    found = find()
                    if found is not None:
                        return found
                    if self.closed.is_set():
                        raise SignallingError(
                            "closed", f"connection closed ({self.close_code}) {self.close_reason}"
                        )
                    await self._new_message.wait()

        return await asyncio.wait_for(wait(), timeout)

    async def _read(self) -> None:
        try:
            async for raw in self.ws:
                try:
                    message = json.loads(raw)
                except ValueError:
                    continue
                if not isinstance(message, dict):
                    continue
                self.messages.append(message)
                if message.get("type") == "goodbye":
                    self.goodbye = message
                request_id = message.get("id")
                if request_id is not None and request_id in self._waiters:
                    future = self._waiters[request_id]
                    if not future.done():
                        future.set_result(message)
                for listener in self._listeners:
                    try:
                        listener(message)
                    except Exception:
                        logger.exception("signalling listener failed")
                async with self._new_message:
                    self._new_message.notify_all()
        except websockets.ConnectionClosed:
            pass
        finally:
            self.close_code = self.ws.close_code
            self.close_reason = self.ws.close_reason or ""
            self.closed.set()
            for future in self._waiters.values():
                if not future.done():
                    future.set_exception(
                        SignallingError("closed", f"connection closed ({self.close_code})")
                    )
            with contextlib.suppress(Exception):
                async with self._new_message:
                    self._new_message.notify_all()
