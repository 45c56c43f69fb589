"""Real aiortc client peers for the SFU tests: a synthetic publisher and decoding viewers."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from aiortc import (
    AudioStreamTrack,
    RTCPeerConnection,
    RTCRtpSender,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.mediastreams import MediaStreamError
from av import VideoFrame

from sfu import ForwardingConfig, Participant, Room, RoomEvent
from sfu.ice import rtc_configuration


class SyntheticVideo(VideoStreamTrack):
    """A moving gradient at 30 fps, encoded by aiortc (VP8 or H.264)."""

    def __init__(self, width: int = 320, height: int = 240) -> None:
        super().__init__()
        self.width = width
        self.height = height
        self.count = 0
        self._row = bytes((x * 3) & 0xFF for x in range(width * 2))

    async def recv(self) -> VideoFrame:
        pts, time_base = await self.next_timestamp()
        frame = VideoFrame(width=self.width, height=self.height, format="yuv420p")
        shift = (self.count * 4) % self.width
        row = self._row[shift : shift + self.width]
        y, u, v = frame.planes
        y.update(row * self.height + bytes(y.buffer_size - self.width * self.height))
        u.update(bytes([128]) * u.buffer_size)
        v.update(bytes([(self.count * 2) & 0xFF]) * v.buffer_size)
        frame.pts = pts
        frame.time_base = time_base
        self.count += 1
        return frame


class ClientPublisher:
    """A client publishing synthetic audio and video (the client makes the offer)."""

    def __init__(
        self,
        *,
        audio: bool = True,
        video: bool = True,
        width: int = 320,
        height: int = 240,
        prefer: str | None = None,
    ) -> None:
        self.pc = RTCPeerConnection(rtc_configuration())
        self.video = SyntheticVideo(width, height) if video else None
        if audio:
            self.pc.addTrack(AudioStreamTrack())
        if self.video is not None:
            transceiver = self.pc.addTransceiver(self.video, direction="sendonly")
            if prefer is not None:
                caps = RTCRtpSender.getCapabilities("video").codecs
                transceiver.setCodecPreferences(
                    [c for c in caps if c.mimeType.lower() == f"video/{prefer.lower()}"]
                    + [c for c in caps if c.mimeType.lower() == "video/rtx"]
                )

    async def offer(self) -> str:
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def accept(self, answer: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))

    async def close(self) -> None:
        await asyncio.shield(self.pc.close())


@dataclass
class ClientViewer:
    """A client receiving the SFU's offer, decoding video and counting audio frames."""

    pc: RTCPeerConnection = field(default_factory=lambda: RTCPeerConnection(rtc_configuration()))
    frames: list[tuple[float, int, int]] = field(default_factory=list)
    audio_frames: int = 0
    tasks: list[asyncio.Task[None]] = field(default_factory=list)

    def __post_init__(self) -> None:
        @self.pc.on("track")
        def on_track(track: Any) -> None:
            self.tasks.append(asyncio.ensure_future(self._consume(track)))

    async def _consume(self, track: Any) -> None:
        try:
            while True:
                frame = await track.recv()
                if track.kind == "video":
                    self.frames.append((time.monotonic(), frame.width, frame.height))
                else:
                    self.audio_frames += 1
        except (MediaStreamError, asyncio.CancelledError):
            return

    async def answer(self, offer: str) -> str:
        await self.pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return str(self.pc.localDescription.sdp)

    async def wait_frames(self, count: int, within: float = 8.0) -> None:
        deadline = time.monotonic() + within
        while len(self.frames) < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"got {len(self.frames)} of {count} video frames")
            await asyncio.sleep(0.05)

    async def wait_audio(self, count: int, within: float = 8.0) -> None:
        deadline = time.monotonic() + within
        while self.audio_frames < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"got {self.audio_frames} of {count} audio frames")
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        for task in self.tasks:
            task.cancel()
        await asyncio.shield(self.pc.close())


class Harness:
    """Creates rooms and client peers, and tears everything down after the test."""

    def __init__(self) -> None:
        self.rooms: list[Room] = []
        self.clients: list[ClientPublisher | ClientViewer] = []
        self.events: list[RoomEvent] = []

    def room(self, room_id: str = "livestream:test", **kwargs: Any) -> Room:
        kwargs.setdefault("config", ForwardingConfig())
        room = Room(room_id, on_event=self.events.append, **kwargs)
        self.rooms.append(room)
        return room

    async def publish(
        self, room: Room, participant_id: str = "host", **kwargs: Any
    ) -> tuple[Participant, ClientPublisher]:
        participant = room.join(
            participant_id, can_publish_audio=True, can_publish_video=True, can_receive=False
        )
        client = ClientPublisher(**kwargs)
        self.clients.append(client)
        await client.accept(await participant.publish(await client.offer()))
        return participant, client

    async def view(self, room: Room, participant_id: str) -> tuple[Participant, ClientViewer]:
        participant = room.join(participant_id, can_receive=True)
        client = ClientViewer()
        self.clients.append(client)
        answer = await client.answer(await participant.subscribe())
        await participant.set_subscriber_answer(answer)
        return participant, client

    def event_types(self, room: Room | None = None) -> list[tuple[str, str]]:
        return [
            (e.type, e.participant_id) for e in self.events if room is None or e.room_id == room.id
        ]

    async def close(self) -> None:
        await asyncio.gather(*(c.close() for c in self.clients), return_exceptions=True)
        await asyncio.gather(*(r.close() for r in self.rooms), return_exceptions=True)
