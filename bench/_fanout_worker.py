"""A load process for ``bench/fanout.py``: the publisher, or a batch of viewers.

Run as ``python bench/_fanout_worker.py``; it reads one JSON command per line on stdin and
answers each with one JSON line on stdout (``{"id", "ok", ...}``). Logs go to stderr.

Viewers are *thin* by default: after the peer connection is set up, the viewer's ICE
socket protocol is hooked so that RTP datagrams are counted at the socket (SSRC, sequence
number, marker bit and size read from the clear RTP header) and dropped there: no SRTP
unprotect, no jitter buffer, no depacketizing or decoding. STUN (ICE consent), DTLS and
RTCP still reach aiortc. That keeps the receiving cost per packet low, so the viewers'
CPU (which competes with the SFU's on a small machine) stays as small as it can. The
counting code is ``stagecast.loadtest.rtp``, shared with ``stagecast loadtest``.
A few *decoding* viewers (``probe``) use the client's ``Viewer`` in decode mode to time the
first decoded frame.

Media sources: ``SyntheticVideoTrack`` 640x360 @ 30 fps (VP8) and ``ToneAudioTrack`` (Opus).
aiortc's VP8 encoder starts at 500 kbit/s and only moves on REMB; ``--video-bitrate``
(here: the ``publish`` command's ``bitrate``) sets its starting and minimum bitrate so
the publisher sends about 1 Mbit/s as in the design's measurements.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import httpx  # noqa: E402
from aiortc import RTCPeerConnection, RTCSessionDescription  # noqa: E402

from sfu.ice import configure_host_candidates, rtc_configuration  # noqa: E402
from stagecast.client import (  # noqa: E402
    SfuConnection,
    SyntheticVideoTrack,
    ToneAudioTrack,
    Viewer,
)
from stagecast.loadtest.process import serve_commands  # noqa: E402
from stagecast.loadtest.rtp import (  # noqa: E402
    Counts,
    hook_socket,
    set_vp8_bitrate,
    video_payload_types,
)


def log(message: str) -> None:
    print(f"[worker {os.getpid()}] {message}", file=sys.stderr, flush=True)


# -- viewers -----------------------------------------------------------------------------------


class ThinViewer:
    def __init__(self, name: str) -> None:
        self.name = name
        self.counts: Counts | None = None
        self.conn: SfuConnection | None = None
        self.pc: RTCPeerConnection | None = None
        self.joined_at = 0.0
        self.error: str | None = None
        self.marks: dict[str, float] = {}  # phase -> seconds after the join request

    @property
    def first_packet_delay(self) -> float | None:
        if self.counts is None or self.counts.first_video_at is None:
            return None
        return self.counts.first_video_at - self.joined_at

    async def join_sfu(self, api_url: str, call_path: str, token: str) -> None:
        """POST join at the coordinator, then the signalling WebSocket, then subscribe."""
        self.joined_at = time.monotonic()
        async with httpx.AsyncClient(
            base_url=api_url, headers={"authorization": f"Bearer {token}"}, timeout=20
        ) as http:
            answer = await http.post(call_path + "/join", json={})
        if answer.status_code >= 300:
            raise RuntimeError(f"join: {answer.status_code} {answer.text[:300]}")
        self.mark("api_join")
        credentials = answer.json()["credentials"]
        self.conn = conn = await SfuConnection.connect(
            credentials["ws_url"], credentials["token"], timeout=20
        )
        self.mark("ws_joined")
        pc = RTCPeerConnection(conn.rtc_config)
        self.pc = pc

        @pc.on("connectionstatechange")
        def on_state() -> None:
            if pc.connectionState == "connected":
                self.mark("connected")

        offer = await conn.request({"type": "subscribe"}, "subscribe_offer", 20)
        self.mark("offer")
        self.counts = Counts(video_payload_types(offer["sdp"]))
        await pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
        await pc.setLocalDescription(await pc.createAnswer())
        self.mark("answered")
        hook_socket(pc, self.counts)
        await conn.request({"type": "subscribe_answer", "sdp": pc.localDescription.sdp}, "ack", 20)
        self.mark("ack")

    def mark(self, phase: str) -> None:
        self.marks[phase] = time.monotonic() - self.joined_at

    async def join_relay(self, relay_url: str) -> None:
        """A receive-only offer to the MediaRelay server (``bench/_fanout_relay.py``)."""
        self.joined_at = time.monotonic()
        pc = RTCPeerConnection(rtc_configuration())
        self.pc = pc
        pc.addTransceiver("audio", direction="recvonly")
        pc.addTransceiver("video", direction="recvonly")
        await pc.setLocalDescription(await pc.createOffer())
        async with httpx.AsyncClient(base_url=relay_url, timeout=20) as http:
            answer = await http.post("/view", json={"sdp": pc.localDescription.sdp})
        if answer.status_code >= 300:
            raise RuntimeError(f"relay view: {answer.status_code} {answer.text[:300]}")
        sdp = answer.json()["sdp"]
        self.counts = Counts(video_payload_types(sdp))
        hook_socket(pc, self.counts)  # before the answer: ICE checks start with it
        await pc.setRemoteDescription(RTCSessionDescription(sdp, "answer"))

    async def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.conn.leave(timeout=2), 5)
        if self.pc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.pc.close(), 5)


class Worker:
    def __init__(self) -> None:
        self.viewers: list[ThinViewer] = []
        self.publisher: Any = None
        self.tasks: set[asyncio.Task[Any]] = set()
        self.config: dict[str, Any] = {}

    # commands

    async def cmd_init(self, msg: dict[str, Any]) -> dict[str, Any]:
        self.config = msg
        configure_host_candidates(["127.0.0.1"])
        return {}

    async def cmd_publish(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Publish synthetic VP8 + Opus (to the SFU via the coordinator, or to the relay)."""
        set_vp8_bitrate(int(msg["bitrate"]))
        video = SyntheticVideoTrack(int(msg["width"]), int(msg["height"]), float(msg["fps"]))
        audio = ToneAudioTrack()
        if self.config["mode"] == "relay":
            pc = RTCPeerConnection(rtc_configuration())
            pc.addTransceiver(audio, direction="sendonly")
            transceiver = pc.addTransceiver(video, direction="sendonly")
            from aiortc import RTCRtpSender

            caps = RTCRtpSender.getCapabilities("video").codecs
            transceiver.setCodecPreferences(
                [c for c in caps if c.mimeType.lower() in ("video/vp8", "video/rtx")]
            )
            await pc.setLocalDescription(await pc.createOffer())
            async with httpx.AsyncClient(base_url=self.config["relay_url"], timeout=20) as http:
                answer = await http.post("/publish", json={"sdp": pc.localDescription.sdp})
            answer.raise_for_status()
            await pc.setRemoteDescription(RTCSessionDescription(answer.json()["sdp"], "answer"))
            self.publisher = {"pc": pc, "video": video, "audio": audio}
        else:
            api, path, token = self.config["api_url"], self.config["call_path"], msg["token"]
            async with httpx.AsyncClient(
                base_url=api, headers={"authorization": f"Bearer {token}"}, timeout=20
            ) as http:
                answer = await http.post(path + "/join", json={})
                answer.raise_for_status()
            credentials = answer.json()["credentials"]
            conn = await SfuConnection.connect(credentials["ws_url"], credentials["token"])
            await conn.publish(audio, video, video_codec="VP8")
            self.publisher = {"conn": conn, "pc": conn.publisher_pc, "video": video, "audio": audio}
        self.publisher["t0"] = (time.monotonic(), video.count, 0, 0)
        return {}

    async def cmd_publisher_stats(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Frames produced and what the video sender sent (cumulative)."""
        pub = self.publisher
        sent_packets = sent_bytes = 0
        for sender in pub["pc"].getSenders():
            if sender.track is not None and sender.track.kind == "video":
                stats = await sender.getStats()
                for s in stats.values():
                    if getattr(s, "type", "") == "outbound-rtp":
                        sent_packets += s.packetsSent
                        sent_bytes += s.bytesSent
        return {
            "at": time.monotonic(),
            "frames": pub["video"].count,
            "video_packets_sent": sent_packets,
            "video_bytes_sent": sent_bytes,
        }

    async def cmd_join(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Join ``names`` viewers at ``rate`` per second; answer once each has its first
        video packet (or ``timeout`` passed)."""
        names: list[str] = msg["names"]
        tokens: list[str] = msg.get("tokens") or [""] * len(names)
        rate = float(msg.get("rate") or 0)
        timeout = float(msg.get("timeout", 15))
        start = time.monotonic()
        fresh = [ThinViewer(name) for name in names]
        errors: list[str] = []

        async def one(i: int, viewer: ThinViewer) -> None:
            if rate > 0:
                await asyncio.sleep(max(0.0, start + i / rate - time.monotonic()))
            try:
                if self.config["mode"] == "relay":
                    await self.join_relay(viewer)
                else:
                    await viewer.join_sfu(
                        self.config["api_url"], self.config["call_path"], tokens[i]
                    )
            except Exception as exc:
                viewer.error = f"{type(exc).__name__}: {exc}"
                errors.append(viewer.error)
                return
            deadline = viewer.joined_at + timeout
            while viewer.first_packet_delay is None and time.monotonic() < deadline:  # noqa: ASYNC110 (polling a counter)
                await asyncio.sleep(0.01)

        await asyncio.gather(*(one(i, v) for i, v in enumerate(fresh)))
        self.viewers.extend(v for v in fresh if v.error is None)
        delays = [v.first_packet_delay for v in fresh if v.error is None]
        phases: dict[str, list[float]] = {}
        for v in fresh:
            for phase, at in v.marks.items():
                phases.setdefault(phase, []).append(at)
        return {
            "phases": phases,
            "joined": sum(1 for v in fresh if v.error is None),
            "errors": errors[:5],
            "error_count": len(errors),
            "first_packet": [d for d in delays if d is not None],
            "no_packet": sum(1 for d in delays if d is None),
        }

    async def join_relay(self, viewer: ThinViewer) -> None:
        await viewer.join_relay(self.config["relay_url"])

    async def cmd_stats(self, msg: dict[str, Any]) -> dict[str, Any]:
        now = time.monotonic()
        total = {
            "viewers": len(self.viewers),
            "receiving": 0,
            "video_packets": 0,
            "audio_packets": 0,
            "video_gaps": 0,
            "audio_gaps": 0,
            "video_bytes": 0,
            "markers": 0,
            "at": now,
            "cpu": time.process_time(),
        }
        for v in self.viewers:
            c = v.counts
            if c is None:
                continue
            if now - c.last_at < 1.0:
                total["receiving"] += 1
            for key in (
                "video_packets",
                "audio_packets",
                "video_gaps",
                "audio_gaps",
                "video_bytes",
                "markers",
            ):
                total[key] += getattr(c, key)
        return total

    async def cmd_probe(self, msg: dict[str, Any]) -> dict[str, Any]:
        """Decoding viewers: join, time the first video packet and the first decoded
        frame (from the join request), then leave."""
        tokens: list[str] = msg.get("tokens") or [""] * int(msg["count"])
        timeout = float(msg.get("timeout", 10))

        async def one(token: str) -> dict[str, Any]:
            t0 = time.monotonic()
            conn: SfuConnection | None = None
            viewer: Viewer | None = None
            pc: RTCPeerConnection | None = None
            try:
                if self.config["mode"] == "relay":
                    pc = RTCPeerConnection(rtc_configuration())
                    viewer = Viewer(pc, "decode")
                    offer = await viewer.create_offer()
                    async with httpx.AsyncClient(
                        base_url=self.config["relay_url"], timeout=20
                    ) as http:
                        answer = await http.post("/view", json={"sdp": offer})
                    answer.raise_for_status()
                    await viewer.accept_answer(answer.json()["sdp"])
                else:
                    async with httpx.AsyncClient(
                        base_url=self.config["api_url"],
                        headers={"authorization": f"Bearer {token}"},
                        timeout=20,
                    ) as http:
                        answer = await http.post(self.config["call_path"] + "/join", json={})
                        answer.raise_for_status()
                    cred = answer.json()["credentials"]
                    conn = await SfuConnection.connect(cred["ws_url"], cred["token"])
                    viewer = await conn.subscribe(mode="decode")
                await viewer.wait_video_frames(1, timeout=timeout)
                first_packet = viewer.rtp["video"].first_packet_at
                assert viewer.first_frame_at is not None
                return {
                    "first_packet": None if first_packet is None else first_packet - t0,
                    "first_frame": viewer.first_frame_at - t0,
                }
            except Exception as exc:
                return {"error": f"{type(exc).__name__}: {exc}"}
            finally:
                if conn is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(conn.leave(timeout=2), 5)
                elif viewer is not None:
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(viewer.close(), 5)

        results = await asyncio.gather(*(one(t) for t in tokens))
        return {"results": list(results)}

    async def cmd_close(self, msg: dict[str, Any]) -> dict[str, Any]:
        viewers, self.viewers = self.viewers, []
        for i in range(0, len(viewers), 50):
            await asyncio.gather(*(v.close() for v in viewers[i : i + 50]))
        if self.publisher is not None:
            if "conn" in self.publisher:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(self.publisher["conn"].leave(timeout=2), 5)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.publisher["pc"].close(), 5)
            self.publisher = None
        return {}


async def serve() -> None:
    worker = Worker()
    handlers = {
        name[len("cmd_") :]: getattr(worker, name)
        for name in dir(worker)
        if name.startswith("cmd_")
    }

    async def close() -> None:
        await worker.cmd_close({})

    await serve_commands(handlers, close)


def main() -> None:
    import logging

    logging.basicConfig(level=logging.WARNING)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(serve())


if __name__ == "__main__":
    main()
