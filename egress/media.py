"""Writing what a hidden viewer receives to HLS or to a recording (PyAV).

Frames arrive decoded from aiortc with their arrival time; :class:`MediaWriter` timestamps them
on one wall clock (so audio and video stay in sync whatever the sources' clocks), encodes video
to H.264 (libx264, a keyframe every ``keyframe_seconds``) and audio to AAC, and muxes them.
When the call sends no audio, silence keeps the audio track continuous (players need it).
"""

from __future__ import annotations

import io
import logging
from fractions import Fraction
from pathlib import Path
from typing import Any

import av
from av.video.frame import PictureType

log = logging.getLogger("stagecast.egress")

VIDEO_TIME_BASE = Fraction(1, 90000)
AUDIO_RATE = 48000
AUDIO_TIME_BASE = Fraction(1, AUDIO_RATE)
# Audio that lags the wall clock by more than this is caught up with silence.
AUDIO_SLACK_SECONDS = 0.25
# Without audio from the call for this long, silence is written instead.
AUDIO_QUIET_SECONDS = 0.5


def hls_options(directory: Path, segment_seconds: float, list_size: int) -> dict[str, str]:
    return {
        "hls_time": f"{segment_seconds:g}",
        "hls_list_size": str(list_size),
        "hls_delete_threshold": "2",
        "hls_flags": "delete_segments+independent_segments+temp_file",
        "hls_segment_filename": str(directory / "seg-%05d.ts"),
        "hls_segment_type": "mpegts",
    }


# Fragments cut at every keyframe and flushed at once: a crash loses at most the fragment being
# written (one keyframe interval), and what is on disk stays readable.
# ``delay_moov``: the header waits for the first packet, whose in-band SPS/PPS describe
# remuxed H.264.
FRAGMENTED_MP4_OPTIONS = {
    "movflags": "frag_keyframe+empty_moov+default_base_moof+delay_moov",
    "flush_packets": "1",
}


def nal_types(data: bytes) -> set[int]:
    """The NAL unit types in an Annex B access unit."""
    types = set()
    index = data.find(b"\x00\x00\x01")
    while index != -1 and index + 3 < len(data):
        types.add(data[index + 3] & 0x1F)
        index = data.find(b"\x00\x00\x01", index + 3)
    return types


def is_h264_keyframe(data: bytes) -> bool:
    types = nal_types(data)
    return 5 in types and 7 in types  # an IDR picture with its SPS


def opus_decoder() -> Any:
    """An Opus decoder giving what the AAC encoder takes (planar float, stereo, 48 kHz), so
    decoded audio needs no conversion."""
    decoder = av.CodecContext.create("opus", "r")
    decoder.layout = "stereo"
    decoder.sample_rate = AUDIO_RATE
    return decoder


def h264_template(keyframe: bytes) -> tuple[Any, Any]:
    """An input stream describing the H.264 of ``keyframe`` (size, profile), to create a
    remuxing output stream from; and its container, to close."""
    source = av.open(io.BytesIO(keyframe), format="h264")
    return source, source.streams.video[0]


class MediaWriter:
    """One output file (an HLS media playlist or a fragmented MP4), opened on the first
    video frame (its size is the output's size)."""

    def __init__(
        self,
        path: Path,
        format: str,
        options: dict[str, str],
        *,
        keyframe_seconds: float = 1.0,
    ) -> None:
        self.path = path
        self.format = format
        self.options = options
        self.keyframe_seconds = keyframe_seconds
        self.container: Any = None
        self.video_stream: Any = None
        self.audio_stream: Any = None
        self.width = 0
        self.height = 0
        self.t0: float | None = None
        self.last_video_pts = -1
        self.last_keyframe_at = float("-inf")
        self.audio_samples = 0
        self.last_audio_arrival = float("-inf")
        self.video_frames = 0
        self.last_time = 0.0
        self._resampler: Any = None
        self._fifo: Any = None
        # H.264 from the source is remuxed (no re-encoding); anything else is transcoded.
        self.passthrough = False
        self.rtp_base = 0

    @property
    def opened(self) -> bool:
        return self.container is not None

    @property
    def duration(self) -> float:
        return self.last_time

    def _open(self, width: int, height: int, at: float, template: Any = None) -> None:
        self.width, self.height = width - width % 2, height - height % 2
        self.t0 = at
        container = av.open(str(self.path), "w", format=self.format, options=self.options)
        if template is not None:
            video = container.add_stream_from_template(template)
            video.time_base = VIDEO_TIME_BASE
            self.passthrough = True
        else:
            video = container.add_stream("libx264", rate=30)
            video.width = self.width
            video.height = self.height
            video.pix_fmt = "yuv420p"
            video.codec_context.time_base = VIDEO_TIME_BASE
            video.codec_context.options = {
                "preset": "veryfast",
                "tune": "zerolatency",
                "profile": "high",
            }
            video.codec_context.gop_size = 600  # keyframes come from the clock, see video()
        audio = container.add_stream("aac", rate=AUDIO_RATE, layout="stereo")
        audio.codec_context.bit_rate = 128_000
        self.container, self.video_stream, self.audio_stream = container, video, audio
        self._resampler = av.AudioResampler(format="fltp", layout="stereo", rate=AUDIO_RATE)
        self._fifo = av.AudioFifo()

    def h264(self, data: bytes, rtp_timestamp: int, at: float) -> bool:
        """Remux one H.264 access unit (Annex B, as depayloaded from RTP) without decoding.
        Returns ``False`` while waiting for the first keyframe (and when transcoding)."""
        keyframe = is_h264_keyframe(data)
        if self.container is None:
            if not keyframe:
                return False
            source, template = h264_template(data)
            try:
                self._open(
                    template.codec_context.width, template.codec_context.height, at, template
                )
            finally:
                source.close()
            self.rtp_base = rtp_timestamp
        elif not self.passthrough:
            return False
        assert self.t0 is not None
        pts = max(self.last_video_pts + 1, rtp_timestamp - self.rtp_base)
        self.last_video_pts = pts
        packet = av.Packet(data)
        packet.pts = packet.dts = pts
        packet.time_base = VIDEO_TIME_BASE
        packet.is_keyframe = keyframe
        packet.stream = self.video_stream
        self.container.mux(packet)
        self.video_frames += 1
        elapsed = at - self.t0
        self.last_time = max(self.last_time, elapsed)
        if at - self.last_audio_arrival > AUDIO_QUIET_SECONDS:
            self._silence_until(elapsed - AUDIO_SLACK_SECONDS)
        return True

    def video(self, frame: Any, at: float) -> None:
        """Encode one decoded video frame that arrived at ``at`` (monotonic seconds)."""
        if self.container is None:
            self._open(frame.width, frame.height, at)
        if self.passthrough:
            return  # the source switched codecs: keep the remuxed stream's format
        assert self.t0 is not None
        elapsed = at - self.t0
        pts = max(self.last_video_pts + 1, round(elapsed / VIDEO_TIME_BASE))
        self.last_video_pts = pts
        if (frame.width, frame.height, frame.format.name) != (self.width, self.height, "yuv420p"):
            frame = frame.reformat(width=self.width, height=self.height, format="yuv420p")
        frame.pts = pts
        frame.time_base = VIDEO_TIME_BASE
        if at - self.last_keyframe_at >= self.keyframe_seconds:
            frame.pict_type = PictureType.I
            self.last_keyframe_at = at
        else:
            frame.pict_type = PictureType.NONE
        for packet in self.video_stream.encode(frame):
            self.container.mux(packet)
        self.video_frames += 1
        self.last_time = max(self.last_time, elapsed)
        if at - self.last_audio_arrival > AUDIO_QUIET_SECONDS:
            self._silence_until(elapsed - AUDIO_SLACK_SECONDS)

    def audio(self, frame: Any, at: float) -> None:
        """Encode one decoded audio frame (audio before the first video frame is dropped)."""
        self.last_audio_arrival = at
        if self.container is None or self.t0 is None:
            return
        expected = (at - self.t0) * AUDIO_RATE - frame.samples
        if expected - self.audio_samples > AUDIO_SLACK_SECONDS * AUDIO_RATE:
            self._silence_until(expected / AUDIO_RATE)
        elif self.audio_samples - expected > 2 * AUDIO_SLACK_SECONDS * AUDIO_RATE:
            return  # ahead of the clock (a burst after a stall): drop rather than drift
        frame.pts = None
        if (frame.format.name, frame.layout.name, frame.sample_rate) == (
            "fltp",
            "stereo",
            AUDIO_RATE,
        ):
            self._fifo.write(frame)  # already what AAC takes (see opus_decoder())
        else:
            for converted in self._resampler.resample(frame):
                self._fifo.write(converted)
        self._drain_audio()

    def _silence_until(self, seconds: float) -> None:
        missing = int(seconds * AUDIO_RATE) - self.audio_samples - self._fifo.samples
        while missing > 0:
            n = min(missing, 4800)
            silence = av.AudioFrame(format="fltp", layout="stereo", samples=n)
            for plane in silence.planes:
                plane.update(bytes(plane.buffer_size))
            silence.sample_rate = AUDIO_RATE
            self._fifo.write(silence)
            missing -= n
        self._drain_audio()

    def _drain_audio(self) -> None:
        size = self.audio_stream.codec_context.frame_size or 1024
        while self._fifo.samples >= size:
            chunk = self._fifo.read(size)
            chunk.pts = self.audio_samples
            chunk.time_base = AUDIO_TIME_BASE
            self.audio_samples += size
            for packet in self.audio_stream.encode(chunk):
                self.container.mux(packet)

    def close(self) -> None:
        """Flush the encoders and finish the file."""
        if self.container is None:
            return
        try:
            streams = (
                [self.audio_stream] if self.passthrough else [self.video_stream, self.audio_stream]
            )
            for stream in streams:
                for packet in stream.encode(None):
                    self.container.mux(packet)
        finally:
            self.container.close()
            self.container = None


# Between two parts (a worker died and another took over): one frame's time.
PART_GAP_SECONDS = 0.04


def remux_parts(parts: list[Path], output: Path) -> float:
    """Join recording parts (fragmented MP4s, readable even if cut short) into one plain MP4
    with its index at the front; returns the media duration in seconds."""
    out = av.open(str(output), "w", format="mp4", options={"movflags": "+faststart"})
    streams: dict[str, Any] = {}
    last_dts: dict[str, float] = {}
    offset = 0.0
    try:
        for part in parts:
            try:
                source = av.open(str(part))
            except (av.FFmpegError, OSError):
                log.warning("recording part unreadable, skipped", extra={"part": str(part)})
                continue
            with source:
                end = offset
                for stream in source.streams:
                    if stream.type in ("video", "audio") and stream.type not in streams:
                        streams[stream.type] = out.add_stream_from_template(stream)
                for packet in source.demux():
                    if packet.dts is None or packet.stream.type not in streams:
                        continue
                    tb = packet.time_base
                    shift = round(offset / tb)
                    packet.dts += shift
                    if packet.pts is not None:
                        packet.pts += shift
                    last = (packet.pts or packet.dts) + (packet.duration or 0)
                    end = max(end, float(last * tb))
                    kind = packet.stream.type
                    seconds = float(packet.dts * tb)
                    if seconds <= last_dts.get(kind, -1.0):
                        continue  # muxers need increasing timestamps (a part cut short)
                    last_dts[kind] = seconds
                    packet.stream = streams[kind]
                    out.mux(packet)
                offset = end + PART_GAP_SECONDS
    finally:
        out.close()
    return max(0.0, offset - PART_GAP_SECONDS)


def probe_duration(path: Path) -> float:
    with av.open(str(path)) as container:
        if container.duration is None:
            return 0.0
        return float(container.duration / av.time_base)
