"""Stream key → coordinator → SFU: an accepted RTMP publisher joins its call and publishes.

The stream key is a user token. It is decoded here only to find the one call it names; every
decision (signature, expiry, the call's state, the role's capabilities) is the coordinator's:
the ingest joins the call over the public API *with that token*, exactly as the user's own
client would, and publishes only when the answer grants ``send-video``. Then it opens the
SFU signalling socket with the SFU token from the join and publishes like a host.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Sequence
from typing import Any

from stagecast.client import ApiClient, ApiError, SfuConnection, SignallingError
from stagecast.client.api import IceServer
from stagecast.tokens import KeyRing, TokenError

from .media import FlvToTracks
from .rtmp import MediaSink, PublishRefused, RtmpServer

logger = logging.getLogger(__name__)


class IngestSession:
    """One accepted publisher: its SFU connection and the tracks it publishes."""

    def __init__(self, service: IngestService, label: str, conn: SfuConnection) -> None:
        self.service = service
        self.label = label
        self.conn = conn
        self.media = FlvToTracks(label)

    def on_video(self, timestamp_ms: int, body: bytes) -> None:
        self.media.on_video(timestamp_ms, body)

    def on_audio(self, timestamp_ms: int, body: bytes) -> None:
        self.media.on_audio(timestamp_ms, body)

    @property
    def ended(self) -> bool:
        """The SFU closed the connection (call ended, participant removed, node gone)."""
        return self.conn.closed.is_set()

    async def publish(self) -> None:
        await self.conn.publish(self.media.audio, self.media.video, video_codec="h264")
        pc = self.conn.publisher_pc
        for sender in pc.getSenders() if pc is not None else []:
            if sender.kind == "video":
                # aiortc notes a PLI/FIR by calling this; it only acts on it when it encodes.
                original = sender._send_keyframe

                def send_keyframe(original: Any = original) -> None:
                    original()
                    self.media.request_keyframe()

                sender._send_keyframe = send_keyframe  # type: ignore[method-assign]

    async def close(self) -> None:
        self.service.sessions.discard(self)
        await self.media.close()
        await self.conn.leave()
        logger.info(
            "ingest %s: unpublished (%d video, %d audio frames)",
            self.label,
            self.media.video_frames,
            self.media.audio_frames,
        )


class IngestService:
    """Runs an :class:`RtmpServer` whose publishers join calls through the coordinator at
    ``api_url``. ``keyring`` only reads which call a key names (the coordinator verifies)."""

    def __init__(
        self,
        api_url: str,
        keyring: KeyRing,
        *,
        host: str = "0.0.0.0",
        port: int = 1935,
        ice_servers: Sequence[IceServer | dict[str, Any]] | None = None,
        timeout: float = 15.0,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        self.keyring = keyring
        self.ice_servers = ice_servers
        self.timeout = timeout
        self.server = RtmpServer(self.authorize, host, port)
        self.sessions: set[IngestSession] = set()
        self.accepted = 0
        self.refused = 0

    @property
    def port(self) -> int:
        return self.server.port

    async def start(self) -> None:
        await self.server.start()

    async def stop(self) -> None:
        await self.server.stop()

    async def authorize(self, app: str, key: str, peer: str) -> MediaSink:
        try:
            session = await self._authorize(key, peer)
        except PublishRefused:
            self.refused += 1
            raise
        self.accepted += 1
        return session

    async def _authorize(self, key: str, peer: str) -> IngestSession:
        try:
            principal = self.keyring.principal(key)
        except TokenError as exc:
            raise PublishRefused(f"stream key rejected ({exc.code})") from None
        cids = sorted(principal.call_cids or ())
        if len(cids) != 1:
            raise PublishRefused(
                f"stream key of user {principal.user_id!r} must name exactly one call "
                f"(call_cids has {len(cids)})"
            )
        cid = cids[0]
        call_type, _, call_id = cid.partition(":")
        label = f"{cid} user {principal.user_id!r} from {peer}"
        try:
            async with ApiClient(self.api_url, key, timeout=self.timeout) as api:
                answer = await api.join(call_type, call_id)
        except ApiError as exc:
            raise PublishRefused(f"{label}: join refused ({exc.code})") from None
        except Exception as exc:
            reason = f"coordinator unreachable ({type(exc).__name__})"
            raise PublishRefused(f"{label}: {reason}") from None
        if (answer.get("call") or {}).get("ended_at"):
            # A host may *join* an ended call (join-ended-call, to look back), not broadcast.
            raise PublishRefused(f"{label}: the call has ended (call_ended)")
        if "send-video" not in answer.get("own_capabilities", []):
            raise PublishRefused(f"{label}: role may not send video (forbidden)")
        credentials = ApiClient.credentials(answer)
        ice = credentials.ice_servers if self.ice_servers is None else self.ice_servers
        try:
            conn = await SfuConnection.connect(
                credentials.ws_url, credentials.token, ice_servers=ice, timeout=self.timeout
            )
        except (SignallingError, OSError, TimeoutError) as exc:
            code = exc.code if isinstance(exc, SignallingError) else type(exc).__name__
            raise PublishRefused(f"{label}: SFU refused ({code})") from None
        session = IngestSession(self, label, conn)
        try:
            await session.publish()
        except BaseException as exc:
            await session.media.close()
            with contextlib.suppress(Exception):
                await asyncio.shield(conn.close())
            code = exc.code if isinstance(exc, SignallingError) else type(exc).__name__
            if isinstance(exc, Exception):
                raise PublishRefused(f"{label}: publish failed ({code})") from None
            raise
        self.sessions.add(session)
        logger.info("ingest %s: publishing", label)
        return session
