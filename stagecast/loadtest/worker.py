"""A load-test worker process: the publisher, or a share of the viewers.

``python -m stagecast.loadtest.worker`` reads commands on stdin (see :mod:`.process`):

- ``init {loopback}``: on a loopback target, gather ICE host candidates on 127.0.0.1 only.
- ``publish {api_url, call_type, call_id, token, codec, width, height, fps, bitrate}``: join
  and publish :class:`~.media.TimestampVideoTrack` (+ a tone) or a file (``file``).
- ``publisher_stats``: frames made and bytes the senders sent (cumulative).
- ``join {api_url, call_type, call_id, measure_latency, viewers: [{name, token, at, mode}]}``:
  start each viewer at wall-clock ``at`` (``thin``: RTP counted at the socket; ``full``:
  decoded, with the burned-in timestamp read from every frame when ``measure_latency``,
  i.e. when the source is ours); answers at once.
- ``stats``: cumulative counters, plus first-frame times and latency samples gathered since
  the previous ``stats`` (each reported once).
- ``close``: every viewer leaves, the publisher too.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any, Literal

import httpx
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.mediastreams import MediaStreamError

from stagecast.client import (
    ApiClient,
    ApiError,
    SfuConnection,
    SignallingError,
    ToneAudioTrack,
    Viewer,
    file_source,
)

from .media import TimestampVideoTrack, frame_latency_ms
from .process import serve_commands
from .rtp import (
    Counts,
    enlarge_receive_buffer,
    hook_socket,
    ice_protocols,
    set_encoder_bitrate,
    video_payload_types,
)

ViewerKind = Literal["thin", "full"]
STEP_TIMEOUT = 20.0


def error_code(exc: BaseException) -> str:
    """A stable code for a failure: the API's or the SFU's, else a short name."""
    if isinstance(exc, ApiError | SignallingError):
        return exc.code
    if isinstance(exc, TimeoutError):
        return "timeout"
    if isinstance(exc, httpx.HTTPError | OSError):
        return "network_error"
    return type(exc).__name__


class LatencyViewer(Viewer):
    """A decoding viewer that reads the burned-in timestamp of every decoded frame."""

    def __init__(self, pc: RTCPeerConnection, samples: list[float], measure: bool = True) -> None:
        super().__init__(pc, "decode")
        self.samples = samples
        self.measure = measure  # only our own synthetic source carries the timestamp

    async def _consume(self, track: Any) -> None:
        try:
            while True:
                frame = await track.recv()
                if track.kind != "video":
                    self.audio_frames += 1
                    continue
                now = time.time()
                if self.first_frame_at is None:
                    self.first_frame_at = time.monotonic()
                self.video_frames += 1
                self.width, self.height = frame.width, frame.height
                latency = frame_latency_ms(frame, now) if self.measure else None
                if latency is not None and len(self.samples) < 100_000:
                    self.samples.append(latency)
        except (MediaStreamError, asyncio.CancelledError):
            return


class LoadViewer:
    """One synthetic viewer: join through the API, signalling, subscribe."""

    def __init__(self, name: str, kind: ViewerKind) -> None:
        self.name = name
        self.kind: ViewerKind = kind
        self.started_at = 0.0
        self.conn: SfuConnection | None = None
        self.pc: RTCPeerConnection | None = None
        self.counts: Counts | None = None
        self.decoder: LatencyViewer | None = None
        self.connected = False
        self.error: str | None = None
        self.first_frame_reported = False

    @property
    def first_frame_at(self) -> float | None:
        if self.decoder is not None:
            return self.decoder.first_frame_at
        if self.counts is not None:
            return self.counts.first_frame_at
        return None

    def totals(self) -> tuple[int, int, int, int, int, int, float]:
        """video/audio packets, gaps, bytes; when the last packet came."""
        if self.counts is not None:
            c = self.counts
            return (
                c.video_packets,
                c.audio_packets,
                c.video_gaps,
                c.audio_gaps,
                c.video_bytes,
                c.audio_bytes,
                c.last_at,
            )
        if self.decoder is not None:
            v, a = self.decoder.rtp["video"], self.decoder.rtp["audio"]
            last = max(v.last_packet_at or 0.0, a.last_packet_at or 0.0)
            # payload bytes + 12-byte RTP header + 10-byte SRTP tag: the datagram, as thin counts
            return (
                v.packets,
                a.packets,
                v.gaps,
                a.gaps,
                v.bytes + 22 * v.packets,
                a.bytes + 22 * a.packets,
                last,
            )
        return (0, 0, 0, 0, 0, 0, 0.0)

    async def run(
        self,
        api_url: str,
        call_type: str,
        call_id: str,
        token: str,
        samples: list[float],
        measure_latency: bool = True,
    ) -> None:
        self.started_at = time.monotonic()
        async with ApiClient(api_url, token, timeout=STEP_TIMEOUT) as api:
            answer = await api.join(call_type, call_id)
        credentials = ApiClient.credentials(answer)
        self.conn = conn = await SfuConnection.connect(
            credentials.ws_url,
            credentials.token,
            ice_servers=credentials.ice_servers,
            timeout=STEP_TIMEOUT,
        )
        if self.kind == "full":
            viewer = LatencyViewer(RTCPeerConnection(conn.rtc_config), samples, measure_latency)
            self.decoder = viewer
            conn.viewer = viewer
            offer = await conn.request({"type": "subscribe"}, "subscribe_offer", STEP_TIMEOUT)
            answer_sdp = await viewer.accept_offer(offer["sdp"])
            for protocol in ice_protocols(viewer.pc):
                enlarge_receive_buffer(protocol)
            await conn.request({"type": "subscribe_answer", "sdp": answer_sdp}, "ack", STEP_TIMEOUT)
        else:
            pc = RTCPeerConnection(conn.rtc_config)
            self.pc = pc
            offer = await conn.request({"type": "subscribe"}, "subscribe_offer", STEP_TIMEOUT)
            self.counts = Counts(video_payload_types(offer["sdp"]))
            await pc.setRemoteDescription(RTCSessionDescription(offer["sdp"], "offer"))
            await pc.setLocalDescription(await pc.createAnswer())
            hook_socket(pc, self.counts)
            await conn.request(
                {"type": "subscribe_answer", "sdp": pc.localDescription.sdp}, "ack", STEP_TIMEOUT
            )
        self.connected = True

    @property
    def alive(self) -> bool:
        return self.connected and self.conn is not None and not self.conn.closed.is_set()

    async def close(self) -> None:
        if self.conn is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.conn.leave(timeout=2), 5)
        if self.pc is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.pc.close(), 5)


class Worker:
    def __init__(self) -> None:
        self.viewers: list[LoadViewer] = []
        self.errors: dict[str, int] = {}
        self.error_messages: dict[str, str] = {}
        self.samples: list[float] = []
        self.publisher: dict[str, Any] | None = None
        self.tasks: set[asyncio.Task[None]] = set()

    def handlers(self) -> dict[str, Any]:
        return {
            "init": self.cmd_init,
            "publish": self.cmd_publish,
            "publisher_stats": self.cmd_publisher_stats,
            "join": self.cmd_join,
            "stats": self.cmd_stats,
            "close": self.cmd_close,
        }

    async def cmd_init(self, msg: dict[str, Any]) -> dict[str, Any]:
        if msg.get("loopback"):
            from sfu.ice import configure_host_candidates

            configure_host_candidates(["127.0.0.1"])
        return {}

    async def cmd_publish(self, msg: dict[str, Any]) -> dict[str, Any]:
        set_encoder_bitrate(int(msg["bitrate"]))
        player = None
        video: Any
        if msg.get("file"):
            audio, video, player = file_source(str(msg["file"]))
        else:
            audio = ToneAudioTrack()
            video = TimestampVideoTrack(int(msg["width"]), int(msg["height"]), float(msg["fps"]))
        async with ApiClient(msg["api_url"], msg["token"], timeout=STEP_TIMEOUT) as api:
            answer = await api.join(msg["call_type"], msg["call_id"])
        credentials = ApiClient.credentials(answer)
        conn = await SfuConnection.connect(
            credentials.ws_url, credentials.token, ice_servers=credentials.ice_servers
        )
        try:
            await conn.publish(audio, video, video_codec=str(msg["codec"]).upper())
        except BaseException:
            await conn.close()
            raise
        self.publisher = {"conn": conn, "video": video, "player": player}
        return {}

    async def cmd_publisher_stats(self, msg: dict[str, Any]) -> dict[str, Any]:
        pub = self.publisher
        if pub is None:
            return {"at": time.monotonic(), "frames": 0, "bytes_sent": 0, "video_bytes_sent": 0}
        conn: SfuConnection = pub["conn"]
        sent = {"audio": 0, "video": 0}
        assert conn.publisher_pc is not None
        senders: list[Any] = list(conn.publisher_pc.getSenders())
        for sender in senders:
            if sender.track is None:
                continue
            for s in (await sender.getStats()).values():
                if getattr(s, "type", "") == "outbound-rtp":
                    # the RTP payload; + 12-byte header + 10-byte SRTP tag per packet
                    sent[sender.track.kind] += s.bytesSent + 22 * s.packetsSent
        return {
            "at": time.monotonic(),
            "frames": int(getattr(pub["video"], "count", 0)),
            "bytes_sent": sent["audio"] + sent["video"],
            "video_bytes_sent": sent["video"],
        }

    async def cmd_join(self, msg: dict[str, Any]) -> dict[str, Any]:
        for spec in msg["viewers"]:
            viewer = LoadViewer(str(spec["name"]), "full" if spec.get("mode") == "full" else "thin")
            self.viewers.append(viewer)
            task = asyncio.create_task(
                self._join_one(viewer, msg, str(spec["token"]), float(spec["at"]))
            )
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        return {"scheduled": len(msg["viewers"])}

    async def _join_one(
        self, viewer: LoadViewer, msg: dict[str, Any], token: str, at: float
    ) -> None:
        await asyncio.sleep(max(0.0, at - time.time()))
        try:
            await viewer.run(
                msg["api_url"],
                msg["call_type"],
                msg["call_id"],
                token,
                self.samples,
                bool(msg.get("measure_latency", True)),
            )
        except Exception as exc:
            code = error_code(exc)
            viewer.error = code
            self.errors[code] = self.errors.get(code, 0) + 1
            self.error_messages.setdefault(code, str(exc)[:300])
            await viewer.close()

    async def cmd_stats(self, msg: dict[str, Any]) -> dict[str, Any]:
        now = time.monotonic()
        keys = (
            "video_packets",
            "audio_packets",
            "video_gaps",
            "audio_gaps",
            "video_bytes",
            "audio_bytes",
        )
        totals = dict.fromkeys(keys, 0)
        first_frames: list[float] = []
        receiving = connected = pending = failed = 0
        for v in self.viewers:
            if v.error is not None:
                failed += 1
                continue
            if not v.connected:
                pending += 1
            elif v.alive:
                connected += 1
            values = v.totals()
            for key, value in zip(keys, values[:6], strict=True):
                totals[key] += value
            if now - values[6] < 2.0:
                receiving += 1
            first = v.first_frame_at
            if first is not None and not v.first_frame_reported:
                v.first_frame_reported = True
                first_frames.append((first - v.started_at) * 1000)
        samples, self.samples[:] = list(self.samples), []
        return {
            "at": time.time(),
            "scheduled": len(self.viewers),
            "connected": connected,
            "pending": pending,
            "failed": failed,
            "receiving": receiving,
            "errors": dict(self.errors),
            "error_messages": dict(self.error_messages),
            "first_frame_ms": first_frames,
            "latency_ms": samples,
            "cpu_seconds": time.process_time(),
            **totals,
        }

    async def cmd_close(self, msg: dict[str, Any] | None = None) -> dict[str, Any]:
        for task in list(self.tasks):
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        viewers, self.viewers = self.viewers, []
        for i in range(0, len(viewers), 50):
            await asyncio.gather(*(v.close() for v in viewers[i : i + 50]))
        if self.publisher is not None:
            pub, self.publisher = self.publisher, None
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pub["conn"].leave(timeout=2), 5)
        return {}


async def _serve() -> None:
    worker = Worker()

    async def close() -> None:
        await worker.cmd_close()

    await serve_commands(worker.handlers(), close)


def main() -> None:
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the runner stops us (by PID)
    logging.basicConfig(level=logging.WARNING)
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    asyncio.run(_serve())


if __name__ == "__main__":
    main()
