"""FLV (as RTMP carries it) to WebRTC tracks.

Video: H.264 in AVCC framing becomes Annex B ``av.Packet``s that aiortc's sender only
packetizes (no re-encoding) while the stream has no B-frames (every composition time
offset is 0: baseline, or main/high with ``bf=0``, OBS's usual output). A stream with
B-frames (ffmpeg's default libx264 ``high`` profile) is decoded and handed to aiortc as
frames, which it encodes as constrained baseline: WebRTC receivers play frames in RTP
order and browsers do not reorder B-frames. See ``docs/ingest.md``.

Audio: AAC is decoded and resampled to 48 kHz stereo 20 ms frames, which aiortc encodes
as Opus.
"""

from __future__ import annotations

import asyncio
import fractions
import logging
import struct
from typing import Any

import av
from aiortc import MediaStreamTrack
from aiortc.mediastreams import MediaStreamError

logger = logging.getLogger(__name__)

MS = fractions.Fraction(1, 1000)
MAX_QUEUE = 600
MAX_GOP = 600
MAX_DECODE_BACKLOG = 60  # frames (2 s at 30 fps) waiting for the transcoder

NAL_IDR = 5
NAL_SPS = 7
NAL_PPS = 8
NAL_AUD = 9


class QueueTrack(MediaStreamTrack):
    """A track whose ``recv`` returns what was put, in order; ``None`` ends it."""

    def __init__(self, kind: str) -> None:
        super().__init__()
        self.kind = kind
        self.queue: asyncio.Queue[Any] = asyncio.Queue()

    def put(self, item: Any) -> None:
        if self.queue.qsize() >= MAX_QUEUE:
            # The sender is not keeping up: drop rather than grow without bound.
            with_drop = self.queue.get_nowait()
            del with_drop
        self.queue.put_nowait(item)

    async def recv(self) -> Any:
        if self.readyState != "live":
            raise MediaStreamError
        item = await self.queue.get()
        if item is None:
            self.stop()
            raise MediaStreamError
        return item

    def end(self) -> None:
        self.queue.put_nowait(None)


def parse_avc_config(record: bytes) -> tuple[int, int, list[bytes]]:
    """AVCDecoderConfigurationRecord → (profile_idc, NAL length size, [SPS..., PPS...])."""
    if len(record) < 7:
        raise ValueError("short AVC configuration record")
    profile = record[1]
    length_size = (record[4] & 3) + 1
    nals: list[bytes] = []
    pos = 5
    for count_mask in (0x1F, 0xFF):
        if pos >= len(record):
            break
        count = record[pos] & count_mask
        pos += 1
        for _ in range(count):
            if pos + 2 > len(record):
                raise ValueError("truncated AVC configuration record")
            (n,) = struct.unpack_from(">H", record, pos)
            pos += 2
            nals.append(record[pos : pos + n])
            pos += n
    return profile, length_size, nals


def avcc_nals(data: bytes, length_size: int) -> list[bytes]:
    nals = []
    pos = 0
    while pos + length_size <= len(data):
        n = int.from_bytes(data[pos : pos + length_size], "big")
        pos += length_size
        if n == 0 or pos + n > len(data):
            break
        nals.append(data[pos : pos + n])
        pos += n
    return nals


def annex_b(nals: list[bytes]) -> bytes:
    return b"".join(b"\x00\x00\x00\x01" + n for n in nals)


class FlvToTracks:
    """Feeds one publisher's FLV audio/video tag bodies into an audio and a video track."""

    def __init__(self, label: str) -> None:
        self.label = label
        self.audio = QueueTrack("audio")
        self.video = QueueTrack("video")
        self.profile = 0
        self.length_size = 4
        self.parameter_sets: list[bytes] = []
        self.transcoding = False
        self.gop: list[tuple[bytes, int, int]] = []  # (annex b, pts, dts) since last keyframe
        self.video_frames = 0
        self.audio_frames = 0
        self.dropped_frames = 0
        self.unsupported_logged: set[str] = set()
        self._decoder: Any = None
        self._aac: Any = None
        self._resampler: Any = None
        self._audio_samples = 0
        self.bridging = False
        self.keyframes_bridged = 0
        self._video_in: asyncio.Queue[tuple[str, tuple[bytes, int, int] | None] | None] = (
            asyncio.Queue()
        )
        self._audio_in: asyncio.Queue[tuple[bytes, int] | None] = asyncio.Queue()
        self._tasks = [
            asyncio.create_task(self._video_pump()),
            asyncio.create_task(self._audio_pump()),
        ]

    def _unsupported(self, what: str) -> None:
        if what not in self.unsupported_logged:
            self.unsupported_logged.add(what)
            logger.warning("ingest %s: %s is not supported; dropped", self.label, what)

    # -- video ----------------------------------------------------------------------------

    def on_video(self, timestamp_ms: int, body: bytes) -> None:
        if len(body) < 5:
            return
        if body[0] & 0x80:
            self._unsupported("enhanced RTMP video (HEVC/AV1/VP9)")
            return
        frame_type, codec = body[0] >> 4, body[0] & 0x0F
        if codec != 7:
            self._unsupported(f"FLV video codec {codec} (only H.264)")
            return
        packet_type = body[1]
        cts = int.from_bytes(body[2:5], "big", signed=True)
        data = body[5:]
        if packet_type == 0:
            try:
                self.profile, self.length_size, self.parameter_sets = parse_avc_config(data)
            except ValueError as exc:
                logger.warning("ingest %s: %s", self.label, exc)
            return
        if packet_type != 1:
            return
        nals = [n for n in avcc_nals(data, self.length_size) if n and n[0] & 0x1F != NAL_AUD]
        if not nals:
            return
        keyframe = frame_type == 1 or any(n[0] & 0x1F == NAL_IDR for n in nals)
        if keyframe and not any(n[0] & 0x1F == NAL_SPS for n in nals):
            nals = self.parameter_sets + nals
        item = (annex_b(nals), timestamp_ms + cts, timestamp_ms)
        if keyframe:
            self.gop = [item]
        elif self.gop and len(self.gop) < MAX_GOP:
            self.gop.append(item)
        elif not self.gop:
            return  # nothing decodable before the first keyframe
        if cts != 0 and not self.transcoding:
            logger.info(
                "ingest %s: the stream has B-frames (H.264 profile_idc %d); transcoding "
                "video to constrained baseline",
                self.label,
                self.profile,
            )
            self.transcoding = True
            self.bridging = False
            self._start_decoder(self.gop[:-1])  # those were sent already: decode, not send
        if self.transcoding:
            if keyframe and self._video_in.qsize() > MAX_DECODE_BACKLOG:
                # Decoding fell behind (CPU starved): skip the backlog, restart here.
                dropped = 0
                while not self._video_in.empty():
                    self._video_in.get_nowait()
                    dropped += 1
                self.dropped_frames += dropped
                logger.warning("ingest %s: decoder behind, %d frames skipped", self.label, dropped)
                self._video_in.put_nowait(("reset", None))
            self._video_in.put_nowait(("decode", item))
        elif self.bridging and not keyframe:
            self._video_in.put_nowait(("decode", item))
        else:
            if self.bridging:
                logger.info("ingest %s: the encoder's keyframe: forwarding as is again", self.label)
            self.bridging = False
            self._video_in.put_nowait(("pass", item))

    def request_keyframe(self) -> None:
        """A viewer lost the picture (PLI/FIR reached the publisher's sender).

        Transcoding: aiortc's encoder makes the next frame a keyframe by itself. Passthrough:
        the encoder on the far side of RTMP cannot be asked, so decode the cached keyframe
        group up to the current frame and re-encode from there (aiortc's encoder starts with
        a keyframe) until the encoder's next keyframe, which is forwarded as is again."""
        if self.transcoding or self.bridging or not self.gop:
            return
        self.bridging = True
        self.keyframes_bridged += 1
        logger.info(
            "ingest %s: keyframe requested; re-encoding from the cached group (%d frames) "
            "until the encoder's next keyframe",
            self.label,
            len(self.gop),
        )
        self._start_decoder(self.gop)

    def _start_decoder(self, cached: list[tuple[bytes, int, int]]) -> None:
        self._video_in.put_nowait(("reset", None))
        for item in cached:
            self._video_in.put_nowait(("prime", item))

    async def _video_pump(self) -> None:
        loop = asyncio.get_running_loop()
        while (entry := await self._video_in.get()) is not None:
            action, item = entry
            if action == "reset":
                self._decoder = None
                continue
            assert item is not None
            if action == "pass":
                packet = av.Packet(item[0])
                packet.pts = item[1]
                packet.dts = item[2]
                packet.time_base = MS
                self.video_frames += 1
                self.video.put(packet)
                continue
            try:
                frames = await loop.run_in_executor(None, self._decode_video, item)
            except Exception as exc:
                logger.warning("ingest %s: H.264 decode failed: %s", self.label, exc)
                continue
            if action == "prime":
                continue
            for frame in frames:
                self.video_frames += 1
                self.video.put(frame)

    def _decode_video(self, item: tuple[bytes, int, int]) -> list[Any]:
        if self._decoder is None:
            self._decoder = av.CodecContext.create("h264", "r")
            self._decoder.options = {"flags": "low_delay"} if not self.transcoding else {}
        packet = av.Packet(item[0])
        packet.pts = item[1]
        packet.dts = item[2]
        packet.time_base = MS
        frames = []
        for frame in self._decoder.decode(packet):
            frame.time_base = MS
            frames.append(frame)
        return frames

    # -- audio ----------------------------------------------------------------------------

    def on_audio(self, timestamp_ms: int, body: bytes) -> None:
        if len(body) < 2:
            return
        codec = body[0] >> 4
        if codec != 10:
            self._unsupported(f"FLV audio codec {codec} (only AAC)")
            return
        if body[1] == 0:
            self._audio_in.put_nowait((b"config" + body[2:], timestamp_ms))
        else:
            self._audio_in.put_nowait((body[2:], timestamp_ms))

    async def _audio_pump(self) -> None:
        loop = asyncio.get_running_loop()
        while (item := await self._audio_in.get()) is not None:
            try:
                frames = await loop.run_in_executor(None, self._decode_audio, item)
            except Exception as exc:
                logger.warning("ingest %s: AAC decode failed: %s", self.label, exc)
                continue
            for frame in frames:
                self.audio_frames += 1
                self.audio.put(frame)

    def _decode_audio(self, item: tuple[bytes, int]) -> list[Any]:
        data, timestamp_ms = item
        if data.startswith(b"config"):
            self._aac = av.CodecContext.create("aac", "r")
            self._aac.extradata = data[len(b"config") :]
            self._resampler = av.AudioResampler(
                format="s16", layout="stereo", rate=48000, frame_size=960
            )
            return []
        if self._aac is None or self._resampler is None:
            return []
        packet = av.Packet(data)
        packet.pts = timestamp_ms
        packet.time_base = MS
        out = []
        for frame in self._aac.decode(packet):
            frame.pts = None
            for resampled in self._resampler.resample(frame):
                resampled.pts = self._audio_samples  # aiortc's Opus encoder needs a pts
                resampled.time_base = fractions.Fraction(1, 48000)
                self._audio_samples += resampled.samples
                out.append(resampled)
        return out

    async def close(self) -> None:
        self._video_in.put_nowait(None)
        self._audio_in.put_nowait(None)
        await asyncio.gather(*self._tasks, return_exceptions=True)
        self.audio.end()
        self.video.end()
