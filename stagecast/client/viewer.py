"""Receiving media: decoding viewers and thin (counting) viewers.

A **decoding** viewer decodes video and audio like an app would, and records frame
sizes, the first frame's arrival and the synthetic frame counter. A **thin** viewer
replaces each receiver's RTP handler (the same aiortc hook the SFU uses) with a counter:
packets, payload bytes and sequence gaps per kind, and nothing is depacketized or
decoded, so one process can run hundreds of them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError
from aiortc.rtp import RtpPacket

from .media import read_frame_counter

ViewerMode = Literal["decode", "thin"]


@dataclass
class KindStats:
    """RTP counters for one kind (both modes)."""

    packets: int = 0
    bytes: int = 0
    gaps: int = 0  # sequence numbers skipped
    first_packet_at: float | None = None
    last_packet_at: float | None = None
    _last_seq: dict[int, int] = field(default_factory=dict)

    def add(self, packet: RtpPacket) -> None:
        now = time.monotonic()
        self.packets += 1
        self.bytes += len(packet.payload)
        if self.first_packet_at is None:
            self.first_packet_at = now
        self.last_packet_at = now
        last = self._last_seq.get(packet.ssrc)
        seq = packet.sequence_number
        if last is not None:
            delta = (seq - last) & 0xFFFF
            if 1 < delta < 0x8000:
                self.gaps += delta - 1
            elif delta >= 0x8000:
                return  # late or duplicate: keep the highest
        self._last_seq[packet.ssrc] = seq


class Viewer:
    """The receiving side of an SFU connection (or of a WHEP session)."""

    def __init__(self, pc: RTCPeerConnection, mode: ViewerMode = "decode") -> None:
        if mode not in ("decode", "thin"):
            raise ValueError("mode is 'decode' or 'thin'")
        self.pc = pc
        self.mode: ViewerMode = mode
        self.started_at = time.monotonic()
        self.rtp: dict[str, KindStats] = {"audio": KindStats(), "video": KindStats()}
        self.video_frames = 0
        self.audio_frames = 0
        self.width = 0
        self.height = 0
        self.sizes: dict[tuple[int, int], int] = {}
        self.first_frame_at: float | None = None
        self.last_counter: int | None = None
        self.counters: list[int] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._hooked: set[int] = set()
        if mode == "decode":

            @pc.on("track")
            def on_track(track: Any) -> None:
                self._tasks.append(asyncio.ensure_future(self._consume(track)))

    @property
    def time_to_first_frame(self) -> float | None:
        if self.first_frame_at is None:
            return None
        return self.first_frame_at - self.started_at

    def hook_receivers(self) -> None:
        """Count RTP on every receiver (thin: instead of decoding; decode: as well)."""
        for transceiver in self.pc.getTransceivers():
            receiver: Any = transceiver.receiver
            if id(receiver) in self._hooked:
                continue
            self._hooked.add(id(receiver))
            stats = self.rtp[transceiver.kind]
            original = receiver._handle_rtp_packet if self.mode == "decode" else None
            receiver._handle_rtp_packet = _counter(stats, original)

    async def accept_offer(self, offer_sdp: str) -> str:
        """Answer an SFU-made offer (the WebSocket flow)."""
        await self.pc.setRemoteDescription(RTCSessionDescription(offer_sdp, "offer"))
        self.hook_receivers()
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        return str(self.pc.localDescription.sdp)

    async def create_offer(self) -> str:
        """A receive-only offer (the WHEP flow); apply the answer with :meth:`accept_answer`."""
        self.pc.addTransceiver("audio", direction="recvonly")
        self.pc.addTransceiver("video", direction="recvonly")
        self.hook_receivers()
        await self.pc.setLocalDescription(await self.pc.createOffer())
        return str(self.pc.localDescription.sdp)

    async def accept_answer(self, answer_sdp: str) -> None:
        await self.pc.setRemoteDescription(RTCSessionDescription(answer_sdp, "answer"))

    async def _consume(self, track: Any) -> None:
        try:
            while True:
                frame = await track.recv()
                if track.kind == "video":
                    if self.first_frame_at is None:
                        self.first_frame_at = time.monotonic()
                    self.video_frames += 1
                    self.width, self.height = frame.width, frame.height
                    size = (frame.width, frame.height)
                    self.sizes[size] = self.sizes.get(size, 0) + 1
                    counter = read_frame_counter(frame)
                    if counter is not None:
                        self.last_counter = counter
                        if len(self.counters) < 10000:
                            self.counters.append(counter)
                else:
                    self.audio_frames += 1
        except (MediaStreamError, asyncio.CancelledError):
            return

    async def _wait(self, done: Callable[[], bool], what: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not done():
            if time.monotonic() > deadline:
                raise TimeoutError(f"viewer: {what} not reached within {timeout} s")
            await asyncio.sleep(0.05)

    async def wait_video_frames(self, count: int, timeout: float = 10.0) -> None:
        await self._wait(lambda: self.video_frames >= count, f"{count} video frames", timeout)

    async def wait_audio_frames(self, count: int, timeout: float = 10.0) -> None:
        await self._wait(lambda: self.audio_frames >= count, f"{count} audio frames", timeout)

    async def wait_packets(self, kind: str, count: int, timeout: float = 10.0) -> None:
        stats = self.rtp[kind]
        await self._wait(lambda: stats.packets >= count, f"{count} {kind} packets", timeout)

    def snapshot(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "video_frames": self.video_frames,
            "audio_frames": self.audio_frames,
            "width": self.width,
            "height": self.height,
            "time_to_first_frame": self.time_to_first_frame,
            "rtp": {
                kind: {"packets": s.packets, "bytes": s.bytes, "gaps": s.gaps}
                for kind, s in self.rtp.items()
            },
        }

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await asyncio.shield(self.pc.close())


def _counter(
    stats: KindStats, original: Callable[[RtpPacket, int], Awaitable[None]] | None
) -> Callable[[RtpPacket, int], Awaitable[None]]:
    async def on_rtp(packet: RtpPacket, arrival_time_ms: int) -> None:
        stats.add(packet)
        if original is not None:
            await original(packet, arrival_time_ms)

    return on_rtp
